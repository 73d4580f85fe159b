import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { runSoak } from "./support/soak.js";
import { report } from "./support/observe.js";

/**
 * The short soak of `npm test` (the long one is `npm run soak`, bench/soak.ts).
 * 35 s are fitted after a warm-up of at least 20 s that also waits for the
 * node's first major GC under traffic (before it, a healthy node's RSS climbs
 * 40-80 MB while V8 grows its old generation: 79 MB/min was fitted over that
 * climb on a CI machine). After it RSS
 * moves by tens of MB with each major GC (fitted slopes of -60 to +26 MB/min
 * were seen on a healthy node), so the bound is generous: it catches a gross
 * leak (keeping ~50 KB per request or more at 20 requests/s, e.g. every
 * request's 150 KB tensor = ~180 MB/min), not a slow one; the long mode
 * (`npm run soak`, 2 MB/min) bounds that.
 */
const MAX_SLOPE_MB_PER_MIN = 60;
/** Under the same steady load, the node's open fds may differ by a few (a pool connection opening or closing). */
const MAX_FD_GROWTH = 4;

describe("reliability: short soak of the embedded node", { timeout: 180_000 }, () => {
  it("keeps RSS flat and does not leak file descriptors under steady traffic", async () => {
    const result = await runSoak({ durationMs: 55_000, warmupMs: 20_000, ratePerSecond: 20, concurrency: 4, newEvery: 10, poolSize: 64 });
    const { samples, ...summary } = result;
    report("soak", { ...summary, rssSeriesMB: samples.filter((_, i) => i % 5 === 0).map((s) => Math.round(s.rssMB)) });

    assert.equal(result.nodeExited, undefined, "the node stayed up");
    assert.equal(result.load.failed.LOST ?? 0, 0, "every request settled");
    assert.ok(result.load.ok >= result.load.sent * 0.99, `steady traffic was served (${JSON.stringify(result.load.failed)})`);
    assert.ok(samples.length >= 45, `sampled every second (${samples.length} samples)`);
    // A leak raises both fits; one major GC or heap expansion in a 35 s window moves only one of them much.
    const slope = Math.min(result.rssSlopeMBPerMin, result.rssFloorSlopeMBPerMin);
    assert.ok(slope < MAX_SLOPE_MB_PER_MIN, `RSS slope after warm-up ${result.rssSlopeMBPerMin} MB/min (floor ${result.rssFloorSlopeMBPerMin} MB/min); bound ${MAX_SLOPE_MB_PER_MIN}`);
    assert.ok(result.fds.atEnd - result.fds.atWarmup <= MAX_FD_GROWTH, `open fds ${result.fds.atWarmup} at warm-up, ${result.fds.atEnd} at the end`);
    assert.ok(result.fds.idleAfter <= result.fds.atWarmup + MAX_FD_GROWTH, `open fds after the load stopped: ${result.fds.idleAfter}`);
  });
});
