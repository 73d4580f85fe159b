import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createLogger } from "../../common/logger.js";
import { createMetrics } from "../../common/metrics.js";
import { originalKey, type ObjectStore } from "../../common/object-store.js";
import type { RunningNode } from "../../cli/start-node.js";
import { createRetention, type RetentionResult } from "../../core/retention.js";
import { migrate } from "../../core/store/migrate.js";
import { createPostgresClient, type SqlClient } from "../../core/store/sql-client.js";
import { categorizeClient } from "../support/clients.js";
import { makeVariants } from "../support/image-variants.js";
import { startTestNode } from "../support/nodes.js";
import { checkListPageContract } from "../support/object-listing.js";
import { dataServices, isolatedEnv, s3Store, sql, waitUntil } from "../support/services.js";
import { closeAll } from "../support/teardown.js";

const available = dataServices();
const skip = available.skip === false ? false : available.skip;
const base = available.skip === false ? available.env : {};
const logger = createLogger({ level: "silent", service: "test", nodeId: "test" });
const HOUR = 3_600_000;

/** The store and database a core would use on an env's schema and bucket. */
async function attach(env: Record<string, string>) {
  const objects = s3Store(env);
  await objects.ensureReady();
  const db = createPostgresClient({ url: env.DATABASE_URL!, poolMax: 4, statementTimeoutMs: 10_000 });
  await migrate(db);
  return { env, objects, db };
}

/** A content-addressed original with made-up bytes; `sha256` chooses where it sorts. */
async function putOriginal(objects: ObjectStore, sha256 = createHash("sha256").update(randomBytes(16)).digest("hex")): Promise<{ sha256: string; key: string }> {
  const key = originalKey(sha256, "image/jpeg");
  await objects.put(key, randomBytes(64), "image/jpeg");
  return { sha256, key };
}

async function insertImageRow(env: Record<string, string>, sha256: string, key: string): Promise<void> {
  await sql(env, "INSERT INTO images (sha256, size_bytes, mime, width, height, object_key) VALUES ($1, 64, 'image/jpeg', 8, 8, $2)", [sha256, key]);
}

/**
 * One pass that did run: the cleanup lock is shared by every core on the
 * database (other tests' nodes included), so a pass that found it taken is
 * tried again.
 */
async function runPass(retention: ReturnType<typeof createRetention>): Promise<RetentionResult> {
  let result: RetentionResult | undefined;
  await waitUntil("the retention lock is free", async () => {
    result = await retention.runOnce();
    return result.ran;
  });
  return result!;
}

describe("orphaned originals against real Postgres and MinIO", { skip, timeout: 300_000 }, () => {
  const opened: SqlClient[] = [];
  /** An env's store and database, and retention passes over them with a chosen grace (and page size). */
  const sweeper = async (env: Record<string, string>) => {
    const s = await attach(env);
    opened.push(s.db);
    const metrics = createMetrics();
    const retention = (orphanGraceMs: number, batch = 100) => createRetention({ db: s.db, objects: s.objects, days: 30, batch, intervalMs: HOUR, orphanGraceMs, logger, metrics });
    return { ...s, env, metrics, retention };
  };
  /** A fresh schema and bucket. */
  const open = async (name: string) => sweeper(await isolatedEnv(base, name));
  after(() => closeAll(...opened.map((db) => () => db.close())));

  it("S3 listPage lists in key byte order, honouring startAfter and the limit", async () => {
    const { objects } = await open("listing");
    await checkListPageContract(objects);
  });

  it("removes an original that no row references once it is older than the grace, and counts it", async () => {
    const { objects, metrics, retention } = await open("orphan");
    const orphan = await putOriginal(objects);
    const result = await runPass(retention(0));
    assert.equal(result.orphansRemoved, 1);
    assert.equal(await objects.exists(orphan.key), false);
    const counted = (await metrics.retentionRemoved.get()).values.find((v) => v.labels.kind === "orphans");
    assert.equal(counted?.value, 1);
  });

  it("keeps an original that an images row references", async () => {
    const { env, objects, retention } = await open("kept");
    const held = await putOriginal(objects);
    await insertImageRow(env, held.sha256, held.key);
    const result = await runPass(retention(0));
    assert.equal(result.orphansRemoved, 0);
    assert.equal(await objects.exists(held.key), true);
  });

  it("keeps an orphan younger than the grace and removes it once the grace is shorter than its age", async () => {
    const { objects, retention } = await open("young");
    const young = await putOriginal(objects);
    assert.equal((await runPass(retention(HOUR))).orphansRemoved, 0);
    assert.equal(await objects.exists(young.key), true, "inside the grace");
    assert.equal((await runPass(retention(0))).orphansRemoved, 1);
    assert.equal(await objects.exists(young.key), false);
  });

  it("leaves objects that name no image alone", async () => {
    const { objects, retention } = await open("foreign");
    const keys = ["originals/ab/cd/readme.txt", `originals/00/11/${"ab".repeat(32)}.jpg`, "models/m.onnx"];
    for (const k of keys) await objects.put(k, new Uint8Array([1]), "application/octet-stream");
    assert.equal((await runPass(retention(0))).orphansRemoved, 0);
    for (const k of keys) assert.equal(await objects.exists(k), true, k);
  });

  it("reads a few pages per pass, resumes from where the last pass stopped and wraps to the start", async () => {
    const { env, objects, retention } = await open("cursor");
    const sha = (lead: string) => lead.padEnd(64, "0");
    // Four referenced originals sort first; one page of one key per listing page, four pages per pass.
    for (const lead of ["1", "2", "3", "4"]) {
      const r = await putOriginal(objects, sha(lead));
      await insertImageRow(env, r.sha256, r.key);
    }
    const late = [await putOriginal(objects, sha("5")), await putOriginal(objects, sha("6"))];
    const sweep = retention(0, 1);
    assert.equal((await runPass(sweep)).orphansRemoved, 0, "the first pass only reaches the four referenced originals");
    for (const o of late) assert.equal(await objects.exists(o.key), true);
    assert.equal((await runPass(sweep)).orphansRemoved, 2, "the second pass goes on after them");
    for (const o of late) assert.equal(await objects.exists(o.key), false);
    // The second pass reached the end; the next starts again at the beginning.
    const early = await putOriginal(objects, sha("0"));
    assert.equal((await runPass(sweep)).orphansRemoved, 1);
    assert.equal(await objects.exists(early.key), false);
    assert.equal((await objects.list("originals/")).length, 4, "the referenced originals stay");
  });

  describe("through the real request path", () => {
    let env: Record<string, string>;
    let core: RunningNode;
    let edge: RunningNode;

    before(async () => {
      env = await isolatedEnv(base, "failedsave");
      // No Kafka: events are not what this test is about.
      delete env.KAFKA_BROKERS;
      core = await startTestNode("core", env);
      edge = await startTestNode("edge", { ...env, CORE_URLS: core.url, CACHE_MAX_ENTRIES: "0" });
    });
    after(() =>
      closeAll(
        () => edge?.stop(),
        () => core?.stop(),
      ),
    );

    it("removes the original the edge uploaded for a request whose save then failed at the core", async () => {
      const [image] = await makeVariants(1, { width: 313 });
      const sha256 = createHash("sha256").update(image!).digest("hex");
      const key = originalKey(sha256, "image/jpeg");
      // The core's save of this one image fails (a constraint refuses its row); everything before it is the normal path.
      await sql(env, `ALTER TABLE images ADD CONSTRAINT refuse_one CHECK (sha256 <> '${sha256}') NOT VALID`);
      const client = categorizeClient(edge.url);
      await assert.rejects(client.classify({ image: image! }));
      await sql(env, "ALTER TABLE images DROP CONSTRAINT refuse_one");
      assert.equal((await sql(env, "SELECT 1 FROM images WHERE sha256 = $1", [sha256])).length, 0, "no row");

      const { objects, retention } = await sweeper(env);
      assert.equal(await objects.exists(key), true, "the edge stored the original before inference");
      assert.equal((await runPass(retention(HOUR))).orphansRemoved, 0, "kept inside the grace: the request might still be on its way");
      assert.equal((await runPass(retention(0))).orphansRemoved, 1);
      assert.equal(await objects.exists(key), false);

      // Sent again, the image is uploaded anew and stored with its row.
      const ok = await client.classify({ image: image! });
      assert.equal(ok.sha256, sha256);
      const [row] = await sql<{ object_key: string }>(env, "SELECT object_key FROM images WHERE sha256 = $1", [sha256]);
      assert.equal(row?.object_key, key);
      assert.equal(await objects.exists(key), true);
    });
  });
});
