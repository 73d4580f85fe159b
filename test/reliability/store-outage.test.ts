import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { mayRestartServices, services, waitUntil } from "../support/services.js";
import { edgeStreams, reliabilityServices, startCluster, type Cluster } from "./support/cluster.js";
import { UniqueImages } from "./support/images.js";
import { describeSummary, firstOkAfter, latencyStats, okSentAfter, startLoad, type LoadRun, type RequestRecord } from "./support/load.js";
import { asError, missingObjects, pollReadiness, report, storeFacts } from "./support/observe.js";
import { closeAll } from "../support/teardown.js";

const { base, skip } = reliabilityServices();
const DEADLINE_MS = 10_000;
const HOLD_MS = 5_000;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

interface Outage {
  readonly service: string;
  readonly downAt: number;
  readonly downDoneAt: number;
  readonly upAt: number;
  readonly upDoneAt: number;
}

/** Stops a real service under load, holds the outage, starts it again (same data), and waits for answers to resume. */
async function outage(load: LoadRun, service: "postgres" | "minio", whileDown: () => Promise<void>): Promise<Outage> {
  const downAt = Date.now();
  let downDoneAt = 0;
  let upAt = 0;
  try {
    await services("down", service);
    downDoneAt = Date.now();
    await Promise.all([whileDown(), sleep(HOLD_MS)]);
  } finally {
    upAt = Date.now();
    await services("up", service);
  }
  const upDoneAt = Date.now();
  await load.waitFor(`answers after ${service} is back`, (r) => okSentAfter(r, upDoneAt).length >= 20, 30_000);
  return { service, downAt, downDoneAt, upAt, upDoneAt };
}

/** Requests sent while the service was fully down. */
const sentWhileDown = (records: readonly RequestRecord[], o: Outage) => records.filter((r) => r.sentAt >= o.downDoneAt && r.endedAt <= o.upAt);

describe("reliability: Postgres, then MinIO, stopped and restarted while the load generator runs", { skip: skip !== false ? skip : mayRestartServices() ? false : "services were given from outside", timeout: 300_000 }, () => {
  let cluster: Cluster;
  let images: UniqueImages;

  before(async () => {
    images = await UniqueImages.create();
    cluster = await startCluster({ name: "rel_store", base, cores: 1 });
    await waitUntil("the edge has a stream to the core", async () => (await edgeStreams(cluster.edge.url)).ready === 1, 30_000);
  });
  after(() =>
    closeAll(
      () => cluster?.stop(),
      // Whatever happened, the services are up for the next test.
      () => services("up", "postgres", "minio"),
    ),
  );

  it("goes not ready, fails fast with UNAVAILABLE, recovers by itself, and leaves no half-written record", async () => {
    const { env, edge, cores } = cluster;
    const core = cores[0]!;
    const coreReady = pollReadiness(core.url);
    const edgeReady = pollReadiness(edge.url);
    const load = startLoad({ url: edge.url, concurrency: 8, maxRequests: 4_000, maxMs: 150_000, deadlineMs: DEADLINE_MS, failureBackoffMs: 100, image: (i) => images.image(i) });
    const outages: Outage[] = [];
    let notReadyMs: Record<string, number> = {};
    let scenarioError: unknown;
    try {
      await load.waitFor("30 answers before the outages", (r) => r.filter((x) => x.outcome === "OK").length >= 30, 20_000);
      outages.push(
        await outage(load, "postgres", async () => {
          notReadyMs = { ...notReadyMs, postgres: await coreReady.waitFor(false, 10_000) };
        }),
      );
      await coreReady.waitFor(true, 30_000);
      outages.push(
        await outage(load, "minio", async () => {
          notReadyMs = { ...notReadyMs, minioCore: await coreReady.waitFor(false, 10_000), minioEdge: await edgeReady.waitFor(false, 10_000) };
        }),
      );
      await Promise.all([coreReady.waitFor(true, 30_000), edgeReady.waitFor(true, 30_000)]);
      await sleep(2_000);
    } catch (err) {
      scenarioError = err;
    } finally {
      load.stop();
    }
    const summary = await load.done;
    await Promise.all([coreReady.stop(), edgeReady.stop()]);
    const records = load.records;
    // A node that died is the finding, whatever step then timed out.
    const exits = cluster.unexpectedExits();
    if (exits.length > 0 || scenarioError !== undefined) {
      report("store-outage (aborted)", { load: summary, outagesCompleted: outages.length, coreReadiness: coreReady.changes(), edgeReadiness: edgeReady.changes() });
      assert.deepEqual(exits, [], "a node died during the outage instead of answering UNAVAILABLE");
      throw asError(scenarioError);
    }

    await waitUntil("the outbox drains", async () => (await storeFacts(env)).outbox === 0, 60_000);
    const facts = await storeFacts(env);
    const objects = await missingObjects(env);
    const answered = new Set(records.filter((r) => r.outcome === "OK").map((r) => r.sha256));

    const perOutage = outages.map((o) => {
      const down = sentWhileDown(records, o);
      const failed = down.filter((r) => r.outcome !== "OK");
      const codes: Record<string, number> = {};
      for (const r of failed) codes[r.outcome] = (codes[r.outcome] ?? 0) + 1;
      const firstOk = firstOkAfter(records, o.upDoneAt);
      const ready = o.service === "postgres" ? coreReady : edgeReady;
      const readyAgain = ready.readyAgainAt(o.upDoneAt);
      return {
        service: o.service,
        stopMs: o.downDoneAt - o.downAt,
        downMs: o.upAt - o.downDoneAt,
        startMs: o.upDoneAt - o.upAt,
        sentWhileDown: down.length,
        okWhileDown: down.length - failed.length,
        failedWhileDown: codes,
        failedLatencyMs: latencyStats(failed.map((r) => r.latencyMs)),
        coreNotReadyWhileDown: coreReady.wasNotReadyBetween(o.downDoneAt, o.upAt),
        edgeNotReadyWhileDown: edgeReady.wasNotReadyBetween(o.downDoneAt, o.upAt),
        // From the service answering again (services.sh up returned) to the first OK answer / ready again.
        recoveryMs: firstOk === undefined ? null : firstOk.endedAt - o.upDoneAt,
        readyAgainMs: readyAgain === undefined ? null : readyAgain - o.upDoneAt,
        sampleFailure: failed[0]?.message,
        failures: failed,
      };
    });
    report("store-outage", {
      load: summary,
      notReadyWithinMs: notReadyMs,
      outages: perOutage.map(({ failures: _f, ...rest }) => rest),
      rows: { classifications: facts.classifications, images: facts.images, duplicates: facts.duplicates.length, outbox: facts.outbox },
      objects: { imageRowsChecked: objects.checked, missing: objects.missing.length, objectsInBucket: objects.objects },
      coreReadiness: coreReady.changes(),
      edgeReadiness: edgeReady.changes(),
    });
    console.log(`[reliability] store-outage: ${describeSummary(summary)}`);

    assert.equal(summary.failed.LOST ?? 0, 0, "every request settled");
    for (const o of perOutage) {
      assert.ok(o.sentWhileDown > 0, `traffic while ${o.service} was down`);
      // Fast UNAVAILABLE: every request sent while the service was down failed with it, well before the deadline.
      for (const r of o.failures) assert.equal(r.outcome, "Unavailable", `${o.service} down: request ${r.index} got ${r.outcome} after ${Math.round(r.latencyMs)} ms: ${r.message ?? ""}`);
      assert.ok(o.failedLatencyMs.n === 0 || o.failedLatencyMs.p99 < DEADLINE_MS / 4, `${o.service} down: failures p99 ${o.failedLatencyMs.p99} ms, deadline ${DEADLINE_MS} ms`);
      assert.ok(o.failures.length > 0, `requests failed while ${o.service} was down (${o.okWhileDown} answered)`);
      assert.ok(o.coreNotReadyWhileDown, `core /readyz went false while ${o.service} was down`);
      // Automatic recovery: the same processes answer again.
      assert.ok(o.recoveryMs !== null, `answers resumed after ${o.service} came back`);
    }
    assert.ok(perOutage[1]!.edgeNotReadyWhileDown, "the edge (which stores originals) went not ready while MinIO was down");
    for (const n of [edge, core]) assert.equal(n.child.exitCode, null, "no node restarted or died");

    // No half-written records: every image row's original is in the bucket, and rows are whole.
    assert.deepEqual(objects.missing, [], "image rows whose object is missing");
    assert.deepEqual(facts.duplicates, []);
    assert.equal(facts.classifications, facts.images, "one classification per image row");
    for (const h of answered) assert.ok(facts.hashes.has(h), `answered image ${h} has its row`);
  });
});
