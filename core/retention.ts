import type { Logger } from "../common/logger.js";
import { sleep } from "../common/sleep.js";
import type { Metrics } from "../common/metrics.js";
import { originalSha256, type ObjectStore } from "../common/object-store.js";
import type { SqlClient } from "./store/sql-client.js";

// Any fixed number: only one node runs the cleanup at a time.
const RETENTION_LOCK = 7_240_002;
const ORIGINALS_PREFIX = "originals/";
// Listing pages the orphan sweep reads per pass (each of `batch` keys).
const ORPHAN_PAGES_PER_RUN = 4;

export interface RetentionResult {
  readonly ran: boolean;
  readonly rowsRemoved: number;
  readonly objectsRemoved: number;
  /** Originals that no row referenced, removed by the orphan sweep. */
  readonly orphansRemoved: number;
}

export interface Retention {
  /** One cleanup pass; ran=false when another node holds the lock. */
  runOnce(options?: { stopAfterRows?: boolean; signal?: AbortSignal }): Promise<RetentionResult>;
  start(signal: AbortSignal): void;
}

/**
 * Step 2 of the two-step removal for one recorded original: under the
 * image's exclusive advisory lock (shared with the save path), removes the
 * object unless a row references it again, then its object_deletions record.
 * Retention runs it for every record; an erasure runs it at once for its own
 * (a crash before it leaves the record for the next retention run).
 */
export async function removeRecordedObject(db: SqlClient, objects: ObjectStore, record: { objectKey: string; sha256: string }): Promise<boolean> {
  return db.transaction(async (tx) => {
    await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [record.sha256]);
    const back = await tx.query(`SELECT 1 FROM images WHERE object_key = $1`, [record.objectKey]);
    if (back.length === 0) await objects.remove(record.objectKey);
    await tx.query(`DELETE FROM object_deletions WHERE object_key = $1`, [record.objectKey]);
    return back.length === 0;
  });
}

/**
 * Removes tenant references not seen for `days` (with that tenant's
 * feedback), then images no tenant references any more, rows and objects
 * together, crash-safe:
 * step 1 deletes the rows and records each object key in object_deletions in
 * the same transaction; step 2 deletes each recorded object, then its record.
 * An interrupted run leaves records that the next run completes, so no row
 * ever points at a missing object and no object is orphaned. Step 2 re-checks,
 * under a per-image advisory lock shared with the save path, that the image
 * was not stored again meanwhile.
 *
 * Step 3 sweeps orphans: an edge uploads an original before inference, so a
 * request that is then refused or fails (full queue, deadline, an outage, a
 * failed save) leaves an object that no row ever points at, which steps 1
 * and 2 never see. The sweep lists `originals/` a few pages per pass from a
 * cursor kept in memory (it wraps to the start at the end of the listing)
 * and removes each object older than `orphanGraceMs` that no `images` row
 * references, re-checking under the same per-image lock. The grace covers
 * uploads whose request is still on its way to the save; the save path
 * re-checks that its object exists under that lock, so it never stores a row
 * for an object the sweep removed.
 */
export function createRetention(options: {
  db: SqlClient;
  objects: ObjectStore;
  days: number;
  batch: number;
  intervalMs: number;
  /** Originals without a row younger than this are kept. */
  orphanGraceMs: number;
  logger: Logger;
  metrics: Metrics;
}): Retention {
  const { db, objects, logger, metrics } = options;
  /** Where the orphan sweep goes on; undefined: from the start of the listing. */
  let orphanCursor: string | undefined;

  /** Retention applies per tenant reference: a reference not seen for `days` goes, with its tenant's feedback on the image. */
  async function removeRefs(): Promise<void> {
    for (;;) {
      const removed = await db.transaction(async (tx) => {
        const rows = await tx.query<{ sha256: string }>(
          `WITH expired AS (
             SELECT tenant, sha256 FROM image_refs
              WHERE last_seen < now() - make_interval(secs => $1::double precision)
              ORDER BY last_seen LIMIT $2 FOR UPDATE SKIP LOCKED),
           fb AS (DELETE FROM feedback f USING expired e WHERE f.tenant = e.tenant AND f.sha256 = e.sha256)
           DELETE FROM image_refs r USING expired e WHERE r.tenant = e.tenant AND r.sha256 = e.sha256 RETURNING r.sha256`,
          [options.days * 86_400, options.batch],
        );
        return rows.length;
      });
      if (removed < options.batch) return;
    }
  }

  async function removeRows(): Promise<number> {
    await removeRefs();
    let total = 0;
    for (;;) {
      const removed = await db.transaction(async (tx) => {
        const rows = await tx.query<{ sha256: string }>(
          `WITH expired AS (
             SELECT sha256, object_key FROM images
              WHERE last_seen < now() - make_interval(secs => $1::double precision)
                AND NOT EXISTS (SELECT 1 FROM image_refs r WHERE r.sha256 = images.sha256)
              ORDER BY last_seen LIMIT $2 FOR UPDATE SKIP LOCKED),
           tomb AS (
             INSERT INTO object_deletions (object_key, sha256)
             SELECT object_key, sha256 FROM expired WHERE object_key IS NOT NULL
             ON CONFLICT (object_key) DO NOTHING)
           DELETE FROM images WHERE sha256 IN (SELECT sha256 FROM expired) RETURNING sha256`,
          [options.days * 86_400, options.batch],
        );
        return rows.length;
      });
      total += removed;
      if (removed < options.batch) return total;
    }
  }

  async function removeObjects(): Promise<number> {
    let total = 0;
    const pending = await db.query<{ object_key: string; sha256: string }>(`SELECT object_key, sha256 FROM object_deletions ORDER BY created_at`);
    for (const p of pending) if (await removeRecordedObject(db, objects, { objectKey: p.object_key, sha256: p.sha256 })) total++;
    return total;
  }

  /** Removes the objects of one listing page that are past the grace and that no row references. */
  async function removeOrphansOf(page: readonly { key: string; lastModified: Date }[]): Promise<number> {
    const cutoff = Date.now() - options.orphanGraceMs;
    const candidates: { key: string; sha256: string }[] = [];
    for (const o of page) {
      const sha256 = originalSha256(o.key);
      // Keys that do not name an image are not ours to judge.
      if (sha256 !== undefined && o.lastModified.getTime() <= cutoff) candidates.push({ key: o.key, sha256 });
    }
    if (candidates.length === 0) return 0;
    // Keys are content-addressed, so the row that references a key is the one of its sha256 (looked up by primary key).
    const rows = await db.query<{ object_key: string }>(`SELECT object_key FROM images WHERE sha256 = ANY($1::text[]) AND object_key IS NOT NULL`, [candidates.map((c) => c.sha256)]);
    const referenced = new Set(rows.map((r) => r.object_key));
    let total = 0;
    for (const c of candidates) {
      if (referenced.has(c.key)) continue;
      const deleted = await db.transaction(async (tx) => {
        // Exclusive against the save path's shared lock: a row being written for this image waits, then finds its object gone.
        await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [c.sha256]);
        const back = await tx.query(`SELECT 1 FROM images WHERE sha256 = $1 AND object_key = $2`, [c.sha256, c.key]);
        if (back.length > 0) return false;
        await objects.remove(c.key);
        return true;
      });
      if (deleted) total++;
    }
    return total;
  }

  async function removeOrphans(signal: AbortSignal | undefined): Promise<number> {
    let total = 0;
    for (let pages = 0; pages < ORPHAN_PAGES_PER_RUN && signal?.aborted !== true; pages++) {
      const page = await objects.listPage(ORIGINALS_PREFIX, { startAfter: orphanCursor, limit: options.batch, signal });
      total += await removeOrphansOf(page);
      // Advanced only once the page is done; a short page is the end of the listing.
      orphanCursor = page.length < options.batch ? undefined : page.at(-1)!.key;
      if (orphanCursor === undefined) break;
    }
    return total;
  }

  async function runOnce(opts: { stopAfterRows?: boolean; signal?: AbortSignal } = {}): Promise<RetentionResult> {
    return db.session(async (s) => {
      const [lock] = await s.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock($1) AS ok`, [RETENTION_LOCK]);
      if (lock?.ok !== true) return { ran: false, rowsRemoved: 0, objectsRemoved: 0, orphansRemoved: 0 };
      try {
        const rowsRemoved = await removeRows();
        metrics.retentionRemoved.inc({ kind: "rows" }, rowsRemoved);
        // For tests of an interrupted run: the records stay for the next pass.
        if (opts.stopAfterRows === true) return { ran: true, rowsRemoved, objectsRemoved: 0, orphansRemoved: 0 };
        const objectsRemoved = await removeObjects();
        metrics.retentionRemoved.inc({ kind: "objects" }, objectsRemoved);
        const orphansRemoved = await removeOrphans(opts.signal);
        metrics.retentionRemoved.inc({ kind: "orphans" }, orphansRemoved);
        if (rowsRemoved + objectsRemoved + orphansRemoved > 0) logger.info({ rowsRemoved, objectsRemoved, orphansRemoved }, "retention cleanup");
        return { ran: true, rowsRemoved, objectsRemoved, orphansRemoved };
      } finally {
        await s.query(`SELECT pg_advisory_unlock($1)`, [RETENTION_LOCK]);
      }
    });
  }

  return {
    runOnce,
    start(signal) {
      const tick = async () => {
        while (!signal.aborted) {
          await runOnce({ signal }).catch((err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, "retention cleanup failed; will retry"));
          await sleep(options.intervalMs, signal);
        }
      };
      void tick();
    },
  };
}
