import { invalidArgument, notFound } from "../common/errors.js";
import { checkTextField } from "../common/text-fields.js";
import type { Metrics } from "../common/metrics.js";
import { computeQuality, type Quality } from "./quality.js";
import type { ModelKey } from "./store/result-store.js";
import type { SqlClient } from "./store/sql-client.js";

export interface Feedback {
  /** Stores the true class of an image the current model answered. */
  record(input: { sha256: string; trueClass: number; source: string }): Promise<{ top1Correct: boolean; predicted: number }>;
  /** Quality of the current model over the window; also sets the gauges. */
  quality(): Promise<Quality>;
  start(signal: AbortSignal): void;
}

/** Feedback storage and the model-quality gauges computed from it. */
export function createFeedback(options: { db: SqlClient; model: () => ModelKey; numClasses: number; windowHours: number; metrics: Metrics; intervalMs?: number }): Feedback {
  const { db, metrics } = options;
  const predictedOf = `(c.labels -> 0 ->> 'index')::int`;
  const modelFilter = `m.name = $1 AND m.version = $2 AND m.sha256 = $3`;

  async function quality(): Promise<Quality> {
    // The latest feedback per image counts once.
    const rows = await db.query<{ truth: number; predicted: number }>(
      `SELECT DISTINCT ON (f.sha256) f.true_class AS truth, ${predictedOf} AS predicted
         FROM feedback f
         JOIN classifications c ON c.sha256 = f.sha256
         JOIN models m ON m.id = c.model_id
        WHERE ${modelFilter} AND f.created_at > now() - make_interval(hours => $4)
        ORDER BY f.sha256, f.created_at DESC`,
      [options.model().name, options.model().version, options.model().sha256, options.windowHours],
    );
    const q = computeQuality(rows.map((r) => ({ truth: Number(r.truth), predicted: Number(r.predicted) })));
    metrics.qualityAccuracy.set(q.accuracy);
    metrics.qualityMacroPrecision.set(q.macroPrecision);
    metrics.qualityMacroRecall.set(q.macroRecall);
    metrics.qualityMacroF1.set(q.macroF1);
    metrics.qualitySamples.set(q.samples);
    return q;
  }

  return {
    async record({ sha256, trueClass, source }) {
      if (!/^[0-9a-f]{64}$/.test(sha256)) throw invalidArgument("sha256 must be 64 lower-case hex digits");
      if (!Number.isInteger(trueClass) || trueClass < 0 || trueClass >= options.numClasses) throw invalidArgument(`true_class must be in [0, ${options.numClasses})`);
      checkTextField("source", source, 200);
      const [answer] = await db.query<{ predicted: number }>(
        `SELECT ${predictedOf} AS predicted FROM classifications c JOIN models m ON m.id = c.model_id WHERE c.sha256 = $4 AND ${modelFilter}`,
        [options.model().name, options.model().version, options.model().sha256, sha256],
      );
      if (answer === undefined) throw notFound(`no answer of the current model for ${sha256}; classify the image first`);
      await db.query(`INSERT INTO feedback (sha256, true_class, source) VALUES ($1, $2, $3)`, [sha256, trueClass, source]);
      metrics.feedbackTotal.inc();
      return { top1Correct: Number(answer.predicted) === trueClass, predicted: Number(answer.predicted) };
    },
    quality,
    start(signal) {
      const t = setInterval(() => {
        quality().catch(() => undefined);
      }, options.intervalMs ?? 15_000);
      t.unref();
      signal.addEventListener("abort", () => clearInterval(t), { once: true });
    },
  };
}
