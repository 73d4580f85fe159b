import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import type { RunningNode } from "../../cli/start-node.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { categorizeClient, transport } from "../support/clients.js";
import { readImage } from "../support/fixtures.js";
import { captureLogs, startTestNode } from "../support/nodes.js";
import { installTestTracing, parentId, type TestTracing } from "../support/tracing.js";
import { closeAll } from "../support/teardown.js";

const EDGE_SPANS = ["edge.classify", "edge.hash", "edge.preprocess", "edge.forward"];
const CORE_SPANS = ["core.classify", "core.dedup_lookup", "core.batch", "core.store"];

/** A client-side trace: the traceparent header a caller sends, and its ids. */
function clientTrace(): { traceId: string; spanId: string; headers: Record<string, string> } {
  const traceId = randomBytes(16).toString("hex");
  const spanId = randomBytes(8).toString("hex");
  return { traceId, spanId, headers: { traceparent: `00-${traceId}-${spanId}-01` } };
}

function byName(spans: readonly ReadableSpan[], name: string): ReadableSpan {
  const found = spans.filter((s) => s.name === name);
  assert.equal(found.length, 1, `exactly one ${name} span; have ${spans.map((s) => s.name).join(", ")}`);
  return found[0]!;
}

/** Names from a span up to the root of what this process recorded. */
function ancestry(spans: readonly ReadableSpan[], span: ReadableSpan): string[] {
  const byId = new Map(spans.map((s) => [s.spanContext().spanId, s]));
  const names: string[] = [];
  for (let p = byId.get(parentId(span)); p !== undefined; p = byId.get(parentId(p))) names.push(p.name);
  return names;
}

/** Waits until the trace has the named spans (an async job finishes after the call returned). */
async function waitForSpans(tracing: TestTracing, traceId: string, names: readonly string[], ms = 10_000): Promise<ReadableSpan[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const spans = tracing.trace(traceId);
    if (names.every((n) => spans.some((s) => s.name === n)) || Date.now() > deadline) return spans;
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** No attribute carries bytes or anything image-sized. */
function assertSmallAttributes(spans: readonly ReadableSpan[]): void {
  for (const s of spans) {
    for (const [k, v] of Object.entries(s.attributes)) {
      assert.ok(!(v instanceof Uint8Array), `${s.name}.${k} is bytes`);
      assert.ok(String(v).length <= 200, `${s.name}.${k} is ${String(v).length} characters`);
    }
  }
}

describe("tracing: one trace per request across edge and core", () => {
  let tracing: TestTracing;
  let core: RunningNode;
  let edge: RunningNode;
  const logs = captureLogs();

  before(async () => {
    tracing = installTestTracing();
    core = await startTestNode("core", { BATCH_MAX_DELAY_MS: "2" });
    edge = await startTestNode("edge", { CORE_URLS: core.url, LOG_LEVEL: "info" }, logs.stream);
  });

  after(() =>
    closeAll(
      () => edge?.stop(),
      () => core?.stop(),
      () => tracing?.uninstall(),
    ),
  );

  it("continues the caller's traceparent through edge and core, with the documented span tree", async () => {
    const caller = clientTrace();
    const res = await categorizeClient(edge.url).classify({ image: readImage("bald_eagle.jpeg"), topK: 3, requestId: "trace-1" }, { headers: caller.headers });
    assert.equal(res.labels.length, 3);
    const spans = tracing.trace(caller.traceId);

    // The server span of the edge RPC is the child of the caller's span.
    const server = byName(spans, "categorize.v1.CategorizeService/Classify");
    assert.equal(parentId(server), caller.spanId);
    assert.equal(server.parentSpanContext?.isRemote, true);
    assert.equal(server.attributes["rpc.grpc.status_code"], 0);

    // Edge: edge.classify under the server span, its steps under it.
    const classify = byName(spans, "edge.classify");
    assert.equal(parentId(classify), server.spanContext().spanId);
    assert.equal(classify.attributes.sha256, res.sha256);
    assert.equal(classify.attributes.cache_hit, false);
    for (const name of ["edge.hash", "edge.preprocess", "edge.forward"]) assert.equal(parentId(byName(spans, name)), classify.spanContext().spanId, name);
    // A separate edge without S3 keeps no originals.
    assert.equal(spans.filter((s) => s.name === "edge.store_original").length, 0);
    const forward = byName(spans, "edge.forward");
    assert.equal(forward.attributes["core.url"], core.url);

    // Core: core.classify continues from edge.forward (carried in InferRequest.trace_context).
    const coreClassify = byName(spans, "core.classify");
    assert.equal(parentId(coreClassify), forward.spanContext().spanId);
    assert.equal(coreClassify.parentSpanContext?.isRemote, true);
    assert.deepEqual(ancestry(spans, coreClassify), ["edge.forward", "edge.classify", "categorize.v1.CategorizeService/Classify"]);
    for (const name of ["core.dedup_lookup", "core.batch", "core.store"]) assert.equal(parentId(byName(spans, name)), coreClassify.spanContext().spanId, name);
    const batch = byName(spans, "core.batch");
    assert.equal(typeof batch.attributes.queue_ms, "number");
    assert.ok((batch.attributes.batch_size as number) >= 1);

    for (const name of [...EDGE_SPANS, ...CORE_SPANS]) assert.ok(spans.some((s) => s.name === name), name);
    // The long-lived edge -> core stream gets no span of its own.
    assert.equal(tracing.spans().filter((s) => s.name === "categorize.v1.InferenceService/Infer").length, 0);
    assertSmallAttributes(spans);

    // The access-log line of the request carries its trace id.
    const line = logs.lines().find((l) => l.msg === "rpc" && l.request_id === undefined && l.rpc === "categorize.v1.CategorizeService/Classify" && l.trace_id === caller.traceId);
    assert.ok(line, "an rpc log line with the caller's trace_id");
    assert.equal(line.span_id, server.spanContext().spanId);
  });

  it("a repeat is answered from the edge cache: no forward, no core spans", async () => {
    const caller = clientTrace();
    const res = await categorizeClient(edge.url).classify({ image: readImage("bald_eagle.jpeg"), topK: 3 }, { headers: caller.headers });
    assert.equal(res.cached, true);
    const spans = tracing.trace(caller.traceId);
    assert.equal(byName(spans, "edge.classify").attributes.cache_hit, true);
    assert.deepEqual(spans.map((s) => s.name).filter((n) => n === "edge.forward" || n.startsWith("core.")), []);
  });

  it("health probes are not traced", async () => {
    tracing.reset();
    await createClient(Health, transport(edge.url, "grpc")).check({ service: "" });
    assert.deepEqual(tracing.spans().map((s) => s.name), []);
  });

  it("a request without traceparent starts its own trace", async () => {
    tracing.reset();
    await categorizeClient(edge.url).classify({ image: readImage("flower.jpg"), topK: 1 });
    const server = byName(tracing.spans(), "categorize.v1.CategorizeService/Classify");
    assert.equal(parentId(server), "");
    const spans = tracing.trace(server.spanContext().traceId);
    for (const name of [...EDGE_SPANS, ...CORE_SPANS]) assert.ok(spans.some((s) => s.name === name), name);
  });

  it("an error marks the server and edge spans ERROR with the code name", async () => {
    const caller = clientTrace();
    const err = await categorizeClient(edge.url)
      .classify({ image: Buffer.from("definitely not an image") }, { headers: caller.headers })
      .then(() => undefined, (e: unknown) => ConnectError.from(e));
    assert.equal(err?.code, Code.InvalidArgument);
    const spans = tracing.trace(caller.traceId);
    for (const name of ["categorize.v1.CategorizeService/Classify", "edge.classify", "edge.preprocess"]) {
      const s = byName(spans, name);
      assert.equal(s.status.code, 2, name);
      assert.equal(s.status.message, "INVALID_ARGUMENT", name);
    }
    assert.equal(byName(spans, "categorize.v1.CategorizeService/Classify").attributes["rpc.grpc.status_code"], Code.InvalidArgument);
    assert.equal(spans.filter((s) => s.name === "edge.forward").length, 0);
  });

  it("each item of a ClassifyStream is its own edge.classify under the stream's server span", async () => {
    const caller = clientTrace();
    const images = ["chelsea.png", "coffee.png"];
    const out: string[] = [];
    for await (const r of categorizeClient(edge.url).classifyStream(
      (async function* () {
        for (const f of images) yield { image: readImage(f), topK: 1, requestId: f };
      })(),
      { headers: caller.headers },
    )) {
      out.push(r.requestId);
    }
    assert.deepEqual(out.sort(), images.slice().sort());
    const spans = tracing.trace(caller.traceId);
    const server = byName(spans, "categorize.v1.CategorizeService/ClassifyStream");
    const items = spans.filter((s) => s.name === "edge.classify");
    assert.equal(items.length, 2);
    for (const s of items) assert.equal(parentId(s), server.spanContext().spanId);
    assert.equal(spans.filter((s) => s.name === "core.classify").length, 2);
  });
});

describe("tracing: embedded node (edge and core in one process)", () => {
  let tracing: TestTracing;
  let node: RunningNode;
  let dataDir: string;

  before(async () => {
    tracing = installTestTracing();
    // A durable embedded node (DATA_DIR) keeps originals; the in-memory default keeps none.
    dataDir = await mkdtemp(join(tmpdir(), "categorize-tracing-"));
    node = await startTestNode("all", { DATA_DIR: dataDir });
  });

  after(() =>
    closeAll(
      () => node?.stop(),
      () => tracing?.uninstall(),
      () => rm(dataDir, { recursive: true, force: true }),
    ),
  );

  it("stores the original under edge.store_original and keeps one trace", async () => {
    const caller = clientTrace();
    await categorizeClient(node.url).classify({ image: readImage("rocket.jpg"), topK: 1 }, { headers: caller.headers });
    const spans = tracing.trace(caller.traceId);
    const classify = byName(spans, "edge.classify");
    const store = byName(spans, "edge.store_original");
    assert.equal(parentId(store), classify.spanContext().spanId);
    assert.match(String(store.attributes["object.key"]), /[0-9a-f]{64}/);
    for (const name of [...EDGE_SPANS, ...CORE_SPANS]) assert.ok(spans.some((s) => s.name === name), name);
    assert.deepEqual(ancestry(spans, byName(spans, "core.store")), ["core.classify", "edge.forward", "edge.classify", "categorize.v1.CategorizeService/Classify"]);
  });

  it("ClassifyAsync: the job continues the trace from the enqueuing edge.forward", async () => {
    const caller = clientTrace();
    const accepted = await categorizeClient(node.url).classifyAsync({ image: readImage("china.jpg") }, { headers: caller.headers });
    assert.equal(accepted.alreadyClassified, false);
    const spans = await waitForSpans(tracing, caller.traceId, ["core.store"]);
    const forward = byName(spans, "edge.forward");
    assert.equal(forward.attributes.job_id, accepted.jobId);
    assert.equal(parentId(byName(spans, "core.classify")), forward.spanContext().spanId);
    assert.equal(parentId(byName(spans, "core.store")), byName(spans, "core.classify").spanContext().spanId);
  });
});
