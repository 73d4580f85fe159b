import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code } from "../../common/errors.js";
import { createBatcher } from "../../core/batcher.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("dynamic batcher", () => {
  it("runs a full batch at once and a partial one after the queue delay", async () => {
    const runs: number[][] = [];
    const b = createBatcher<number, number>({ maxBatchSize: 4, maxDelayMs: 30, queueLimit: 100, run: (xs) => (runs.push([...xs]), Promise.resolve(xs.map((x) => x * 2))) });
    const full = await Promise.all([1, 2, 3, 4].map((x) => b.submit(x)));
    assert.deepEqual(full.map((o) => o.output), [2, 4, 6, 8]);
    assert.deepEqual(runs, [[1, 2, 3, 4]]);
    const started = Date.now();
    const partial = await Promise.all([5, 6].map((x) => b.submit(x)));
    assert.ok(Date.now() - started >= 25, "a partial batch waits for the delay");
    assert.equal(partial[0]!.batchSize, 2);
    assert.deepEqual(b.stats().sizes, new Map([[4, 1], [2, 1]]));
  });

  it("refuses with RESOURCE_EXHAUSTED when the queue is full", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const b = createBatcher<number, number>({ maxBatchSize: 1, maxDelayMs: 0, queueLimit: 2, run: async (xs) => (await gate, xs) });
    const running = b.submit(1);
    await sleep(5);
    const queued = [b.submit(2), b.submit(3)];
    await assert.rejects(b.submit(4), (e: { code: Code }) => e.code === Code.ResourceExhausted);
    release();
    await Promise.all([running, ...queued]);
  });

  it("drops items whose deadline passed or whose caller gave up, before the run", async () => {
    const seen: number[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const b = createBatcher<number, number>({ maxBatchSize: 8, maxDelayMs: 0, queueLimit: 10, run: async (xs) => (seen.push(...xs), await gate, xs) });
    const first = b.submit(0);
    await sleep(5);
    const expired = b.submit(1, { deadline: Date.now() + 5 });
    const ac = new AbortController();
    const cancelled = b.submit(2, { signal: ac.signal });
    const kept = b.submit(3);
    ac.abort();
    await sleep(20);
    release();
    await first;
    await assert.rejects(expired, (e: { code: Code }) => e.code === Code.DeadlineExceeded);
    await assert.rejects(cancelled, (e: { code: Code }) => e.code === Code.Canceled);
    assert.equal((await kept).output, 3);
    assert.deepEqual(seen, [0, 3]);
  });

  it("fails every item of a batch whose run failed, and keeps working", async () => {
    let fail = true;
    const b = createBatcher<number, number>({ maxBatchSize: 2, maxDelayMs: 1, queueLimit: 10, run: (xs) => (fail ? Promise.reject(new Error("boom")) : Promise.resolve(xs)) });
    const results = await Promise.allSettled([b.submit(1), b.submit(2)]);
    assert.ok(results.every((r) => r.status === "rejected"));
    fail = false;
    assert.equal((await b.submit(7)).output, 7);
  });

  it("drains queued items on close and refuses new ones", async () => {
    const b = createBatcher<number, number>({ maxBatchSize: 2, maxDelayMs: 50, queueLimit: 10, run: (xs) => Promise.resolve(xs) });
    const queued = b.submit(1);
    await b.close(AbortSignal.timeout(1000));
    assert.equal((await queued).output, 1);
    await assert.rejects(b.submit(2), (e: { code: Code }) => e.code === Code.Unavailable);
  });

  it("with dispatchWhenIdle runs an item at once on an idle model, and batches what queues while a batch runs", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const runs: number[][] = [];
    const b = createBatcher<number, number>({
      maxBatchSize: 8,
      maxDelayMs: 10_000,
      queueLimit: 100,
      dispatchWhenIdle: true,
      run: async (xs) => {
        runs.push([...xs]);
        if (runs.length === 1) await gate;
        return xs;
      },
    });
    const first = b.submit(1);
    // Far below the 10 s delay: the idle model took it at once.
    while (runs.length === 0) await new Promise((r) => setTimeout(r, 1));
    const rest = [2, 3, 4].map((x) => b.submit(x));
    release();
    await Promise.all([first, ...rest]);
    assert.deepEqual(runs, [[1], [2, 3, 4]]);
  });

  it("runs up to maxConcurrentBatches batches side by side, one per model session", async () => {
    const gates: (() => void)[] = [];
    let active = 0;
    let peak = 0;
    const b = createBatcher<number, number>({
      maxBatchSize: 2,
      maxDelayMs: 0,
      queueLimit: 100,
      dispatchWhenIdle: true,
      maxConcurrentBatches: 2,
      run: async (xs) => {
        active++;
        peak = Math.max(peak, active);
        await new Promise<void>((r) => gates.push(r));
        active--;
        return xs;
      },
    });
    const all = [1, 2, 3, 4, 5, 6].map((x) => b.submit(x));
    while (gates.length < 2) await new Promise((r) => setTimeout(r, 1));
    assert.equal(active, 2, "two batches run at once, the rest wait");
    while (gates.length > 0 || active > 0) {
      gates.shift()?.();
      await new Promise((r) => setTimeout(r, 1));
    }
    assert.deepEqual((await Promise.all(all)).map((o) => o.output), [1, 2, 3, 4, 5, 6]);
    assert.equal(peak, 2);
  });
});
