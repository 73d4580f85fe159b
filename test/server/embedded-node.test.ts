import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { create, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import type { RunningNode } from "../../cli/start-node.js";
import { categorizeClient, transport } from "../support/clients.js";
import { readImage } from "../support/fixtures.js";
import { makeVariants } from "../support/image-variants.js";
import { activeResources, leakedHandles, startTestNode } from "../support/nodes.js";

describe("embedded node (edge + core in one process, one port)", () => {
  let node: RunningNode;
  let baseline: Map<string, number>;

  before(async () => {
    baseline = activeResources();
    node = await startTestNode("all", { BATCH_MAX_SIZE: "8", BATCH_MAX_DELAY_MS: "20", CACHE_MAX_ENTRIES: "0" });
  });
  after(async () => {
    await node.stop();
    assert.deepEqual(await leakedHandles(baseline), []);
  });

  it("lists both services through reflection and resolves CategorizeService.Classify (v1 and v1alpha)", async () => {
    const client = createClient(v1.ServerReflection, transport(node.url, "grpc"));
    async function* ask() {
      yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
      yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "categorize.v1.CategorizeService.Classify" } });
      yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileByFilename", value: "categorize/v1/inference.proto" } });
      yield create(v1.ServerReflectionRequestSchema, { messageRequest: { case: "fileContainingSymbol", value: "no.such.Symbol" } });
    }
    const answers = [];
    for await (const res of client.serverReflectionInfo(ask())) answers.push(res.messageResponse);
    assert.equal(answers.length, 4);
    const [list, symbol, byName, missing] = answers;
    assert.equal(list?.case, "listServicesResponse");
    const names = list.value.service.map((s) => s.name);
    for (const s of ["categorize.v1.CategorizeService", "categorize.v1.InferenceService"]) assert.ok(names.includes(s), `${s} listed in ${names.join(", ")}`);
    assert.equal(symbol?.case, "fileDescriptorResponse");
    const files = symbol.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b));
    const categorize = files.find((f) => f.name === "categorize/v1/categorize.proto");
    assert.ok(categorize, "the file declaring the service is sent");
    assert.ok(files.some((f) => f.name === "categorize/v1/types.proto"), "with its dependencies");
    const classify = categorize.service.find((s) => s.name === "CategorizeService")?.method.find((m) => m.name === "Classify");
    assert.equal(classify?.inputType, ".categorize.v1.ClassifyRequest");
    assert.equal(byName?.case, "fileDescriptorResponse");
    assert.equal(fromBinary(FileDescriptorProtoSchema, byName.value.fileDescriptorProto[0]!).name, "categorize/v1/inference.proto");
    assert.equal(missing?.case, "errorResponse");
    assert.equal(missing.value.errorCode, 5);

    const alpha = createClient(v1alpha.ServerReflection, transport(node.url, "grpc"));
    async function* askAlpha() {
      yield create(v1alpha.ServerReflectionRequestSchema, { messageRequest: { case: "listServices", value: "" } });
    }
    for await (const res of alpha.serverReflectionInfo(askAlpha())) {
      assert.equal(res.messageResponse.case, "listServicesResponse");
    }
  });

  it("forms batches larger than one under concurrent load, with the same answers as batch-1 runs", async () => {
    const images = await makeVariants(24);
    const client = categorizeClient(node.url);
    // Batch-1 reference answers first: one request at a time.
    const single = [];
    for (const image of images.slice(0, 6)) single.push(await client.classify({ image, topK: 5 }));
    const before = node.core!.classifier.batcher.stats();
    // The 6 reference images are stored now; ask for the other 18 concurrently, and 6 repeats whose answers come from the store.
    const concurrent = await Promise.all(images.slice(6).map((image) => client.classify({ image, topK: 5 })));
    const after = node.core!.classifier.batcher.stats();
    assert.ok(after.maxBatchSize > 1, `largest batch was ${after.maxBatchSize}`);
    assert.ok(after.batches - before.batches < 18, `18 items ran in ${after.batches - before.batches} batches`);
    assert.equal(concurrent.length, 18);

    // The batched answers equal a batch-1 run of the same images on a fresh node.
    const fresh = await startTestNode("all", { BATCH_MAX_SIZE: "1", CACHE_MAX_ENTRIES: "0" });
    try {
      const c1 = categorizeClient(fresh.url);
      for (const [i, image] of images.slice(6).entries()) {
        const one = await c1.classify({ image, topK: 5 });
        assert.deepEqual(one.labels.map((l) => l.index), concurrent[i]!.labels.map((l) => l.index));
        one.labels.forEach((l, j) => assert.ok(Math.abs(l.score - concurrent[i]!.labels[j]!.score) < 1e-6, `image ${i} label ${j}`));
      }
      assert.equal(fresh.core!.classifier.batcher.stats().maxBatchSize, 1);
    } finally {
      await fresh.stop();
    }
    assert.equal(single.length, 6);
  });

  it("names an image over 1 MiB (hashed off the event loop) by the sha256 of its bytes, and answers its repeat from the cache", async () => {
    const sharp = (await import("sharp")).default;
    // An uncompressed 2 MP PNG: over the size from which the edge hashes on the libuv pool.
    const big = await sharp(readImage("bald_eagle.jpeg")).resize(1600, 1200).png({ compressionLevel: 0 }).toBuffer();
    assert.ok(big.byteLength > 1 << 20, `${big.byteLength} bytes`);
    const client = categorizeClient(node.url);
    const first = await client.classify({ image: big });
    assert.equal(first.sha256, createHash("sha256").update(big).digest("hex"));
    assert.equal(first.labels[0]!.index, 22);
    const again = await client.classify({ image: big });
    assert.equal(again.sha256, first.sha256);
    assert.equal(again.cached, true);
  });

  it("serves the page that calls the edge through Connect-web", async () => {
    const page = await fetch(`${node.url}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type") ?? "", /text\/html/);
    assert.match(await page.text(), /<script type="module" src="\/app.js">/);
    const script = await fetch(`${node.url}/app.js`);
    assert.equal(script.status, 200);
    const text = await script.text();
    assert.ok(text.includes("Connect-Protocol-Version"), "the bundle carries the Connect-web transport");
  });

  it("finishes in-flight requests during a graceful shutdown and refuses new ones", async () => {
    // The delay must hold the items even though the model is idle.
    const other = await startTestNode("all", { BATCH_MAX_DELAY_MS: "200", BATCH_DISPATCH_WHEN_IDLE: "false", BATCH_MAX_SIZE: "16", CACHE_MAX_ENTRIES: "0" });
    const client = categorizeClient(other.url);
    await client.classify({ image: readImage("coffee.png") });
    const images = await makeVariants(4, { width: 300 });
    const inFlight = Promise.all(images.map((image) => client.classify({ image })));
    // Wait until all four wait in the batcher (its delay holds them there), then stop.
    while (other.core!.classifier.batcher.depth() < 4) await new Promise((r) => setTimeout(r, 5));
    const stopping = other.stop("test");
    await new Promise((r) => setTimeout(r, 20));
    const refused = await client.classify({ image: readImage("china.jpg") }).then(
      () => "answered",
      (err: unknown) => ConnectError.from(err).code,
    );
    assert.equal(refused, Code.Unavailable, "new requests are refused while draining");
    const results = await inFlight;
    assert.equal(results.length, 4);
    assert.ok(results.every((r) => r.labels.length === 5));
    await stopping;
    assert.equal(other.readiness.isReady(), false);
    await assert.rejects(fetch(`${other.url}/healthz`));
  });
});
