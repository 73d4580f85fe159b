/**
 * A push-to-pull bridge for server streams: producers push items as work
 * finishes (in any order); the handler returns iterate() as its response.
 */
export interface AsyncQueue<T> {
  push(item: T): void;
  end(): void;
  fail(err: unknown): void;
  iterate(signal?: AbortSignal): AsyncIterable<T>;
  readonly size: number;
}

export function createAsyncQueue<T>(): AsyncQueue<T> {
  const items: T[] = [];
  let done = false;
  let error: { err: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  return {
    push(item) {
      if (done) return;
      items.push(item);
      notify();
    },
    end() {
      done = true;
      notify();
    },
    fail(err) {
      if (done) return;
      error = { err };
      done = true;
      notify();
    },
    get size() {
      return items.length;
    },
    async *iterate(signal) {
      const onAbort = () => notify();
      signal?.addEventListener("abort", onAbort, { once: true });
      try {
        for (;;) {
          if (items.length > 0) {
            yield items.shift()!;
            continue;
          }
          if (error !== undefined) throw error.err;
          if (done) return;
          if (signal?.aborted === true) throw signal.reason;
          await new Promise<void>((resolve) => (wake = resolve));
        }
      } finally {
        signal?.removeEventListener("abort", onAbort);
      }
    },
  };
}
