import type { Taxonomy } from "./taxonomy.js";

/** One category's score in an answer. */
export interface CategoryScore {
  readonly name: string;
  /** Names from the top level down, joined by "/". */
  readonly path: string;
  /** Sum of the member classes' probabilities. */
  readonly score: number;
}

/** The category answer given when no category reaches the minimum score. */
export const UNKNOWN: CategoryScore = Object.freeze({ name: "unknown", path: "unknown", score: 0 });

/** Category scores of one probability vector. */
export interface CategoryAnswer {
  /** Categories at or above the minimum score, highest first (a parent before its child on a tie); [unknown] when none. */
  readonly categories: readonly CategoryScore[];
  /** The most specific category reached from the top: the best top-level category, then its best child, while each reaches the minimum. */
  readonly top: CategoryScore;
}

/** Scores answers against one taxonomy. */
export interface CategoryScorer {
  readonly taxonomy: Taxonomy;
  readonly minScore: number;
  score(probabilities: ArrayLike<number>): CategoryAnswer;
}

/**
 * On the hot path: one pass over the classes adds each probability to its
 * deepest category, one pass over the categories (children after parents, so
 * walked backwards) adds each to its parent. No per-class allocation.
 */
export function createCategoryScorer(taxonomy: Taxonomy, minScore: number): CategoryScorer {
  const { classCategory, parentOf, categories } = taxonomy;
  const n = categories.length;
  const classes = classCategory.length;
  const names = categories.map((c) => c.name);
  const paths = categories.map((c) => c.path);
  // Scratch buffers reused by every call: scoring runs to completion on one thread.
  const sums = new Float64Array(n);
  const kept = new Int32Array(n);
  return {
    taxonomy,
    minScore,
    score(p) {
      sums.fill(0);
      const len = Math.min(classes, p.length);
      for (let c = 0; c < len; c++) sums[classCategory[c]!]! += p[c]!;
      for (let id = n - 1; id >= 0; id--) {
        const parent = parentOf[id]!;
        if (parent >= 0) sums[parent]! += sums[id]!;
      }
      // Kept ids in score order (insertion sort: a handful of entries; ties keep tree order, parents first).
      let k = 0;
      for (let id = 0; id < n; id++) {
        const v = sums[id]!;
        if (v < minScore) continue;
        let j = k++;
        while (j > 0 && sums[kept[j - 1]!]! < v) {
          kept[j] = kept[j - 1]!;
          j--;
        }
        kept[j] = id;
      }
      if (k === 0) return { categories: [UNKNOWN], top: UNKNOWN };
      // Greedy descent over the kept ids: the first kept child of the current node is its best one.
      let top = -1;
      for (let i = 0; i < k; i++) {
        const id = kept[i]!;
        if (parentOf[id] === top) {
          top = id;
          i = -1;
        }
      }
      const out: CategoryScore[] = new Array<CategoryScore>(k);
      let topScore: CategoryScore = UNKNOWN;
      for (let i = 0; i < k; i++) {
        const id = kept[i]!;
        const entry = { name: names[id]!, path: paths[id]!, score: Math.fround(sums[id]!) };
        out[i] = entry;
        if (id === top) topScore = entry;
      }
      return { categories: out, top: topScore };
    },
  };
}
