import { createHash, randomUUID, webcrypto } from "node:crypto";
import { LRUCache } from "lru-cache";
import { create } from "@bufbuild/protobuf";
import { ClassifyResponseSchema, type ClassifyResponse } from "../gen/categorize/v1/categorize_pb.js";
import { DataType, TensorLayout, TensorSchema } from "../gen/categorize/v1/inference_pb.js";
import { ImageInfoSchema, TimingsSchema, type Timings } from "../gen/categorize/v1/types_pb.js";
import { Code, invalidArgument, resourceExhausted, toCategorizeError, unavailable } from "../common/errors.js";
import type { Metrics } from "../common/metrics.js";
import type { ObjectStore } from "../common/object-store.js";
import { checkTextField } from "../common/text-fields.js";
import { originalKey } from "../common/object-store.js";
import { activeContext, injectTraceContext, inSpan, inSpanSync, SpanKind, type Context, type Span } from "../common/spans.js";
import type { CorePool, InferItem } from "./core-pool.js";
import type { JobQueue } from "./job-queue.js";
import { sniffImageFormat } from "./image-format.js";
import { preprocessImage, type PreprocessLimits } from "./preprocess.js";

export interface ClassifyCall {
  readonly image: Uint8Array;
  readonly topK: number;
  readonly requestId: string;
  /** The caller's tenant: the cache, the coalescing and the core's reference are per tenant. */
  readonly tenant: string;
  readonly signal: AbortSignal;
  /** Absolute deadline, epoch ms. */
  readonly deadline: number;
}

/** The edge's domain service: hash, cache, coalesce, validate, preprocess, forward. */
/** What ClassifyAsync answers. */
export interface AsyncAccepted {
  readonly sha256: string;
  readonly requestId: string;
  readonly jobId: string;
  readonly alreadyClassified: boolean;
}

export interface EdgeClassifier {
  classify(call: ClassifyCall): Promise<ClassifyResponse>;
  /** Validates, stores and preprocesses now; classification happens later from the job queue. */
  classifyAsync(call: Omit<ClassifyCall, "topK" | "deadline">): Promise<AsyncAccepted>;
  /** The stored answer of an image this tenant sent, or NOT_FOUND (the same for hashes nobody sent). */
  getResult(sha256: string, topK: number, tenant: string, signal: AbortSignal): Promise<ClassifyResponse>;
  /** Erases this tenant's reference to an image (core) and drops this edge's cache entry. */
  deleteImage(sha256: string, tenant: string, signal: AbortSignal): Promise<void>;
  readonly maxImageBytes: number;
}

const DEFAULT_TOP_K = 5;
const MAX_TOP_K = 1000;
// Core is always asked for at least this many labels so cached answers serve most top_k.
const FETCH_K = 10;
/**
 * From this size the sha256 runs on the libuv pool (WebCrypto's digest is a
 * threadpool job) instead of the event loop: a 12 MP JPEG (4 MB) took ~4 ms
 * of the loop, which then neither parsed the next upload nor answered. Below
 * it, the hop would cost more than the hash (a 100 KB photo hashes in ~0.1 ms).
 */
const HASH_OFF_LOOP_BYTES = 1 << 20;

/**
 * Answers repeats from a bounded LRU keyed by tenant, model version and
 * sha256 (a tenant never hears of another's images from the cache), and
 * joins identical concurrent requests of one tenant onto one inference
 * (single flight; the core records each tenant's reference). Entries live
 * CACHE_TTL_MS at most, so a DeleteImage served by another edge is seen
 * here within that time.
 * Preprocessing runs under a concurrency bound: beyond it, requests wait in
 * a bounded line and past that get RESOURCE_EXHAUSTED.
 */
export function createEdgeClassifier(options: {
  cores: CorePool;
  metrics: Metrics;
  limits: PreprocessLimits & { maxImageBytes: number };
  cacheMaxEntries: number;
  /** Lifetime of a cache entry (ms). */
  cacheTtlMs?: number;
  preprocessConcurrency: number;
  maxWaiting: number;
  /** Aborted at shutdown: new requests are refused so clients go to another edge. */
  shutdownSignal: AbortSignal;
  /** Where originals are stored; none keeps no originals. */
  objects: ObjectStore | undefined;
  jobs: JobQueue;
}): EdgeClassifier {
  const { cores, metrics, limits } = options;
  const cache = options.cacheMaxEntries > 0 ? new LRUCache<string, ClassifyResponse>({ max: options.cacheMaxEntries, ttl: options.cacheTtlMs ?? 60_000, ttlAutopurge: false }) : undefined;
  const inFlight = new Map<string, Promise<ClassifyResponse>>();
  const gate = createGate(options.preprocessConcurrency, options.maxWaiting);

  const withK = (res: ClassifyResponse, k: number, requestId: string, cached: boolean, totalMs: number): ClassifyResponse =>
    create(ClassifyResponseSchema, {
      ...res,
      labels: res.labels.slice(0, k),
      requestId,
      cached: cached || res.cached,
      timings: cached ? create(TimingsSchema, { totalMs }) : timings(res.timings, { totalMs }),
    });

  /** Stores an original unless present. */
  function storeOriginal(key: string, bytes: Uint8Array, mime: string, parent: Context): Promise<void> {
    return inSpan("edge.store_original", { attributes: { "object.key": key }, parent }, async (span) => {
      const exists = await options.objects!.exists(key);
      span.setAttribute("object.existed", exists);
      if (!exists) await options.objects!.put(key, bytes, mime);
    });
  }

  /**
   * Sniff, then store the original (content-addressed, skipped when present)
   * while preprocessing: the upload overlaps the decode instead of following
   * it. An upload whose request then fails (an image that does not decode,
   * overload, no core) is not undone here: another request for the same bytes
   * may rely on it, and retention's orphan sweep removes originals no row
   * references once they are past the grace.
   */
  async function prepare(bytes: Uint8Array, sha256: string, k: number, requestId: string, tenant: string, signal: AbortSignal): Promise<{ item: InferItem; preprocessMs: number }> {
    const started = performance.now();
    const outer = activeContext();
    let key = "";
    let storing: Promise<{ error: unknown } | undefined> | undefined;
    const { mime, spec, pre } = await inSpan("edge.preprocess", {}, async (span) => {
      const mime = await sniffImageFormat(bytes).catch((err: unknown) => {
        metrics.preprocessRejections.inc({ reason: "format" });
        throw err;
      });
      span.setAttribute("image.mime", mime);
      if (options.objects !== undefined) {
        key = originalKey(sha256, mime);
        // Settles to its error instead of rejecting: a failed upload must not be unhandled while preprocessing runs.
        storing = storeOriginal(key, bytes, mime, outer).then(
          () => undefined,
          (error: unknown) => ({ error }),
        );
      }
      const info = cores.modelInfo();
      if (info?.preprocessing === undefined) throw unavailable("no core is available");
      const spec = info.preprocessing;
      const pre = await gate.run(signal, () => preprocessImage(bytes, spec, limits)).catch((err: unknown) => {
        const e = toCategorizeError(err);
        metrics.preprocessRejections.inc({ reason: e.code === Code.ResourceExhausted ? "overload" : "decode" });
        throw e;
      });
      span.setAttributes({ "image.width": pre.width, "image.height": pre.height });
      return { mime, spec, pre };
    });
    const failed = await storing;
    if (failed !== undefined) throw failed.error;
    const preprocessMs = performance.now() - started;
    metrics.preprocessDuration.observe(preprocessMs / 1000);
    return {
      preprocessMs,
      item: {
        sha256,
        tensor: create(TensorSchema, { dtype: DataType.UINT8, layout: TensorLayout.HWC, shape: [spec.cropHeight, spec.cropWidth, 3], data: pre.hwc }),
        image: create(ImageInfoSchema, { mime, sizeBytes: BigInt(bytes.byteLength), width: pre.width, height: pre.height, objectKey: key }),
        deadlineUnixMs: 0n,
        topK: k,
        requestId,
        traceContext: {},
        tenant,
      },
    };
  }

  async function infer(bytes: Uint8Array, sha256: string, k: number, requestId: string, tenant: string, deadline: number, signal: AbortSignal): Promise<ClassifyResponse> {
    const { item, preprocessMs } = await prepare(bytes, sha256, k, requestId, tenant, signal);
    // The core continues the trace from this span: its context travels in InferRequest.trace_context.
    const res = await inSpan("edge.forward", { kind: SpanKind.CLIENT }, () => cores.infer({ ...item, traceContext: injectTraceContext() }, { signal, deadline }));
    return create(ClassifyResponseSchema, { ...res, timings: timings(res.timings, { preprocessMs }) });
  }

  function checkImage(image: Uint8Array): void {
    if (options.shutdownSignal.aborted) throw unavailable("edge is shutting down; retry");
    if (image.byteLength === 0) throw invalidArgument("image is empty");
    if (image.byteLength > limits.maxImageBytes) throw resourceExhausted(`image is ${image.byteLength} bytes; the limit is ${limits.maxImageBytes}`);
  }

  return {
    maxImageBytes: limits.maxImageBytes,
    classify: (call) => inSpan("edge.classify", { attributes: { "image.size_bytes": call.image.byteLength, async: false } }, (span) => classifyInSpan(call, span)),
    classifyAsync: (call) => inSpan("edge.classify", { attributes: { "image.size_bytes": call.image.byteLength, async: true } }, (span) => classifyAsyncInSpan(call, span)),
    async getResult(sha256, topK, tenant, signal) {
      if (!/^[0-9a-f]{64}$/.test(sha256)) throw invalidArgument("sha256 must be 64 lower-case hex digits");
      const k = topK > 0 ? Math.min(topK, MAX_TOP_K) : DEFAULT_TOP_K;
      const version = cacheVersion();
      const hit = cache?.get(cacheKey(tenant, version, sha256));
      if (hit !== undefined && k <= hit.labels.length) return withK(hit, k, "", true, 0);
      const res = await cores.lookup(sha256, k, tenant, signal);
      return withK(res, k, "", true, 0);
    },
    async deleteImage(sha256, tenant, signal) {
      if (!/^[0-9a-f]{64}$/.test(sha256)) throw invalidArgument("sha256 must be 64 lower-case hex digits");
      // Dropped first: the answer must not be served from here once the delete is under way.
      dropCached(tenant, sha256);
      await cores.forget(sha256, tenant, signal);
      // And again: a classify of this tenant that finished meanwhile may have cached it.
      dropCached(tenant, sha256);
    },
  };

  /** Drops this tenant's entries for an image under any model version. */
  function dropCached(tenant: string, sha256: string): void {
    if (cache === undefined) return;
    const suffix = `\u0000${sha256}`;
    const prefix = `${tenant}\u0000`;
    for (const k of [...cache.keys()]) if (k.startsWith(prefix) && k.endsWith(suffix)) cache.delete(k);
  };

  /** Model version and taxonomy fingerprint: a cached answer is served only while both are current. */
  function cacheVersion(): string {
    const info = cores.modelInfo();
    return `${info?.model?.version ?? ""}:${info?.taxonomy ?? ""}`;
  }

  async function hash(image: Uint8Array, span: Span): Promise<string> {
    const sha256 =
      image.byteLength < HASH_OFF_LOOP_BYTES
        ? inSpanSync("edge.hash", () => createHash("sha256").update(image).digest("hex"))
        : await inSpan("edge.hash", {}, async () => Buffer.from(await webcrypto.subtle.digest("SHA-256", image)).toString("hex"));
    span.setAttribute("sha256", sha256);
    return sha256;
  }

  async function classifyInSpan(call: ClassifyCall, span: Span): Promise<ClassifyResponse> {
    const started = performance.now();
    checkImage(call.image);
    if (call.topK > MAX_TOP_K) throw invalidArgument(`top_k must be at most ${MAX_TOP_K}`);
    const k = call.topK > 0 ? call.topK : DEFAULT_TOP_K;
    const requestId = call.requestId === "" ? randomUUID() : checkTextField("request_id", call.requestId);
    const sha256 = await hash(call.image, span);
    const version = cacheVersion();
    const key = cacheKey(call.tenant, version, sha256);

    const hit = cache?.get(key);
    if (hit !== undefined && k <= hit.labels.length) {
      metrics.edgeCache.inc({ result: "hit" });
      span.setAttribute("cache_hit", true);
      return withK(hit, k, requestId, true, performance.now() - started);
    }
    if (cache !== undefined) metrics.edgeCache.inc({ result: "miss" });
    span.setAttribute("cache_hit", false);

    const fetchK = Math.max(k, FETCH_K);
    const flightKey = `${key}:${fetchK}`;
    let flight = inFlight.get(flightKey);
    if (flight !== undefined) {
      metrics.coalesced.inc();
      // Joined an identical request in flight: the work is traced under the first caller's span.
      span.setAttribute("coalesced", true);
    } else {
      // The shared work is not tied to the first caller: it ends at its deadline or at shutdown.
      flight = infer(call.image, sha256, fetchK, requestId, call.tenant, call.deadline, AbortSignal.timeout(Math.max(1, call.deadline - Date.now())))
        .then((res) => {
          if (res.model !== undefined) cache?.set(cacheKey(call.tenant, `${res.model.version}:${cores.modelInfo()?.taxonomy ?? ""}`, sha256), res);
          return res;
        })
        .finally(() => inFlight.delete(flightKey));
      inFlight.set(flightKey, flight);
    }
    const res = await raceSignal(flight, call.signal);
    return withK(res, k, requestId, false, performance.now() - started);
  }

  async function classifyAsyncInSpan(call: Omit<ClassifyCall, "topK" | "deadline">, span: Span): Promise<AsyncAccepted> {
    checkImage(call.image);
    const requestId = call.requestId === "" ? randomUUID() : checkTextField("request_id", call.requestId);
    const sha256 = await hash(call.image, span);
    const version = cacheVersion();
    if (cache?.has(cacheKey(call.tenant, version, sha256)) === true) return { sha256, requestId, jobId: "", alreadyClassified: true };
    const stored = await cores.lookup(sha256, 1, call.tenant, call.signal).then(
      () => true,
      (err: unknown) => {
        if (toCategorizeError(err).code === Code.NotFound) return false;
        throw err;
      },
    );
    if (stored) return { sha256, requestId, jobId: "", alreadyClassified: true };
    const { item } = await prepare(call.image, sha256, FETCH_K, requestId, call.tenant, call.signal);
    // The job queue puts this span's context into the job (Kafka headers), so the core that runs it continues the trace.
    const jobId = await inSpan("edge.forward", { kind: SpanKind.PRODUCER, attributes: { via: "job_queue" } }, async (forward) => {
      const id = await options.jobs.enqueue(item);
      forward.setAttribute("job_id", id);
      return id;
    });
    metrics.jobsProcessed.inc({ result: "enqueued" });
    return { sha256, requestId, jobId, alreadyClassified: false };
  }
}

/** One cache key per tenant, model version and image. */
function cacheKey(tenant: string, version: string, sha256: string): string {
  return `${tenant}\u0000${version}\u0000${sha256}`;
}

function timings(t: Timings | undefined, override: Partial<Pick<Timings, "preprocessMs" | "totalMs">>): Timings {
  return create(TimingsSchema, {
    preprocessMs: override.preprocessMs ?? t?.preprocessMs ?? 0,
    queueMs: t?.queueMs ?? 0,
    inferenceMs: t?.inferenceMs ?? 0,
    batchSize: t?.batchSize ?? 0,
    totalMs: override.totalMs ?? t?.totalMs ?? 0,
  });
}

function raceSignal<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) {
    // The shared work goes on for other waiters; its outcome must still be observed.
    p.catch(() => undefined);
    return Promise.reject(toCategorizeError(signal.reason));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(toCategorizeError(signal.reason));
    signal.addEventListener("abort", onAbort, { once: true });
    p.then(resolve, reject).finally(() => signal.removeEventListener("abort", onAbort));
  });
}

/** A concurrency bound with a bounded waiting line (admission control for CPU-heavy work). */
function createGate(concurrency: number, maxWaiting: number) {
  let active = 0;
  const waiting: (() => void)[] = [];
  return {
    async run<T>(signal: AbortSignal, fn: () => Promise<T>): Promise<T> {
      if (active >= concurrency) {
        if (waiting.length >= maxWaiting) throw resourceExhausted("edge is overloaded (preprocessing queue full); retry later");
        await new Promise<void>((resolve, reject) => {
          const go = () => {
            signal.removeEventListener("abort", onAbort);
            resolve();
          };
          const onAbort = () => {
            const i = waiting.indexOf(go);
            if (i >= 0) waiting.splice(i, 1);
            reject(toCategorizeError(signal.reason));
          };
          waiting.push(go);
          signal.addEventListener("abort", onAbort, { once: true });
        });
      } else {
        active++;
      }
      try {
        return await fn();
      } finally {
        const next = waiting.shift();
        if (next !== undefined) next();
        else active--;
      }
    },
  };
}
