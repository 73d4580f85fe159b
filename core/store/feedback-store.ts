import type { LabelledPrediction } from "../quality.js";
import type { ModelKey } from "./result-store.js";
import type { SqlClient } from "./sql-client.js";

/** One feedback record joined to the model's answer, with the tenant that gave it. */
export interface TenantPrediction extends LabelledPrediction {
  readonly tenant: string;
}

/**
 * Where feedback is kept and joined to the model's answers: the storage port
 * of core/feedback.ts. Feedback is per tenant: a tenant gives it only for
 * images it sent, and sees only its own.
 */
export interface FeedbackStore {
  /** The top-1 class this model answered for an image this tenant sent, or undefined (no answer, or not this tenant's image). */
  predictedClass(sha256: string, model: ModelKey, tenant: string): Promise<number | undefined>;
  insert(record: { tenant: string; sha256: string; trueClass: number; source: string }): Promise<void>;
  /**
   * The latest feedback per (tenant, image) within the window, joined to this
   * model's top-1 answer: one tenant's, or every tenant's (an admin's view)
   * when `tenant` is undefined, each labelled with its tenant.
   */
  window(model: ModelKey, windowHours: number, tenant?: string): Promise<TenantPrediction[]>;
}

const PREDICTED = `(c.labels -> 0 ->> 'index')::int`;
const MODEL_FILTER = `m.name = $1 AND m.version = $2 AND m.sha256 = $3`;

/** Feedback in the feedback table, joined to classifications (Postgres or PGlite). */
export function createSqlFeedbackStore(db: SqlClient): FeedbackStore {
  return {
    async predictedClass(sha256, model, tenant) {
      const [answer] = await db.query<{ predicted: number }>(
        `SELECT ${PREDICTED} AS predicted FROM classifications c JOIN models m ON m.id = c.model_id
           JOIN image_refs r ON r.sha256 = c.sha256 AND r.tenant = $5
          WHERE c.sha256 = $4 AND ${MODEL_FILTER}`,
        [model.name, model.version, model.sha256, sha256, tenant],
      );
      return answer === undefined ? undefined : Number(answer.predicted);
    },
    async insert({ tenant, sha256, trueClass, source }) {
      await db.query(`INSERT INTO feedback (tenant, sha256, true_class, source) VALUES ($1, $2, $3, $4)`, [tenant, sha256, trueClass, source]);
    },
    async window(model, windowHours, tenant) {
      // The latest feedback per tenant and image counts once.
      const rows = await db.query<{ tenant: string; truth: number; predicted: number }>(
        `SELECT DISTINCT ON (f.tenant, f.sha256) f.tenant, f.true_class AS truth, ${PREDICTED} AS predicted
           FROM feedback f
           JOIN classifications c ON c.sha256 = f.sha256
           JOIN models m ON m.id = c.model_id
          WHERE ${MODEL_FILTER} AND f.created_at > now() - make_interval(hours => $4) AND ($5::text IS NULL OR f.tenant = $5)
          ORDER BY f.tenant, f.sha256, f.created_at DESC`,
        [model.name, model.version, model.sha256, windowHours, tenant ?? null],
      );
      return rows.map((r) => ({ tenant: r.tenant, truth: Number(r.truth), predicted: Number(r.predicted) }));
    },
  };
}
