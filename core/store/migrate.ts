import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import Postgrator from "postgrator";
import type { SqlClient } from "./sql-client.js";

const migrationsDir = join(dirname(fileURLToPath(import.meta.url)), "migrations");
// Any fixed number: every node takes the same advisory lock before migrating.
const MIGRATION_LOCK = 7_240_001;

/**
 * Brings the schema to the latest version, forward only. One session holds a
 * Postgres advisory lock for the whole run, so two nodes starting together
 * cannot race: the second waits, then finds nothing left to do.
 */
export async function migrate(client: SqlClient): Promise<{ from: number; to: number }> {
  return client.session(async (s) => {
    await s.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
    try {
      // The schema in effect (search_path may select another than public).
      const [schema] = await s.query<{ name: string }>("SELECT current_schema() AS name");
      const postgrator = new Postgrator({
        currentSchema: schema?.name ?? "public",
        migrationPattern: join(migrationsDir, "*.sql"),
        driver: "pg",
        schemaTable: "schema_migrations",
        validateChecksums: true,
        execQuery: async (query: string) => ({ rows: await s.query(query) }),
        execSqlScript: (script: string) => s.exec(script),
      });
      const from = Number(await postgrator.getDatabaseVersion());
      const applied = await postgrator.migrate();
      const last = applied.at(-1);
      return { from, to: last === undefined ? from : Number(last.version) };
    } finally {
      await s.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]);
    }
  });
}
