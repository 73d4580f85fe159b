import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ImageClassifiedSchema } from "../../gen/categorize/v1/events_pb.js";
import { TOPICS } from "../../common/kafka.js";
import { mayRestartServices, services, sql, waitUntil } from "../support/services.js";
import { edgeStreams, reliabilityServices, startCluster, type Cluster } from "./support/cluster.js";
import { UniqueImages } from "./support/images.js";
import { describeSummary, okSentAfter, startLoad } from "./support/load.js";
import { asError, pollReadiness, readTopicFrom, report, scrapeMetric, storeFacts, topicEnd } from "./support/observe.js";
import { closeAll } from "../support/teardown.js";

const { base, skip } = reliabilityServices();
const RETRIABLE = new Set(["Unavailable", "ResourceExhausted", "DeadlineExceeded"]);
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe("reliability: the Kafka broker restarted while the load generator runs", { skip: skip !== false ? skip : mayRestartServices() ? false : "services were given from outside", timeout: 300_000 }, () => {
  let cluster: Cluster;
  let images: UniqueImages;

  before(async () => {
    images = await UniqueImages.create();
    cluster = await startCluster({ name: "rel_kafka", base, cores: 1 });
    await waitUntil("the edge has a stream to the core", async () => (await edgeStreams(cluster.edge.url)).ready === 1, 30_000);
  });
  after(() =>
    closeAll(
      () => cluster?.stop(),
      // Whatever happened, the broker is up for the next test.
      () => services("up", "kafka"),
    ),
  );

  it("keeps classifying, every event still arrives, and the outbox drains", async () => {
    const { env, edge, cores } = cluster;
    const core = cores[0]!;
    const from = await topicEnd(env.KAFKA_BROKERS!, TOPICS.imageClassified);
    const sendErrorsBefore = await scrapeMetric(core.url, "categorize_kafka_send_errors_total");
    const readiness = pollReadiness(core.url);
    let backlogPeak = 0;
    let sampling = true;
    const sampler = (async () => {
      const until = Date.now() + 600_000;
      while (sampling && Date.now() < until) {
        const [row] = await sql<{ n: string }>(env, "SELECT count(*) AS n FROM outbox").catch(() => [{ n: "0" }]);
        backlogPeak = Math.max(backlogPeak, Number(row!.n));
        await sleep(250);
      }
    })();

    // The time bound covers a slow broker restart; the run is stopped a few seconds after the broker is back.
    const load = startLoad({ url: edge.url, concurrency: 8, maxRequests: 3_000, maxMs: 120_000, deadlineMs: 10_000, image: (i) => images.image(i) });
    let downAt = 0;
    let upAt = 0;
    let scenarioError: unknown;
    try {
      await load.waitFor("30 answers before the restart", (r) => r.filter((x) => x.outcome === "OK").length >= 30, 20_000);
      downAt = Date.now();
      await services("down", "kafka");
      // Hold the outage a few seconds under load, then bring the same broker (same data) back.
      await sleep(5_000);
      await services("up", "kafka");
      upAt = Date.now();
      await load.waitFor("30 answers after the broker is back", (r) => okSentAfter(r, upAt).length >= 30, 30_000);
      await sleep(Math.max(0, 5_000 - (Date.now() - upAt)));
    } catch (err) {
      scenarioError = err;
    } finally {
      load.stop();
    }
    const summary = await load.done;
    const records = load.records;
    const duringOutage = records.filter((r) => r.sentAt >= downAt && r.sentAt < upAt);
    let drainStart = 0;
    let drainMs = 0;
    try {
      if (scenarioError !== undefined) throw asError(scenarioError);
      drainStart = Date.now();
      drainMs = await waitUntil("the outbox drains", async () => (await storeFacts(env)).outbox === 0, 120_000);
      await readiness.waitFor(true, 30_000);
    } catch (err) {
      report("kafka-restart (aborted)", { load: summary, outageMs: upAt - downAt, backlogPeak, readiness: readiness.changes() });
      assert.deepEqual(cluster.unexpectedExits(), [], "a node died while the broker was down");
      throw err;
    } finally {
      sampling = false;
      await sampler;
      await readiness.stop();
    }
    const facts = await storeFacts(env);
    const sent = new Set(records.map((r) => r.sha256));
    const answered = new Set(records.filter((r) => r.outcome === "OK").map((r) => r.sha256));
    const messages = await readTopicFrom(env.KAFKA_BROKERS!, TOPICS.imageClassified, ImageClassifiedSchema, from, (m) => {
      const keys = new Set(m.map((x) => x.key));
      return [...facts.hashes].every((h) => keys.has(h));
    }, 90_000);
    const mine = messages.filter((m) => sent.has(m.key));
    const eventKeys = new Set(mine.map((m) => m.key));
    const notReady = readiness.wasNotReadyBetween(downAt, upAt);
    const kafkaCheckFailed = readiness.checkFailedBetween("kafka", downAt, upAt);
    const readyAgain = readiness.readyAgainAt(upAt);

    report("kafka-restart", {
      load: summary,
      outageMs: upAt - downAt,
      duringOutage: { sent: duringOutage.length, ok: duringOutage.filter((r) => r.outcome === "OK").length },
      outboxBacklogPeak: backlogPeak,
      outboxDrainedMsAfterBrokerUp: drainStart + drainMs - upAt,
      coreKafkaSendErrors: (await scrapeMetric(core.url, "categorize_kafka_send_errors_total")) - sendErrorsBefore,
      coreNotReadyDuringOutage: notReady,
      coreKafkaCheckFailedDuringOutage: kafkaCheckFailed,
      coreReadyAgainMsAfterBrokerUp: readyAgain === undefined ? null : readyAgain - upAt,
      rows: { classifications: facts.classifications, images: facts.images, duplicates: facts.duplicates.length, outbox: facts.outbox },
      events: { produced: facts.classifications, consumed: mine.length, distinctKeys: eventKeys.size, duplicates: mine.length - eventKeys.size, missing: [...facts.hashes].filter((h) => !eventKeys.has(h)).length },
    });
    console.log(`[reliability] kafka-restart: ${describeSummary(summary)}`);

    // The synchronous path does not need Kafka: no request is lost, failures (if any) are retriable.
    assert.deepEqual(cluster.unexpectedExits(), [], "no node died");
    assert.equal(summary.failed.LOST ?? 0, 0, "every request settled");
    for (const r of records) if (r.outcome !== "OK") assert.ok(RETRIABLE.has(r.outcome), `request ${r.index} failed with ${r.outcome}: ${r.message ?? ""}`);
    assert.ok(duringOutage.filter((r) => r.outcome === "OK").length > 0, "classification went on while the broker was down");
    assert.ok(backlogPeak >= 1, "events waited in the outbox while the broker was down");
    // Kafka is not on the synchronous path: the core reports it down but stays ready (degraded), so edges keep using it.
    assert.ok(kafkaCheckFailed, "the core reported its broker down while it was down");
    assert.equal(notReady, false, `the core stayed ready while its broker was down: ${JSON.stringify(readiness.changes())}`);
    // Every event arrives: produced rows == consumed distinct keys, and the outbox is empty.
    assert.deepEqual(facts.duplicates, []);
    for (const h of answered) assert.ok(facts.hashes.has(h), `answered image ${h} has its row`);
    assert.deepEqual([...eventKeys].sort(), [...facts.hashes].sort(), "one event key per stored row");
    assert.equal(facts.outbox, 0);
  });
});
