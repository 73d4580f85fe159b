import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import { Code } from "../../common/errors.js";
import type { FeedbackStore } from "../../core/store/feedback-store.js";
import { createSqlFeedbackStore } from "../../core/store/feedback-store.js";
import { createMemoryStore } from "../../core/store/memory-store.js";
import { migrate } from "../../core/store/migrate.js";
import type { ModelKey, OutboxEvent, ResultStore, StoredClassification } from "../../core/store/result-store.js";
import { createPgliteClient, createPostgresClient, type SqlClient } from "../../core/store/sql-client.js";
import { createSqlResultStore } from "../../core/store/sql-result-store.js";
import { dataServices, isolatedEnv } from "../support/services.js";

const model: ModelKey = { name: "m", version: "1", sha256: "a".repeat(64), source: "test" };
const other: ModelKey = { ...model, version: "2" };
let counter = 0;
const sha = () => createHash("sha256").update(`image ${process.pid} ${counter++}`).digest("hex");

function answer(sha256: string, top: number, m: ModelKey = model): StoredClassification {
  const scores = new Float32Array(10).fill(0.01);
  scores[top] = 0.91;
  return {
    sha256,
    model: m,
    scores,
    timings: { preprocessMs: 1, queueMs: 2, inferenceMs: 3, batchSize: 4 },
    image: { sha256, sizeBytes: 123, mime: "image/jpeg", width: 40, height: 30, objectKey: "" },
    createdAt: new Date(),
  };
}
const labels = (top: number) => [{ index: top, name: `c${top}`, score: 0.91 }];
const T = "tenant-a";
const U = "tenant-b";
const event = (s: StoredClassification): OutboxEvent => ({ eventId: `e-${s.sha256}`, topic: "t", key: s.sha256, payload: new Uint8Array([1, 2, 3]), headers: { h: "v" } });

interface Subject {
  readonly store: ResultStore;
  readonly feedback: FeedbackStore;
  /** Rows as SQL sees them (undefined for the memory store). */
  readonly db: SqlClient | undefined;
  close(): Promise<void>;
}

/** The same behaviour from every store the core can run on. */
function contract(name: string, open: () => Promise<Subject>): void {
  describe(`result store contract: ${name}`, () => {
    let s: Subject;
    before(async () => {
      s = await open();
      await s.store.registerModel(model);
    });
    after(() => s?.close());

    it("stores an answer once: concurrent saves of one image give one inserted answer and one event", async () => {
      const h = sha();
      const outs = await Promise.all([1, 2, 3].map(() => s.store.save(answer(h, 3), { topLabels: labels(3), tenant: T, requestId: "r", event: s.db === undefined ? undefined : event })));
      assert.equal(outs.filter((o) => o.inserted).length, 1);
      for (const o of outs) assert.equal(o.stored.sha256, h);
      if (s.db !== undefined) {
        const rows = await s.db.query<{ n: string | number }>(`SELECT count(*) AS n FROM outbox WHERE key = $1`, [h]);
        assert.equal(Number(rows[0]!.n), 1, "exactly one outbox event");
      }
    });

    it("answers a group of lookups: hits with their scores and image facts, misses as undefined, each hit counted", async () => {
      const [a, b, miss] = [sha(), sha(), sha()];
      await Promise.all([s.store.save(answer(a, 1), { topLabels: labels(1), tenant: T, requestId: "ra" }), s.store.save(answer(b, 2), { topLabels: labels(2), tenant: T, requestId: "rb" })]);
      const found = await Promise.all([s.store.find(a, model, T), s.store.find(b, model, T), s.store.find(miss, model, T), s.store.find(a, model, T), s.store.find(a, other, T)]);
      assert.equal(found[0]?.stored.scores[1]?.toFixed(2), "0.91");
      assert.equal(found[1]?.stored.scores[2]?.toFixed(2), "0.91");
      assert.equal(found[0]?.stored.image.width, 40);
      assert.equal(found[2], undefined);
      assert.equal(found[3]?.stored.sha256, a);
      assert.equal(found[4], undefined, "another model's answer is not a hit");
      if (s.db !== undefined) {
        const [row] = await s.db.query<{ hit_count: string | number }>(`SELECT hit_count FROM images WHERE sha256 = $1`, [a]);
        assert.equal(Number(row!.hit_count), 2, "two requests found it");
      }
    });

    it("fails only the item whose original vanished; the rest of its group commits", async () => {
      const [good, gone] = [sha(), sha()];
      const results = await Promise.allSettled([
        s.store.save(answer(good, 4), { topLabels: labels(4), tenant: T, requestId: "g", verifyObject: () => Promise.resolve(true) }),
        s.store.save(answer(gone, 5), { topLabels: labels(5), tenant: T, requestId: "x", verifyObject: () => Promise.resolve(false) }),
      ]);
      assert.equal(results[0].status, "fulfilled");
      assert.equal(results[1].status, "rejected");
      assert.equal(results[1].status === "rejected" ? (results[1].reason as { code?: unknown }).code : undefined, Code.Unavailable);
      assert.ok(await s.store.find(good, model, T));
      assert.equal(await s.store.find(gone, model, T), undefined);
    });

    it("keeps one answer per model and returns the latest of any model", async () => {
      const h = sha();
      await s.store.save(answer(h, 6), { topLabels: labels(6), tenant: T, requestId: "1" });
      await new Promise((r) => setTimeout(r, 5));
      await s.store.save(answer(h, 7, other), { topLabels: labels(7), tenant: T, requestId: "2" });
      assert.equal((await s.store.find(h, model, T))?.stored.scores[6]?.toFixed(2), "0.91");
      assert.equal((await s.store.findLatest(h, T))?.model.version, "2");
    });

    it("joins feedback to the model's top-1 answer, the latest feedback per image counting once", async () => {
      const [a, b] = [sha(), sha()];
      await s.store.save(answer(a, 8), { topLabels: labels(8), tenant: T, requestId: "a" });
      await s.store.save(answer(b, 9), { topLabels: labels(9), tenant: T, requestId: "b" });
      assert.equal(await s.feedback.predictedClass(a, model, T), 8);
      assert.equal(await s.feedback.predictedClass(sha(), model, T), undefined);
      await s.feedback.insert({ tenant: T, sha256: a, trueClass: 1, source: "t" });
      await new Promise((r) => setTimeout(r, 5));
      await s.feedback.insert({ tenant: T, sha256: a, trueClass: 8, source: "t" });
      await s.feedback.insert({ tenant: T, sha256: b, trueClass: 2, source: "t" });
      const rows = (await s.feedback.window(model, 1, T)).filter((r) => r.predicted === 8 || r.predicted === 9);
      assert.deepEqual(rows.sort((x, y) => x.predicted - y.predicted), [
        { tenant: T, truth: 8, predicted: 8 },
        { tenant: T, truth: 2, predicted: 9 },
      ]);
    });

    it("shares one answer between tenants; each tenant's reference is its own: cached only for its own repeats", async () => {
      const h = sha();
      const first = await s.store.save(answer(h, 3), { topLabels: labels(3), tenant: T, requestId: "a1" });
      assert.equal(first.seenBefore, false);
      assert.equal((await s.store.find(h, model, T))?.seenBefore, true, "A's repeat");
      // B in one group twice: the shared answer, its first time once.
      const b = await Promise.all([s.store.find(h, model, U), s.store.find(h, model, U)]);
      assert.deepEqual(b.map((x) => x?.seenBefore).sort(), [false, true]);
      assert.equal(b[0]?.stored.scores[3]?.toFixed(2), "0.91");
      assert.equal(await s.store.findLatest(h, "tenant-c"), undefined, "a tenant that never sent it does not find it");
      assert.equal(await s.feedback.predictedClass(h, model, "tenant-c"), undefined);
      // A save that lost to a stored answer still records the saving tenant's reference.
      const again = await s.store.save(answer(h, 3), { topLabels: labels(3), tenant: "tenant-d", requestId: "d1" });
      assert.deepEqual([again.inserted, again.seenBefore], [false, false]);
    });

    it("keeps feedback per tenant; the admin view labels every tenant's", async () => {
      const h = sha();
      await s.store.save(answer(h, 4), { topLabels: labels(4), tenant: "fb-a", requestId: "x" });
      await s.store.find(h, model, "fb-b");
      await s.feedback.insert({ tenant: "fb-a", sha256: h, trueClass: 4, source: "t" });
      await s.feedback.insert({ tenant: "fb-b", sha256: h, trueClass: 1, source: "t" });
      assert.deepEqual(await s.feedback.window(model, 1, "fb-a"), [{ tenant: "fb-a", truth: 4, predicted: 4 }]);
      assert.deepEqual(await s.feedback.window(model, 1, "fb-b"), [{ tenant: "fb-b", truth: 1, predicted: 4 }]);
      const all = (await s.feedback.window(model, 1)).filter((r) => r.tenant.startsWith("fb-"));
      assert.deepEqual(all.map((r) => r.tenant).sort(), ["fb-a", "fb-b"]);
    });

    it("forgets one tenant's reference and its feedback; the image goes with the last reference", async () => {
      const h = sha();
      const key = `originals/${h.slice(0, 2)}/${h.slice(2, 4)}/${h}.jpg`;
      const a = answer(h, 5);
      await s.store.save({ ...a, image: { ...a.image, objectKey: s.db === undefined ? "" : key } }, { topLabels: labels(5), tenant: "del-a", requestId: "a" });
      await s.store.find(h, model, "del-b");
      await s.feedback.insert({ tenant: "del-a", sha256: h, trueClass: 5, source: "t" });
      await s.feedback.insert({ tenant: "del-b", sha256: h, trueClass: 5, source: "t" });
      const ev = s.db === undefined ? undefined : (last: boolean): OutboxEvent => ({ eventId: `del-${h}-${last}`, topic: "d", key: h, payload: new Uint8Array([1]), headers: {} });
      assert.deepEqual(await s.store.forget(h, "del-a", { event: ev }), { found: true, lastReference: false, objectKey: undefined });
      assert.equal(await s.store.findLatest(h, "del-a"), undefined);
      assert.equal((await s.store.findLatest(h, "del-b"))?.sha256, h, "B's answer is untouched");
      assert.equal((await s.feedback.window(model, 1, "del-a")).length, 0);
      assert.equal((await s.feedback.window(model, 1, "del-b")).filter(() => true).length >= 1, true);
      assert.equal((await s.store.forget(h, "del-a", { event: ev })).found, false, "a second delete finds nothing");
      const last = await s.store.forget(h, "del-b", { event: ev });
      assert.deepEqual([last.found, last.lastReference, last.objectKey], [true, true, s.db === undefined ? undefined : key]);
      assert.equal(await s.store.find(h, model, "del-b"), undefined, "the shared answer went with the last reference");
      if (s.db !== undefined) {
        const n = async (sql: string) => Number((await s.db!.query<{ n: string | number }>(sql, [h]))[0]!.n);
        assert.equal(await n(`SELECT count(*) AS n FROM images WHERE sha256 = $1`), 0);
        assert.equal(await n(`SELECT count(*) AS n FROM image_refs WHERE sha256 = $1`), 0);
        assert.equal(await n(`SELECT count(*) AS n FROM feedback WHERE sha256 = $1`), 0);
        assert.equal(await n(`SELECT count(*) AS n FROM object_deletions WHERE sha256 = $1`), 1, "step 1 recorded the original");
        assert.equal(await n(`SELECT count(*) AS n FROM outbox WHERE key = $1 AND topic = 'd'`), 2, "one event per delete");
      }
    });
  });
}

contract("memory", () => {
  const m = createMemoryStore({ maxImages: 1000 });
  return Promise.resolve({ store: m.results, feedback: m.feedback, db: undefined, close: () => Promise.resolve() });
});

contract("PGlite", async () => {
  const db = await createPgliteClient({ dataDir: undefined });
  await migrate(db);
  return { store: createSqlResultStore(db), feedback: createSqlFeedbackStore(db), db, close: () => db.close() };
});

const services = dataServices();
if (services.skip === false) {
  const base = services.env;
  contract("Postgres", async () => {
    const env = await isolatedEnv(base, "stores");
    const db = createPostgresClient({ url: env.DATABASE_URL!, poolMax: 4, statementTimeoutMs: 5_000 });
    await migrate(db);
    return { store: createSqlResultStore(db), feedback: createSqlFeedbackStore(db), db, close: () => db.close() };
  });
}

describe("memory store bounds", () => {
  it("forgets the least recently used image past its bound, and what retention expires", async () => {
    let now = 1_000;
    const m = createMemoryStore({ maxImages: 2, now: () => now });
    const [a, b, c] = [sha(), sha(), sha()];
    await m.results.save(answer(a, 1), { topLabels: labels(1), tenant: T, requestId: "" });
    await m.results.save(answer(b, 1), { topLabels: labels(1), tenant: T, requestId: "" });
    now = 2_000;
    assert.ok(await m.results.find(a, model, T), "a is used again, so b is the least recently used");
    await m.results.save(answer(c, 1), { topLabels: labels(1), tenant: T, requestId: "" });
    assert.equal(m.size(), 2);
    assert.equal(await m.results.find(b, model, T), undefined);
    now = 3_000;
    assert.ok(await m.results.find(c, model, T));
    assert.equal(m.expire(2_500), 1, "a was last seen at 2000");
    assert.equal(await m.results.find(a, model, T), undefined);
  });

  it("refuses to hold an outbox event: a node with events needs durable storage", async () => {
    const m = createMemoryStore({ maxImages: 10 });
    await assert.rejects(m.results.save(answer(sha(), 1), { topLabels: labels(1), tenant: T, requestId: "", event }), /no outbox/);
  });

  it("expires per tenant reference: the image stays while another tenant saw it recently", async () => {
    let now = 1_000;
    const m = createMemoryStore({ maxImages: 10, now: () => now });
    const h = sha();
    await m.results.save(answer(h, 1), { topLabels: labels(1), tenant: T, requestId: "" });
    now = 5_000;
    await m.results.find(h, model, U);
    assert.equal(m.expire(2_000), 0);
    assert.equal(await m.results.findLatest(h, T), undefined, "A's reference expired");
    assert.ok(await m.results.findLatest(h, U));
    assert.equal(m.expire(6_000), 1);
  });
});
