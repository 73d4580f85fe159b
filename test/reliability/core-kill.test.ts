import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ImageClassifiedSchema } from "../../gen/categorize/v1/events_pb.js";
import { TOPICS } from "../../common/kafka.js";
import { waitUntil } from "../support/services.js";
import { edgeStreams, reliabilityServices, startCluster, type Cluster } from "./support/cluster.js";
import { UniqueImages } from "./support/images.js";
import { describeSummary, firstOkAfter, okSentAfter, startLoad } from "./support/load.js";
import { readTopicFrom, report, scrapeMetric, storeFacts, topicEnd } from "./support/observe.js";

const { base, skip } = reliabilityServices();
const RETRIABLE = new Set(["Unavailable", "ResourceExhausted", "DeadlineExceeded"]);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe("reliability: a core killed with SIGKILL while the load generator runs", { skip, timeout: 240_000 }, () => {
  let cluster: Cluster;
  let images: UniqueImages;

  before(async () => {
    images = await UniqueImages.create();
    cluster = await startCluster({ name: "rel_kill", base, cores: 2, coreEnv: { BATCH_MAX_DELAY_MS: "5" } });
    await waitUntil("the edge has streams to both cores", async () => (await edgeStreams(cluster.edge.url)).ready === 2, 30_000);
  });
  after(async () => {
    await cluster?.stop();
  });

  it("loses no request, retries on the surviving core, writes no duplicate row, and publishes one event per stored image", async () => {
    const { env, edge, cores } = cluster;
    const [victim, survivor] = cores as [(typeof cores)[0], (typeof cores)[0]];
    const from = await topicEnd(env.KAFKA_BROKERS!, TOPICS.imageClassified);
    const retriesBefore = await scrapeMetric(edge.url, "categorize_edge_core_retries_total");

    const load = startLoad({ url: edge.url, concurrency: 8, maxRequests: 2_500, maxMs: 25_000, deadlineMs: 10_000, image: (i) => images.image(i) });
    // Warm: both cores answering, then kill one mid-load (requests are on its stream now).
    let inFlightAtKill = 0;
    let killedAt = 0;
    try {
      await load.waitFor("40 answers before the kill", (r) => r.filter((x) => x.outcome === "OK").length >= 40, 20_000);
      await sleep(1_000);
      inFlightAtKill = load.inFlight();
      killedAt = Date.now();
      await victim.kill("SIGKILL");
      // Traffic goes on through the surviving core.
      await load.waitFor("30 answers to requests sent after the kill", (r) => okSentAfter(r, killedAt).length >= 30, 20_000);
    } catch (err) {
      load.stop();
      report("core-kill (aborted)", { load: await load.done, inFlightAtKill });
      assert.deepEqual(cluster.unexpectedExits([victim]), [], "only the killed core is gone");
      throw err;
    }
    const summary = await load.done;
    const records = load.records;
    assert.deepEqual(cluster.unexpectedExits([victim]), [], "only the killed core is gone");

    const retries = (await scrapeMetric(edge.url, "categorize_edge_core_retries_total")) - retriesBefore;
    const streams = await edgeStreams(edge.url);
    const firstOk = firstOkAfter(records, killedAt);
    const failedAfterKill = records.filter((r) => r.outcome !== "OK" && r.endedAt >= killedAt);

    // Store: one row per image, whoever classified it.
    await waitUntil("the outbox drains", async () => (await storeFacts(env)).outbox === 0, 60_000);
    const facts = await storeFacts(env);
    const answered = new Set(records.filter((r) => r.outcome === "OK").map((r) => r.sha256));
    const sent = new Set(records.map((r) => r.sha256));

    // Events: every stored image has its event (the survivor relays what the victim left in the outbox).
    const messages = await readTopicFrom(env.KAFKA_BROKERS!, TOPICS.imageClassified, ImageClassifiedSchema, from, (m) => {
      const keys = new Set(m.map((x) => x.key));
      return [...facts.hashes].every((h) => keys.has(h));
    }, 60_000);
    const mine = messages.filter((m) => sent.has(m.key));
    const eventKeys = new Set(mine.map((m) => m.key));

    report("core-kill", {
      load: summary,
      inFlightAtKill,
      failedAfterKill: failedAfterKill.map((r) => `${r.outcome}: ${r.message ?? ""}`),
      recoveryMs: firstOk === undefined ? null : firstOk.endedAt - killedAt,
      edgeRetries: retries,
      edgeStreamsAfter: streams,
      rows: { classifications: facts.classifications, images: facts.images, duplicates: facts.duplicates.length, outbox: facts.outbox },
      answeredDistinct: answered.size,
      storedButNotAnswered: [...facts.hashes].filter((h) => !answered.has(h)).length,
      events: { consumed: mine.length, distinctKeys: eventKeys.size, duplicates: mine.length - eventKeys.size },
    });
    console.log(`[reliability] core-kill: ${describeSummary(summary)}`);

    // No request lost: each got an answer or a clear retriable status, none hung past its deadline.
    assert.equal(summary.sent, records.length);
    assert.equal(summary.failed.LOST ?? 0, 0, "every request settled");
    for (const r of records) if (r.outcome !== "OK") assert.ok(RETRIABLE.has(r.outcome), `request ${r.index} failed with ${r.outcome}: ${r.message ?? ""}`);
    // Only requests on the killed core's stream at the moment of the kill may fail; they are retried instead.
    assert.ok(summary.sent - summary.ok <= inFlightAtKill, `${summary.sent - summary.ok} failures; at most the ${inFlightAtKill} in flight at the kill`);
    assert.ok(summary.ok >= 100, `enough traffic to mean something (${summary.ok} answered)`);
    assert.ok(firstOk !== undefined, "answers resumed after the kill");
    assert.ok(retries >= 1, `the edge re-sent the killed core's requests to the other core (${retries} retries)`);
    assert.equal(streams.ready, 1, "one core stream ready, the killed one not");
    assert.ok(survivor.child.exitCode === null, "the survivor is still running");

    // No duplicate rows, every answered image stored, nothing stored that was not sent.
    assert.deepEqual(facts.duplicates, [], "SELECT sha256, count(*) FROM classifications GROUP BY 1 HAVING count(*) > 1");
    for (const h of answered) assert.ok(facts.hashes.has(h), `answered image ${h} has its row`);
    for (const h of facts.hashes) assert.ok(sent.has(h), `row ${h} belongs to this run`);
    assert.equal(facts.classifications, facts.images);

    // Events produced == distinct images stored (>= answered); duplicates by key are allowed (at least once), counted above.
    assert.deepEqual([...eventKeys].sort(), [...facts.hashes].sort(), "one event key per stored image");
    assert.ok(eventKeys.size >= answered.size);
  });
});
