import { readdir, readFile } from "node:fs/promises";
import { spawnNode } from "../../support/nodes.js";
import { UniqueImages } from "./images.js";
import { startLoad, type LoadSummary } from "./load.js";
import { scrapeMetric } from "./observe.js";

export interface SoakOptions {
  /** Total traffic time, warm-up included. */
  readonly durationMs: number;
  /**
   * Samples before this are not fitted (start-up, JIT, pools and caches filling).
   * The warm-up also lasts until the node's first major GC under traffic (at most
   * `maxWarmupExtensionMs` longer): until then V8 grows the old generation and
   * defers freeing dead buffers, so RSS climbs 40-80 MB in a healthy node and a
   * slope fitted over that climb reads as a leak. The traffic is extended by as
   * much, so the fitted window keeps its length.
   */
  readonly warmupMs: number;
  /** Default 40 s. */
  readonly maxWarmupExtensionMs?: number;
  /** Steady traffic: requests started per second, at most `concurrency` in flight. */
  readonly ratePerSecond: number;
  readonly concurrency: number;
  /** Every Nth request is a never-seen image (inference and a new row); the others cycle over a fixed pool (preprocessing, the core stream and a dedup hit). */
  readonly newEvery: number;
  readonly poolSize: number;
  readonly deadlineMs?: number;
  readonly sampleMs?: number;
  /** Extra environment of the node. */
  readonly nodeEnv?: Record<string, string>;
  /** Progress lines (long mode); silent when unset. */
  readonly progress?: (line: string) => void;
}

export interface SoakSample {
  /** Seconds since traffic started. */
  readonly t: number;
  readonly rssMB: number;
  readonly fds: number;
  readonly threads: number;
}

export interface SoakResult {
  readonly options: Omit<SoakOptions, "progress" | "nodeEnv">;
  readonly load: LoadSummary;
  readonly samples: readonly SoakSample[];
  /** Least-squares slope of RSS over the samples after warm-up. */
  readonly rssSlopeMBPerMin: number;
  /** Same slope, fitted on the lowest sample of each 10 s window (the floor the GC comes back to). */
  readonly rssFloorSlopeMBPerMin: number;
  readonly rssAtWarmupMB: number;
  /** When the warm-up ended (seconds since traffic started) and whether a major GC had happened by then. */
  readonly warmupEndedAt: number;
  readonly majorGcBeforeFit: boolean;
  readonly rssEndMB: number;
  readonly rssMaxMB: number;
  /** Open file descriptors of the node: before traffic, at the end of warm-up (under load), at the end (under load), after the load stopped. */
  readonly fds: { readonly idleBefore: number; readonly atWarmup: number; readonly atEnd: number; readonly idleAfter: number };
  readonly threads: { readonly atWarmup: number; readonly atEnd: number };
  readonly nodeExited: string | undefined;
  /** The first failed requests (code, message, seconds into the run). */
  readonly failures: readonly string[];
}

const MiB = 1024 * 1024;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function sample(pid: number): Promise<{ rssMB: number; fds: number; threads: number }> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? "NaN");
  const fds = (await readdir(`/proc/${pid}/fd`)).length;
  return { rssMB: (kb("VmRSS") * 1024) / MiB, fds, threads: kb("Threads") };
}

/** Least-squares slope of y over x. */
export function slope(points: readonly { x: number; y: number }[]): number {
  const n = points.length;
  if (n < 2) return Number.NaN;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den === 0 ? Number.NaN : num / den;
}

const round = (x: number, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

/**
 * A soak of the embedded node (`serve all`: edge and core in one process,
 * PGlite in memory, originals in a temporary folder) as a child process with
 * steady traffic: samples its RSS, open fds and threads every second, fits
 * the RSS slope after warm-up. Bounded by durationMs; the node is always
 * killed at the end.
 */
export async function runSoak(options: SoakOptions): Promise<SoakResult> {
  const sampleMs = options.sampleMs ?? 1_000;
  const say = options.progress ?? (() => undefined);
  const images = await UniqueImages.create(Math.min(options.poolSize, 16));
  // The embedded node: no external services even when the test run exports them.
  const node = await spawnNode("all", {
    DATABASE_URL: undefined,
    KAFKA_BROKERS: undefined,
    S3_ENDPOINT: undefined,
    S3_ACCESS_KEY: undefined,
    S3_SECRET_KEY: undefined,
    S3_BUCKET: undefined,
    CACHE_MAX_ENTRIES: "0",
    NODE_ID: "soak",
    ...options.nodeEnv,
  });
  const pid = node.child.pid!;
  let output = 0;
  // Keep only the size of what the node prints: a long soak must not grow this process.
  node.child.stdout?.on("data", (d: Buffer) => (output += d.length));
  try {
    await sleep(1_000);
    const before = await sample(pid);
    say(`soak: node pid ${pid} up, rss ${round(before.rssMB)} MB, ${before.fds} fds; ${options.ratePerSecond}/s for ${Math.round(options.durationMs / 1000)} s`);
    const pool = options.poolSize;
    const extensionMs = options.maxWarmupExtensionMs ?? 40_000;
    const majorGcs = () => scrapeMetric(node.url, "nodejs_gc_duration_seconds_count", /kind="major"/).catch(() => Number.NaN);
    const majorGcsAtStart = await majorGcs();
    const load = startLoad({
      url: node.url,
      concurrency: options.concurrency,
      ratePerSecond: options.ratePerSecond,
      maxRequests: Math.ceil((options.ratePerSecond * (options.durationMs + extensionMs)) / 1000) + options.concurrency,
      maxMs: options.durationMs + extensionMs,
      deadlineMs: options.deadlineMs ?? 10_000,
      image: (i) => (i % options.newEvery === options.newEvery - 1 ? images.image(pool + i) : images.image(i % pool)),
    });
    const samples: SoakSample[] = [];
    const started = Date.now();
    let atWarmup: SoakSample | undefined;
    let majorGcBeforeFit = false;
    let lastProgress = started;
    let finished = false;
    void load.done.then(() => (finished = true));
    const fitMs = options.durationMs - options.warmupMs;
    while (!finished && Date.now() - started < options.durationMs + extensionMs + 30_000) {
      if (node.child.exitCode !== null || node.child.signalCode !== null) break;
      const s = { t: (Date.now() - started) / 1000, ...(await sample(pid)) };
      samples.push(s);
      if (atWarmup === undefined && s.t * 1000 >= options.warmupMs) {
        majorGcBeforeFit = (await majorGcs()) > majorGcsAtStart;
        if (majorGcBeforeFit || s.t * 1000 >= options.warmupMs + extensionMs) atWarmup = s;
      }
      if (atWarmup !== undefined && (s.t - atWarmup.t) * 1000 >= fitMs) break;
      if (Date.now() - lastProgress >= 60_000) {
        lastProgress = Date.now();
        const ok = load.records.filter((r) => r.outcome === "OK").length;
        say(`soak: ${Math.round(s.t)} s, rss ${round(s.rssMB)} MB, ${s.fds} fds, ${s.threads} threads, ${ok}/${load.records.length} OK`);
      }
      await sleep(sampleMs);
    }
    const end = samples.at(-1);
    load.stop();
    const summary = await load.done;
    await sleep(3_000);
    const nodeExited = node.child.exitCode !== null || node.child.signalCode !== null ? `node exited (${node.child.exitCode ?? node.child.signalCode})` : undefined;
    const after = nodeExited === undefined ? await sample(pid) : { rssMB: Number.NaN, fds: Number.NaN, threads: Number.NaN };

    const warmupEnd = atWarmup?.t ?? options.warmupMs / 1000;
    const fitted = samples.filter((s) => s.t >= warmupEnd);
    const floors: { x: number; y: number }[] = [];
    for (let w = warmupEnd; w < (end?.t ?? 0); w += 10) {
      const inWindow = fitted.filter((s) => s.t >= w && s.t < w + 10);
      if (inWindow.length > 0) floors.push({ x: w, y: Math.min(...inWindow.map((s) => s.rssMB)) });
    }
    return {
      options: { durationMs: options.durationMs, warmupMs: options.warmupMs, ratePerSecond: options.ratePerSecond, concurrency: options.concurrency, newEvery: options.newEvery, poolSize: options.poolSize, sampleMs },
      load: summary,
      samples,
      rssSlopeMBPerMin: round(slope(fitted.map((s) => ({ x: s.t, y: s.rssMB }))) * 60, 3),
      rssFloorSlopeMBPerMin: round(slope(floors) * 60, 3),
      rssAtWarmupMB: round(atWarmup?.rssMB ?? Number.NaN),
      warmupEndedAt: round(warmupEnd, 1),
      majorGcBeforeFit,
      rssEndMB: round(end?.rssMB ?? Number.NaN),
      rssMaxMB: round(Math.max(...samples.map((s) => s.rssMB))),
      fds: { idleBefore: before.fds, atWarmup: atWarmup?.fds ?? Number.NaN, atEnd: end?.fds ?? Number.NaN, idleAfter: after.fds },
      threads: { atWarmup: atWarmup?.threads ?? Number.NaN, atEnd: end?.threads ?? Number.NaN },
      nodeExited,
      failures: load.records
        .filter((r) => r.outcome !== "OK")
        .slice(0, 20)
        .map((r) => `${Math.round((r.sentAt - started) / 1000)} s: ${r.outcome} after ${Math.round(r.latencyMs)} ms: ${r.message ?? ""}`),
    };
  } finally {
    await node.kill("SIGKILL");
    say(`soak: node printed ${Math.round(output / 1024)} KiB of logs`);
  }
}
