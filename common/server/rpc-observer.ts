import type { Interceptor } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { codeName } from "../errors.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";

/**
 * Counts, times and logs every RPC once: requests by code, latency, in-flight,
 * and one access-log line with method, code, duration and bytes. Streaming
 * RPCs are measured until their response stream ends.
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
    const finish = (err: unknown) => {
      if (finished) return;
      finished = true;
      const seconds = (performance.now() - started) / 1000;
      const code = err === undefined ? "OK" : codeName(ConnectError.from(err).code);
      metrics.rpcInFlight.dec(labels);
      metrics.rpcRequests.inc({ ...labels, code });
      metrics.rpcDuration.observe(labels, seconds);
      if (receivedBytes > 0) metrics.rpcReceivedBytes.inc(labels, receivedBytes);
      const line = { rpc: `${service}/${method}`, code, ms: Math.round(seconds * 10000) / 10, bytes_in: receivedBytes, ...(requestId === undefined ? {} : { request_id: requestId }) };
      if (err !== undefined && ConnectError.from(err).code === Code.Internal) logger.error({ ...line, err }, "rpc");
      else logger.info(line, "rpc");
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
      const res = await next(req);
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
