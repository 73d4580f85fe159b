import type { Interceptor } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { context, INVALID_SPAN_CONTEXT, SpanStatusCode, trace } from "@opentelemetry/api";
import { codeName } from "../errors.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import { extractTraceContext, SpanKind, tracer } from "../spans.js";

/**
 * RPCs that get no server span (they are still counted and logged). The
 * edge -> core inference stream lives as long as the connection, and each of
 * its items carries its own trace context (InferRequest.trace_context), so a
 * span for the stream itself would only be one very long, unrelated span per
 * connection. Health probes would be a root trace every few seconds.
 */
const UNTRACED = new Set(["categorize.v1.InferenceService/Infer", "grpc.health.v1.Health/Check", "grpc.health.v1.Health/Watch"]);

/**
 * Counts, times and logs every RPC once: requests by code, latency, in-flight,
 * and one access-log line with method, code, duration and bytes. Streaming
 * RPCs are measured until their response stream ends.
 *
 * Each RPC is also a server span `${service}/${method}`, a child of the
 * caller's W3C `traceparent` header when it sent one, active while the handler
 * runs (so the domain spans nest under it and log lines carry its trace id)
 * and ended with the RPC: status ERROR with the code name on failure.
 */
export function createRpcObserver(metrics: Metrics, logger: Logger): Interceptor {
  return (next) => async (req) => {
    const service = req.service.typeName;
    const method = req.method.name;
    const labels = { service, method };
    const started = performance.now();
    metrics.rpcInFlight.inc(labels);
    let receivedBytes = 0;
    let finished = false;
    const requestId = req.header.get("x-request-id") ?? undefined;
    const path = `${service}/${method}`;
    const span = UNTRACED.has(path)
      ? trace.wrapSpanContext(INVALID_SPAN_CONTEXT)
      : tracer().startSpan(
          path,
          { kind: SpanKind.SERVER, attributes: { "rpc.system": "grpc", "rpc.service": service, "rpc.method": method } },
          extractTraceContext(req.header, context.active()),
        );
    const spanContext = trace.setSpan(context.active(), span);
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      const seconds = (performance.now() - started) / 1000;
      const connectCode = err === undefined ? 0 : ConnectError.from(err).code;
      const code = codeName(connectCode);
      span.setAttribute("rpc.grpc.status_code", connectCode);
      if (err !== undefined) span.setStatus({ code: SpanStatusCode.ERROR, message: code });
      metrics.rpcInFlight.dec(labels);
      metrics.rpcRequests.inc({ ...labels, code });
      metrics.rpcDuration.observe(labels, seconds);
      if (receivedBytes > 0) metrics.rpcReceivedBytes.inc(labels, receivedBytes);
      const line = { rpc: `${service}/${method}`, code, ms: Math.round(seconds * 10000) / 10, bytes_in: receivedBytes, ...(requestId === undefined ? {} : { request_id: requestId }) };
      context.with(spanContext, () => {
        if (err !== undefined && ConnectError.from(err).code === Code.Internal) logger.error({ ...line, err }, "rpc");
        // Edges poll GetModelInfo every few seconds: successful internal polls go to debug, not the access log.
        else if (err === undefined && method === "GetModelInfo") logger.debug(line, "rpc");
        else logger.info(line, "rpc");
      });
      span.end();
    };
    if (req.stream) {
      const input = req.message;
      req = {
        ...req,
        message: (async function* () {
          for await (const m of input) {
            receivedBytes += approxBytes(m);
            yield m;
          }
        })(),
      };
    } else {
      receivedBytes = approxBytes(req.message);
    }
    try {
      const res = await context.with(spanContext, () => next(req));
      if (!res.stream) {
        finish(undefined);
        return res;
      }
      const output = res.message;
      return {
        ...res,
        message: (async function* () {
          try {
            yield* output;
            finish(undefined);
          } catch (err) {
            finish(err);
            throw err;
          } finally {
            finish(new ConnectError("stream cancelled", Code.Canceled));
          }
        })(),
      };
    } catch (err) {
      finish(err);
      throw err;
    }
  };
}

function approxBytes(message: unknown): number {
  if (message !== null && typeof message === "object") {
    const m = message as { image?: unknown; chunk?: unknown };
    if (m.image instanceof Uint8Array) return m.image.byteLength;
    if (m.chunk instanceof Uint8Array) return m.chunk.byteLength;
  }
  return 0;
}
