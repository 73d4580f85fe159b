import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { RunningNode } from "../../cli/start-node.js";
import { createLogger } from "../../common/logger.js";
import { createMetrics } from "../../common/metrics.js";
import { createCorePool, type CorePool } from "../../edge/core-pool.js";
import { startTestNode } from "../support/nodes.js";
import { closeAll } from "../support/teardown.js";

describe("core discovery by name (a headless Service)", () => {
  let a: RunningNode;
  let b: RunningNode;
  let pool: CorePool;
  let addresses: string[];

  before(async () => {
    [a, b] = await Promise.all([startTestNode("core"), startTestNode("core")]);
  });
  after(() =>
    closeAll(
      () => pool?.close(AbortSignal.timeout(2_000)),
      () => Promise.all([a?.stop(), b?.stop()]),
    ),
  );

  it("opens a stream to every address a name resolves to, and drains an address that disappears", async () => {
    // Both test cores listen on 127.0.0.1 with different ports; a name per port stands in for the pod IPs.
    const portA = new URL(a.url).port;
    const portB = new URL(b.url).port;
    assert.notEqual(portA, portB);
    addresses = ["127.0.0.1"];
    pool = createCorePool({
      urls: [`http://core-a.test:${portA}`, `http://core-b.test:${portB}`],
      retryAttempts: 1,
      discoveryMs: 100,
      resolve: (host) => Promise.resolve((host === "core-a.test" ? ["127.0.0.1"] : addresses).map((address) => ({ address, family: 4 }))),
      logger: createLogger({ level: "silent", service: "test", nodeId: "t" }),
      metrics: createMetrics(),
    });
    await pool.waitReady(AbortSignal.timeout(10_000));
    const waitStates = async (want: number) => {
      const deadline = Date.now() + 10_000;
      while (pool.states().filter((s) => s.state === "ready").length !== want) {
        if (Date.now() > deadline) throw new Error(`expected ${want} ready streams, have ${JSON.stringify(pool.states())}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    await waitStates(2);
    assert.deepEqual(pool.states().map((s) => s.url).sort(), [`http://127.0.0.1:${portA}`, `http://127.0.0.1:${portB}`].sort());
    // core-b.test stops resolving: its stream drains and goes away; core-a stays.
    addresses = [];
    await waitStates(1);
    assert.deepEqual(pool.states().map((s) => s.url), [`http://127.0.0.1:${portA}`]);
    // It comes back (a new pod): a new stream opens.
    addresses = ["127.0.0.1"];
    await waitStates(2);
  });
});
