import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { Code, CategorizeError } from "../../common/errors.js";
import wordnet from "./imagenet-wordnet.json" with { type: "json" };
import defaultFile from "./default-taxonomy.json" with { type: "json" };

/** One category as written in a taxonomy file (flat list; `parent` names another entry). */
export interface CategoryDefinition {
  readonly name: string;
  readonly parent?: string;
  /** WordNet 3.0 noun synsets ("n" + 8-digit offset): every model class under one of them. */
  readonly synsets?: readonly string[];
  /** Model class indices, for classes no synset places well. */
  readonly classes?: readonly number[];
}

/** A category resolved against the model's classes. */
export interface Category {
  /** Position in {@link Taxonomy.categories}: parents come before their children. */
  readonly id: number;
  readonly name: string;
  /** Names from the top-level category down, joined by "/" (e.g. "animal/bird"). */
  readonly path: string;
  /** Parent id, -1 for a top-level category. */
  readonly parent: number;
  /** Top-level category id this one belongs to (itself when top-level). */
  readonly top: number;
  readonly synsets: readonly string[];
  /** Every model class whose probability counts for this category (its children's included). */
  readonly members: readonly number[];
}

/** The taxonomy in use, with the class -> category arrays precomputed for the hot path. */
export interface Taxonomy {
  readonly name: string;
  readonly version: string;
  readonly numClasses: number;
  readonly categories: readonly Category[];
  /** For each class, the deepest category that holds it. */
  readonly classCategory: Int32Array;
  /** For each category, its parent id or -1. */
  readonly parentOf: Int32Array;
  /** For each class, its top-level category id. */
  readonly classTop: Int32Array;
  /** Classes no definition named, put in "other" (an explicit "other" entry or one added for them). */
  readonly unplaced: readonly number[];
  /** sha256 of the resolved categories (names, paths, members): changes whenever answers would. */
  readonly fingerprint: string;
}

/** Name of the category of classes nothing else claims. */
export const OTHER = "other";

const SYNSET = /^n\d{8}$/;
const NAME = /^[a-z0-9][a-z0-9 &'-]{0,62}$/;
const KEYS = new Set(["name", "parent", "synsets", "classes"]);

interface WordnetTable {
  readonly classes: readonly { readonly wnid: string; readonly ancestors: readonly string[] }[];
  readonly lemmas: Readonly<Record<string, string>>;
}
const table = wordnet as WordnetTable;

/**
 * The taxonomy shipped with the ImageNet-1k models (derived from WordNet 3.0,
 * see PROVENANCE.md). A model with another number of classes is not an
 * ImageNet-1k model: without its own file, all its classes are "other".
 */
export function defaultTaxonomy(numClasses: number): Taxonomy {
  if (numClasses !== table.classes.length) return buildTaxonomy({ name: "none", version: "", categories: [{ name: OTHER, classes: Array.from({ length: numClasses }, (_, i) => i) }] }, numClasses, "fallback taxonomy");
  return buildTaxonomy(defaultFile, numClasses, "default taxonomy");
}

/** Reads, validates and resolves an operator's taxonomy file (JSON). Every problem is named in one error. */
export function loadTaxonomyFile(path: string, numClasses: number): Taxonomy {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    throw new CategorizeError(Code.FailedPrecondition, `taxonomy ${path}: ${(err as Error).message}`);
  }
  return buildTaxonomy(raw, numClasses, `taxonomy ${path}`);
}

/** The configured taxonomy, or the default one. */
export function resolveTaxonomy(path: string | undefined, numClasses: number): Taxonomy {
  return path === undefined ? defaultTaxonomy(numClasses) : loadTaxonomyFile(path, numClasses);
}

/**
 * Validates a taxonomy document and resolves it against the model's classes.
 * A class goes to the first top-level category (file order) whose subtree
 * names it or one of its hypernyms, then down to the first such child, so
 * each class counts once per level and a parent's score is at least the sum
 * of its children's.
 */
export function buildTaxonomy(raw: unknown, numClasses: number, what: string): Taxonomy {
  const problems: string[] = [];
  const doc = (typeof raw === "object" && raw !== null && !Array.isArray(raw) ? raw : {}) as Record<string, unknown>;
  if (!Array.isArray(doc.categories)) problems.push(`"categories" must be a list`);
  for (const k of Object.keys(doc)) if (!["name", "version", "categories"].includes(k)) problems.push(`unknown key "${k}"`);
  const name = typeof doc.name === "string" ? doc.name : "custom";
  const version = typeof doc.version === "string" ? doc.version : "";
  const entries = Array.isArray(doc.categories) ? (doc.categories as unknown[]) : [];
  const defs: { name: string; parent: string | undefined; synsets: string[]; classes: number[] }[] = [];
  const seen = new Set<string>();
  entries.forEach((e, i) => {
    if (typeof e !== "object" || e === null || Array.isArray(e)) return problems.push(`categories[${i}] must be an object`);
    const o = e as Record<string, unknown>;
    const label = typeof o.name === "string" ? `category "${o.name}"` : `categories[${i}]`;
    for (const k of Object.keys(o)) if (!KEYS.has(k)) problems.push(`${label}: unknown key "${k}"`);
    if (typeof o.name !== "string" || !NAME.test(o.name)) problems.push(`${label}: name must be 1-63 lower-case letters, digits, spaces, &, ' or -`);
    else if (seen.has(o.name)) problems.push(`${label}: duplicate name`);
    else seen.add(o.name);
    if (o.parent !== undefined && typeof o.parent !== "string") problems.push(`${label}: parent must be a category name`);
    const synsets = o.synsets === undefined ? [] : Array.isArray(o.synsets) ? o.synsets : (problems.push(`${label}: synsets must be a list`), []);
    const classes = o.classes === undefined ? [] : Array.isArray(o.classes) ? o.classes : (problems.push(`${label}: classes must be a list`), []);
    for (const s of synsets) {
      if (typeof s !== "string" || !SYNSET.test(s)) problems.push(`${label}: synset ${JSON.stringify(s)} is not a WordNet noun id (n + 8 digits)`);
      else if (table.lemmas[s] === undefined) problems.push(`${label}: unknown synset ${s} (neither a model class nor a hypernym of one in WordNet 3.0)`);
    }
    for (const c of classes) {
      if (typeof c !== "number" || !Number.isInteger(c) || c < 0 || c >= numClasses) problems.push(`${label}: unknown class ${JSON.stringify(c)} (model classes are 0..${numClasses - 1})`);
    }
    defs.push({
      name: typeof o.name === "string" ? o.name : `#${i}`,
      parent: typeof o.parent === "string" ? o.parent : undefined,
      synsets: synsets.filter((s): s is string => typeof s === "string"),
      classes: classes.filter((c): c is number => typeof c === "number"),
    });
  });
  const byName = new Map(defs.map((d, i) => [d.name, i]));
  for (const d of defs) if (d.parent !== undefined && !byName.has(d.parent)) problems.push(`category "${d.name}": unknown parent "${d.parent}"`);
  // Cycles: follow parents; a walk that comes back to where it started is reported once per category on it.
  const inCycle = new Set<string>();
  for (const d of defs) {
    const path = new Set<string>();
    let cur: string | undefined = d.name;
    while (cur !== undefined && !path.has(cur)) {
      path.add(cur);
      cur = defs[byName.get(cur) ?? -1]?.parent;
    }
    if (cur === d.name) inCycle.add(d.name);
  }
  if (inCycle.size > 0) problems.push(`cycle in parents: ${[...inCycle].map((n) => `"${n}"`).join(", ")}`);
  if (table.classes.length < numClasses) problems.push(`the WordNet table covers ${table.classes.length} classes, the model has ${numClasses}`);
  if (problems.length > 0) throw refused(what, problems);

  // Order: parents before children, siblings in file order; "other" (explicit or added) last among the top level.
  const childrenOf = new Map<string | undefined, number[]>();
  defs.forEach((d, i) => childrenOf.set(d.parent, [...(childrenOf.get(d.parent) ?? []), i]));
  const order: number[] = [];
  const visit = (i: number) => {
    order.push(i);
    for (const c of childrenOf.get(defs[i]!.name) ?? []) visit(c);
  };
  for (const r of childrenOf.get(undefined) ?? []) visit(r);
  const ids = new Map(order.map((defIndex, id) => [defIndex, id]));
  const nodes = order.map((defIndex) => defs[defIndex]!);
  const parentOf = Int32Array.from(nodes, (d) => (d.parent === undefined ? -1 : ids.get(byName.get(d.parent)!)!));
  const childIds = nodes.map((_, id) => nodes.flatMap((__, c) => (parentOf[c] === id ? [c] : [])));
  // Each node's own and subtree definitions, as sets, for the claim walk.
  const own = nodes.map((d) => ({ synsets: new Set(d.synsets), classes: new Set(d.classes) }));
  const sub = nodes.map(() => ({ synsets: new Set<string>(), classes: new Set<number>() }));
  for (let id = nodes.length - 1; id >= 0; id--) {
    for (const s of own[id]!.synsets) sub[id]!.synsets.add(s);
    for (const c of own[id]!.classes) sub[id]!.classes.add(c);
    const p = parentOf[id]!;
    if (p >= 0) {
      for (const s of sub[id]!.synsets) sub[p]!.synsets.add(s);
      for (const c of sub[id]!.classes) sub[p]!.classes.add(c);
    }
  }
  const roots = nodes.flatMap((_, id) => (parentOf[id] === -1 ? [id] : []));
  const classCategory = new Int32Array(numClasses).fill(-1);
  const unplaced: number[] = [];
  for (let c = 0; c < numClasses; c++) {
    const entry = table.classes[c]!;
    const matches = (id: number) => sub[id]!.classes.has(c) || sub[id]!.synsets.has(entry.wnid) || entry.ancestors.some((a) => sub[id]!.synsets.has(a));
    let at = roots.find(matches) ?? -1;
    if (at === -1) {
      unplaced.push(c);
      continue;
    }
    for (let next = childIds[at]!.find(matches); next !== undefined; next = childIds[at]!.find(matches)) at = next;
    classCategory[c] = at;
  }
  // Classes nothing claims go to "other": the file's own top-level entry, or one added for them.
  let otherId = nodes.findIndex((d, id) => d.name === OTHER && parentOf[id] === -1);
  const names = nodes.map((d) => d.name);
  let parents = Array.from(parentOf);
  if (unplaced.length > 0 && otherId === -1) {
    otherId = names.length;
    names.push(OTHER);
    parents = [...parents, -1];
    nodes.push({ name: OTHER, parent: undefined, synsets: [], classes: [] });
  }
  for (const c of unplaced) classCategory[c] = otherId;

  const members: number[][] = names.map(() => []);
  for (let c = 0; c < numClasses; c++) for (let id = classCategory[c]!; id >= 0; id = parents[id]!) members[id]!.push(c);
  const empty = names.filter((_, id) => members[id]!.length === 0);
  if (empty.length > 0) throw refused(what, empty.map((n) => `category "${n}" holds no model class (its synsets and classes are empty, unknown to the model, or all claimed by an earlier category)`));

  const pathOf = (id: number): string => (parents[id]! < 0 ? names[id]! : `${pathOf(parents[id]!)}/${names[id]!}`);
  const topOf = (id: number): number => (parents[id]! < 0 ? id : topOf(parents[id]!));
  const categories: Category[] = names.map((n, id) => ({ id, name: n, path: pathOf(id), parent: parents[id]!, top: topOf(id), synsets: nodes[id]!.synsets, members: members[id]! }));
  return {
    name,
    version,
    numClasses,
    categories,
    classCategory,
    parentOf: Int32Array.from(parents),
    classTop: Int32Array.from(classCategory, (id) => topOf(id)),
    unplaced,
    fingerprint: createHash("sha256")
      .update(JSON.stringify([name, version, categories.map((c) => [c.path, c.members])]))
      .digest("hex"),
  };
}

function refused(what: string, problems: readonly string[]): CategorizeError {
  return new CategorizeError(Code.FailedPrecondition, `${what} refused (${problems.length} problem${problems.length === 1 ? "" : "s"}):\n  - ${problems.join("\n  - ")}`);
}
