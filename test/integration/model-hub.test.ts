import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createLogger } from "../../common/logger.js";
import { createFilesystemObjectStore, type ObjectStore } from "../../common/object-store.js";
import { fetchCatalogModel, mirrorKey } from "../../core/model-fetch.js";
import { createModelMirror } from "../../core/model-mirror.js";
import { readCatalog } from "../../core/model-manifest.js";
import { modelPath, sharedDir } from "../support/fixtures.js";
import { dataServices, s3Store } from "../support/services.js";
import { closeAll } from "../support/teardown.js";

const logger = createLogger({ level: "silent", service: "test", nodeId: "test" });

/**
 * A local server that behaves like the hub's file-resolve endpoint:
 * /{repo}/resolve/{revision}/{file} answers 302 to a content URL with an ETag,
 * and can be told to serve wrong bytes, 404, or to stall.
 */
async function startFakeHub(files: Record<string, Buffer>) {
  const state = { mode: "ok" as "ok" | "corrupt" | "missing" | "slow" | "down", requests: [] as string[] };
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = req.url ?? "/";
    state.requests.push(url);
    if (state.mode === "down") {
      req.socket.destroy();
      return;
    }
    const resolve = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url);
    if (resolve !== null) {
      const name = resolve[3]!;
      if (state.mode === "missing" || files[name] === undefined) {
        res.writeHead(404, { "x-error-code": "EntryNotFound" }).end("Entry not found");
        return;
      }
      // Like the hub: large files redirect to a content store.
      res.writeHead(302, { location: `/content/${name}`, etag: `"${createHash("sha256").update(files[name]).digest("hex")}"` }).end();
      return;
    }
    const content = /^\/content\/(.+)$/.exec(url);
    const body = content === null ? undefined : files[content[1]!];
    if (body === undefined) {
      res.writeHead(404).end();
      return;
    }
    if (state.mode === "slow") {
      res.writeHead(200, { "content-length": body.length });
      res.write(body.subarray(0, 1024));
      return; // never finishes
    }
    const out = state.mode === "corrupt" ? Buffer.concat([body.subarray(0, body.length - 1), Buffer.from([body[body.length - 1]! ^ 0xff])]) : body;
    res.writeHead(200, { "content-length": out.length, etag: `"x"` }).end(out);
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const port = (server.address() as { port: number }).port;
  return { url: `http://127.0.0.1:${port}`, state, close: () => new Promise<void>((r) => server.close(() => r())) };
}

describe("model fetched from the hub, verified, cached and mirrored", { timeout: 120_000 }, () => {
  let hub: Awaited<ReturnType<typeof startFakeHub>>;
  let dir: string;
  const manifestP = readCatalog().then((all) => all[0]!);

  before(async () => {
    const manifest = await manifestP;
    hub = await startFakeHub({
      [manifest.source.hub!.file]: await readFile(modelPath),
      [manifest.labels.source.hub!.file]: await readFile(join(sharedDir, "models", "imagenet_labels.txt")),
    });
    dir = await mkdtemp(join(tmpdir(), "categorize-hub-"));
  });
  after(() =>
    closeAll(
      () => hub?.close(),
      () => rm(dir, { recursive: true, force: true }),
    ),
  );

  const fetchWith = (cacheDir: string, mirror?: ObjectStore, timeoutMs?: number) =>
    fetchCatalogModel({ cacheDir, hubEndpoint: hub.url, logger, ...(mirror === undefined ? {} : { mirror: createModelMirror(mirror) }), ...(timeoutMs === undefined ? {} : { timeoutMs }) });

  it("downloads through the redirect, verifies the sha256 and then serves from the cache", async () => {
    hub.state.mode = "ok";
    const cache = join(dir, "a");
    const first = await fetchWith(cache);
    assert.equal(first.origin, "hub");
    assert.equal(createHash("sha256").update(await readFile(first.modelPath)).digest("hex"), (await manifestP).sha256);
    const before = hub.state.requests.length;
    hub.state.mode = "down";
    const second = await fetchWith(cache);
    assert.equal(second.origin, "cache");
    assert.equal(hub.state.requests.length, before, "the cache answers without asking the hub");
  });

  it("refuses a download whose checksum does not match, leaving no file behind", async () => {
    hub.state.mode = "corrupt";
    const cache = join(dir, "b");
    await assert.rejects(fetchWith(cache), /sha256 .* expected/);
    const leftovers = await readdir(join(cache, (await manifestP).name, (await manifestP).version)).catch(() => []);
    assert.deepEqual(leftovers, [], "no partial or wrong file is kept");
  });

  it("fails clearly on 404, on an unreachable hub and on a stalled download", async () => {
    hub.state.mode = "missing";
    await assert.rejects(fetchWith(join(dir, "c")), /answered 404.*CATEGORIZE_MODEL/);
    hub.state.mode = "down";
    await assert.rejects(fetchWith(join(dir, "d")), /cannot reach the model hub.*CATEGORIZE_MODEL/);
    hub.state.mode = "slow";
    await assert.rejects(fetchWith(join(dir, "e"), undefined, 1_500), /cannot reach the model hub|aborted|timeout/i);
  });

  it("replaces a corrupted cached file", async () => {
    hub.state.mode = "ok";
    const cache = join(dir, "f");
    const first = await fetchWith(cache);
    await writeFile(first.modelPath, "garbage");
    const again = await fetchWith(cache);
    assert.equal(again.origin, "hub");
    assert.equal(createHash("sha256").update(await readFile(again.modelPath)).digest("hex"), (await manifestP).sha256);
  });

  it("mirrors to object storage, then serves from the mirror with the hub down", async () => {
    const services = dataServices();
    const objects =
      services.skip === false
        ? s3Store(services.env, `hub-mirror-${Date.now()}`)
        : createFilesystemObjectStore(join(dir, "mirror"));
    await objects.ensureReady();
    hub.state.mode = "ok";
    const viaHub = await fetchWith(join(dir, "g"), objects);
    assert.equal(viaHub.origin, "hub");
    const manifest = await manifestP;
    assert.equal(await objects.exists(mirrorKey(manifest, manifest.file, manifest.sha256)), true, "copied to the mirror");
    hub.state.mode = "down";
    const viaMirror = await fetchWith(join(dir, "h"), objects);
    assert.equal(viaMirror.origin, "s3");
    assert.equal(createHash("sha256").update(await readFile(viaMirror.modelPath)).digest("hex"), manifest.sha256);
  });
});
