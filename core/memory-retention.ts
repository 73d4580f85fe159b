import type { Logger } from "../common/logger.js";
import type { Metrics } from "../common/metrics.js";
import { sleep } from "../common/sleep.js";
import type { Retention } from "./retention.js";
import type { MemoryStore } from "./store/memory-store.js";

/**
 * Retention for the memory store: images not seen for `days` go with their
 * answers, as the SQL retention removes rows. A memory node keeps no
 * originals, so there are no objects or orphans to remove.
 */
export function createMemoryRetention(options: { store: MemoryStore; days: number; intervalMs: number; logger: Logger; metrics: Metrics; now?: () => number }): Retention {
  const now = options.now ?? Date.now;
  const runOnce: Retention["runOnce"] = () => {
    const rowsRemoved = options.store.expire(now() - options.days * 86_400_000);
    options.metrics.retentionRemoved.inc({ kind: "rows" }, rowsRemoved);
    if (rowsRemoved > 0) options.logger.info({ rowsRemoved }, "retention cleanup");
    return Promise.resolve({ ran: true, rowsRemoved, objectsRemoved: 0, orphansRemoved: 0 });
  };
  return {
    runOnce,
    start(signal) {
      const tick = async () => {
        while (!signal.aborted) {
          await runOnce();
          await sleep(options.intervalMs, signal);
        }
      };
      void tick();
    },
  };
}
