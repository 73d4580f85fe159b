import type { KafkaBus } from "../common/kafka.js";
import type { Logger } from "../common/logger.js";
import type { Metrics } from "../common/metrics.js";
import type { SqlClient } from "./store/sql-client.js";

interface OutboxRow {
  id: string | number;
  event_id: string;
  topic: string;
  key: string;
  payload: Uint8Array;
  headers: Record<string, string>;
}

/** Publishes outbox rows to Kafka. */
export interface OutboxRelay {
  start(signal: AbortSignal): void;
  /** Publishes one batch now; returns how many rows went out. */
  publishOnce(): Promise<number>;
  /** Wakes the loop (a new event was written). */
  kick(): void;
  /** Publishes what is left until empty or the signal aborts, then stops. */
  close(signal: AbortSignal): Promise<void>;
}

/**
 * The transactional outbox relay: rows are locked (SKIP LOCKED, so several
 * cores relay in parallel without sending a row twice), sent with the
 * idempotent producer, and deleted in the same transaction once Kafka
 * acknowledged them. A crash between ack and commit re-sends the rows:
 * at least once, with the same key and event id.
 */
export function createOutboxRelay(options: { db: SqlClient; bus: KafkaBus; pollMs: number; batch: number; logger: Logger; metrics: Metrics }): OutboxRelay {
  const { db, bus, logger, metrics } = options;
  let wake: (() => void) | undefined;
  let loop: Promise<void> | undefined;
  const stop = new AbortController();
  let lastStats = 0;

  async function publishOnce(): Promise<number> {
    return db.transaction(async (tx) => {
      const rows = await tx.query<OutboxRow>(
        `SELECT id, event_id, topic, key, payload, headers FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
        [options.batch],
      );
      if (rows.length === 0) return 0;
      const byTopic = new Map<string, OutboxRow[]>();
      for (const r of rows) byTopic.set(r.topic, [...(byTopic.get(r.topic) ?? []), r]);
      for (const [topic, list] of byTopic) {
        await bus.send(
          topic,
          list.map((r) => ({ key: r.key, value: r.payload, headers: { ...r.headers, "event-id": r.event_id } })),
        );
      }
      await tx.query(`DELETE FROM outbox WHERE id = ANY($1::bigint[])`, [rows.map((r) => String(r.id))]);
      return rows.length;
    });
  }

  async function updateStats(): Promise<void> {
    const [s] = await db.query<{ n: string | number; age: string | number | null }>(
      `SELECT count(*) AS n, EXTRACT(EPOCH FROM now() - min(created_at)) AS age FROM outbox`,
    );
    metrics.outboxBacklog.set(Number(s?.n ?? 0));
    metrics.outboxOldestAge.set(Number(s?.age ?? 0));
  }

  async function run(signal: AbortSignal): Promise<void> {
    let backoff = options.pollMs;
    while (!signal.aborted) {
      let sent = 0;
      try {
        sent = await publishOnce();
        backoff = options.pollMs;
      } catch (err) {
        logger.warn({ err: err instanceof Error ? err.message : String(err) }, "outbox relay: publish failed; will retry");
        backoff = Math.min(backoff * 2, 5_000);
      }
      if (Date.now() - lastStats > 1_000) {
        lastStats = Date.now();
        await updateStats().catch(() => undefined);
      }
      if (sent === options.batch) continue;
      await new Promise<void>((resolve) => {
        const done = () => {
          clearTimeout(t);
          signal.removeEventListener("abort", done);
          wake = undefined;
          resolve();
        };
        const t = setTimeout(done, backoff);
        wake = done;
        signal.addEventListener("abort", done, { once: true });
      });
    }
  }

  return {
    start(signal) {
      const s = AbortSignal.any([signal, stop.signal]);
      loop = run(s).catch((err: unknown) => logger.error({ err }, "outbox relay stopped"));
    },
    publishOnce,
    kick: () => wake?.(),
    async close(signal) {
      stop.abort();
      await loop;
      // Best effort: what is left stays in the table for the next start or another core.
      while (!signal.aborted) {
        const sent = await publishOnce().catch(() => 0);
        if (sent === 0) break;
      }
    },
  };
}
