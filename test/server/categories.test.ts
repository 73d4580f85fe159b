import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { RunningNode } from "../../cli/start-node.js";
import { categorizeClient } from "../support/clients.js";
import { readImage } from "../support/fixtures.js";
import { startTestNode } from "../support/nodes.js";
import { closeAll } from "../support/teardown.js";

/** What a person expects of the shared photos under the default taxonomy. */
const EXPECTED: Readonly<Record<string, string>> = {
  "bald_eagle.jpeg": "animal/bird",
  "coffee.png": "food",
  "chelsea.png": "animal/cat",
  "china.jpg": "building",
};

describe("categories in answers, GetResult and ListCategories", () => {
  describe("embedded node, default taxonomy", () => {
    let node: RunningNode;
    before(async () => {
      node = await startTestNode("all", { CACHE_MAX_ENTRIES: "0" });
    });
    after(() => closeAll(() => node?.stop()));

    it("gives the shared photos sensible categories, sorted, parents before children", async () => {
      const client = categorizeClient(node.url);
      for (const [file, path] of Object.entries(EXPECTED)) {
        const res = await client.classify({ image: readImage(file) });
        const paths = res.categories.map((c) => c.path);
        assert.ok(paths.includes(path), `${file}: ${JSON.stringify(res.categories)}`);
        for (let i = 1; i < res.categories.length; i++) assert.ok(res.categories[i - 1]!.score >= res.categories[i]!.score, `${file}: sorted`);
        if (path.includes("/")) assert.ok(paths.indexOf(path.split("/")[0]!) < paths.indexOf(path), `${file}: parent first`);
        assert.ok(res.categories.every((c) => c.score >= 0.1), `${file}: at or above the minimum score`);
      }
      const eagle = await client.classify({ image: readImage("bald_eagle.jpeg") });
      assert.equal(eagle.categories[0]!.path, "animal");
      assert.equal(eagle.categories[1]!.path, "animal/bird");
      assert.ok(eagle.categories[1]!.score > 0.9);
    });

    it("returns the same categories from the store (GetResult and a repeat) as when fresh", async () => {
      const client = categorizeClient(node.url);
      const image = readImage("coffee.png");
      const first = await client.classify({ image, topK: 1 });
      const stored = await client.getResult({ sha256: first.sha256, topK: 3 });
      const repeat = await client.classify({ image });
      assert.equal(repeat.cached, true);
      assert.deepEqual(stored.categories, first.categories);
      assert.deepEqual(repeat.categories, first.categories);
    });

    it("lists the taxonomy in use", async () => {
      const res = await categorizeClient(node.url).listCategories({});
      assert.equal(res.name, "imagenet-wordnet-default");
      assert.equal(res.model?.name, "mobilenetv2-12-int8");
      const bird = res.categories.find((c) => c.path === "animal/bird")!;
      assert.equal(bird.parent, "animal");
      assert.ok(bird.classes.includes(22));
      assert.deepEqual(bird.synsets, ["n01503061"]);
      const top = res.categories.filter((c) => c.parent === "");
      assert.equal(top.reduce((s, c) => s + c.classes.length, 0), 1000);
      assert.ok(Math.abs(res.minScore - 0.1) < 1e-6);
    });
  });

  describe("edge and core, an operator taxonomy reloaded on SIGHUP", () => {
    let dir: string;
    let file: string;
    let core: RunningNode;
    let edge: RunningNode;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "categorize-categories-"));
      file = join(dir, "taxonomy.json");
      await writeFile(file, JSON.stringify({ name: "mine", version: "1", categories: [{ name: "raptor", synsets: ["n01613294"] }, { name: "coffee", classes: [967, 968, 504] }] }));
      core = await startTestNode("core", { CATEGORIZE_TAXONOMY: file, CATEGORIZE_CATEGORY_MIN_SCORE: "0.2" });
      // The edge keeps its answer cache: a reloaded taxonomy must not be served stale from it.
      edge = await startTestNode("edge", { CORE_URLS: core.url });
    });
    after(() =>
      closeAll(
        () => edge?.stop(),
        () => core?.stop(),
        () => rm(dir, { recursive: true, force: true }),
      ),
    );

    it("answers and lists the operator's categories through the edge", async () => {
      const client = categorizeClient(edge.url);
      const listed = await client.listCategories({});
      assert.equal(listed.name, "mine");
      assert.deepEqual(listed.categories.map((c) => c.path), ["raptor", "coffee", "other"]);
      const eagle = await client.classify({ image: readImage("bald_eagle.jpeg") });
      assert.equal(eagle.categories[0]!.path, "raptor");
      const coffee = await client.classify({ image: readImage("coffee.png") });
      assert.equal(coffee.categories[0]!.path, "coffee");
    });

    it("keeps the current taxonomy when the reloaded file is bad, and takes a good one", async () => {
      const client = categorizeClient(edge.url);
      await writeFile(file, JSON.stringify({ categories: [{ name: "raptor", synsets: ["n00000000"] }] }));
      await assert.rejects(core.core!.reloadModel(), /unknown synset n00000000/);
      assert.equal((await client.listCategories({})).name, "mine", "the bad file changed nothing");

      await writeFile(file, JSON.stringify({ name: "mine", version: "2", categories: [{ name: "bird", synsets: ["n01503061"] }] }));
      assert.equal(await core.core!.reloadModel(), false, "same model: no model swap");
      const listed = await client.listCategories({});
      assert.equal(listed.version, "2");
      // The edge learns the new taxonomy fingerprint with its next model-info refresh (every 5 s).
      const deadline = Date.now() + 20_000;
      let stored = await client.classify({ image: readImage("bald_eagle.jpeg") });
      while (stored.categories[0]?.path !== "bird" && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 250));
        stored = await client.classify({ image: readImage("bald_eagle.jpeg") });
      }
      assert.equal(stored.cached, true);
      assert.equal(stored.categories[0]!.path, "bird", "stored answers are scored with the taxonomy in use, and the edge cache does not serve the old one");
    });
  });

  it("refuses to start with a bad taxonomy file, naming every problem", async () => {
    const dir = await mkdtemp(join(tmpdir(), "categorize-bad-taxonomy-"));
    try {
      const file = join(dir, "bad.json");
      await writeFile(file, JSON.stringify({ categories: [{ name: "a", parent: "b", synsets: ["n99999999"] }, { name: "b", parent: "a", classes: [5000] }, { name: "empty" }] }));
      await assert.rejects(startTestNode("all", { CATEGORIZE_TAXONOMY: file }), (err: Error) => {
        for (const part of ["unknown synset n99999999", "unknown class 5000", 'cycle in parents: "a", "b"']) assert.ok(err.message.includes(part), `${part} in ${err.message}`);
        return true;
      });
      await writeFile(file, JSON.stringify({ categories: [{ name: "bird", synsets: ["n01503061"] }, { name: "empty" }] }));
      await assert.rejects(startTestNode("all", { CATEGORIZE_TAXONOMY: file }), /category "empty" holds no model class/);
      await writeFile(file, JSON.stringify({ categories: [{ name: "bird", synsets: ["n01503061"] }] }));
      await assert.rejects(startTestNode("all", { CATEGORIZE_TAXONOMY: file, CATEGORIZE_CATEGORY_TOPICS: "fish=t1", KAFKA_BROKERS: "127.0.0.1:1", EMBEDDED_STORE: "pglite" }), /CATEGORIZE_CATEGORY_TOPICS|unknown categories "fish"/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
