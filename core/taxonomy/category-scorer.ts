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
  return {
    taxonomy,
    minScore,
    score(p) {
      const sums = new Float64Array(n);
      const len = Math.min(classes, p.length);
      for (let c = 0; c < len; c++) sums[classCategory[c]!]! += p[c]!;
      for (let id = n - 1; id >= 0; id--) {
        const parent = parentOf[id]!;
        if (parent >= 0) sums[parent]! += sums[id]!;
      }
      const kept: number[] = [];
      for (let id = 0; id < n; id++) if (sums[id]! >= minScore) kept.push(id);
      if (kept.length === 0) return { categories: [UNKNOWN], top: UNKNOWN };
      kept.sort((a, b) => sums[b]! - sums[a]! || a - b);
      // Greedy descent: best reaching child of the current node (top level: parent -1).
      let top = -1;
      for (let parent = -1, found = true; found; ) {
        found = false;
        let best = -1;
        for (let id = 0; id < n; id++) if (parentOf[id] === parent && sums[id]! >= minScore && (best < 0 || sums[id]! > sums[best]!)) best = id;
        if (best >= 0) {
          top = best;
          parent = best;
          found = true;
        }
      }
      const out = kept.map((id) => ({ name: categories[id]!.name, path: categories[id]!.path, score: Math.fround(sums[id]!) }));
      return { categories: out, top: out[kept.indexOf(top)] ?? UNKNOWN };
    },
  };
}
