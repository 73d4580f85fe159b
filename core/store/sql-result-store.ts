import { unavailable } from "../../common/errors.js";
import { createGroupCommit, type ItemOutcome } from "./group-commit.js";
import { modelKeyOf, type ModelKey, type OutboxEvent, type ResultStore, type SaveOptions, type StoredClassification, type StoredTimings, type TenantHit } from "./result-store.js";
import type { SqlClient, SqlExecutor } from "./sql-client.js";

interface Row {
  sha256: string;
  model_id: string | number;
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
  SELECT c.sha256, c.model_id, c.scores, c.timings, c.created_at,
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

/** `($1, $2), ($3, $4)` for rows of `width` parameters each, numbered from `from`, with a per-row template. */
function valuesList(rows: number, width: number, row: (p: (i: number) => string) => string, from = 1): string {
  const out: string[] = [];
  for (let r = 0; r < rows; r++) out.push(`(${row((i) => `$${from + r * width + i}`)})`);
  return out.join(", ");
}

interface SaveItem {
  readonly result: StoredClassification;
  readonly options: SaveOptions;
}
type SaveOutcome = { inserted: boolean; stored: StoredClassification; seenBefore: boolean };
interface FindItem {
  readonly sha256: string;
  readonly model: ModelKey;
  readonly tenant: string;
}
/** One key per (tenant, image) reference. */
const refKey = (tenant: string, sha256: string) => `${tenant}\u0000${sha256}`;

/** Tuning of the group commit; the defaults suit a pool of 10 and model batches of up to 32. */
export interface SqlResultStoreOptions {
  readonly onQuery?: (op: string, seconds: number, failed: boolean) => void;
  /** Items per group (one transaction, one statement per table). */
  readonly maxGroup?: number;
  /** Groups under way at once (connections used by the hot path). */
  readonly maxConcurrent?: number;
}

/**
 * The result store on Postgres (pg or PGlite: the same SQL), with group
 * commit: lookups and saves that arrive while earlier ones are under way go
 * together into one statement (lookups) or one transaction of multi-row
 * statements (saves), instead of a round trip per statement per image.
 * Every answer is still committed, with its outbox event, before its caller
 * hears of it.
 */
export function createSqlResultStore(db: SqlClient, options: SqlResultStoreOptions = {}): ResultStore {
  const modelIds = new Map<string, number>();
  const maxGroup = options.maxGroup ?? 64;
  // PGlite is one session: a second group would only wait for the first.
  const maxConcurrent = options.maxConcurrent ?? (db.kind === "pglite" ? 1 : 2);

  async function timed<T>(op: string, fn: () => Promise<T>): Promise<T> {
    const started = performance.now();
    try {
      const out = await fn();
      options.onQuery?.(op, (performance.now() - started) / 1000, false);
      return out;
    } catch (err) {
      options.onQuery?.(op, (performance.now() - started) / 1000, true);
      throw err;
    }
  }

  async function modelId(m: ModelKey, q: SqlExecutor = db): Promise<number> {
    const cached = modelIds.get(modelKeyOf(m));
    if (cached !== undefined) return cached;
    const rows = await q.query<{ id: number | string }>(
      `INSERT INTO models (name, version, sha256, source) VALUES ($1, $2, $3, $4)
       ON CONFLICT (name, version, sha256) DO UPDATE SET name = EXCLUDED.name
       RETURNING id`,
      [m.name, m.version, m.sha256, m.source],
    );
    const id = Number(rows[0]!.id);
    modelIds.set(modelKeyOf(m), id);
    return id;
  }

  /**
   * One statement for a group of lookups of one model: the answers, a hit
   * counted for each request that found one, and each asking tenant's
   * reference to an answered image upserted (xmax = 0: the row is new, so
   * the tenant had not sent the image before).
   */
  async function findGroup(items: readonly FindItem[]): Promise<ItemOutcome<TenantHit | undefined>[]> {
    const byModel = new Map<string, { model: ModelKey; shas: string[]; tenants: string[] }>();
    for (const it of items) {
      const k = modelKeyOf(it.model);
      const g = byModel.get(k) ?? { model: it.model, shas: [], tenants: [] };
      g.shas.push(it.sha256);
      g.tenants.push(it.tenant);
      byModel.set(k, g);
    }
    const found = new Map<string, StoredClassification>();
    const fresh = new Map<string, boolean>();
    for (const [k, g] of byModel) {
      const id = await modelId(g.model);
      const rows = await retryOnForeignKeyRace(() => db.query<Row & { ref_tenant: string; ref_fresh: boolean }>(
        `WITH asked AS (SELECT s AS sha256, t AS tenant, count(*) AS n FROM unnest($1::text[], $3::text[]) AS a(s, t) GROUP BY s, t),
           answered AS (
             SELECT a.sha256, a.tenant, a.n FROM asked a
              WHERE EXISTS (SELECT 1 FROM classifications c WHERE c.sha256 = a.sha256 AND c.model_id = $2)),
           hit AS (
             UPDATE images i SET last_seen = now(), hit_count = i.hit_count + h.n
               FROM (SELECT sha256, sum(n) AS n FROM answered GROUP BY sha256) h
              WHERE i.sha256 = h.sha256
              RETURNING i.sha256),
           ref AS (
             INSERT INTO image_refs (tenant, sha256) SELECT tenant, sha256 FROM answered
             ON CONFLICT (tenant, sha256) DO UPDATE SET last_seen = now()
             RETURNING tenant, sha256, (xmax = 0) AS fresh)
         SELECT x.*, r.tenant AS ref_tenant, r.fresh AS ref_fresh
           FROM (${SELECT} WHERE c.sha256 = ANY($1::text[]) AND c.model_id = $2) x
           JOIN ref r ON r.sha256 = x.sha256`,
        [g.shas, id, g.tenants],
      ));
      for (const r of rows) {
        if (!found.has(`${k}\u0000${r.sha256}`)) found.set(`${k}\u0000${r.sha256}`, fromRow(r));
        fresh.set(`${k}\u0000${refKey(r.ref_tenant, r.sha256)}`, r.ref_fresh);
      }
    }
    return items.map((it) => {
      const k = modelKeyOf(it.model);
      const stored = found.get(`${k}\u0000${it.sha256}`);
      if (stored === undefined) return { ok: true, value: undefined };
      // Several requests of one tenant for one image in a group: only the first can be its first.
      const rk = `${k}\u0000${refKey(it.tenant, it.sha256)}`;
      const isFresh = fresh.get(rk) === true;
      fresh.set(rk, false);
      return { ok: true, value: { stored, seenBefore: !isFresh } };
    });
  }

  /** One transaction for a group of saves: shared image locks, the object checks, one multi-row statement per table. */
  function saveGroup(items: readonly SaveItem[]): Promise<ItemOutcome<SaveOutcome>[]> {
    return db.transaction(async (tx) => {
      const outcomes: (ItemOutcome<SaveOutcome> | undefined)[] = items.map(() => undefined);
      // Shared with retention's exclusive lock: an object cannot be deleted while its row is being written.
      const shas = [...new Set(items.map((it) => it.result.sha256))].sort();
      await tx.query(`SELECT pg_advisory_xact_lock_shared(hashtextextended(s, 0)) FROM unnest($1::text[]) AS s`, [shas]);
      // Under those locks, each referenced original must still exist (checked concurrently); an item whose object is gone fails alone.
      await Promise.all(
        items.map(async (it, i) => {
          if (it.options.verifyObject === undefined) return;
          try {
            if (!(await it.options.verifyObject())) outcomes[i] = { ok: false, error: unavailable("the stored original vanished (retention ran); send the image again") };
          } catch (error) {
            outcomes[i] = { ok: false, error };
          }
        }),
      );
      const live = items.map((it, i) => ({ it, i })).filter(({ i }) => outcomes[i] === undefined);
      if (live.length === 0) return outcomes as ItemOutcome<SaveOutcome>[];

      const ids = await Promise.all(live.map(({ it }) => modelId(it.result.model, tx)));
      // One row per image and per (image, model): a statement may not touch a row twice.
      const imageRows = new Map<string, StoredClassification["image"]>();
      for (const { it } of live) if (!imageRows.has(it.result.sha256)) imageRows.set(it.result.sha256, it.result.image);
      const imgs = [...imageRows.values()];
      const refs = [...new Map(live.map(({ it }) => [refKey(it.options.tenant, it.result.sha256), { tenant: it.options.tenant, sha256: it.result.sha256 }])).values()];
      // The tenants' references ride in the images statement (no extra round trip); xmax = 0: a new reference.
      const refRows = await tx.query<{ tenant: string; sha256: string; fresh: boolean }>(
        `WITH img AS (
           INSERT INTO images (sha256, size_bytes, mime, width, height, object_key)
           VALUES ${valuesList(imgs.length, 6, (p) => `${p(0)}, ${p(1)}::bigint, ${p(2)}, ${p(3)}::int, ${p(4)}::int, NULLIF(${p(5)}, '')`)}
           ON CONFLICT (sha256) DO UPDATE
             SET last_seen = now(), object_key = COALESCE(images.object_key, EXCLUDED.object_key)
           RETURNING sha256)
         INSERT INTO image_refs (tenant, sha256)
         SELECT t, s FROM unnest($${imgs.length * 6 + 1}::text[], $${imgs.length * 6 + 2}::text[]) AS r(t, s)
         ON CONFLICT (tenant, sha256) DO UPDATE SET last_seen = now()
         RETURNING tenant, sha256, (xmax = 0) AS fresh`,
        [...imgs.flatMap((img) => [img.sha256, img.sizeBytes, img.mime, img.width, img.height, img.objectKey]), refs.map((r) => r.tenant), refs.map((r) => r.sha256)],
      );
      const freshRef = new Map(refRows.map((r) => [refKey(r.tenant, r.sha256), r.fresh]));
      const firstOf = new Map<string, number>();
      const answers: { it: SaveItem; i: number; id: number }[] = [];
      live.forEach(({ it, i }, n) => {
        const k = `${it.result.sha256}\u0000${ids[n]}`;
        if (!firstOf.has(k)) {
          firstOf.set(k, answers.length);
          answers.push({ it, i, id: ids[n]! });
        }
      });
      const inserted = await tx.query<{ sha256: string; model_id: string | number }>(
        `INSERT INTO classifications (sha256, model_id, labels, scores, timings, request_id)
         VALUES ${valuesList(answers.length, 6, (p) => `${p(0)}, ${p(1)}::bigint, ${p(2)}::jsonb, ${p(3)}::bytea, ${p(4)}::jsonb, ${p(5)}`)}
         ON CONFLICT (sha256, model_id) DO NOTHING
         RETURNING sha256, model_id`,
        answers.flatMap(({ it, id }) => {
          const s = it.result.scores;
          return [it.result.sha256, id, JSON.stringify(it.options.topLabels), Buffer.from(s.buffer, s.byteOffset, s.byteLength), JSON.stringify(it.result.timings), it.options.requestId];
        }),
      );
      const isNew = new Set(inserted.map((r) => `${r.sha256}\u0000${Number(r.model_id)}`));
      // Answers another node (or an earlier group) stored first: return those, with no event.
      const stored = new Map<string, StoredClassification>();
      const lost = answers.filter(({ it, id }) => !isNew.has(`${it.result.sha256}\u0000${id}`));
      if (lost.length > 0) {
        const rows = await tx.query<Row>(`${SELECT} WHERE c.sha256 = ANY($1::text[])`, [[...new Set(lost.map(({ it }) => it.result.sha256))]]);
        for (const r of rows) stored.set(`${r.sha256}\u0000${Number(r.model_id)}`, fromRow(r));
      }
      const events: OutboxEvent[] = [];
      for (const { it, id } of answers) {
        const k = `${it.result.sha256}\u0000${id}`;
        if (isNew.has(k)) {
          stored.set(k, it.result);
          if (it.options.event !== undefined) events.push(...[it.options.event(it.result)].flat());
        }
      }
      if (events.length > 0) {
        await tx.query(
          `INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ${valuesList(events.length, 5, (p) => `${p(0)}, ${p(1)}, ${p(2)}, ${p(3)}::bytea, ${p(4)}::jsonb`)}`,
          events.flatMap((e) => [e.eventId, e.topic, e.key, Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength), JSON.stringify(e.headers)]),
        );
      }
      live.forEach(({ it, i }, n) => {
        const k = `${it.result.sha256}\u0000${ids[n]}`;
        const first = answers[firstOf.get(k)!]!;
        const s = stored.get(k);
        // Only the first item of an (image, model) pair can have inserted the row; later ones in the group see it stored.
        const rk = refKey(it.options.tenant, it.result.sha256);
        const seenBefore = freshRef.get(rk) !== true;
        // Only the first item of a (tenant, image) reference can be that tenant's first.
        freshRef.set(rk, false);
        outcomes[i] =
          s === undefined
            ? { ok: false, error: new Error(`stored answer for ${it.result.sha256} not found after conflict`) }
            : { ok: true, value: { inserted: first.i === i && isNew.has(k), stored: s, seenBefore } };
      });
      return outcomes as ItemOutcome<SaveOutcome>[];
    });
  }

  const find = createGroupCommit({ maxBatch: maxGroup, maxConcurrent, run: (items: readonly FindItem[]) => timed("find", () => findGroup(items)) });
  const save = createGroupCommit({ maxBatch: maxGroup, maxConcurrent, run: (items: readonly SaveItem[]) => timed("save", () => saveGroup(items)) });

  return {
    async registerModel(model) {
      await timed("register_model", () => modelId(model));
    },
    find: (sha256, model, tenant) => find({ sha256, model, tenant }),
    findLatest: (sha256, tenant) =>
      timed("find_latest", async () => {
        // One statement whether the image is unknown or another tenant's: the same answer, about the same time.
        const rows = await db.query<Row>(`${SELECT} JOIN image_refs r ON r.sha256 = c.sha256 AND r.tenant = $2 WHERE c.sha256 = $1 ORDER BY c.created_at DESC LIMIT 1`, [sha256, tenant]);
        return rows[0] === undefined ? undefined : fromRow(rows[0]);
      }),
    forget: (sha256, tenant, { event }) =>
      timed("forget", () =>
        db.transaction(async (tx) => {
          // Exclusive against the save path's shared lock, as retention takes it: no save of this image runs meanwhile.
          await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [sha256]);
          const [gone] = await tx.query<{ found: boolean; others: boolean }>(
            `WITH ref AS (DELETE FROM image_refs WHERE tenant = $2 AND sha256 = $1 RETURNING sha256),
               fb AS (DELETE FROM feedback WHERE tenant = $2 AND sha256 = $1)
             SELECT EXISTS (SELECT 1 FROM ref) AS found,
                    EXISTS (SELECT 1 FROM image_refs WHERE sha256 = $1 AND tenant <> $2) AS others`,
            [sha256, tenant],
          );
          if (gone?.found !== true) return { found: false, lastReference: false, objectKey: undefined };
          let objectKey: string | undefined;
          const lastReference = gone.others !== true;
          if (lastReference) {
            // Step 1 of the two-step removal: the rows go and the original is recorded, in this transaction.
            const [img] = await tx.query<{ object_key: string | null }>(
              `WITH tomb AS (
                 INSERT INTO object_deletions (object_key, sha256)
                 SELECT object_key, sha256 FROM images WHERE sha256 = $1 AND object_key IS NOT NULL
                 ON CONFLICT (object_key) DO NOTHING)
               DELETE FROM images WHERE sha256 = $1 RETURNING object_key`,
              [sha256],
            );
            objectKey = img?.object_key ?? undefined;
          }
          if (event !== undefined) {
            const e = event(lastReference);
            await tx.query(`INSERT INTO outbox (event_id, topic, key, payload, headers) VALUES ($1, $2, $3, $4::bytea, $5::jsonb)`, [
              e.eventId,
              e.topic,
              e.key,
              Buffer.from(e.payload.buffer, e.payload.byteOffset, e.payload.byteLength),
              JSON.stringify(e.headers),
            ]);
          }
          return { found: true, lastReference, objectKey };
        }),
      ),
    save: (result, saveOptions) => save({ result, options: saveOptions }),
  };
}

/**
 * Runs a lookup statement again when it lost a race with the last tenant's
 * erasure of an image: the statement saw the answer, the erasure removed the
 * image row before the reference insert, and Postgres refused the reference
 * (foreign_key_violation, 23503). The second run no longer sees the answer,
 * so the image is a miss and is classified anew, instead of the whole lookup
 * group failing.
 */
async function retryOnForeignKeyRace<T>(run: () => Promise<T>, attempts = 3): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await run();
    } catch (err) {
      if (i >= attempts || (err as { code?: unknown } | null)?.code !== "23503") throw err;
    }
  }
}
