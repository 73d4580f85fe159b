import assert from "node:assert/strict";
import { once } from "node:events";
import { createServer, type IncomingMessage } from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, it } from "node:test";
import { trace } from "@opentelemetry/api";
import { createLogger } from "../../common/logger.js";
import { activeTraceIds, extractTraceContext, injectTraceContext, inSpan } from "../../common/spans.js";
import { startTracing } from "../../common/tracing.js";
import { imageClassifiedEvent } from "../../core/events.js";
import type { StoredClassification } from "../../core/store/result-store.js";
import { captureLogs } from "../support/nodes.js";
import { installTestTracing, type TestTracing } from "../support/tracing.js";
import { UNKNOWN } from "../../core/taxonomy/category-scorer.js";

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/;

const stored: StoredClassification = {
  sha256: "a".repeat(64),
  model: { name: "m", version: "1", sha256: "b".repeat(64), source: "test" },
  scores: new Float32Array([0.9, 0.1]),
  timings: { preprocessMs: 1, queueMs: 2, inferenceMs: 3, batchSize: 1 },
  image: { sha256: "a".repeat(64), sizeBytes: 10, mime: "image/png", width: 1, height: 1, objectKey: "" },
  createdAt: new Date(0),
};

// Runs first, before any tracer is installed in this process: the real OTLP exporter against a local receiver.
describe("startTracing", () => {
  it("registers nothing when off", async () => {
    const t = await startTracing({ serviceName: "categorize-test", nodeId: "n1", enabled: false });
    assert.equal(t.enabled, false);
    await inSpan("unit.noop", {}, (span) => {
      assert.equal(span.isRecording(), false);
      assert.deepEqual(activeTraceIds(), {});
      assert.deepEqual(injectTraceContext(), {});
      return Promise.resolve();
    });
    await t.shutdown();
  });

  it("when on, exports spans over OTLP http/protobuf to the endpoint from OTEL_* and flushes on close", async () => {
    const bodies: { url: string; type: string; body: Buffer }[] = [];
    const server = createServer((req: IncomingMessage, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      req.on("end", () => {
        bodies.push({ url: req.url ?? "", type: req.headers["content-type"] ?? "", body: Buffer.concat(chunks) });
        res.writeHead(200, { "content-type": "application/x-protobuf" }).end();
      });
    });
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const saved = process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
    process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`;
    try {
      const t = await startTracing({ serviceName: "categorize-test", nodeId: "node-7", enabled: true });
      assert.equal(t.enabled, true);
      let traceId = "";
      await inSpan("unit.exported", { attributes: { sha256: "c".repeat(64) } }, (span) => {
        traceId = span.spanContext().traceId;
        assert.match(injectTraceContext().traceparent ?? "", TRACEPARENT);
        return Promise.resolve();
      });
      await t.close(AbortSignal.timeout(10_000));
      assert.equal(bodies.length, 1, "one export on flush");
      const [b] = bodies;
      assert.equal(b!.url, "/v1/traces");
      assert.equal(b!.type, "application/x-protobuf");
      for (const s of ["unit.exported", "categorize-test", "node-7"]) assert.ok(b!.body.includes(Buffer.from(s)), `export carries ${s}`);
      assert.ok(b!.body.includes(Buffer.from(traceId, "hex")), "export carries the trace id");
      // Unregistered again: the API is the no-op.
      assert.equal(trace.getTracer("x").startSpan("after").isRecording(), false);
    } finally {
      if (saved === undefined) delete process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT;
      else process.env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT = saved;
      server.close();
    }
  });
});

describe("trace context in events, logs and carriers", () => {
  let tracing: TestTracing;
  before(() => {
    tracing = installTestTracing();
  });
  after(async () => {
    await tracing.uninstall();
  });

  it("an outbox event built inside a span carries its traceparent; outside none", async () => {
    const answer = { categories: [UNKNOWN], top: UNKNOWN };
    const [outside] = imageClassifiedEvent(stored, "r1", [{ index: 0, name: "zero", score: 0.9 }], answer, "default");
    assert.ok(outside);
    assert.equal(outside.headers.traceparent, undefined);
    assert.match(outside.headers["content-type"] ?? "", /ImageClassified/);
    await inSpan("core.store", {}, (span) => {
      const [e] = imageClassifiedEvent(stored, "r1", [{ index: 0, name: "zero", score: 0.9 }], answer, "default");
      assert.ok(e);
      const m = TRACEPARENT.exec(e.headers.traceparent ?? "");
      assert.ok(m, `traceparent header: ${e.headers.traceparent}`);
      assert.equal(m[1], span.spanContext().traceId);
      assert.equal(m[2], span.spanContext().spanId);
      assert.match(e.headers["content-type"] ?? "", /ImageClassified/);
      return Promise.resolve();
    });
  });

  it("log lines inside a span carry trace_id and span_id; outside they do not", async () => {
    const logs = captureLogs();
    const logger = createLogger({ level: "info", service: "categorize-test", nodeId: "n1", destination: logs.stream });
    logger.info("before");
    let ids = { traceId: "", spanId: "" };
    await inSpan("unit.logged", {}, async (span) => {
      ids = span.spanContext();
      await new Promise((r) => setImmediate(r));
      logger.info({ k: 1 }, "inside");
    });
    const [before, inside] = logs.lines();
    assert.equal(before!.trace_id, undefined);
    assert.equal(inside!.msg, "inside");
    assert.equal(inside!.trace_id, ids.traceId);
    assert.equal(inside!.span_id, ids.spanId);
  });

  it("extracts a parent from maps, Kafka-style Buffer headers and HTTP headers; nothing on an empty carrier", () => {
    const traceId = "0af7651916cd43dd8448eb211c80319c";
    const tp = `00-${traceId}-b7ad6b7169203331-01`;
    for (const carrier of [{ traceparent: tp }, { traceparent: Buffer.from(tp) }, new Headers({ traceparent: tp })]) {
      const sc = trace.getSpanContext(extractTraceContext(carrier));
      assert.equal(sc?.traceId, traceId);
      assert.equal(sc?.spanId, "b7ad6b7169203331");
      assert.equal(sc?.isRemote, true);
    }
    assert.equal(trace.getSpanContext(extractTraceContext({})), undefined);
    assert.equal(trace.getSpanContext(extractTraceContext(undefined)), undefined);
  });

  it("a failing span is ERROR with the gRPC code name", async () => {
    tracing.reset();
    const { invalidArgument } = await import("../../common/errors.js");
    await assert.rejects(inSpan("unit.fails", {}, () => Promise.reject(invalidArgument("not an image"))));
    const [s] = tracing.spans().filter((x) => x.name === "unit.fails");
    assert.equal(s?.status.code, 2);
    assert.equal(s?.status.message, "INVALID_ARGUMENT");
    assert.equal(s?.attributes["error.type"], "INVALID_ARGUMENT");
  });
});
