import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { waitUntil } from "../support/services.js";
import { edgeStreams, reliabilityServices, startCluster, type Cluster } from "./support/cluster.js";
import { UniqueImages } from "./support/images.js";
import { directCoreLoad } from "./support/infer-stream.js";
import { describeSummary, startLoad, type RequestRecord } from "./support/load.js";
import { histogramQuantileBound, missingObjects, report, storeFacts } from "./support/observe.js";

const { base, skip } = reliabilityServices();
const QUEUE_LIMIT = 4;
/** Generous: it only has to show that admitted requests do not queue without bound (the deadline is 10 s). */
const ADMITTED_P99_BOUND_MS = 5_000;
const queueFull = (records: readonly RequestRecord[]) => records.filter((r) => r.outcome === "ResourceExhausted" && /inference queue is full/.test(r.message ?? ""));
const otherFailures = (records: readonly RequestRecord[]) => [...new Set(records.filter((r) => r.outcome !== "OK" && r.outcome !== "ResourceExhausted").map((r) => `${r.outcome}: ${r.message ?? ""}`))];

describe("reliability: a full batcher queue under high concurrency", { skip, timeout: 180_000 }, () => {
  let cluster: Cluster;
  let images: UniqueImages;

  before(async () => {
    images = await UniqueImages.create();
    cluster = await startCluster({
      name: "rel_queue",
      base,
      cores: 1,
      // One image per model run, a tiny queue, and a stream window far above it: the batcher queue is the limit.
      // One inference thread makes the model the bottleneck even on a small machine.
      coreEnv: { BATCH_QUEUE_LIMIT: String(QUEUE_LIMIT), BATCH_MAX_SIZE: "1", BATCH_MAX_DELAY_MS: "0", CORE_STREAM_MAX_IN_FLIGHT: "1000", ORT_INTRA_OP_THREADS: "1" },
    });
    await waitUntil("the edge has a stream to the core", async () => (await edgeStreams(cluster.edge.url)).ready === 1, 30_000);
  });
  after(async () => {
    await cluster?.stop();
  });

  it("sheds load with RESOURCE_EXHAUSTED and keeps the latency of admitted requests bounded", async () => {
    const { env, edge, cores } = cluster;
    const core = cores[0]!;
    // 1. Clients through the edge: decoding on the edge paces arrivals, so how often the queue overflows depends on the machine.
    const load = startLoad({ url: edge.url, concurrency: 32, maxRequests: 2_000, maxMs: 15_000, deadlineMs: 10_000, image: (i) => images.image(i) });
    const viaEdge = await load.done;
    const edgeRecords = load.records;
    // 2. The core's stream driven directly, as an edge does, with 48 tensors in flight (no decoding in front of it).
    const direct = await directCoreLoad({ coreUrl: core.url, inFlight: 48, maxRequests: 3_000, maxMs: 8_000, deadlineMs: 10_000 });

    const queueWait = await histogramQuantileBound(core.url, "categorize_batch_queue_wait_seconds", 0.99);
    const facts = await storeFacts(env);
    const edgeAnswered = new Set(edgeRecords.filter((r) => r.outcome === "OK").map((r) => r.sha256));
    const directAnswered = new Set(direct.records.filter((r) => r.outcome === "OK").map((r) => r.sha256));
    const objects = await missingObjects(env, edgeAnswered);

    report("batcher-queue", {
      viaEdge: { load: viaEdge, queueFullAnswers: queueFull(edgeRecords).length, otherFailures: otherFailures(edgeRecords) },
      directOnCoreStream: { load: direct.summary, queueFullAnswers: queueFull(direct.records).length, otherFailures: otherFailures(direct.records) },
      coreQueueWaitP99BucketSeconds: queueWait.le,
      coreQueueWaitSamples: queueWait.count,
      rows: { classifications: facts.classifications, duplicates: facts.duplicates.length },
      // The edge stores an original before the core admits the request: refused requests leave objects no row points at.
      objects: { inBucket: objects.objects, withoutRow: objects.objects - edgeAnswered.size, rowsMissingTheirObject: objects.missing.length },
    });
    console.log(`[reliability] batcher-queue via the edge: ${describeSummary(viaEdge)}`);
    console.log(`[reliability] batcher-queue on the core stream: ${describeSummary(direct.summary)}`);

    assert.deepEqual(cluster.unexpectedExits(), [], "no node died");
    for (const [name, s, records] of [["via the edge", viaEdge, edgeRecords], ["on the core stream", direct.summary, direct.records]] as const) {
      assert.equal(s.failed.LOST ?? 0, 0, `${name}: every request settled`);
      assert.deepEqual(otherFailures(records), [], `${name}: the only failure is RESOURCE_EXHAUSTED`);
      assert.ok(s.ok >= 100, `${name}: the core kept serving (${s.ok} answered)`);
      assert.ok(s.okLatencyMs.p99 < ADMITTED_P99_BOUND_MS, `${name}: admitted p99 ${s.okLatencyMs.p99} ms < ${ADMITTED_P99_BOUND_MS} ms`);
    }
    // How many overflow depends on the machine: the stream's HTTP/2 flow control paces arrivals at the core too (see docs/reliability.md).
    const refused = queueFull(edgeRecords).length + queueFull(direct.records).length;
    assert.ok(refused >= 1, `the full batcher queue refused requests (via the edge ${JSON.stringify(viaEdge.failed)}, on the stream ${JSON.stringify(direct.summary.failed)})`);
    // Inside the core, nothing waited long in the queue: it holds at most QUEUE_LIMIT items.
    assert.ok(queueWait.le <= 2.5, `core queue wait p99 bucket ${queueWait.le} s`);
    // Refused requests left nothing behind; admitted ones are stored once, with their original.
    assert.deepEqual(facts.duplicates, []);
    for (const h of [...edgeAnswered, ...directAnswered]) assert.ok(facts.hashes.has(h));
    assert.equal(facts.classifications, edgeAnswered.size + directAnswered.size, "rows only for answered requests");
    assert.deepEqual(objects.missing, [], "every image row has its object");
  });
});
