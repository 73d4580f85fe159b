import type { Logger } from "../common/logger.js";
import { sleep } from "../common/sleep.js";
import type { Metrics } from "../common/metrics.js";
import type { ObjectStore } from "../common/object-store.js";
import type { SqlClient } from "./store/sql-client.js";

// Any fixed number: only one node runs the cleanup at a time.
const RETENTION_LOCK = 7_240_002;

export interface RetentionResult {
  readonly ran: boolean;
  readonly rowsRemoved: number;
  readonly objectsRemoved: number;
}

export interface Retention {
  /** One cleanup pass; ran=false when another node holds the lock. */
  runOnce(options?: { stopAfterRows?: boolean }): Promise<RetentionResult>;
  start(signal: AbortSignal): void;
}

/**
 * Removes images not seen for `days`, rows and objects together, crash-safe:
 * step 1 deletes the rows and records each object key in object_deletions in
 * the same transaction; step 2 deletes each recorded object, then its record.
 * An interrupted run leaves records that the next run completes, so no row
 * ever points at a missing object and no object is orphaned. Step 2 re-checks,
 * under a per-image advisory lock shared with the save path, that the image
 * was not stored again meanwhile.
 */
export function createRetention(options: { db: SqlClient; objects: ObjectStore; days: number; batch: number; intervalMs: number; logger: Logger; metrics: Metrics }): Retention {
  const { db, objects, logger, metrics } = options;

  async function removeRows(): Promise<number> {
    let total = 0;
    for (;;) {
      const removed = await db.transaction(async (tx) => {
        const rows = await tx.query<{ sha256: string }>(
          `WITH expired AS (
             SELECT sha256, object_key FROM images
              WHERE last_seen < now() - make_interval(secs => $1::double precision)
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
    for (const p of pending) {
      const deleted = await db.transaction(async (tx) => {
        await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1, 0))`, [p.sha256]);
        const back = await tx.query(`SELECT 1 FROM images WHERE object_key = $1`, [p.object_key]);
        if (back.length === 0) await objects.remove(p.object_key);
        await tx.query(`DELETE FROM object_deletions WHERE object_key = $1`, [p.object_key]);
        return back.length === 0;
      });
      if (deleted) total++;
    }
    return total;
  }

  async function runOnce(opts: { stopAfterRows?: boolean } = {}): Promise<RetentionResult> {
    return db.session(async (s) => {
      const [lock] = await s.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock($1) AS ok`, [RETENTION_LOCK]);
      if (lock?.ok !== true) return { ran: false, rowsRemoved: 0, objectsRemoved: 0 };
      try {
        const rowsRemoved = await removeRows();
        metrics.retentionRemoved.inc({ kind: "rows" }, rowsRemoved);
        // For tests of an interrupted run: the records stay for the next pass.
        if (opts.stopAfterRows === true) return { ran: true, rowsRemoved, objectsRemoved: 0 };
        const objectsRemoved = await removeObjects();
        metrics.retentionRemoved.inc({ kind: "objects" }, objectsRemoved);
        if (rowsRemoved + objectsRemoved > 0) logger.info({ rowsRemoved, objectsRemoved }, "retention cleanup");
        return { ran: true, rowsRemoved, objectsRemoved };
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
          await runOnce().catch((err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err) }, "retention cleanup failed; will retry"));
          await sleep(options.intervalMs, signal);
        }
      };
      void tick();
    },
  };
}
