import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createFilesystemObjectStore, originalKey, originalSha256 } from "../../common/object-store.js";
import { checkListPageContract } from "../support/object-listing.js";

describe("filesystem object store listing", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "categorize-objects-"));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("lists pages in key byte order across folders, honouring startAfter and the limit", async () => {
    await checkListPageContract(createFilesystemObjectStore(join(dir, "contract")));
  });

  it("leaves out files still being written and lists an empty or missing store as empty", async () => {
    const store = createFilesystemObjectStore(join(dir, "partial"));
    assert.deepEqual(await store.listPage("originals/", { limit: 10 }), [], "missing root");
    await store.put("originals/aa/bb/done.jpg", new Uint8Array([1]), "image/jpeg");
    await writeFile(join(dir, "partial", "originals", "aa", "bb", "done.jpg.1234.part"), "x");
    assert.deepEqual((await store.listPage("originals/", { limit: 10 })).map((e) => e.key), ["originals/aa/bb/done.jpg"]);
  });
});

describe("original keys", () => {
  it("originalSha256 recovers the sha256 of an originalKey and refuses anything else", () => {
    const sha = "ab".repeat(32);
    assert.equal(originalSha256(originalKey(sha, "image/png")), sha);
    assert.equal(originalSha256(originalKey(sha, "application/x-unknown")), sha);
    assert.equal(originalSha256(`originals/ab/cd/${sha}.jpg`), undefined, "fan-out folders must match the hash");
    assert.equal(originalSha256("originals/ab/ab/readme.txt"), undefined);
    assert.equal(originalSha256(`models/${sha}.onnx`), undefined);
  });
});
