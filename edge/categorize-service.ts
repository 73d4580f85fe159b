import { setMaxListeners } from "node:events";
import { create } from "@bufbuild/protobuf";
import type { ConnectRouter, HandlerContext } from "@connectrpc/connect";
import {
  CategorizeService,
  DeleteImageResponseSchema,
  ClassifyAsyncBulkItemSchema,
  ClassifyAsyncBulkResponseSchema,
  ClassifyAsyncResponseSchema,
  ClassifyStreamResponseSchema,
  type ClassifyRequest,
  type ClassifyStreamResponse,
} from "../gen/categorize/v1/categorize_pb.js";
import { ItemErrorSchema } from "../gen/categorize/v1/types_pb.js";
import { createAsyncQueue } from "../common/async-queue.js";
import { deadlineExceeded, invalidArgument, resourceExhausted, toCategorizeError, toConnectError } from "../common/errors.js";
import { adminKey, tenantKey } from "../common/tenant.js";
import type { CorePool } from "./core-pool.js";
import type { EdgeClassifier } from "./edge-classifier.js";

/**
 * CategorizeService over the edge classifier. Deadlines come from the
 * client's grpc-timeout (or the configured default); the handler signal
 * carries client cancel and shutdown down to every call.
 */
export function registerCategorizeService(
  router: ConnectRouter,
  deps: { classifier: EdgeClassifier; cores: CorePool; requestTimeoutMs: number; streamWindow: number },
): void {
  const { classifier } = deps;
  const deadlineOf = (ctx: HandlerContext) => Date.now() + Math.min(ctx.timeoutMs() ?? deps.requestTimeoutMs, deps.requestTimeoutMs * 10);
  const guard = async <T>(fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      throw toConnectError(err);
    }
  };

  router.service(CategorizeService, {
    classify: (req, ctx) =>
      guard(() => classifier.classify({ image: req.image, topK: req.topK, requestId: req.requestId, tenant: ctx.values.get(tenantKey), signal: ctx.signal, deadline: deadlineOf(ctx) })),

    classifyUpload: (requests, ctx) =>
      guard(async () => {
        const chunks: Uint8Array[] = [];
        let total = 0;
        let first = true;
        let topK = 0;
        let requestId = "";
        let declared: number | undefined;
        const deadline = deadlineOf(ctx);
        for await (const msg of withDeadline(requests, deadline)) {
          if (first) {
            first = false;
            topK = msg.topK;
            requestId = msg.requestId;
            if (msg.totalSize > BigInt(classifier.maxImageBytes)) {
              throw resourceExhausted(`declared size ${msg.totalSize} bytes exceeds the limit of ${classifier.maxImageBytes}`);
            }
            if (msg.totalSize > 0n) declared = Number(msg.totalSize);
          }
          total += msg.chunk.byteLength;
          if (total > classifier.maxImageBytes) throw resourceExhausted(`upload exceeds the limit of ${classifier.maxImageBytes} bytes`);
          chunks.push(msg.chunk);
        }
        if (first) throw invalidArgument("upload carried no message");
        if (declared !== undefined && declared !== total) throw invalidArgument(`declared total_size ${declared} but received ${total} bytes`);
        const image = Buffer.concat(chunks, total);
        return classifier.classify({ image, topK, requestId, tenant: ctx.values.get(tenantKey), signal: ctx.signal, deadline: deadlineOf(ctx) });
      }),

    classifyStream(requests: AsyncIterable<ClassifyRequest>, ctx: HandlerContext): AsyncIterable<ClassifyStreamResponse> {
      const out = createAsyncQueue<ClassifyStreamResponse>();
      // Each in-flight item of the window watches the call's signal.
      setMaxListeners(deps.streamWindow + 8, ctx.signal);
      let active = 0;
      let reading = true;
      let release: (() => void) | undefined;
      const tenant = ctx.values.get(tenantKey);
      const settle = () => {
        active--;
        release?.();
        release = undefined;
        if (!reading && active === 0) out.end();
      };
      (async () => {
        let n = 0;
        for await (const req of requests) {
          // Read-ahead is bounded: past the window we stop pulling, and HTTP/2 flow control pushes back on the client.
          while (active >= deps.streamWindow) await new Promise<void>((r) => (release = r));
          const requestId = req.requestId === "" ? `stream-${++n}` : req.requestId;
          active++;
          classifier
            .classify({ image: req.image, topK: req.topK, requestId, tenant, signal: ctx.signal, deadline: deadlineOf(ctx) })
            .then(
              (result) => out.push(create(ClassifyStreamResponseSchema, { requestId, outcome: { case: "result", value: result } })),
              (err: unknown) => {
                const e = toCategorizeError(err);
                out.push(create(ClassifyStreamResponseSchema, { requestId, outcome: { case: "error", value: create(ItemErrorSchema, { code: e.code, message: e.message, retryable: e.retryable }) } }));
              },
            )
            .finally(settle);
        }
        reading = false;
        if (active === 0) out.end();
      })().catch((err: unknown) => out.fail(toConnectError(err)));
      return out.iterate(ctx.signal);
    },

    getResult: (req, ctx) => guard(() => classifier.getResult(req.sha256, req.topK, ctx.values.get(tenantKey), ctx.signal)),

    listCategories: (_req, ctx) => guard(() => deps.cores.listCategories(ctx.signal)),

    submitFeedback: (req, ctx) => guard(() => deps.cores.feedback({ sha256: req.sha256, trueClass: req.trueClass, source: req.source }, ctx.values.get(tenantKey), ctx.signal)),

    deleteImage: (req, ctx) =>
      guard(async () => {
        await classifier.deleteImage(req.sha256, ctx.values.get(tenantKey), ctx.signal);
        return create(DeleteImageResponseSchema, { sha256: req.sha256 });
      }),

    getQuality: (req, ctx) =>
      guard(async () => {
        if (req.topWrong > 100) throw invalidArgument("top_wrong must be at most 100");
        // An admin sees every tenant's figures (each labelled); any other caller its own tenant's.
        return deps.cores.quality({ topWrong: req.topWrong }, ctx.values.get(adminKey) ? undefined : ctx.values.get(tenantKey), ctx.signal);
      }),

    classifyAsync: (req, ctx) =>
      guard(async () => create(ClassifyAsyncResponseSchema, await classifier.classifyAsync({ image: req.image, requestId: req.requestId, tenant: ctx.values.get(tenantKey), signal: ctx.signal }))),

    classifyAsyncBulk: (req, ctx) =>
      guard(async () => {
        if (req.items.length > 1000) throw invalidArgument("at most 1000 items per bulk request");
        const items = await Promise.all(
          req.items.map((item, i) => {
            const requestId = item.requestId === "" ? `bulk-${i}` : item.requestId;
            return classifier.classifyAsync({ image: item.image, requestId, tenant: ctx.values.get(tenantKey), signal: ctx.signal }).then(
              (accepted) => create(ClassifyAsyncBulkItemSchema, { requestId, outcome: { case: "accepted", value: create(ClassifyAsyncResponseSchema, accepted) } }),
              (err: unknown) => {
                const e = toCategorizeError(err);
                return create(ClassifyAsyncBulkItemSchema, { requestId, outcome: { case: "error", value: create(ItemErrorSchema, { code: e.code, message: e.message, retryable: e.retryable }) } });
              },
            );
          }),
        );
        return create(ClassifyAsyncBulkResponseSchema, { items });
      }),
  });
}

/** Ends a client stream that does not finish by the deadline (a never-sent last chunk) with DEADLINE_EXCEEDED. */
async function* withDeadline<T>(source: AsyncIterable<T>, deadline: number): AsyncIterable<T> {
  const it = source[Symbol.asyncIterator]();
  for (;;) {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(deadlineExceeded("upload did not finish before the deadline")), Math.max(0, deadline - Date.now()));
    });
    try {
      const next = await Promise.race([it.next(), timeout]);
      if (next.done === true) return;
      yield next.value;
    } catch (err) {
      // Not awaited: an async generator queues return() behind the next() that is still pending.
      void it.return?.()?.catch(() => undefined);
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }
}
