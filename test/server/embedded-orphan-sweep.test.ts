import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { createLogger } from "../../common/logger.js";
import { createMetrics } from "../../common/metrics.js";
import { createFilesystemObjectStore, originalKey, type ObjectStore } from "../../common/object-store.js";
import { createRetention } from "../../core/retention.js";
import { migrate } from "../../core/store/migrate.js";
import { createPgliteClient, type SqlClient } from "../../core/store/sql-client.js";
import { closeAll } from "../support/teardown.js";

describe("orphan sweep of the embedded store (PGlite and files)", () => {
  let dir: string;
  let db: SqlClient;
  let objects: ObjectStore;
  const retention = (orphanGraceMs: number) =>
    createRetention({ db, objects, days: 30, batch: 100, intervalMs: 3_600_000, orphanGraceMs, logger: createLogger({ level: "silent", service: "test", nodeId: "test" }), metrics: createMetrics() });
  const put = async () => {
    const sha256 = createHash("sha256").update(randomBytes(16)).digest("hex");
    const key = originalKey(sha256, "image/png");
    await objects.put(key, randomBytes(32), "image/png");
    return { sha256, key };
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "categorize-orphans-"));
    objects = createFilesystemObjectStore(dir);
    db = await createPgliteClient({ dataDir: undefined });
    await migrate(db);
  });
  after(() =>
    closeAll(
      () => db?.close(),
      () => rm(dir, { recursive: true, force: true }),
    ),
  );

  it("removes originals without a row past the grace and keeps referenced and young ones", async () => {
    const orphan = await put();
    const held = await put();
    await db.query("INSERT INTO images (sha256, size_bytes, mime, width, height, object_key) VALUES ($1, 32, 'image/png', 4, 4, $2)", [held.sha256, held.key]);
    const young = await retention(3_600_000).runOnce();
    assert.equal(young.orphansRemoved, 0, "both are inside the grace");
    assert.equal(await objects.exists(orphan.key), true);
    const due = await retention(0).runOnce();
    assert.equal(due.ran, true);
    assert.equal(due.orphansRemoved, 1);
    assert.equal(await objects.exists(orphan.key), false);
    assert.equal(await objects.exists(held.key), true, "a row references it");
  });
});
