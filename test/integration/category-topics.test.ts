import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import sharp from "sharp";
import { ImageClassifiedSchema } from "../../gen/categorize/v1/events_pb.js";
import type { RunningNode } from "../../cli/start-node.js";
import { TOPICS } from "../../common/kafka.js";
import { categorizeClient } from "../support/clients.js";
import { readImage } from "../support/fixtures.js";
import { startTestNode } from "../support/nodes.js";
import { dataServices, isolatedEnv, topicReader } from "../support/services.js";
import { closeAll } from "../support/teardown.js";

const available = dataServices();
const skip = available.skip === false ? false : available.skip;
const base = available.skip === false ? available.env : {};
const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The photo and a few resized copies of it: distinct bytes, same subject. */
async function variants(name: string, widths: readonly number[]): Promise<Buffer[]> {
  const photo = readImage(name);
  return [photo, ...(await Promise.all(widths.map((w) => sharp(photo).resize({ width: w }).jpeg({ quality: 90 }).toBuffer())))];
}

describe("an operator taxonomy routed to per-category topics on the real Kafka", { skip, timeout: 300_000 }, () => {
  const suffix = randomBytes(4).toString("hex");
  const raptorTopic = `categorize-test.raptor.${suffix}`;
  const coffeeTopic = `categorize-test.coffee.${suffix}`;
  let dir: string;
  let core: RunningNode;
  let edge: RunningNode;
  let readers: Awaited<ReturnType<typeof topicReader<typeof ImageClassifiedSchema>>>[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "categorize-taxonomy-"));
    const file = join(dir, "taxonomy.json");
    // Two custom categories: eagles by WordNet synset, coffee by class indices (espresso, cup, coffee mug).
    await writeFile(file, JSON.stringify({ name: "shop", version: "1", categories: [{ name: "raptor", synsets: ["n01613294"] }, { name: "coffee", classes: [967, 968, 504] }] }));
    const env = await isolatedEnv(base, "categories");
    core = await startTestNode("core", { ...env, OUTBOX_POLL_MS: "50", CATEGORIZE_TAXONOMY: file, CATEGORIZE_CATEGORY_TOPICS: `raptor=${raptorTopic},coffee=${coffeeTopic}` });
    // The core created the category topics at start; readers read from their current end.
    readers = [
      await topicReader(env.KAFKA_BROKERS!, TOPICS.imageClassified, ImageClassifiedSchema),
      await topicReader(env.KAFKA_BROKERS!, raptorTopic, ImageClassifiedSchema),
      await topicReader(env.KAFKA_BROKERS!, coffeeTopic, ImageClassifiedSchema),
    ];
    edge = await startTestNode("edge", { ...env, CORE_URLS: core.url, CACHE_MAX_ENTRIES: "0" });
  });
  after(() =>
    closeAll(
      () => edge?.stop(),
      () => core?.stop(),
      ...readers.map((r) => () => r.close()),
      () => rm(dir, { recursive: true, force: true }),
    ),
  );

  it("answers with the custom categories, routes each image to its category's topic once, and scores quality by category", async () => {
    const client = categorizeClient(edge.url);
    const listed = await client.listCategories({});
    assert.equal(listed.name, "shop");
    assert.deepEqual(listed.categories.map((c) => c.path), ["raptor", "coffee", "other"]);

    const eagles = await variants("bald_eagle.jpeg", [640, 560, 480]);
    const coffees = await variants("coffee.png", [400, 360, 320]);
    const cat = readImage("chelsea.png");
    const all = [...eagles, ...coffees, cat];
    const answers = await Promise.all(all.map((image) => client.classify({ image })));
    for (const a of answers.slice(0, eagles.length)) assert.equal(a.categories[0]?.path, "raptor", JSON.stringify(a.categories));
    for (const a of answers.slice(eagles.length, eagles.length + coffees.length)) assert.equal(a.categories[0]?.path, "coffee", JSON.stringify(a.categories));
    assert.equal(answers.at(-1)!.categories[0]?.path, "other");
    // Repeats are answered from the store: no new event anywhere.
    const again = await Promise.all(all.map((image) => client.classify({ image })));
    assert.ok(again.every((a) => a.cached));
    assert.deepEqual(again.map((a) => a.categories), answers.map((a) => a.categories), "a stored answer and a fresh one agree");

    const [main, raptor, coffee] = readers as [(typeof readers)[0], (typeof readers)[0], (typeof readers)[0]];
    const hashes = (images: Buffer[]) => images.map(sha).sort();
    await main.waitFor((m) => m.length >= all.length);
    await raptor.waitFor((m) => m.length >= eagles.length);
    await coffee.waitFor((m) => m.length >= coffees.length);
    // Settle: anything duplicated would arrive within the relay's next polls.
    await new Promise((r) => setTimeout(r, 1500));
    assert.deepEqual(main.messages().map((m) => m.key).sort(), hashes(all), "every event once on the main topic");
    assert.deepEqual(raptor.messages().map((m) => m.key).sort(), hashes(eagles), "eagles only, each once");
    assert.deepEqual(coffee.messages().map((m) => m.key).sort(), hashes(coffees), "coffee only, each once");
    for (const m of raptor.messages()) {
      assert.equal(m.headers.category, "raptor");
      assert.equal(m.value.categories[0]?.path, "raptor");
    }
    for (const m of coffee.messages()) assert.equal(m.headers.category, "coffee");
    const catEvent = main.messages().find((m) => m.key === sha(cat))!;
    assert.equal(catEvent.headers.category, "other");
    const byKey = new Map(main.messages().map((m) => [m.key, m.value.eventId]));
    for (const m of [...raptor.messages(), ...coffee.messages()]) assert.equal(m.value.eventId, byKey.get(m.key), "the routed copy carries the same event id");

    // Quality by category: an eagle labelled vulture (class 23) is wrong as a class and as a category (vulture is no eagle).
    await client.submitFeedback({ sha256: sha(eagles[0]!), trueClass: 22, source: "test" });
    await client.submitFeedback({ sha256: sha(eagles[1]!), trueClass: 23, source: "test" });
    await client.submitFeedback({ sha256: sha(coffees[0]!), trueClass: 968, source: "test" });
    await client.submitFeedback({ sha256: sha(cat), trueClass: 281, source: "test" });
    const q = await core.core!.feedback.categoryQuality();
    assert.equal(q.taxonomy, "shop");
    assert.equal(q.samples, 4);
    // raptor/raptor, other/raptor, coffee/coffee, other/other: 3 of 4 right.
    assert.equal(q.accuracy, 0.75);
    const metrics = await (await fetch(`${core.url}/metrics`)).text();
    assert.match(metrics, /categorize_category_quality_ratio\{figure="accuracy"[^}]*\} 0\.75/);
  });
});
