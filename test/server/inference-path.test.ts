import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ClassifyRequestSchema, type ClassifyRequest } from "../../gen/categorize/v1/categorize_pb.js";
import { DataType, InferRequestSchema, TensorLayout, TensorSchema, type InferRequest } from "../../gen/categorize/v1/inference_pb.js";
import type { RunningNode } from "../../cli/start-node.js";
import { categorizeClient, inferenceClient, type Protocol } from "../support/clients.js";
import { readExpectations, readImage } from "../support/fixtures.js";
import { pngDeclaring, solidImage } from "../support/images.js";
import { activeResources, leakedHandles, startTestNode } from "../support/nodes.js";
import { closeAll } from "../support/teardown.js";

const MiB = 1024 * 1024;

async function codeOf(p: Promise<unknown>): Promise<Code> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err).code;
  }
  throw new Error("expected the call to fail");
}

async function metricValue(node: RunningNode, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = (await node.metrics.registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  return values.filter((v) => Object.entries(labels).every(([k, l]) => v.labels[k] === l)).reduce((s, v) => s + v.value, 0);
}

describe("inference path: edge and core as separate nodes over gRPC", () => {
  let core: RunningNode;
  let edge: RunningNode;
  let baseline: Map<string, number>;

  before(async () => {
    baseline = activeResources();
    core = await startTestNode("core", { BATCH_MAX_DELAY_MS: "5" });
    edge = await startTestNode("edge", { CORE_URLS: core.url, MAX_IMAGE_BYTES: String(4 * MiB) });
  });

  after(async () => {
    await closeAll(
      () => edge?.stop(),
      () => core?.stop(),
    );
    assert.deepEqual(await leakedHandles(baseline), [], "sockets or servers left open after shutdown");
  });

  it("classifies every shared photo within the expected classes and probabilities", async () => {
    const client = categorizeClient(edge.url);
    for (const exp of readExpectations()) {
      const res = await client.classify({ image: readImage(exp.file), topK: 5, requestId: `t-${exp.file}` });
      const top = res.labels[0]!;
      assert.equal(res.labels.length, 5, exp.file);
      assert.equal(res.requestId, `t-${exp.file}`);
      assert.match(res.sha256, /^[0-9a-f]{64}$/);
      assert.equal(res.model?.name, "mobilenetv2-12-int8");
      for (let i = 1; i < res.labels.length; i++) assert.ok(res.labels[i - 1]!.score >= res.labels[i]!.score, `${exp.file}: labels sorted by score`);
      if (exp.acceptTop1 !== undefined) assert.ok(exp.acceptTop1.includes(top.index), `${exp.file}: top-1 ${top.index} ${top.name} not in ${exp.acceptTop1.join("|")}`);
      if (exp.acceptInTop5 !== undefined) assert.ok(res.labels.some((l) => exp.acceptInTop5!.includes(l.index)), `${exp.file}: none of ${exp.acceptInTop5.join("|")} in top-5`);
      if (exp.minTop1Prob !== undefined) assert.ok(top.score >= exp.minTop1Prob, `${exp.file}: top-1 probability ${top.score} < ${exp.minTop1Prob}`);
    }
  });

  for (const protocol of ["grpc-web", "connect-h1", "connect-h2"] as Protocol[]) {
    it(`serves the same answer over ${protocol} on the same port`, async () => {
      const viaGrpc = await categorizeClient(edge.url).classify({ image: readImage("coffee.png") });
      const other = await categorizeClient(edge.url, protocol).classify({ image: readImage("coffee.png") });
      assert.equal(other.sha256, viaGrpc.sha256);
      assert.deepEqual(other.labels.map((l) => l.index), viaGrpc.labels.map((l) => l.index));
    });
  }

  it("answers a repeated image from the edge cache", async () => {
    const client = categorizeClient(edge.url);
    const image = await solidImage("png", 300);
    const first = await client.classify({ image });
    const hitsBefore = await metricValue(edge, "categorize_edge_cache_requests_total", { result: "hit" });
    const second = await client.classify({ image });
    assert.equal(first.cached, false);
    assert.equal(second.cached, true);
    assert.deepEqual(second.labels, first.labels);
    assert.equal(await metricValue(edge, "categorize_edge_cache_requests_total", { result: "hit" }), hitsBefore + 1);
  });

  it("coalesces identical concurrent requests into one inference", async () => {
    const image = await solidImage("jpeg", 320);
    const itemsBefore = core.core!.classifier.batcher.stats().items;
    const results = await Promise.all(Array.from({ length: 8 }, () => categorizeClient(edge.url).classify({ image })));
    assert.equal(new Set(results.map((r) => r.labels[0]!.index)).size, 1);
    assert.equal(core.core!.classifier.batcher.stats().items - itemsBefore, 1, "exactly one inference ran");
    assert.ok((await metricValue(edge, "categorize_edge_coalesced_requests_total")) >= 1);
  });

  it("answers a stored image by hash with GetResult, and NOT_FOUND for an unknown one", async () => {
    const client = categorizeClient(edge.url);
    const res = await client.classify({ image: readImage("chelsea.png") });
    const stored = await client.getResult({ sha256: res.sha256, topK: 3 });
    assert.equal(stored.labels.length, 3);
    assert.equal(stored.labels[0]!.index, res.labels[0]!.index);
    assert.equal(await codeOf(client.getResult({ sha256: "0".repeat(64) })), Code.NotFound);
    assert.equal(await codeOf(client.getResult({ sha256: "not-a-hash" })), Code.InvalidArgument);
  });

  it("accepts an image in chunks with ClassifyUpload and enforces the size limit", async () => {
    const client = categorizeClient(edge.url);
    const image = readImage("astronaut.png");
    async function* chunks(bytes: Buffer, size: number, totalSize: bigint) {
      for (let i = 0; i < bytes.length; i += size) yield { chunk: bytes.subarray(i, i + size), topK: 3, requestId: "up-1", totalSize: i === 0 ? totalSize : 0n };
    }
    const res = await client.classifyUpload(chunks(image, 64 * 1024, BigInt(image.length)));
    assert.equal(res.requestId, "up-1");
    assert.equal(res.labels.length, 3);
    assert.equal(res.labels[0]!.index, 450);
    const big = Buffer.alloc(5 * MiB, 1);
    assert.equal(await codeOf(client.classifyUpload(chunks(big, MiB, 0n))), Code.ResourceExhausted, "received bytes over the limit");
    assert.equal(await codeOf(client.classifyUpload(chunks(image, MiB, BigInt(5 * MiB)))), Code.ResourceExhausted, "declared size over the limit");
    assert.equal(await codeOf(client.classifyUpload(chunks(image, MiB, BigInt(image.length + 1)))), Code.InvalidArgument, "declared size differs");
  });

  it("classifies many images over one ClassifyStream, correlated by request id, with per-item errors", async () => {
    const client = categorizeClient(edge.url);
    const names = ["bald_eagle.jpeg", "coffee.png", "china.jpg", "rocket.jpg"];
    async function* requests(): AsyncIterable<ClassifyRequest> {
      for (const [i, n] of names.entries()) yield create(ClassifyRequestSchema, { image: readImage(n), requestId: `s-${i}` });
      yield create(ClassifyRequestSchema, { image: Buffer.from("not an image"), requestId: "bad" });
    }
    const answers = new Map<string, { ok: boolean; top?: number; code?: number }>();
    for await (const r of client.classifyStream(requests())) {
      answers.set(r.requestId, r.outcome.case === "result" ? { ok: true, top: r.outcome.value.labels[0]!.index } : { ok: false, code: r.outcome.value?.code ?? -1 });
    }
    assert.equal(answers.size, names.length + 1);
    assert.deepEqual(answers.get("s-0"), { ok: true, top: 22 });
    assert.deepEqual(answers.get("s-1"), { ok: true, top: 967 });
    assert.deepEqual(answers.get("bad"), { ok: false, code: Code.InvalidArgument });
  });

  describe("bad input gets a clear status and the node keeps serving", () => {
    const eagle = readImage("bald_eagle.jpeg");
    const cases: [string, () => Promise<Buffer> | Buffer, Code, RegExp][] = [
      ["empty", () => Buffer.alloc(0), Code.InvalidArgument, /empty/],
      ["one byte", () => Buffer.from([0xff]), Code.InvalidArgument, /format/],
      ["truncated JPEG", () => eagle.subarray(0, Math.floor(eagle.length / 2)), Code.InvalidArgument, /decode|image/],
      ["random bytes", () => Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7919 + 13) % 256)), Code.InvalidArgument, /format/],
      ["SVG", () => Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'), Code.InvalidArgument, /SVG/],
      ["PNG declaring 100000x100000 pixels", () => pngDeclaring(100_000, 100_000), Code.InvalidArgument, /100000x100000|pixels|largest side/],
      ["upload over the size limit", () => Buffer.alloc(5 * MiB, 0xff), Code.ResourceExhausted, /limit|exceeds|larger/],
    ];
    for (const [name, make, code, message] of cases) {
      it(`${name} -> ${Code[code]}`, async () => {
        const client = categorizeClient(edge.url);
        try {
          await client.classify({ image: await make() });
          assert.fail("expected an error");
        } catch (err) {
          const e = ConnectError.from(err);
          assert.equal(e.code, code, `${name}: ${e.message}`);
          assert.match(e.rawMessage, message);
        }
        const ok = await client.classify({ image: eagle, topK: 1 });
        assert.equal(ok.labels[0]!.index, 22);
      });
    }

    it("a wrong tensor shape sent straight to core -> INVALID_ARGUMENT for that item, the stream goes on", async () => {
      const client = inferenceClient(core.url);
      const good = new Uint8Array(224 * 224 * 3).fill(120);
      const item = (id: string, shape: number[], data: Uint8Array): InferRequest =>
        create(InferRequestSchema, { id, sha256: (id === "bad" ? "a" : "b").repeat(64), tensor: create(TensorSchema, { dtype: DataType.UINT8, layout: TensorLayout.HWC, shape, data }) });
      async function* reqs() {
        yield item("bad", [224, 224, 4], new Uint8Array(10));
        yield item("good", [224, 224, 3], good);
      }
      const got = new Map<string, string>();
      for await (const r of client.infer(reqs())) got.set(r.id, r.outcome.case === "error" ? `error:${r.outcome.value.code}` : "result");
      assert.equal(got.get("bad"), `error:${Code.InvalidArgument}`);
      assert.equal(got.get("good"), "result");
    });
  });

  it("answers health checks over gRPC and HTTP", async () => {
    const { createClient } = await import("@connectrpc/connect");
    const { createGrpcTransport } = await import("@connectrpc/connect-node");
    const { Health, HealthCheckResponse_ServingStatus } = await import("../../gen/grpc/health/v1/health_pb.js");
    const health = createClient(Health, createGrpcTransport({ baseUrl: edge.url }));
    assert.equal((await health.check({ service: "" })).status, HealthCheckResponse_ServingStatus.SERVING);
    assert.equal((await health.check({ service: "categorize.v1.CategorizeService" })).status, HealthCheckResponse_ServingStatus.SERVING);
    assert.equal(await codeOf(health.check({ service: "nope.Service" })), Code.NotFound);
    const live = await fetch(`${edge.url}/healthz`);
    assert.equal(live.status, 200);
    assert.equal((await fetch(`${edge.url}/health`)).status, 200);
    const ready = (await (await fetch(`${core.url}/readyz`)).json()) as { ready: boolean; checks: Record<string, { ok: boolean }> };
    assert.equal(ready.ready, true);
    // This core keeps its answers in memory (no DATABASE_URL or DATA_DIR): there is no database to check.
    assert.equal(core.config.store.kind, "memory");
    assert.deepEqual(Object.keys(ready.checks).sort(), ["model", "objects"]);
    const edgeReady = (await (await fetch(`${edge.url}/readyz`)).json()) as { checks: Record<string, { ok: boolean }> };
    assert.equal(edgeReady.checks.core?.ok, true);
    const metrics = await (await fetch(`${edge.url}/metrics`)).text();
    assert.match(metrics, /categorize_rpc_requests_total\{[^}]*method="Classify"[^}]*code="OK"/);
  });
});
