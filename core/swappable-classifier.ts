import type { Logger } from "../common/logger.js";
import type { Classifier } from "./classifier.js";

/** A classifier whose model can be replaced while it serves. */
export interface SwappableClassifier extends Classifier {
  /**
   * Makes `next` current. Requests already handed to the old one finish on it
   * (its batcher drains within the grace period), then `retire` releases it.
   */
  swap(next: Classifier, retire: () => Promise<void>, graceMs: number): Promise<void>;
}

/** Delegates to the current classifier; every caller holds this one object across model changes. */
export function createSwappableClassifier(initial: Classifier, logger: Logger): SwappableClassifier {
  let current = initial;
  return {
    get model() {
      return current.model;
    },
    get preprocessing() {
      return current.preprocessing;
    },
    get numClasses() {
      return current.numClasses;
    },
    get batcher() {
      return current.batcher;
    },
    classify: (input) => current.classify(input),
    lookupAny: (sha256, k, tenant) => current.lookupAny(sha256, k, tenant),
    close: (signal) => current.close(signal),
    async swap(next, retire, graceMs) {
      const old = current;
      current = next;
      logger.info({ from: old.model.version, to: next.model.version }, "model swapped; draining the previous one");
      await old.close(AbortSignal.timeout(graceMs));
      await retire();
    },
  };
}
