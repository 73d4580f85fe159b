import assert from "node:assert/strict";
import type { ObjectStore } from "../../common/object-store.js";

/** Keys that sort differently by whole key than folder by folder ("-" and "." sort before "/"). */
export const LISTING_KEYS = ["originals/ab/cd/x.jpg", "originals/ab-x", "originals/ab.z", "originals/ab/c", "originals/ab/cd-e", "originals/b", "originalsx/y", "models/m.onnx"];

/** Byte order of ASCII keys, the order S3 lists them in. */
const byteOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * The listPage contract every ObjectStore keeps: keys under the prefix in
 * byte order, limit honoured, startAfter exclusive (present or not), sizes
 * and write times reported. `store` must hold nothing else under "originals".
 */
export async function checkListPageContract(store: ObjectStore): Promise<void> {
  const before = Date.now() - 2_000;
  for (const [i, key] of LISTING_KEYS.entries()) await store.put(key, new Uint8Array(i + 1), "application/octet-stream");
  const after = Date.now() + 2_000;
  const expected = LISTING_KEYS.filter((k) => k.startsWith("originals/")).sort(byteOrder);
  assert.deepEqual(expected, ["originals/ab-x", "originals/ab.z", "originals/ab/c", "originals/ab/cd-e", "originals/ab/cd/x.jpg", "originals/b"]);

  const all = await store.listPage("originals/", { limit: 100 });
  assert.deepEqual(all.map((e) => e.key), expected, "ascending byte order, only under the prefix");
  for (const e of all) {
    assert.equal(e.size, LISTING_KEYS.indexOf(e.key) + 1, `size of ${e.key}`);
    assert.ok(e.lastModified.getTime() >= before && e.lastModified.getTime() <= after, `lastModified of ${e.key}: ${e.lastModified.toISOString()}`);
  }
  assert.deepEqual(await store.list("originals/"), expected, "list agrees with listPage");

  const paged: string[] = [];
  for (;;) {
    const page = await store.listPage("originals/", { startAfter: paged.at(-1), limit: 2 });
    assert.ok(page.length <= 2, "never more than the limit");
    paged.push(...page.map((e) => e.key));
    if (page.length < 2) break;
  }
  assert.deepEqual(paged, expected, "pages of two, each after the last key of the previous one, cover the listing once");

  assert.deepEqual((await store.listPage("originals/", { startAfter: "originals/ab/", limit: 100 })).map((e) => e.key), ["originals/ab/c", "originals/ab/cd-e", "originals/ab/cd/x.jpg", "originals/b"], "startAfter need not be a key");
  assert.deepEqual((await store.listPage("originals/", { startAfter: "originals/ab/cd-e", limit: 1 })).map((e) => e.key), ["originals/ab/cd/x.jpg"], "startAfter is exclusive");
  assert.deepEqual(await store.listPage("originals/", { startAfter: "originals/c", limit: 10 }), [], "nothing after the end");
  assert.deepEqual((await store.listPage("", { limit: 100 })).map((e) => e.key), [...LISTING_KEYS].sort(byteOrder), "an empty prefix lists everything");
  await assert.rejects(store.listPage("originals/", { limit: 0 }), /limit/);
}
