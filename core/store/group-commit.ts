/** What a group run answers for one item: its value, or the error that item alone failed with. */
export type ItemOutcome<O> = { readonly ok: true; readonly value: O } | { readonly ok: false; readonly error: unknown };

/**
 * Group commit: items submitted while `maxConcurrent` runs are under way wait
 * and go together into the next run (at most `maxBatch` each), so a store
 * pays one transaction and a few multi-row statements per group instead of
 * several round trips per item. An idle store adds no delay beyond the end
 * of the current event-loop turn (setImmediate), which gathers the answers
 * of one model batch, resolved together, into one run.
 */
export function createGroupCommit<I, O>(options: {
  maxBatch: number;
  maxConcurrent: number;
  /** One group; returns an outcome per item, in order. A throw fails every item of the group. */
  run: (items: readonly I[]) => Promise<readonly ItemOutcome<O>[]>;
  /** Told the size of each group run (for metrics). */
  onGroup?: (size: number) => void;
}): (item: I) => Promise<O> {
  const queue: { item: I; resolve: (v: O) => void; reject: (e: unknown) => void }[] = [];
  let running = 0;
  let scheduled = false;

  const flush = () => {
    scheduled = false;
    while (running < options.maxConcurrent && queue.length > 0) {
      const group = queue.splice(0, options.maxBatch);
      running++;
      options.onGroup?.(group.length);
      void options
        .run(group.map((g) => g.item))
        .then(
          (outcomes) => {
            group.forEach((g, i) => {
              const o = outcomes[i];
              if (o === undefined) g.reject(new Error("group commit: no outcome for an item"));
              else if (o.ok) g.resolve(o.value);
              else g.reject(o.error);
            });
          },
          (err: unknown) => {
            for (const g of group) g.reject(err);
          },
        )
        .finally(() => {
          running--;
          schedule();
        });
    }
  };
  const schedule = () => {
    if (scheduled || queue.length === 0 || running >= options.maxConcurrent) return;
    scheduled = true;
    setImmediate(flush);
  };

  return (item) =>
    new Promise<O>((resolve, reject) => {
      queue.push({ item, resolve, reject });
      schedule();
    });
}
