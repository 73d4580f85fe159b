import { invalidArgument, notFound } from "../common/errors.js";
import { checkTextField } from "../common/text-fields.js";
import type { Metrics } from "../common/metrics.js";
import { computeCategoryQuality, computeQuality, mostOftenWrong, type Quality } from "./quality.js";
import type { Taxonomy } from "./taxonomy/taxonomy.js";
import type { ModelKey } from "./store/result-store.js";
import type { FeedbackStore } from "./store/feedback-store.js";

/** Quality with what a reviewer reads beside it: the classes most often wrong and the window. */
export interface QualityReport extends Quality {
  readonly mostOftenWrong: readonly { readonly index: number; readonly label: string; readonly count: number }[];
  readonly windowHours: number;
  /** Start of the window (epoch ms) when the figures were computed. */
  readonly windowStart: number;
  readonly model: ModelKey;
  /** The same figures over the top-level categories of the taxonomy in use. */
  readonly categories: Quality & { readonly taxonomy: string };
  /** Whose feedback: one tenant's, or undefined for everyone's. */
  readonly tenant: string | undefined;
  /** Everyone's figures only: each tenant's, labelled (an admin's view). */
  readonly byTenant: readonly TenantQuality[];
}

/** Quality of one tenant's feedback. */
export interface TenantQuality extends Quality {
  readonly tenant: string;
}

export interface Feedback {
  /** Stores the true class of an image this tenant sent and the current model answered (NOT_FOUND otherwise). */
  record(input: { tenant: string; sha256: string; trueClass: number; source: string }): Promise<{ top1Correct: boolean; predicted: number }>;
  /**
   * Quality of the current model over the window: of one tenant's feedback,
   * or of everyone's when `tenant` is undefined (which also sets the
   * operator gauges, classes and top-level categories, so an admin's
   * GetQuality and /metrics agree).
   */
  quality(options?: { topWrong?: number; tenant?: string | undefined }): Promise<QualityReport>;
  /** Quality over the top-level categories of the taxonomy in use, everyone's feedback in the window; also sets the category gauges. */
  categoryQuality(): Promise<Quality & { readonly taxonomy: string }>;
  start(signal: AbortSignal): void;
}

/** Feedback validation and the model-quality gauges computed from the stored feedback. */
export function createFeedback(options: { store: FeedbackStore; model: () => ModelKey; taxonomy: () => Taxonomy; numClasses: number; labels?: () => readonly string[]; windowHours: number; metrics: Metrics; intervalMs?: number }): Feedback {
  const { store, metrics } = options;

  async function categoryQuality(pairs?: Awaited<ReturnType<FeedbackStore["window"]>>, setGauges = true): Promise<Quality & { readonly taxonomy: string }> {
    const taxonomy = options.taxonomy();
    const q = computeCategoryQuality(pairs ?? (await store.window(options.model(), options.windowHours)), taxonomy.classTop);
    if (setGauges) {
      metrics.categoryQuality.set({ figure: "accuracy" }, q.accuracy);
      metrics.categoryQuality.set({ figure: "macro_precision" }, q.macroPrecision);
      metrics.categoryQuality.set({ figure: "macro_recall" }, q.macroRecall);
      metrics.categoryQuality.set({ figure: "macro_f1" }, q.macroF1);
    }
    return { ...q, taxonomy: taxonomy.name };
  }

  async function quality({ topWrong = 5, tenant }: { topWrong?: number; tenant?: string | undefined } = {}): Promise<QualityReport> {
    const model = options.model();
    const windowStart = Date.now() - options.windowHours * 3_600_000;
    // One read of the window feeds the gauges and the report.
    const pairs = await store.window(model, options.windowHours, tenant);
    const q = computeQuality(pairs);
    const all = tenant === undefined;
    const categories = await categoryQuality(pairs, all);
    if (all) {
      metrics.qualityAccuracy.set(q.accuracy);
      metrics.qualityMacroPrecision.set(q.macroPrecision);
      metrics.qualityMacroRecall.set(q.macroRecall);
      metrics.qualityMacroF1.set(q.macroF1);
      metrics.qualitySamples.set(q.samples);
    }
    const labels = options.labels?.() ?? [];
    const wrong = mostOftenWrong(pairs, Math.min(Math.max(topWrong, 0), 100)).map((w) => ({ ...w, label: labels[w.index] ?? String(w.index) }));
    return { ...q, mostOftenWrong: wrong, windowHours: options.windowHours, windowStart, model, categories, tenant, byTenant: all ? byTenant(pairs) : [] };
  }

  function byTenant(rows: Awaited<ReturnType<FeedbackStore["window"]>>): TenantQuality[] {
    const groups = new Map<string, typeof rows>();
    for (const r of rows) groups.set(r.tenant, [...(groups.get(r.tenant) ?? []), r]);
    return [...groups].sort(([a], [b]) => a.localeCompare(b)).map(([tenant, list]) => ({ tenant, ...computeQuality(list) }));
  }

  return {
    async record({ tenant, sha256, trueClass, source }) {
      if (!/^[0-9a-f]{64}$/.test(sha256)) throw invalidArgument("sha256 must be 64 lower-case hex digits");
      if (!Number.isInteger(trueClass) || trueClass < 0 || trueClass >= options.numClasses) throw invalidArgument(`true_class must be in [0, ${options.numClasses})`);
      checkTextField("source", source, 200);
      // Another tenant's image is answered exactly as an unknown one.
      const predicted = await store.predictedClass(sha256, options.model(), tenant);
      if (predicted === undefined) throw notFound(`no answer of the current model for ${sha256}; classify the image first`);
      await store.insert({ tenant, sha256, trueClass, source });
      metrics.feedbackTotal.inc();
      return { top1Correct: predicted === trueClass, predicted };
    },
    quality,
    categoryQuality: () => categoryQuality(),
    start(signal) {
      const t = setInterval(() => {
        quality().catch(() => undefined);
      }, options.intervalMs ?? 15_000);
      t.unref();
      signal.addEventListener("abort", () => clearInterval(t), { once: true });
    },
  };
}
