import { unavailable } from "../../common/errors.js";
import type { SqlClient, SqlExecutor } from "./sql-client.js";

/** A model as recorded with its answers. */
export interface ModelKey {
  readonly name: string;
  readonly version: string;
  readonly sha256: string;
  readonly source: string;
}

export interface ImageFacts {
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly mime: string;
  readonly width: number;
  readonly height: number;
  readonly objectKey: string;
}

export interface StoredTimings {
  readonly preprocessMs: number;
  readonly queueMs: number;
  readonly inferenceMs: number;
  readonly batchSize: number;
}

/** One model's stored answer for one image. */
export interface StoredClassification {
  readonly sha256: string;
  readonly model: ModelKey;
  /** Probability of every class, in class order. */
  readonly scores: Float32Array;
  readonly timings: StoredTimings;
  readonly image: ImageFacts;
  readonly createdAt: Date;
}

/** An event to publish once the transaction that produced it commits. */
export interface OutboxEvent {
  readonly eventId: string;
  readonly topic: string;
  readonly key: string;
  readonly payload: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
}

export interface SaveOptions {
  /** Top labels kept readable in SQL (all scores are stored anyway). */
  readonly topLabels: unknown;
  readonly requestId: string;
  /** Builds the event written to the outbox with the answer; none when events are off. */
  readonly event?: ((stored: StoredClassification) => OutboxEvent) | undefined;
  /** Checks, inside the transaction and under the image's lock, that the stored original exists. */
  readonly verifyObject?: (() => Promise<boolean>) | undefined;
}

/** The dedup and answer store of core nodes. */
export interface ResultStore {
  /** Registers the model once at start. */
  registerModel(model: ModelKey): Promise<void>;
  /** The stored answer of this model for this image (a dedup hit also bumps last seen and hit count). */
  find(sha256: string, model: ModelKey): Promise<StoredClassification | undefined>;
  /** The most recent stored answer of any model. */
  findLatest(sha256: string): Promise<StoredClassification | undefined>;
  /**
   * Stores a new answer and, in the same transaction, its event. When another
   * node stored the same (image, model) first, nothing is written and the
   * stored answer is returned with inserted=false (so exactly one event).
   */
  save(result: StoredClassification, options: SaveOptions): Promise<{ inserted: boolean; stored: StoredClassification }>;
}

interface Row {
  sha256: string;
  scores: Uint8Array;
  timings: StoredTimings;
  created_at: Date | string;
  size_bytes: string | number;
  mime: string;
  width: number;
  height: number;
  object_key: string | null;
  model_name: string;
  model_version: string;
  model_sha256: string;
  model_source: string;
}

const SELECT = `
  SELECT c.sha256, c.scores, c.timings, c.created_at,
         i.size_bytes, i.mime, i.width, i.height, i.object_key,
         m.name AS model_name, m.version AS model_version, m.sha256 AS model_sha256, m.source AS model_source
    FROM classifications c
    JOIN images i ON i.sha256 = c.sha256
    JOIN models m ON m.id = c.model_id`;

function fromRow(r: Row): StoredClassification {
  const bytes = r.scores;
  // Copy: the driver's buffer may be a view into a larger pool slab with any alignment.
  const scores = new Float32Array(bytes.byteLength / 4);
  new Uint8Array(scores.buffer).set(bytes);
  return {
    sha256: r.sha256,
    model: { name: r.model_name, version: r.model_version, sha256: r.model_sha256, source: r.model_source },
    scores,
    timings: r.timings,
    image: { sha256: r.sha256, sizeBytes: Number(r.size_bytes), mime: r.mime, width: r.width, height: r.height, objectKey: r.object_key ?? "" },
    createdAt: r.created_at instanceof Date ? r.created_at : new Date(r.created_at),
  };
}

/** The result store on Postgres (pg or PGlite: the same SQL). */
export function createSqlResultStore(db: SqlClient, onQuery?: (op: string, seconds: number, failed: boolean) => void): ResultStore {
  const modelIds = new Map<string, number>();
  const modelKey = (m: ModelKey) => `${m.name}\u0000${m.version}\u0000${m.sha256}`;

  async function timed<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const out = await fn();
      onQuery?.(op, (performance.now() - started) / 1000, false);
      return out;
    } catch (err) {
      onQuery?.(op, (performance.now() - started) / 1000, true);
      throw err;
    }
  }

  async function modelId(m: ModelKey, q: SqlExecutor = db): Promise<number> {
    const cached = modelIds.get(modelKey(m));
    if (cached !== undefined) return cached;
    const rows = await q.query<{ id: number | string }>(
      `INSERT INTO models (name, version, sha256, source) VALUES ($1, $2, $3, $4)
       ON CONFLICT (name, version, sha256) DO UPDATE SET name = EXCLUDED.name
       RETURNING id`,
      [m.name, m.version, m.sha256, m.source],
    );
    const id = Number(rows[0]!.id);
    modelIds.set(modelKey(m), id);
    return id;
  }

  return {
    async registerModel(model) {
      await timed("register_model", () => modelId(model));
    },
    find: (sha256, model) =>
      timed("find", async () => {
        const id = await modelId(model);
        const rows = await db.query<Row>(
          `WITH hit AS (
             UPDATE images SET last_seen = now(), hit_count = hit_count + 1
              WHERE sha256 = $1 AND EXISTS (SELECT 1 FROM classifications WHERE sha256 = $1 AND model_id = $2)
              RETURNING sha256)
           ${SELECT} WHERE c.sha256 = $1 AND c.model_id = $2`,
          [sha256, id],
        );
        return rows[0] === undefined ? undefined : fromRow(rows[0]);
      }),
    findLatest: (sha256) =>
      timed("find_latest", async () => {
        const rows = await db.query<Row>(`${SELECT} WHERE c.sha256 = $1 ORDER BY c.created_at DESC LIMIT 1`, [sha256]);
        return rows[0] === undefined ? undefined : fromRow(rows[0]);
      }),
    save: (result, { topLabels, requestId, event, verifyObject }) =>
      timed("save", () =>
        db.transaction(async (tx) => {
          // Shared with retention's exclusive lock: an object cannot be deleted while its row is being written.
          await tx.query(`SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0))`, [result.sha256]);
          if (verifyObject !== undefined && !(await verifyObject())) {
            throw unavailable("the stored original vanished (retention ran); send the image again");
          }
          const id = await modelId(result.model, tx);
          const img = result.image;
          await tx.query(
            `INSERT INTO images (sha256, size_bytes, mime, width, height, object_key)
             VALUES ($1, $2, $3, $4, $5, NULLIF($6, ''))
             ON CONFLICT (sha256) DO UPDATE
               SET last_seen = now(), object_key = COALESCE(images.object_key, EXCLUDED.object_key)`,
            [img.sha256, img.sizeBytes, img.mime, img.width, img.height, img.objectKey],
          );
          const scores = Buffer.from(result.scores.buffer, result.scores.byteOffset, result.scores.byteLength);
          const inserted = await tx.query<{ sha256: string }>(
            `INSERT INTO classifications (sha256, model_id, labels, scores, timings, request_id)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (sha256, model_id) DO NOTHING
             RETURNING sha256`,
            [result.sha256, id, JSON.stringify(topLabels), scores, JSON.stringify(result.timings), requestId],
          );
          if (inserted.length === 0) {
            const rows = await tx.query<Row>(`${SELECT} WHERE c.sha256 = $1 AND c.model_id = $2`, [result.sha256, id]);
            return { inserted: false, stored: fromRow(rows[0]!) };
          }
          if (event !== undefined) {
            const e = event(result);
            await tx.query(`INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ($1, $2, $3, $4, $5)`, [
              e.eventId,
              e.topic,
              e.key,
              Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength),
              JSON.stringify(e.headers),
            ]);
          }
          return { inserted: true, stored: result };
        }),
      ),
  };
}
