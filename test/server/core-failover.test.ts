import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RunningNode } from "../../cli/start-node.js";
import { categorizeClient } from "../support/clients.js";
import { makeVariants } from "../support/image-variants.js";
import { spawnNode, startTestNode, type NodeProcess } from "../support/nodes.js";
import { closeAll } from "../support/teardown.js";

describe("a core killed mid-stream", { timeout: 180_000 }, () => {
  let coreA: NodeProcess;
  let coreB: NodeProcess;
  let edge: RunningNode;

  before(async () => {
    // Each core has its own embedded store here; what matters is the stream between edge and cores.
    [coreA, coreB] = await Promise.all([spawnNode("core", { BATCH_MAX_DELAY_MS: "10" }), spawnNode("core", { BATCH_MAX_DELAY_MS: "10" })]);
    edge = await startTestNode("edge", { CORE_URLS: `${coreA.url},${coreB.url}`, CACHE_MAX_ENTRIES: "0", REQUEST_TIMEOUT_MS: "20000" });
  });
  after(() =>
    closeAll(
      () => edge?.stop(),
      () => Promise.all([coreA?.kill(), coreB?.kill()]),
    ),
  );

  it("loses no request: each gets an answer or a clear retriable status, none hang, none is answered twice", async () => {
    const images = await makeVariants(40, { width: 400 });
    const client = categorizeClient(edge.url);
    const outcomes = images.map((image, i) =>
      client.classify({ image, requestId: `r-${i}` }, { timeoutMs: 30_000 }).then(
        (res) => ({ ok: true as const, id: res.requestId, top: res.labels[0]?.index }),
        (err: unknown) => ({ ok: false as const, code: ConnectError.from(err).code, message: ConnectError.from(err).rawMessage }),
      ),
    );
    // Kill one core while requests are on its stream.
    await new Promise((r) => setTimeout(r, 300));
    await coreA.kill("SIGKILL");
    const results = await Promise.all(outcomes);
    const answered = results.filter((r) => r.ok);
    const failed = results.filter((r) => !r.ok);
    assert.equal(results.length, 40);
    for (const f of failed) assert.ok([Code.Unavailable, Code.ResourceExhausted, Code.DeadlineExceeded].includes(f.code), `unexpected failure ${Code[f.code]}: ${f.message}`);
    // Retries go to the surviving core, so (almost) everything is answered.
    assert.ok(answered.length >= 36, `answered ${answered.length} of 40; failures: ${failed.map((f) => f.message).join("; ")}`);
    assert.deepEqual(answered.map((a) => a.id).sort(), [...new Set(answered.map((a) => a.id))].sort(), "no request answered twice");
    const states = edge.edge!.cores.states();
    assert.equal(states.find((s) => s.url === coreA.url)?.state === "ready", false);
    assert.equal(states.find((s) => s.url === coreB.url)?.state, "ready");
    // And the edge keeps serving from the surviving core.
    const again = await client.classify({ image: images[0]! });
    assert.ok(again.labels.length > 0);
  });
});

describe("an edge in front of cores that are not ready", { timeout: 120_000 }, () => {
  let coreA: RunningNode;
  let coreB: RunningNode;
  let edge: RunningNode;
  // A dependency the test can fail at will, standing for a core's database or object store.
  const healthy = { a: true, b: true };
  const toggle = (key: "a" | "b") => ({ name: "test-dependency", check: () => (healthy[key] ? Promise.resolve() : Promise.reject(new Error("test dependency down"))) });
  const batches = (node: RunningNode) => node.metrics.batchSize.get().then((m) => m.values.find((v) => v.metricName === "categorize_batch_size_count")?.value ?? 0);
  const waitFor = async (what: string, cond: () => boolean, ms = 10_000) => {
    const until = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > until) throw new Error(`timed out waiting until ${what}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  before(async () => {
    [coreA, coreB] = await Promise.all([startTestNode("core"), startTestNode("core")]);
    coreA.readiness.add(toggle("a"));
    coreB.readiness.add(toggle("b"));
    edge = await startTestNode("edge", { CORE_URLS: `${coreA.url},${coreB.url}`, CACHE_MAX_ENTRIES: "0" });
    await waitFor("both cores serve", () => edge.edge!.cores.states().every((s) => s.serving));
  });
  after(() =>
    closeAll(
      () => edge?.stop(),
      () => Promise.all([coreA?.stop(), coreB?.stop()]),
    ),
  );

  it("sends no request to a core that reports NOT_SERVING, and stays ready on the other", async () => {
    healthy.a = false;
    await waitFor("the edge sees core A not serving", () => edge.edge!.cores.states().find((s) => s.url === coreA.url)?.serving === false);
    const before = await batches(coreA);
    const client = categorizeClient(edge.url);
    const images = await makeVariants(12, { width: 300 });
    for (const image of images) assert.ok((await client.classify({ image })).labels.length > 0);
    assert.equal(await batches(coreA), before, "core A ran no batch while not ready");
    assert.equal(edge.readiness.isReady(), true);
    healthy.a = true;
    await waitFor("core A serves again", () => edge.edge!.cores.states().every((s) => s.serving));
  });

  it("goes not ready with a clear reason, answers UNAVAILABLE while no core serves, and recovers by itself", async () => {
    healthy.a = false;
    healthy.b = false;
    await waitFor("the edge goes not ready", () => !edge.readiness.isReady());
    assert.match(edge.readiness.snapshot().checks.core?.detail ?? "", /no core serving .*not serving/);
    const [image] = await makeVariants(1, { width: 300 });
    try {
      await categorizeClient(edge.url).classify({ image: image! });
      assert.fail("expected UNAVAILABLE");
    } catch (err) {
      const e = ConnectError.from(err);
      assert.equal(e.code, Code.Unavailable);
      assert.match(e.rawMessage, /no core is serving/);
    }
    healthy.a = true;
    healthy.b = true;
    await waitFor("the edge is ready again", () => edge.readiness.isReady());
    assert.ok((await categorizeClient(edge.url).classify({ image: image! })).labels.length > 0);
  });
});
