import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RunningNode } from "../../cli/start-node.js";
import { categorizeClient } from "../support/clients.js";
import { readImage } from "../support/fixtures.js";
import { startTestNode } from "../support/nodes.js";

async function gauge(node: RunningNode, name: string): Promise<number> {
  const m = (await node.metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  return m?.values[0]?.value ?? Number.NaN;
}

/** The value of an unlabelled (but node-labelled) gauge in /metrics text. */
function scraped(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
  assert.ok(line !== undefined, `${name} not in /metrics`);
  return Number(line.slice(line.lastIndexOf(" ") + 1));
}

/**
 * After the feedback of the first test, (22,22) (967,967) (663,698):
 * accuracy 2/3, macro P = R = F1 = 2/4, 3 reviewed, class 663 (monastery) wrong once.
 * Over top-level categories the three are animal, food and building, each
 * answered within its category (palace for monastery is still a building): all 1.
 */
async function expectQuality(metricsNode: RunningNode, edgeUrl: string): Promise<void> {
  const q = await categorizeClient(edgeUrl).getQuality({});
  assert.equal(q.reviewed, 3);
  assert.ok(Math.abs(q.accuracy - 2 / 3) < 1e-9, String(q.accuracy));
  assert.ok(Math.abs(q.macroPrecision - 0.5) < 1e-9);
  assert.ok(Math.abs(q.macroRecall - 0.5) < 1e-9);
  assert.ok(Math.abs(q.macroF1 - 0.5) < 1e-9);
  assert.deepEqual(q.mostOftenWrong.map((w) => [w.index, w.label, w.count]), [[663, "monastery", 1]]);
  assert.equal(q.windowHours, 168);
  assert.ok(Math.abs(Number(q.windowStartUnixMs) - (Date.now() - 168 * 3_600_000)) < 60_000);
  assert.equal(q.model?.name !== "", true);
  assert.ok(q.categories !== undefined && q.categories.taxonomy !== "", "category figures with their taxonomy");
  assert.deepEqual([q.categories.accuracy, q.categories.macroPrecision, q.categories.macroRecall, q.categories.macroF1], [1, 1, 1, 1]);
  // The gauges the same call refreshed, as Prometheus scrapes them.
  const text = await (await fetch(`${metricsNode.url}/metrics`)).text();
  assert.equal(scraped(text, "categorize_model_accuracy_ratio"), q.accuracy);
  assert.equal(scraped(text, "categorize_model_macro_precision_ratio"), q.macroPrecision);
  assert.equal(scraped(text, "categorize_model_macro_recall_ratio"), q.macroRecall);
  assert.equal(scraped(text, "categorize_model_macro_f1_ratio"), q.macroF1);
  assert.equal(scraped(text, "categorize_model_feedback_samples"), q.reviewed);
  assert.equal((await categorizeClient(edgeUrl).getQuality({ topWrong: 0 })).mostOftenWrong.length, 1);
}

/** The feedback of the first test, sent through the edge at edgeUrl. */
async function submitThree(edgeUrl: string): Promise<void> {
  const client = categorizeClient(edgeUrl);
  const [eagle, coffee, china] = await Promise.all(["bald_eagle.jpeg", "coffee.png", "china.jpg"].map((f) => client.classify({ image: readImage(f) })));
  await client.submitFeedback({ sha256: eagle!.sha256, trueClass: 22, source: "test" });
  await client.submitFeedback({ sha256: coffee!.sha256, trueClass: 967, source: "test" });
  await client.submitFeedback({ sha256: china!.sha256, trueClass: 663, source: "test" });
}

describe("GetQuality through a separate edge and core", () => {
  let core: RunningNode;
  let edge: RunningNode;
  before(async () => {
    core = await startTestNode("core");
    edge = await startTestNode("edge", { CORE_URLS: core.url });
  });
  after(async () => {
    await edge?.stop();
    await core?.stop();
  });

  it("forwards GetQuality to a core and answers what its gauges show", async () => {
    await submitThree(edge.url);
    await expectQuality(core, edge.url);
  });
});

describe("feedback and model quality gauges", () => {
  let node: RunningNode;
  before(async () => {
    node = await startTestNode("all");
  });
  after(async () => {
    await node.stop();
  });

  it("records feedback and exports accuracy, macro precision, recall and F1 matching a hand computation", async () => {
    const client = categorizeClient(node.url);
    const eagle = await client.classify({ image: readImage("bald_eagle.jpeg") }); // predicted 22
    const coffee = await client.classify({ image: readImage("coffee.png") }); // predicted 967
    const china = await client.classify({ image: readImage("china.jpg") }); // predicted 698
    assert.deepEqual([eagle, coffee, china].map((r) => r.labels[0]!.index), [22, 967, 698]);
    // truth/predicted: (22,22) (967,967) (663,698)
    const ok = await client.submitFeedback({ sha256: eagle.sha256, trueClass: 22, source: "test" });
    assert.equal(ok.top1Correct, true);
    await client.submitFeedback({ sha256: coffee.sha256, trueClass: 967, source: "test" });
    const miss = await client.submitFeedback({ sha256: china.sha256, trueClass: 663, source: "test" });
    assert.equal(miss.top1Correct, false);
    assert.equal(miss.predictedClass, 698);
    const q = await node.core!.feedback.quality();
    // classes 22, 967: P = R = F1 = 1; 698: P = 0 (predicted once, never true), R = 0; 663: P = 0, R = 0
    assert.equal(q.samples, 3);
    assert.ok(Math.abs(q.accuracy - 2 / 3) < 1e-9);
    assert.ok(Math.abs(q.macroPrecision - 2 / 4) < 1e-9);
    assert.ok(Math.abs(q.macroRecall - 2 / 4) < 1e-9);
    assert.ok(Math.abs(q.macroF1 - 2 / 4) < 1e-9);
    assert.ok(Math.abs((await gauge(node, "categorize_model_accuracy_ratio")) - 2 / 3) < 1e-9);
    assert.equal(await gauge(node, "categorize_model_feedback_samples"), 3);
  });

  it("serves the same figures over GetQuality as the gauges on /metrics, with the classes most often wrong", async () => {
    await expectQuality(node, node.url);
  });

  it("refuses feedback for an unknown image or an impossible class", async () => {
    const client = categorizeClient(node.url);
    const code = (p: Promise<unknown>) => p.then(() => -1, (e: unknown) => ConnectError.from(e).code);
    assert.equal(await code(client.submitFeedback({ sha256: "f".repeat(64), trueClass: 1 })), Code.NotFound);
    const eagle = await client.classify({ image: readImage("bald_eagle.jpeg") });
    assert.equal(await code(client.submitFeedback({ sha256: eagle.sha256, trueClass: 5000 })), Code.InvalidArgument);
  });
});
