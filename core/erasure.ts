import { notFound } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import type { ObjectStore } from "../common/object-store.js";
import { imageDeletedEvent } from "./events.js";
import { removeRecordedObject } from "./retention.js";
import type { ResultStore } from "./store/result-store.js";
import type { SqlClient } from "./store/sql-client.js";

/** DeleteImage on core: erasure of one tenant's reference to an image. */
export interface Erasure {
  /** Erases this tenant's reference (NOT_FOUND, as for an unknown hash, when it has none); true when it was the last one. */
  erase(sha256: string, tenant: string): Promise<{ lastReference: boolean }>;
}

/**
 * The two-step removal retention uses, for one image on request. Step 1 (one
 * transaction in the store): the tenant's reference, its feedback and so its
 * answer view go, with an ImageDeleted event in the outbox; when no tenant
 * references the image any more, its rows go too and its original is
 * recorded in object_deletions. Step 2 (here, at once): the recorded
 * original is removed, then its record. A crash between the two leaves the
 * record, which the next retention run completes.
 */
export function createErasure(options: {
  store: ResultStore;
  /** The SQL store's client; undefined for the memory store (no originals). */
  db: SqlClient | undefined;
  objects: ObjectStore;
  /** Whether events are on (an outbox exists). */
  events: boolean;
  /** Called after the event committed (the relay publishes it). */
  onEvent?: (() => void) | undefined;
  logger: Logger;
}): Erasure {
  return {
    async erase(sha256, tenant) {
      const out = await options.store.forget(sha256, tenant, { event: options.events ? (last) => imageDeletedEvent(sha256, tenant, last) : undefined });
      // The same answer as GetResult gives for a hash nobody sent.
      if (!out.found) throw notFound(`no stored result for ${sha256}`);
      if (options.events) options.onEvent?.();
      if (out.objectKey !== undefined && options.db !== undefined) {
        // Step 2; on failure the record stays and retention finishes it, so the erasure itself has succeeded.
        await removeRecordedObject(options.db, options.objects, { objectKey: out.objectKey, sha256 }).catch((err: unknown) =>
          options.logger.warn({ err: err instanceof Error ? err.message : String(err), sha256 }, "original removal failed; retention will complete it"),
        );
      }
      return { lastReference: out.lastReference };
    },
  };
}
