import { mkdir } from "node:fs/promises";
import type { PGlite } from "@electric-sql/pglite";
import pg from "pg";
import { unavailable } from "../../common/errors.js";

/** A row-returning SQL statement runner: the Postgres port. */
export interface SqlExecutor {
  query<R extends object>(text: string, params?: readonly unknown[]): Promise<R[]>;
  /** Runs a script of several statements (migrations). */
  exec(script: string): Promise<void>;
}

/** The Postgres port: statements, transactions, a pinned session for locks, pool facts. */
export interface SqlClient extends SqlExecutor {
  readonly kind: "postgres" | "pglite";
  transaction<T>(fn: (tx: SqlExecutor) => Promise<T>): Promise<T>;
  /** Runs fn on one connection (advisory locks are per session). */
  session<T>(fn: (s: SqlExecutor) => Promise<T>): Promise<T>;
  poolStats(): { total: number; idle: number; waiting: number };
  close(): Promise<void>;
}

/** Connection failures and timeouts are the database being unavailable; anything else is a bug. */
function mapError(err: unknown): unknown {
  const code = (err as { code?: unknown }).code;
  const message = err instanceof Error ? err.message : String(err);
  if (
    (typeof code === "string" && (code.startsWith("08") || code === "57P01" || code === "57P03" || code === "57014" || code === "ECONNREFUSED" || code === "ECONNRESET" || code === "ETIMEDOUT")) ||
    /Connection terminated|timeout exceeded|connect ECONNREFUSED|Client has encountered a connection error/i.test(message)
  ) {
    return unavailable(`database unavailable: ${message}`, err);
  }
  return err;
}

async function mapped<T>(p: Promise<T>): Promise<T> {
  try {
    return await p;
  } catch (err) {
    throw mapError(err);
  }
}

/** A pg Pool: bounded size, statement and connect timeouts. */
export function createPostgresClient(options: { url: string; poolMax: number; statementTimeoutMs: number }): SqlClient {
  const pool = new pg.Pool({
    connectionString: options.url,
    max: options.poolMax,
    connectionTimeoutMillis: 3_000,
    idleTimeoutMillis: 30_000,
    statement_timeout: options.statementTimeoutMs,
    query_timeout: options.statementTimeoutMs + 1_000,
    application_name: "categorize",
  });
  // An idle client losing its connection must not crash the process; the next query reconnects.
  pool.on("error", () => undefined);
  const executor = (c: pg.Pool | pg.PoolClient): SqlExecutor => ({
    async query<R extends object>(text: string, params: readonly unknown[] = []) {
      const res = await mapped(c.query(text, params as unknown[]));
      return res.rows as R[];
    },
    async exec(script: string) {
      await mapped(c.query(script));
    },
  });
  const withClient = async <T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> => {
    const client = await mapped(pool.connect());
    let broken: Error | undefined;
    // The pool stops listening while a client is checked out: a server that goes away
    // (57P01 on shutdown) would otherwise be an unhandled 'error' that ends the process.
    const onError = (err: Error) => {
      broken = err;
    };
    client.on("error", onError);
    try {
      return await fn(client);
    } catch (err) {
      if (mapError(err) !== err) broken = err as Error;
      throw err;
    } finally {
      client.off("error", onError);
      client.release(broken);
    }
  };
  return {
    kind: "postgres",
    ...executor(pool),
    transaction: (fn) =>
      withClient(async (client) => {
        await mapped(client.query("BEGIN"));
        try {
          const result = await fn(executor(client));
          await mapped(client.query("COMMIT"));
          return result;
        } catch (err) {
          await client.query("ROLLBACK").catch(() => undefined);
          throw err;
        }
      }),
    session: (fn) => withClient((client) => fn(executor(client))),
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    close: () => pool.end(),
  };
}

/**
 * PGlite: the same PostgreSQL (compiled to WebAssembly) inside the process,
 * so the embedded default runs the very same SQL and migrations. In memory
 * unless a data directory is given.
 */
export async function createPgliteClient(options: { dataDir?: string | undefined }): Promise<SqlClient> {
  // PGlite creates only the last folder of the path; a fresh DATA_DIR must not fail the start.
  if (options.dataDir !== undefined) await mkdir(options.dataDir, { recursive: true });
  // Loaded only here: a core on Postgres never pays for PGlite's module.
  const { PGlite: Engine } = await import("@electric-sql/pglite");
  const db = await Engine.create(options.dataDir === undefined ? undefined : { dataDir: options.dataDir });
  const executor = (c: Pick<PGlite, "query" | "exec">): SqlExecutor => ({
    async query<R extends object>(text: string, params: readonly unknown[] = []) {
      return (await c.query<R>(text, params as unknown[])).rows;
    },
    async exec(script: string) {
      await c.exec(script);
    },
  });
  return {
    kind: "pglite",
    ...executor(db),
    transaction: (fn) => db.transaction((tx) => fn(executor(tx))),
    // PGlite is one session already.
    session: (fn) => fn(executor(db)),
    poolStats: () => ({ total: 1, idle: 1, waiting: 0 }),
    close: () => db.close(),
  };
}
