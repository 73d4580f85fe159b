import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { ClassifyJobSchema, ImageClassifiedSchema } from "../../gen/categorize/v1/events_pb.js";
import type { RunningNode } from "../../cli/start-node.js";
import { TOPICS } from "../../common/kafka.js";
import { categorizeClient } from "../support/clients.js";
import { makeVariants } from "../support/image-variants.js";
import { startTestNode } from "../support/nodes.js";
import { dataServices, isolatedEnv, topicReader, waitUntil } from "../support/services.js";
import { installTestTracing, parentId, type TestTracing } from "../support/tracing.js";
import { closeAll } from "../support/teardown.js";

const available = dataServices();
const skip = available.skip === false ? false : available.skip;
const base = available.skip === false ? available.env : {};

const one = (spans: readonly ReadableSpan[], name: string): ReadableSpan => {
  const found = spans.filter((s) => s.name === name);
  assert.equal(found.length, 1, `exactly one ${name}; have ${spans.map((s) => s.name).join(", ")}`);
  return found[0]!;
};

describe("tracing through Kafka: job messages and outbox events carry traceparent", { skip, timeout: 300_000 }, () => {
  let tracing: TestTracing;
  let core: RunningNode;
  let edge: RunningNode;
  let jobs: Awaited<ReturnType<typeof topicReader<typeof ClassifyJobSchema>>>;
  let events: Awaited<ReturnType<typeof topicReader<typeof ImageClassifiedSchema>>>;

  before(async () => {
    tracing = installTestTracing();
    const env = await isolatedEnv(base, "tracing");
    jobs = await topicReader(env.KAFKA_BROKERS!, TOPICS.classifyRequests, ClassifyJobSchema);
    events = await topicReader(env.KAFKA_BROKERS!, TOPICS.imageClassified, ImageClassifiedSchema);
    core = await startTestNode("core", { ...env, OUTBOX_POLL_MS: "50" });
    edge = await startTestNode("edge", { ...env, CORE_URLS: core.url });
  });
  after(() =>
    closeAll(
      () => edge?.stop(),
      () => core?.stop(),
      () => jobs?.close(),
      () => events?.close(),
      () => tracing?.uninstall(),
    ),
  );

  it("ClassifyAsync: edge.forward -> job headers -> core.classify (consumer) -> core.store -> event headers", async () => {
    const traceId = randomBytes(16).toString("hex");
    const [image] = await makeVariants(1, { width: 311 });
    const accepted = await categorizeClient(edge.url).classifyAsync({ image: image! }, { headers: { traceparent: `00-${traceId}-${randomBytes(8).toString("hex")}-01` } });
    assert.equal(accepted.alreadyClassified, false);

    // The job message carries the context of the enqueuing edge.forward span.
    const job = (await jobs.waitFor((all) => all.some((m) => m.headers["job-id"] === accepted.jobId))).find((m) => m.headers["job-id"] === accepted.jobId)!;
    const forward = one(tracing.trace(traceId), "edge.forward");
    assert.equal(job.headers.traceparent, `00-${traceId}-${forward.spanContext().spanId}-01`);

    // The core's consumer continues it.
    await waitUntil("the job's core.store span ended", () => tracing.trace(traceId).some((s) => s.name === "core.store"));
    const spans = tracing.trace(traceId);
    const consumed = one(spans, "core.classify");
    assert.equal(parentId(consumed), forward.spanContext().spanId);
    assert.equal(consumed.attributes.job_id, accepted.jobId);
    const store = one(spans, "core.store");
    assert.equal(parentId(store), consumed.spanContext().spanId);
    for (const name of ["core.dedup_lookup", "core.batch"]) assert.equal(parentId(one(spans, name)), consumed.spanContext().spanId, name);

    // The outbox event, published later by the relay, carries the core.store span's context next to its event id.
    const event = (await events.waitFor((all) => all.some((m) => m.key === accepted.sha256))).find((m) => m.key === accepted.sha256)!;
    assert.equal(event.headers.traceparent, `00-${traceId}-${store.spanContext().spanId}-01`);
    assert.ok(event.headers["event-id"]);
  });
});
