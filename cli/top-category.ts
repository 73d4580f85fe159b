import type { CategoryScore } from "../gen/categorize/v1/types_pb.js";

/**
 * The most specific category of an answer, as the node picks it: the best
 * top-level category, then its best child, and so on (answers list only
 * categories at or above the node's minimum score). "" when there are none.
 */
export function topCategory(categories: readonly CategoryScore[]): string {
  let current = "";
  for (;;) {
    const prefix = current === "" ? "" : `${current}/`;
    let best: CategoryScore | undefined;
    for (const c of categories) {
      const rest = c.path.startsWith(prefix) ? c.path.slice(prefix.length) : undefined;
      if (rest === undefined || rest === "" || rest.includes("/")) continue;
      if (best === undefined || c.score > best.score) best = c;
    }
    if (best === undefined) return current;
    current = best.path;
  }
}
