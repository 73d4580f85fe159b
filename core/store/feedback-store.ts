import type { LabelledPrediction } from "../quality.js";
import type { ModelKey } from "./result-store.js";
import type { SqlClient } from "./sql-client.js";

/** Where feedback is kept and joined to the model's answers: the storage port of core/feedback.ts. */
export interface FeedbackStore {
  /** The top-1 class this model answered for the image, or undefined when it has no answer. */
  predictedClass(sha256: string, model: ModelKey): Promise<number | undefined>;
  insert(record: { sha256: string; trueClass: number; source: string }): Promise<void>;
  /** The latest feedback per image within the window, joined to this model's top-1 answer. */
  window(model: ModelKey, windowHours: number): Promise<LabelledPrediction[]>;
}

const PREDICTED = `(c.labels -> 0 ->> 'index')::int`;
const MODEL_FILTER = `m.name = $1 AND m.version = $2 AND m.sha256 = $3`;

/** Feedback in the feedback table, joined to classifications (Postgres or PGlite). */
export function createSqlFeedbackStore(db: SqlClient): FeedbackStore {
  return {
    async predictedClass(sha256, model) {
      const [answer] = await db.query<{ predicted: number }>(
        `SELECT ${PREDICTED} AS predicted FROM classifications c JOIN models m ON m.id = c.model_id WHERE c.sha256 = $4 AND ${MODEL_FILTER}`,
        [model.name, model.version, model.sha256, sha256],
      );
      return answer === undefined ? undefined : Number(answer.predicted);
    },
    async insert({ sha256, trueClass, source }) {
      await db.query(`INSERT INTO feedback (sha256, true_class, source) VALUES ($1, $2, $3)`, [sha256, trueClass, source]);
    },
    async window(model, windowHours) {
      // The latest feedback per image counts once.
      const rows = await db.query<{ truth: number; predicted: number }>(
        `SELECT DISTINCT ON (f.sha256) f.true_class AS truth, ${PREDICTED} AS predicted
           FROM feedback f
           JOIN classifications c ON c.sha256 = f.sha256
           JOIN models m ON m.id = c.model_id
          WHERE ${MODEL_FILTER} AND f.created_at > now() - make_interval(hours => $4)
          ORDER BY f.sha256, f.created_at DESC`,
        [model.name, model.version, model.sha256, windowHours],
      );
      return rows.map((r) => ({ truth: Number(r.truth), predicted: Number(r.predicted) }));
    },
  };
}
