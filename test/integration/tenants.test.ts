import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CategorizeService } from "../../gen/categorize/v1/categorize_pb.js";
import { ImageClassifiedSchema, ImageDeletedSchema } from "../../gen/categorize/v1/events_pb.js";
import type { RunningNode } from "../../cli/start-node.js";
import { createLogger } from "../../common/logger.js";
import { createMetrics } from "../../common/metrics.js";
import { TOPICS } from "../../common/kafka.js";
import { originalKey } from "../../common/object-store.js";
import { hashApiKey } from "../../common/server/access-control.js";
import { createRetention } from "../../core/retention.js";
import { migrate } from "../../core/store/migrate.js";
import { createPostgresClient, type SqlClient } from "../../core/store/sql-client.js";
import { createSqlResultStore } from "../../core/store/sql-result-store.js";
import { readImage } from "../support/fixtures.js";
import { makeVariants } from "../support/image-variants.js";
import { startTestNode } from "../support/nodes.js";
import { dataServices, isolatedEnv, s3Store, sql, topicReader, waitUntil } from "../support/services.js";
import { closeAll } from "../support/teardown.js";

const available = dataServices();
const skip = available.skip === false ? false : available.skip;
const base = available.skip === false ? available.env : {};
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");
const KEYS = { a: "ck_tenants_a_0123456789", b: "ck_tenants_b_0123456789" };
const SCOPES = "classify|read-results|feedback|delete";

function client(url: string, token: string) {
  return createClient(CategorizeService, createGrpcTransport({ baseUrl: url, interceptors: [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))] }));
}
const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => "OK",
    (e: unknown) => String((e as { code?: unknown }).code),
  );

describe("tenants against real Postgres, MinIO and Kafka", { skip, timeout: 300_000 }, () => {
  let env: Record<string, string>;
  let core: RunningNode;
  let edge: RunningNode;
  let db: SqlClient;
  let deleted: Awaited<ReturnType<typeof topicReader<typeof ImageDeletedSchema>>>;
  let classified: Awaited<ReturnType<typeof topicReader<typeof ImageClassifiedSchema>>>;
  const batches = () => core.metrics.batchSize.get().then((m) => m.values.find((v) => v.metricName === "categorize_batch_size_count")?.value ?? 0);
  const count = async (table: string, hash: string) => Number((await sql<{ n: string }>(env, `SELECT count(*) AS n FROM ${table} WHERE sha256 = $1`, [hash]))[0]!.n);

  before(async () => {
    env = await isolatedEnv(base, "tenants");
    deleted = await topicReader(env.KAFKA_BROKERS!, TOPICS.imageDeleted, ImageDeletedSchema);
    classified = await topicReader(env.KAFKA_BROKERS!, TOPICS.imageClassified, ImageClassifiedSchema);
    // No job consumer: the batch count must be this test's inferences only (the job topic is shared with other runs).
    core = await startTestNode("core", { ...env, OUTBOX_POLL_MS: "50", ASYNC_CONSUMER: "false" });
    edge = await startTestNode("edge", { ...env, CORE_URLS: core.url, API_KEYS: [`svc-a:tenant-a:${hashApiKey(KEYS.a)}:${SCOPES}`, `svc-b:tenant-b:${hashApiKey(KEYS.b)}:${SCOPES}`].join(",") });
    db = createPostgresClient({ url: env.DATABASE_URL!, poolMax: 2, statementTimeoutMs: 10_000 });
    await migrate(db);
  });
  after(() =>
    closeAll(
      () => edge?.stop(),
      () => core?.stop(),
      () => db?.close(),
      () => deleted?.close(),
      () => classified?.close(),
    ),
  );

  it("shares one inference, keeps what each tenant sees its own, and erases the image with its last reference", async () => {
    const a = client(edge.url, KEYS.a);
    const b = client(edge.url, KEYS.b);
    const image = readImage("bald_eagle.jpeg");
    const hash = sha(image);
    const key = originalKey(hash, "image/jpeg");
    const objects = s3Store(env);

    const fromA = await a.classify({ image });
    const afterA = await batches();
    const fromB = await b.classify({ image });
    assert.equal(fromA.cached, false);
    assert.equal(fromB.cached, false, "B's first call is not cached although A's answer is stored");
    assert.equal((await b.classify({ image })).cached, true);
    assert.ok(fromA.timings!.batchSize >= 1, "A's call ran the model");
    assert.equal(await batches(), afterA, "B's calls ran no inference: one inference for both tenants");
    assert.equal(await count("classifications", hash), 1);
    assert.deepEqual((await sql<{ tenant: string }>(env, "SELECT tenant FROM image_refs WHERE sha256 = $1 ORDER BY tenant", [hash])).map((r) => r.tenant), ["tenant-a", "tenant-b"]);
    const event = (await classified.waitFor((all) => all.some((m) => m.key === hash))).filter((m) => m.key === hash);
    assert.equal(event.length, 1, "one ImageClassified event");
    assert.equal(event[0]!.value.tenant, "tenant-a", "the event carries the tenant whose request produced the answer");

    // Feedback is per tenant: A's verdict is A's.
    const other = readImage("coffee.png");
    const otherHash = (await a.classify({ image: other })).sha256;
    assert.equal(await codeOf(a.submitFeedback({ sha256: otherHash, trueClass: 967 })), "OK");
    assert.equal(await codeOf(b.getResult({ sha256: otherHash })), "5", "NOT_FOUND for B");
    assert.equal(await codeOf(b.submitFeedback({ sha256: otherHash, trueClass: 1 })), "5");
    assert.equal(await codeOf(a.submitFeedback({ sha256: hash, trueClass: 22 })), "OK");
    assert.equal(await codeOf(b.submitFeedback({ sha256: hash, trueClass: 22 })), "OK");
    const fb = await sql<{ tenant: string }>(env, "SELECT tenant FROM feedback WHERE sha256 = $1 ORDER BY tenant", [hash]);
    assert.deepEqual(fb.map((r) => r.tenant), ["tenant-a", "tenant-b"]);
    const quality = (await core.core!.feedback.quality()).byTenant;
    assert.deepEqual(quality.map((q) => [q.tenant, q.samples]), [["tenant-a", 2], ["tenant-b", 1]], "the admin view: every tenant's figures, labelled");
    assert.equal((await core.core!.feedback.quality({ tenant: "tenant-b" })).samples, 1);

    // A deletes: its view goes at once (edge cache included), B's answer is untouched.
    await a.deleteImage({ sha256: hash });
    assert.equal(await codeOf(a.getResult({ sha256: hash })), "5");
    assert.equal((await b.getResult({ sha256: hash })).labels[0]!.index, 22);
    assert.equal(await count("image_refs", hash), 1);
    assert.deepEqual((await sql<{ tenant: string }>(env, "SELECT tenant FROM feedback WHERE sha256 = $1", [hash])).map((r) => r.tenant), ["tenant-b"], "A's feedback went with its reference");
    assert.equal(await objects.exists(key), true, "B still references the original");

    // B deletes too: the original and every row go.
    await b.deleteImage({ sha256: hash });
    assert.equal(await codeOf(b.getResult({ sha256: hash })), "5");
    for (const table of ["images", "classifications", "image_refs", "feedback", "object_deletions"]) assert.equal(await count(table, hash), 0, `no ${table} row left`);
    assert.equal(await objects.exists(key), false, "the original is gone from object storage");
    const events = (await deleted.waitFor((all) => all.filter((m) => m.key === hash).length >= 2)).filter((m) => m.key === hash);
    assert.deepEqual(events.map((m) => [m.value.tenant, m.value.lastReference]).sort(), [["tenant-a", false], ["tenant-b", true]]);
    await waitUntil("the outbox drains", async () => Number((await sql<{ n: string }>(env, "SELECT count(*) AS n FROM outbox"))[0]!.n) === 0);

    // Sent again, it is classified again, a first call for A.
    assert.equal((await a.classify({ image })).cached, false);
  });

  it("completes an erasure interrupted between its two steps on the next retention run", async () => {
    const [image] = await makeVariants(1, { width: 321 });
    const a = client(edge.url, KEYS.a);
    const res = await a.classify({ image: image! });
    const key = originalKey(res.sha256, res.image!.mime);
    const objects = s3Store(env);
    assert.equal(await objects.exists(key), true);
    // Step 1 only, as a core that crashed right after the erasure's transaction committed.
    const step1 = await createSqlResultStore(db).forget(res.sha256, "tenant-a", { event: undefined });
    assert.deepEqual([step1.found, step1.lastReference, step1.objectKey], [true, true, key]);
    assert.equal(await count("images", res.sha256), 0);
    assert.equal(await count("object_deletions", res.sha256), 1, "the original is recorded for removal");
    assert.equal(await objects.exists(key), true, "not removed yet");

    const retention = createRetention({
      db,
      objects,
      days: 30,
      batch: 100,
      intervalMs: 3_600_000,
      orphanGraceMs: 3_600_000,
      logger: createLogger({ level: "silent", service: "test", nodeId: "test" }),
      metrics: createMetrics(),
    });
    await waitUntil("a retention pass ran", async () => (await retention.runOnce()).ran);
    assert.equal(await objects.exists(key), false, "the next retention run removed the original");
    assert.equal(await count("object_deletions", res.sha256), 0);
  });
});
