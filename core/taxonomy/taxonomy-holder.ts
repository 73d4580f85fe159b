import { createCategoryScorer, type CategoryScorer } from "./category-scorer.js";
import { resolveTaxonomy } from "./taxonomy.js";

/** The scorer of the taxonomy in use; replaced as a whole on reload, so an answer never mixes two taxonomies. */
export interface TaxonomyHolder {
  readonly scorer: CategoryScorer;
  /** Loads and validates the configured taxonomy for a model of `numClasses` without making it current (throws naming every problem). */
  load(numClasses: number): CategoryScorer;
  use(next: CategoryScorer): void;
}

/** Loads the configured taxonomy (or the default) at once: a bad file stops the node at start. */
export function createTaxonomyHolder(options: { file: string | undefined; minScore: number; numClasses: number }): TaxonomyHolder {
  const load = (numClasses: number) => createCategoryScorer(resolveTaxonomy(options.file, numClasses), options.minScore);
  let current = load(options.numClasses);
  return {
    get scorer() {
      return current;
    },
    load,
    use(next) {
      current = next;
    },
  };
}
