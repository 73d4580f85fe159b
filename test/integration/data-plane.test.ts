import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { createHash } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { Kafka, logLevel } from "kafkajs";
import { DeadLetterSchema, ImageClassifiedSchema } from "../../gen/categorize/v1/events_pb.js";
import type { RunningNode } from "../../cli/start-node.js";
import { TOPICS } from "../../common/kafka.js";
import { originalKey } from "../../common/object-store.js";
import { categorizeClient } from "../support/clients.js";
import { readImage } from "../support/fixtures.js";
import { makeVariants } from "../support/image-variants.js";
import { startTestNode } from "../support/nodes.js";
import { dataServices, isolatedEnv, mayRestartServices, s3Store, services, sql, topicReader, waitUntil } from "../support/services.js";
import { closeAll } from "../support/teardown.js";

const available = dataServices();
const skip = available.skip === false ? false : available.skip;
const base = available.skip === false ? available.env : {};
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("data plane against real Postgres, MinIO and Kafka", { skip, timeout: 600_000 }, () => {
  describe("one edge and one core", () => {
    let env: Record<string, string>;
    let core: RunningNode;
    let edge: RunningNode;
    let events: Awaited<ReturnType<typeof topicReader<typeof ImageClassifiedSchema>>>;

    before(async () => {
      env = await isolatedEnv(base, "dedup");
      events = await topicReader(env.KAFKA_BROKERS!, TOPICS.imageClassified, ImageClassifiedSchema);
      core = await startTestNode("core", { ...env, OUTBOX_POLL_MS: "50" });
      edge = await startTestNode("edge", { ...env, CORE_URLS: core.url, CACHE_MAX_ENTRIES: "0" });
    });
    after(() =>
      closeAll(
        () => edge?.stop(),
        () => core?.stop(),
        () => events?.close(),
      ),
    );

    it("dedups by hash: the second call is cached, one row, one event, the original stored", async () => {
      const image = readImage("bald_eagle.jpeg");
      const hash = sha(image);
      const client = categorizeClient(edge.url);
      const first = await client.classify({ image });
      const second = await client.classify({ image });
      assert.equal(first.cached, false);
      assert.equal(second.cached, true, "answered from Postgres (the edge cache is off)");
      assert.deepEqual(second.labels.map((l) => l.index), first.labels.map((l) => l.index));
      const rows = await sql<{ n: string }>(env, "SELECT count(*) AS n FROM classifications WHERE sha256 = $1", [hash]);
      assert.equal(Number(rows[0]!.n), 1);
      const [img] = await sql<{ hit_count: string; object_key: string; mime: string; width: number }>(env, "SELECT hit_count, object_key, mime, width FROM images WHERE sha256 = $1", [hash]);
      assert.equal(Number(img!.hit_count), 1);
      assert.equal(img!.mime, "image/jpeg");
      assert.equal(img!.width, 800);
      assert.equal(img!.object_key, originalKey(hash, "image/jpeg"));
      const stored = await events.waitFor((all) => all.some((m) => m.key === hash));
      const mine = stored.filter((m) => m.key === hash);
      assert.equal(mine.length, 1, "exactly one event");
      assert.equal(mine[0]!.value.labels[0]!.index, 22);
      assert.ok(mine[0]!.headers["event-id"]);
      const outbox = await sql<{ n: string }>(env, "SELECT count(*) AS n FROM outbox");
      assert.equal(Number(outbox[0]!.n), 0, "published events leave the outbox");
    });

    it("runs an async job end to end: ClassifyAsync, then GetResult and the event", async () => {
      const [image] = await makeVariants(1, { width: 333 });
      const client = categorizeClient(edge.url);
      const accepted = await client.classifyAsync({ image: image!, requestId: "job-1" });
      assert.equal(accepted.alreadyClassified, false);
      assert.ok(accepted.jobId.length > 0);
      await waitUntil("the job result is stored", () =>
        client.getResult({ sha256: accepted.sha256 }).then(
          () => true,
          (err: unknown) => {
            if (ConnectError.from(err).code !== Code.NotFound) throw err;
            return false;
          },
        ),
      );
      await events.waitFor((all) => all.some((m) => m.key === accepted.sha256));
      const again = await client.classifyAsync({ image: image! });
      assert.equal(again.alreadyClassified, true);
      const bulk = await client.classifyAsyncBulk({ items: [{ image: image!, requestId: "a" }, { image: Buffer.from("junk"), requestId: "b" }] });
      assert.equal(bulk.items[0]!.outcome.case, "accepted");
      assert.equal(bulk.items[1]!.outcome.case, "error");
    });

    it("sends a poison job to the dead-letter topic and keeps consuming", async () => {
      const dead = await topicReader(env.KAFKA_BROKERS!, TOPICS.deadLetter, DeadLetterSchema);
      const key = `poison-${Date.now()}`;
      try {
        const kafka = new Kafka({ clientId: "poison", brokers: env.KAFKA_BROKERS!.split(","), logLevel: logLevel.NOTHING });
        const producer = kafka.producer();
        await producer.connect();
        try {
          await producer.send({ topic: TOPICS.classifyRequests, messages: [{ key, value: Buffer.from([0xff, 0xff, 0xff, 0x01]) }] });
        } finally {
          await producer.disconnect();
        }
        const got = await dead.waitFor((all) => all.some((m) => m.key === key));
        assert.match(got.find((m) => m.key === key)!.value.reason, /invalid/);
      } finally {
        await dead.close();
      }
      // The group moved past it: a good job after it still completes.
      const [image] = await makeVariants(1, { width: 345 });
      const accepted = await categorizeClient(edge.url).classifyAsync({ image: image! });
      await events.waitFor((all) => all.some((m) => m.key === accepted.sha256));
    });

    it("removes expired images with their objects, and an interrupted cleanup completes on the next run", async () => {
      const images = await makeVariants(3, { width: 301 });
      const client = categorizeClient(edge.url);
      const hashes = [];
      for (const image of images) hashes.push((await client.classify({ image })).sha256);
      const keys = hashes.map((h) => originalKey(h, "image/jpeg"));
      const objects = s3Store(env);
      for (const k of keys) assert.equal(await objects.exists(k), true);
      // Retention applies per tenant reference: the image expires with its last reference.
      await sql(env, "UPDATE images SET last_seen = now() - interval '400 days' WHERE sha256 = ANY($1)", [hashes]);
      await sql(env, "UPDATE image_refs SET last_seen = now() - interval '400 days' WHERE sha256 = ANY($1)", [hashes]);
      // Interrupted after the row step: rows are gone, objects wait in object_deletions.
      const partial = await core.core!.retention.runOnce({ stopAfterRows: true });
      assert.ok(partial.rowsRemoved >= 3);
      assert.equal(Number((await sql<{ n: string }>(env, "SELECT count(*) AS n FROM images WHERE sha256 = ANY($1)", [hashes]))[0]!.n), 0);
      assert.equal(Number((await sql<{ n: string }>(env, "SELECT count(*) AS n FROM classifications WHERE sha256 = ANY($1)", [hashes]))[0]!.n), 0);
      for (const k of keys) assert.equal(await objects.exists(k), true, "not yet deleted");
      const rest = await core.core!.retention.runOnce();
      assert.ok(rest.objectsRemoved >= 3);
      for (const k of keys) assert.equal(await objects.exists(k), false);
      assert.equal(Number((await sql<{ n: string }>(env, "SELECT count(*) AS n FROM object_deletions"))[0]!.n), 0);
      // Nothing dangles: every image row's object exists.
      for (const r of await sql<{ object_key: string }>(env, "SELECT object_key FROM images WHERE object_key IS NOT NULL")) {
        assert.equal(await objects.exists(r.object_key), true, r.object_key);
      }
    });
  });

  describe("two edges and two cores against the same services", () => {
    it("racing on the same new images produces one row and one event per image", async () => {
      const env = await isolatedEnv(base, "pair");
      const events = await topicReader(env.KAFKA_BROKERS!, TOPICS.imageClassified, ImageClassifiedSchema);
      // Filled as they start: a start that fails half way still stops the ones already up.
      const cores: RunningNode[] = [];
      const edges: RunningNode[] = [];
      try {
        for (const id of ["core-a", "core-b"]) cores.push(await startTestNode("core", { ...env, NODE_ID: id }));
        const urls = cores.map((c) => c.url).join(",");
        for (let i = 0; i < 2; i++) edges.push(await startTestNode("edge", { ...env, CORE_URLS: urls, CACHE_MAX_ENTRIES: "0" }));
        const images = await makeVariants(12, { width: 350 });
        const hashes = images.map(sha);
        // Every image goes to both edges at once, twice.
        const calls = images.flatMap((image) => [0, 1, 0, 1].map((e) => categorizeClient(edges[e]!.url).classify({ image })));
        const results = await Promise.all(calls);
        assert.equal(results.length, 48);
        const rows = await sql<{ sha256: string; n: string }>(env, "SELECT sha256, count(*) AS n FROM classifications GROUP BY sha256");
        assert.equal(rows.length, 12);
        assert.ok(rows.every((r) => Number(r.n) === 1));
        const seen = await events.waitFor((all) => hashes.every((h) => all.some((m) => m.key === h)));
        await new Promise((r) => setTimeout(r, 1000));
        const mine = events.messages().filter((m) => hashes.includes(m.key));
        assert.equal(mine.length, 12, `events: ${mine.length} for 12 images (${seen.length} seen in all)`);
        const served = new Set(results.map((r) => r.sha256));
        assert.equal(served.size, 12);
      } finally {
        await closeAll(...[...edges, ...cores].map((n) => () => n.stop()), () => events.close());
      }
    });
  });

  describe("faults of real services", { skip: mayRestartServices() ? false : "services were given from outside" }, () => {
    let env: Record<string, string>;
    let node: RunningNode;

    before(async () => {
      env = await isolatedEnv(base, "faults");
      node = await startTestNode("all", { ...env, CACHE_MAX_ENTRIES: "0", OUTBOX_POLL_MS: "50", READINESS_INTERVAL_MS: "200" });
    });
    after(() =>
      closeAll(
        () => node?.stop(),
        // Whatever happened, leave the services up for the next test.
        () => services("up"),
      ),
    );

    it("loses no event across a Kafka broker restart", async () => {
      const events = await topicReader(env.KAFKA_BROKERS!, TOPICS.imageClassified, ImageClassifiedSchema);
      try {
        const images = await makeVariants(10, { width: 310 });
        const hashes = images.map(sha);
        const client = categorizeClient(node.url);
        for (const image of images.slice(0, 3)) await client.classify({ image });
        await services("down", "kafka");
        // Classification goes on while the broker is down; events wait in the outbox.
        for (const image of images.slice(3)) await client.classify({ image });
        const backlog = Number((await sql<{ n: string }>(env, "SELECT count(*) AS n FROM outbox"))[0]!.n);
        assert.ok(backlog >= 1, `outbox holds the events while Kafka is down (${backlog})`);
        await services("up", "kafka");
        await events.waitFor((all) => hashes.every((h) => all.some((m) => m.key === h)), 120_000);
        const mine = events.messages().filter((m) => hashes.includes(m.key));
        assert.equal(new Set(mine.map((m) => m.key)).size, 10, "every event arrived");
        assert.ok(mine.length >= 10);
        await waitUntil("the outbox drains", async () => Number((await sql<{ n: string }>(env, "SELECT count(*) AS n FROM outbox"))[0]!.n) === 0, 60_000);
      } finally {
        await events.close().catch(() => undefined);
      }
    });

    it("answers UNAVAILABLE fast and goes not-ready while Postgres is down, and recovers by itself", async () => {
      const client = categorizeClient(node.url);
      const [image] = await makeVariants(1, { width: 322 });
      await services("down", "postgres");
      try {
        const started = Date.now();
        const code = await client.classify({ image: image! }, { timeoutMs: 20_000 }).then(
          () => 0,
          (err: unknown) => ConnectError.from(err).code,
        );
        assert.equal(code, Code.Unavailable);
        assert.ok(Date.now() - started < 10_000, "fails fast, not at the deadline");
        await waitUntil("readiness goes false", () => !node.readiness.isReady(), 10_000);
        assert.equal(node.readiness.snapshot().checks.database?.ok, false);
      } finally {
        await services("up", "postgres");
      }
      await waitUntil("readiness recovers", () => node.readiness.isReady(), 30_000);
      const ok = await client.classify({ image: image! });
      assert.ok(ok.labels.length > 0);
    });

    it("answers UNAVAILABLE while MinIO is down, writes no half record, and recovers", async () => {
      const client = categorizeClient(node.url);
      const [image] = await makeVariants(1, { width: 327 });
      const hash = sha(image!);
      await services("down", "minio");
      try {
        const code = await client.classify({ image: image! }, { timeoutMs: 30_000 }).then(
          () => 0,
          (err: unknown) => ConnectError.from(err).code,
        );
        assert.equal(code, Code.Unavailable);
        await waitUntil("readiness goes false", () => !node.readiness.isReady(), 10_000);
        const rows = await sql(env, "SELECT 1 FROM images WHERE sha256 = $1", [hash]);
        assert.equal(rows.length, 0, "no image row without its object");
      } finally {
        await services("up", "minio");
      }
      await waitUntil("readiness recovers", () => node.readiness.isReady(), 30_000);
      const ok = await client.classify({ image: image! });
      assert.equal(ok.sha256, hash);
    });
  });
});
