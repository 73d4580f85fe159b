import type { Config } from "../common/config.js";
import type { Logger } from "../common/logger.js";
import type { Metrics } from "../common/metrics.js";
import type { Closable } from "../common/shutdown.js";
import { createSqlFeedbackStore, type FeedbackStore } from "./store/feedback-store.js";
import { createMemoryStore, type MemoryStore } from "./store/memory-store.js";
import { migrate } from "./store/migrate.js";
import type { ResultStore } from "./store/result-store.js";
import { createSqlResultStore } from "./store/sql-result-store.js";
import { createPgliteClient, createPostgresClient, type SqlClient } from "./store/sql-client.js";

/** The stores a core works on, of the kind its configuration chose. */
export type CoreStorage = {
  readonly store: ResultStore;
  readonly feedback: FeedbackStore;
  readonly closables: readonly Closable[];
} & (
  | { readonly kind: "memory"; readonly db: undefined; readonly memory: MemoryStore }
  /** The SQL client serves the outbox, retention and stats too. */
  | { readonly kind: "postgres" | "pglite"; readonly db: SqlClient; readonly memory: undefined }
);

/** Opens Postgres, PGlite (migrated) or the memory store, as config.store.kind says. */
export async function openCoreStorage(config: Config, logger: Logger, metrics: Metrics): Promise<CoreStorage> {
  if (config.store.kind === "memory") {
    const memory = createMemoryStore({ maxImages: config.store.memoryMaxImages });
    logger.info({ database: "memory", maxImages: config.store.memoryMaxImages }, "answers held in memory (no DATA_DIR or DATABASE_URL): nothing is kept across restarts");
    return { kind: "memory", store: memory.results, feedback: memory.feedback, db: undefined, memory, closables: [] };
  }
  const db: SqlClient =
    config.store.kind === "postgres"
      ? createPostgresClient({ url: config.store.databaseUrl!, poolMax: config.store.poolMax, statementTimeoutMs: config.store.statementTimeoutMs })
      : await createPgliteClient({ dataDir: config.store.dataDir === undefined ? undefined : `${config.store.dataDir}/pglite` });
  const closables: Closable[] = [{ name: `database (${db.kind})`, close: () => db.close() }];
  try {
    const migrated = await migrate(db);
    logger.info({ database: db.kind, ...migrated }, "database schema ready");
  } catch (err) {
    await db.close().catch(() => undefined);
    throw err;
  }
  const store = createSqlResultStore(db, {
    onQuery: (op, seconds, failed) => {
      metrics.dbQueryDuration.observe({ op }, seconds);
      if (failed) metrics.dbErrors.inc({ op });
    },
  });
  return { kind: db.kind, store, feedback: createSqlFeedbackStore(db), db, memory: undefined, closables };
}
