import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { routeOf } from "../../core/events.js";
import { computeCategoryQuality } from "../../core/quality.js";
import { createCategoryScorer, UNKNOWN } from "../../core/taxonomy/category-scorer.js";
import { buildTaxonomy, defaultTaxonomy, loadTaxonomyFile, OTHER } from "../../core/taxonomy/taxonomy.js";

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-6, `${a} != ${b}`);
const oneHot = (index: number, p = 1): Float32Array => {
  const v = new Float32Array(1000);
  v[index] = p;
  return v;
};
const refusal = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    return (err as Error).message;
  }
  throw new Error("expected the taxonomy to be refused");
};

describe("default taxonomy", () => {
  const t = defaultTaxonomy(1000);
  const byPath = new Map(t.categories.map((c) => [c.path, c]));
  const pathOf = (index: number) => t.categories[t.classCategory[index]!]!.path;

  it("places every one of the 1000 classes in a named category or the explicit other", () => {
    assert.deepEqual(t.unplaced, [], "classes no definition names");
    for (let c = 0; c < 1000; c++) assert.ok(t.classCategory[c]! >= 0, `class ${c}`);
    const top = t.categories.filter((c) => c.parent === -1);
    assert.equal(top.reduce((s, c) => s + c.members.length, 0), 1000, "top-level categories partition the classes");
    assert.ok(byPath.has(OTHER));
  });

  it("leaves a model of another class count all in other", () => {
    const small = defaultTaxonomy(10);
    assert.deepEqual(small.categories.map((c) => [c.path, c.members.length]), [[OTHER, 10]]);
  });

  it("puts well-known classes where a person expects them", () => {
    assert.equal(pathOf(22), "animal/bird"); // bald eagle
    assert.equal(pathOf(967), "food"); // espresso
    assert.equal(pathOf(281), "animal/cat"); // tabby
    assert.equal(pathOf(207), "animal/dog"); // golden retriever
    assert.equal(pathOf(817), "vehicle/car"); // sports car
    assert.equal(pathOf(698), "building"); // palace
    assert.equal(pathOf(402), "musical instrument"); // acoustic guitar
    assert.equal(pathOf(831), "furniture"); // studio couch
    assert.equal(pathOf(970), "natural scene"); // alp
    assert.equal(pathOf(947), "food"); // mushroom: WordNet makes it a vegetable
    assert.equal(pathOf(992), "plant"); // agaric
  });

  it("has parents at least as large as their children, with children inside them", () => {
    for (const c of t.categories) {
      if (c.parent < 0) continue;
      const parent = t.categories[c.parent]!;
      const members = new Set(parent.members);
      assert.ok(c.members.every((m) => members.has(m)), `${c.path} inside ${parent.path}`);
    }
  });
});

describe("category scores", () => {
  const t = defaultTaxonomy(1000);

  it("sum member probabilities, parent first, sorted, with the most specific top", () => {
    const p = new Float32Array(1000);
    p[22] = 0.6; // bald eagle
    p[23] = 0.2; // vulture
    p[967] = 0.15; // espresso
    p[281] = 0.05; // tabby
    const a = createCategoryScorer(t, 0.1).score(p);
    assert.deepEqual(
      a.categories.map((c) => c.path),
      ["animal", "animal/bird", "food"],
    );
    close(a.categories[0]!.score, 0.85);
    close(a.categories[1]!.score, 0.8);
    close(a.categories[2]!.score, 0.15);
    assert.equal(a.top.path, "animal/bird");
  });

  it("answers unknown when nothing reaches the minimum", () => {
    const p = new Float32Array(1000).fill(0.001);
    const a = createCategoryScorer(t, 0.5).score(p);
    assert.deepEqual(a.categories, [UNKNOWN]);
    assert.equal(a.top, UNKNOWN);
  });

  it("stops the top path at a parent whose children do not reach the minimum", () => {
    const p = new Float32Array(1000);
    p[22] = 0.3; // bird
    p[207] = 0.3; // dog
    p[281] = 0.3; // cat
    const a = createCategoryScorer(t, 0.5).score(p);
    assert.equal(a.top.path, "animal");
  });

  it("costs a few microseconds per answer (micro benchmark)", () => {
    const scorer = createCategoryScorer(t, 0.1);
    const p = new Float32Array(1000);
    // A realistic answer: a softmax-like vector, normalised to sum 1.
    let sum = 0;
    for (let i = 0; i < 1000; i++) sum += p[i] = Math.exp(8 * Math.random());
    for (let i = 0; i < 1000; i++) p[i]! /= sum;
    for (let i = 0; i < 2000; i++) scorer.score(p);
    const n = 20_000;
    const started = process.hrtime.bigint();
    for (let i = 0; i < n; i++) scorer.score(p);
    const us = Number(process.hrtime.bigint() - started) / 1000 / n;
    process.stdout.write(`# category scoring: ${us.toFixed(2)} us per answer (${t.categories.length} categories, 1000 classes)\n`);
    assert.ok(us < 50, `${us} us per answer`);
  });
});

describe("operator taxonomies", () => {
  const dir = mkdtempSync(join(tmpdir(), "taxonomy-"));
  after(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, doc: unknown) => {
    const path = join(dir, name);
    writeFileSync(path, typeof doc === "string" ? doc : JSON.stringify(doc));
    return path;
  };

  it("loads two custom categories and puts the rest in an added other", () => {
    const t = loadTaxonomyFile(file("ok.json", { name: "shop", version: "2", categories: [{ name: "raptor", synsets: ["n01613294"] }, { name: "coffee", classes: [967, 968] }] }), 1000);
    assert.equal(t.name, "shop");
    assert.deepEqual(t.categories.map((c) => c.path), ["raptor", "coffee", OTHER]);
    assert.equal(t.categories[0]!.members.includes(22), true, "bald eagle is an eagle");
    assert.deepEqual(t.categories[1]!.members, [967, 968]);
    assert.equal(t.categories[2]!.members.length, 1000 - t.categories[0]!.members.length - 2);
  });

  it("refuses a bad file naming every problem", () => {
    const message = refusal(() =>
      loadTaxonomyFile(
        file("bad.json", {
          categories: [
            { name: "a", parent: "b", synsets: ["n99999999"] },
            { name: "b", parent: "a", classes: [1000, -1, 2.5] },
            { name: "ghost", synsets: ["x123"] },
            { name: "orphan", parent: "nowhere", classes: [1] },
            { name: "Bad/Name", colour: "red" },
            { name: "orphan" },
          ],
        }),
        1000,
      ),
    );
    for (const expected of [
      'category "a": unknown synset n99999999',
      'category "b": unknown class 1000',
      'category "b": unknown class -1',
      'category "b": unknown class 2.5',
      'category "ghost": synset "x123" is not a WordNet noun id',
      'category "orphan": unknown parent "nowhere"',
      'category "Bad/Name": unknown key "colour"',
      'category "Bad/Name": name must be',
      'category "orphan": duplicate name',
      'cycle in parents: "a", "b"',
    ]) {
      assert.ok(message.includes(expected), `missing: ${expected}\n${message}`);
    }
  });

  it("refuses empty categories, and a file that is not JSON", () => {
    const message = refusal(() =>
      buildTaxonomy({ categories: [{ name: "bird", synsets: ["n01503061"] }, { name: "eagle", synsets: ["n01613294"] }, { name: "nothing" }] }, 1000, "t"),
    );
    assert.match(message, /category "eagle" holds no model class/);
    assert.match(message, /category "nothing" holds no model class/);
    assert.match(refusal(() => loadTaxonomyFile(file("broken.json", "{ categories: "), 1000)), /broken\.json/);
  });
});

describe("category routing and quality", () => {
  it("routes to the most specific mapped category of the top path", () => {
    const routes = { animal: "t-animal", "animal/bird": "t-bird", vehicle: "t-vehicle" };
    assert.equal(routeOf("animal/bird", routes), "t-bird");
    assert.equal(routeOf("animal/dog", routes), "t-animal");
    assert.equal(routeOf("vehicle/car", routes), "t-vehicle");
    assert.equal(routeOf("food", routes), undefined);
    assert.equal(routeOf("unknown", { unknown: "t-unknown" }), "t-unknown");
  });

  it("gives quality over top-level categories matching a hand computation", () => {
    const t = defaultTaxonomy(1000);
    const top = (i: number) => t.categories[t.classTop[i]!]!.name;
    assert.equal(top(281), "animal");
    assert.equal(top(285), "animal");
    assert.equal(top(967), "food");
    assert.equal(top(817), "vehicle");
    // truth/predicted classes -> categories:
    //   tabby(281)/Egyptian cat(285) -> animal/animal (right, although the class is wrong)
    //   espresso(967)/espresso(967)  -> food/food
    //   espresso(967)/tabby(281)     -> food/animal
    //   sports car(817)/tabby(281)   -> vehicle/animal
    // animal: predicted 3, true 1, tp 1 -> P 1/3, R 1, F1 1/2
    // food: predicted 1, true 2, tp 1 -> P 1, R 1/2, F1 2/3
    // vehicle: predicted 0, true 1, tp 0 -> P 0, R 0, F1 0
    const q = computeCategoryQuality(
      [
        { truth: 281, predicted: 285 },
        { truth: 967, predicted: 967 },
        { truth: 967, predicted: 281 },
        { truth: 817, predicted: 281 },
      ],
      t.classTop,
    );
    assert.equal(q.samples, 4);
    close(q.accuracy, 0.5);
    close(q.macroPrecision, (1 / 3 + 1 + 0) / 3);
    close(q.macroRecall, (1 + 1 / 2 + 0) / 3);
    close(q.macroF1, (1 / 2 + 2 / 3 + 0) / 3);
  });

  it("one-hot answers score exactly their class's chain", () => {
    const a = createCategoryScorer(defaultTaxonomy(1000), 0.1).score(oneHot(22));
    assert.deepEqual(a.categories.map((c) => [c.path, c.score]), [["animal", 1], ["animal/bird", 1]]);
  });
});
