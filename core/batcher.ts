import { CategorizeError, Code, deadlineExceeded, resourceExhausted, unavailable } from "../common/errors.js";

/** What one item experienced in the batcher. */
export interface BatchOutcome<O> {
  readonly output: O;
  readonly queueMs: number;
  readonly runMs: number;
  readonly batchSize: number;
}

export interface BatcherStats {
  readonly batches: number;
  readonly items: number;
  readonly maxBatchSize: number;
  /** How many batches of each size ran. */
  readonly sizes: ReadonlyMap<number, number>;
}

/** Observes the batcher for metrics; every hook is optional. */
export interface BatcherObserver {
  onQueueDepth?(depth: number): void;
  onBatch?(size: number, runMs: number): void;
  onQueueWait?(ms: number): void;
  onDropped?(reason: "deadline" | "cancelled"): void;
  /** A model run failed; every item of the batch gets the error. */
  onRunFailed?(size: number): void;
}

export interface Batcher<I, O> {
  /** Queues one item; settles when its batch has run. Full queue -> RESOURCE_EXHAUSTED; expired deadline -> DEADLINE_EXCEEDED. */
  submit(item: I, options?: { signal?: AbortSignal; deadline?: number }): Promise<BatchOutcome<O>>;
  /** Items waiting now. */
  depth(): number;
  stats(): BatcherStats;
  /** Refuses new items, runs those already queued until the signal aborts, then fails what is left with UNAVAILABLE. */
  close(signal: AbortSignal): Promise<void>;
}

interface Pending<I, O> {
  readonly item: I;
  readonly enqueuedAt: number;
  readonly deadline: number | undefined;
  readonly signal: AbortSignal | undefined;
  resolve(outcome: BatchOutcome<O>): void;
  reject(err: unknown): void;
}

/**
 * Dynamic batching in the manner of Triton's `max_queue_delay`: a batch runs
 * as soon as it is full, or when its oldest item has waited maxDelayMs, and
 * at most maxConcurrentBatches run at once (one per model session). Items
 * whose deadline passed or whose caller gave up are dropped before the run.
 */
export function createBatcher<I, O>(options: {
  maxBatchSize: number;
  maxDelayMs: number;
  queueLimit: number;
  run: (items: readonly I[]) => Promise<readonly O[]>;
  /**
   * An idle model runs what is queued at once instead of waiting maxDelayMs
   * for company: at low load nobody waits, and under load batches still form
   * from what queues while the previous batch runs.
   */
  dispatchWhenIdle?: boolean;
  /** Batches that may run at once (one per model session; default 1). */
  maxConcurrentBatches?: number;
  now?: () => number;
  observer?: BatcherObserver;
}): Batcher<I, O> {
  const now = options.now ?? (() => performance.timeOrigin + performance.now());
  const obs = options.observer ?? {};
  const queue: Pending<I, O>[] = [];
  const sizes = new Map<number, number>();
  let batches = 0;
  let items = 0;
  let maxSeen = 0;
  const running = new Set<Promise<void>>();
  const slots = Math.max(1, options.maxConcurrentBatches ?? 1);
  let timer: NodeJS.Timeout | undefined;
  let closed = false;

  const depthChanged = () => obs.onQueueDepth?.(queue.length);

  function schedule(): void {
    while (running.size < slots && queue.length > 0) {
      const oldest = queue[0]!;
      const wait = oldest.enqueuedAt + options.maxDelayMs - now();
      if (!(queue.length >= options.maxBatchSize || wait <= 0 || closed || options.dispatchWhenIdle === true)) break;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      const run: Promise<void> = dispatch().finally(() => {
        running.delete(run);
        schedule();
      });
      running.add(run);
    }
    if (running.size >= slots || queue.length === 0) return;
    const wait = queue[0]!.enqueuedAt + options.maxDelayMs - now();
    if (timer === undefined) {
      timer = setTimeout(() => {
        timer = undefined;
        schedule();
      }, wait);
    }
  }

  async function dispatch(): Promise<void> {
    const batch: Pending<I, O>[] = [];
    const t = now();
    while (batch.length < options.maxBatchSize && queue.length > 0) {
      const p = queue.shift()!;
      if (p.signal?.aborted === true) {
        obs.onDropped?.("cancelled");
        p.reject(new CategorizeError(Code.Canceled, "request cancelled before inference"));
      } else if (p.deadline !== undefined && p.deadline <= t) {
        obs.onDropped?.("deadline");
        p.reject(deadlineExceeded("deadline passed while queued for inference"));
      } else {
        batch.push(p);
      }
    }
    depthChanged();
    if (batch.length === 0) return;
    const started = now();
    for (const p of batch) obs.onQueueWait?.(started - p.enqueuedAt);
    try {
      const outputs = await options.run(batch.map((p) => p.item));
      const runMs = now() - started;
      batches++;
      items += batch.length;
      maxSeen = Math.max(maxSeen, batch.length);
      sizes.set(batch.length, (sizes.get(batch.length) ?? 0) + 1);
      obs.onBatch?.(batch.length, runMs);
      batch.forEach((p, i) => p.resolve({ output: outputs[i]!, queueMs: started - p.enqueuedAt, runMs, batchSize: batch.length }));
    } catch (err) {
      obs.onRunFailed?.(batch.length);
      for (const p of batch) p.reject(err);
    }
  }

  return {
    submit(item, opts = {}) {
      if (closed) return Promise.reject(unavailable("node is shutting down"));
      if (queue.length >= options.queueLimit) {
        return Promise.reject(resourceExhausted(`inference queue is full (${options.queueLimit} waiting); retry later`));
      }
      return new Promise<BatchOutcome<O>>((resolve, reject) => {
        queue.push({ item, enqueuedAt: now(), deadline: opts.deadline, signal: opts.signal, resolve, reject });
        depthChanged();
        schedule();
      });
    },
    depth: () => queue.length,
    stats: () => ({ batches, items, maxBatchSize: maxSeen, sizes: new Map(sizes) }),
    async close(signal) {
      closed = true;
      schedule();
      while ((queue.length > 0 || running.size > 0) && !signal.aborted) {
        await Promise.race([...running, new Promise((r) => setTimeout(r, 5))]);
      }
      for (const p of queue.splice(0)) p.reject(unavailable("node shut down before this request ran"));
      depthChanged();
    },
  };
}
