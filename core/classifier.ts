import { invalidArgument } from "../common/errors.js";
import type { Metrics } from "../common/metrics.js";
import type { ObjectStore } from "../common/object-store.js";
import { inSpan } from "../common/spans.js";
import { createBatcher, type Batcher } from "./batcher.js";
import type { LoadedModel } from "./loaded-model.js";
import type { ModelManifest } from "./model-manifest.js";
import type { ImageFacts, ModelKey, OutboxEvent, ResultStore, StoredClassification } from "./store/result-store.js";
import { softmax, topK } from "./top-k.js";
import type { CategoryAnswer, CategoryScore, CategoryScorer } from "./taxonomy/category-scorer.js";

/** Wire tensor formats core accepts. */
export type WireTensor =
  | { readonly dtype: "uint8"; readonly layout: "HWC"; readonly shape: readonly number[]; readonly data: Uint8Array }
  | { readonly dtype: "float32"; readonly layout: "CHW"; readonly shape: readonly number[]; readonly data: Uint8Array };

export interface ClassifyInput {
  readonly sha256: string;
  readonly tensor: WireTensor;
  readonly image: ImageFacts;
  readonly topK: number;
  readonly requestId: string;
  /** The caller's tenant: its reference is recorded, and `cached` says whether it sent the image before. */
  readonly tenant: string;
  readonly preprocessMs: number;
  /** Absolute deadline in epoch ms. */
  readonly deadline?: number | undefined;
  readonly signal?: AbortSignal | undefined;
}

export interface LabelScore {
  readonly index: number;
  readonly name: string;
  readonly score: number;
}

/** An answer, from inference now or from the store. */
export interface Classification {
  readonly sha256: string;
  readonly labels: readonly LabelScore[];
  /** Categories of the taxonomy in use, from all class probabilities (fresh and stored answers alike). */
  readonly categories: readonly CategoryScore[];
  /** The most specific category reached (see CategoryAnswer.top). */
  readonly topCategory: CategoryScore;
  readonly model: ModelKey;
  /** True when this tenant sent the image before (the answer may be shared, the knowledge is not). */
  readonly cached: boolean;
  readonly timings: { readonly preprocessMs: number; readonly queueMs: number; readonly inferenceMs: number; readonly batchSize: number };
  readonly image: ImageFacts;
}

export interface Classifier {
  readonly model: ModelKey;
  readonly preprocessing: ModelManifest["preprocessing"];
  readonly numClasses: number;
  readonly batcher: Batcher<ModelItem, Float32Array>;
  classify(input: ClassifyInput): Promise<Classification>;
  /** The stored answer of any model, most recent first, for an image this tenant sent; else undefined. */
  lookupAny(sha256: string, k: number, tenant: string): Promise<Classification | undefined>;
  close(signal: AbortSignal): Promise<void>;
}

export const DEFAULT_TOP_K = 5;

/** One item for the model: a validated wire tensor (encoded by the runner) or a model-ready float input. */
export type ModelItem = { readonly hwc: Uint8Array } | { readonly chw: Float32Array };

/**
 * Core's domain service: dedup against the result store, dynamic batching
 * on the model, softmax and stable top-k, and storing new answers together
 * with their event. Knows nothing of gRPC.
 */
export function createClassifier(options: {
  model: LoadedModel;
  store: ResultStore;
  batching: { maxBatchSize: number; maxDelayMs: number; queueLimit: number; dispatchWhenIdle?: boolean };
  /** Model sessions: batches that may run at once. */
  sessions?: number;
  metrics: Metrics;
  /** Builds the event of a new answer; undefined when events are off (embedded mode). */
  event?: ((stored: StoredClassification, requestId: string, labels: readonly LabelScore[], categories: CategoryAnswer, tenant: string) => OutboxEvent | readonly OutboxEvent[]) | undefined;
  /** The taxonomy scorer in use, read per answer (a reload replaces it). */
  categories: () => CategoryScorer;
  /** Where originals live; the save checks the referenced object exists. */
  objects?: ObjectStore | undefined;
  /** Called after a new answer (and its event) committed. */
  onSaved?: (() => void) | undefined;
}): Classifier {
  const { model, store, metrics } = options;
  const m = model.manifest;
  const key: ModelKey = { name: m.name, version: m.version, sha256: m.sha256, source: model.origin };
  const classes = m.output.numClasses;
  const { cropHeight: h, cropWidth: w } = m.preprocessing;
  const floats = model.encoder.inputFloats;

  const batcher = createBatcher<ModelItem, Float32Array>({
    maxBatchSize: options.batching.maxBatchSize,
    maxDelayMs: options.batching.maxDelayMs,
    queueLimit: options.batching.queueLimit,
    dispatchWhenIdle: options.batching.dispatchWhenIdle ?? false,
    maxConcurrentBatches: options.sessions ?? 1,
    async run(items) {
      let logits: Float32Array;
      const wire = items.flatMap((x) => ("hwc" in x ? [x.hwc] : []));
      if (wire.length === items.length) {
        logits = await model.runner.runWire(wire);
      } else {
        // A batch with float inputs (rare: clients sending FLOAT32 CHW) is encoded here.
        // Its own buffer: batches may run side by side on several sessions.
        const input = new Float32Array(items.length * floats);
        items.forEach((x, i) => ("hwc" in x ? model.encoder.encode(x.hwc, input, i) : input.set(x.chw, i * floats)));
        logits = await model.runner.run(input, items.length);
      }
      return items.map((_, i) => {
        if (m.output.kind === "probabilities") return logits.slice(i * classes, (i + 1) * classes);
        return Float32Array.from(softmax(logits, i * classes, classes));
      });
    },
    observer: {
      onQueueDepth: (d) => metrics.batchQueueDepth.set(d),
      onQueueWait: (ms) => metrics.queueWait.observe(ms / 1000),
      onBatch: (size, ms) => {
        metrics.batchSize.observe(size);
        metrics.inferenceDuration.observe(ms / 1000);
      },
      onDropped: (reason) => metrics.inferenceErrors.inc({ kind: reason }),
      onRunFailed: (size) => metrics.inferenceErrors.inc({ kind: "run" }, size),
    },
  });

  const toInput = (t: WireTensor): ModelItem => {
    if (t.dtype === "uint8") {
      if (t.shape.length !== 3 || t.shape[0] !== h || t.shape[1] !== w || t.shape[2] !== 3 || t.data.byteLength !== model.encoder.wireBytes) {
        throw invalidArgument(`tensor must be uint8 HWC [${h}, ${w}, 3] (${model.encoder.wireBytes} bytes); got [${t.shape.join(", ")}] (${t.data.byteLength} bytes)`);
      }
      return { hwc: t.data };
    }
    if (t.shape.length !== 3 || t.shape[0] !== 3 || t.shape[1] !== h || t.shape[2] !== w || t.data.byteLength !== floats * 4) {
      throw invalidArgument(`tensor must be float32 CHW [3, ${h}, ${w}] (${floats * 4} bytes); got [${t.shape.join(", ")}] (${t.data.byteLength} bytes)`);
    }
    const out = new Float32Array(floats);
    new Uint8Array(out.buffer).set(t.data);
    return { chw: out };
  };

  const labelsOf = (scores: Float32Array, k: number): LabelScore[] =>
    topK(scores, Math.min(Math.max(k, 1), classes)).map((s) => ({ index: s.index, name: model.labels[s.index] ?? String(s.index), score: s.score }));

  const fromStored = (s: StoredClassification, k: number, cached: boolean): Classification => {
    const answer = options.categories().score(s.scores);
    return {
    sha256: s.sha256,
    labels: labelsOf(s.scores, k),
    categories: answer.categories,
    topCategory: answer.top,
    model: s.model,
    cached,
    timings: s.timings,
    image: s.image,
  };
  };

  return {
    model: key,
    preprocessing: m.preprocessing,
    numClasses: classes,
    batcher,
    async classify(input) {
      const k = input.topK > 0 ? input.topK : DEFAULT_TOP_K;
      // Validate before touching the store: a bad tensor is the caller's error.
      const tensor = toInput(input.tensor);
      const hit = await inSpan("core.dedup_lookup", {}, async (span) => {
        const found = await store.find(input.sha256, key, input.tenant);
        span.setAttribute("hit", found !== undefined);
        return found;
      });
      metrics.dedup.inc({ result: hit === undefined ? "miss" : "hit" });
      // Shared compute: another tenant's answer serves this one, but `cached` is this tenant's own history.
      if (hit !== undefined) return fromStored(hit.stored, k, hit.seenBefore);

      // Queue wait and the model run of the batch this item joined.
      const outcome = await inSpan("core.batch", { attributes: { "model.version": key.version } }, async (span) => {
        const o = await batcher.submit(tensor, {
          ...(input.deadline === undefined ? {} : { deadline: input.deadline }),
          ...(input.signal === undefined ? {} : { signal: input.signal }),
        });
        span.setAttributes({ queue_ms: o.queueMs, inference_ms: o.runMs, batch_size: o.batchSize });
        return o;
      });
      const result: StoredClassification = {
        sha256: input.sha256,
        model: key,
        scores: outcome.output,
        timings: { preprocessMs: input.preprocessMs, queueMs: outcome.queueMs, inferenceMs: outcome.runMs, batchSize: outcome.batchSize },
        image: input.image,
        createdAt: new Date(),
      };
      const objectKey = input.image.objectKey;
      const objects = options.objects;
      // The answer and its outbox event in one transaction; the event carries this span's traceparent.
      const saved = await inSpan("core.store", {}, async (span) => {
        const out = await store.save(result, {
          topLabels: labelsOf(result.scores, DEFAULT_TOP_K),
          requestId: input.requestId,
          tenant: input.tenant,
          event: options.event === undefined ? undefined : (s) => options.event!(s, input.requestId, labelsOf(s.scores, DEFAULT_TOP_K), options.categories().score(s.scores), input.tenant),
          verifyObject: objectKey === "" || objects === undefined ? undefined : () => objects.exists(objectKey),
        });
        span.setAttribute("inserted", out.inserted);
        return out;
      });
      if (saved.inserted) options.onSaved?.();
      // A fresh answer (a new model version too) is not cached, even for an image this tenant sent before.
      return fromStored(saved.stored, k, saved.seenBefore && !saved.inserted);
    },
    async lookupAny(sha256, k, tenant) {
      const hit = await store.findLatest(sha256, tenant);
      return hit === undefined ? undefined : fromStored(hit, k > 0 ? k : DEFAULT_TOP_K, true);
    },
    close: (signal) => batcher.close(signal),
  };
}
