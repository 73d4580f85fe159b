import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RunningNode } from "../../cli/start-node.js";
import { categorizeClient } from "../support/clients.js";
import { makeVariants } from "../support/image-variants.js";
import { spawnNode, startTestNode, type NodeProcess } from "../support/nodes.js";

describe("a core killed mid-stream", { timeout: 180_000 }, () => {
  let coreA: NodeProcess;
  let coreB: NodeProcess;
  let edge: RunningNode;

  before(async () => {
    // Each core has its own embedded store here; what matters is the stream between edge and cores.
    [coreA, coreB] = await Promise.all([spawnNode("core", { BATCH_MAX_DELAY_MS: "10" }), spawnNode("core", { BATCH_MAX_DELAY_MS: "10" })]);
    edge = await startTestNode("edge", { CORE_URLS: `${coreA.url},${coreB.url}`, CACHE_MAX_ENTRIES: "0", REQUEST_TIMEOUT_MS: "20000" });
  });
  after(async () => {
    await edge.stop();
    await Promise.all([coreA.kill(), coreB.kill()]);
  });

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
