import { invalidArgument, notFound } from "../common/errors.js";
import { checkTextField } from "../common/text-fields.js";
import type { Metrics } from "../common/metrics.js";
import { computeQuality, type Quality } from "./quality.js";
import type { ModelKey } from "./store/result-store.js";
import type { FeedbackStore } from "./store/feedback-store.js";

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
   * operator gauges).
   */
  quality(tenant?: string): Promise<Quality>;
  /** An admin's view: the quality of each tenant's feedback, labelled. */
  qualityByTenant(): Promise<TenantQuality[]>;
  start(signal: AbortSignal): void;
}

/** Feedback validation and the model-quality gauges computed from the stored feedback. */
export function createFeedback(options: { store: FeedbackStore; model: () => ModelKey; numClasses: number; windowHours: number; metrics: Metrics; intervalMs?: number }): Feedback {
  const { store, metrics } = options;

  async function quality(tenant?: string): Promise<Quality> {
    const q = computeQuality(await store.window(options.model(), options.windowHours, tenant));
    if (tenant !== undefined) return q;
    metrics.qualityAccuracy.set(q.accuracy);
    metrics.qualityMacroPrecision.set(q.macroPrecision);
    metrics.qualityMacroRecall.set(q.macroRecall);
    metrics.qualityMacroF1.set(q.macroF1);
    metrics.qualitySamples.set(q.samples);
    return q;
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
    async qualityByTenant() {
      const rows = await store.window(options.model(), options.windowHours);
      const byTenant = new Map<string, typeof rows>();
      for (const r of rows) byTenant.set(r.tenant, [...(byTenant.get(r.tenant) ?? []), r]);
      return [...byTenant].sort(([a], [b]) => a.localeCompare(b)).map(([tenant, list]) => ({ tenant, ...computeQuality(list) }));
    },
    start(signal) {
      const t = setInterval(() => {
        quality().catch(() => undefined);
      }, options.intervalMs ?? 15_000);
      t.unref();
      signal.addEventListener("abort", () => clearInterval(t), { once: true });
    },
  };
}
