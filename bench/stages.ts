import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import type { RunningNode } from "../cli/start-node.js";
import { categorizeClient } from "../test/support/clients.js";
import { repoRoot, spawnNode, startTestNode, type NodeProcess } from "../test/support/nodes.js";
import { ImageSource } from "./images.js";
import type { LoadClient, ServerTimings } from "./client.js";
import type { StepResult } from "./load.js";
import { startNoopServer } from "./noop-server.js";
import { batchDistribution, diffHistogram, scrapeBatchSizes, type BatchDistribution } from "./prom.js";
import { NOISE_CORES, ResourceMonitor, waitQuiet, type UsageReport, type Watched } from "./resources.js";
import { round } from "./stats.js";

/** How big and how long the load steps are. */
export interface LoadPlan {
  readonly concurrency: readonly number[];
  /** Requests per distinct-image step (each a new image), and its time bound. */
  readonly requests: number;
  readonly maxMs: number;
  /** Requests per cache-hit / no-op step (cheap, so more of them for a stable number). */
  readonly cacheRequests: number;
  /** Length of the paced step at 70 % of the embedded peak. */
  readonly pacedMs: number;
  readonly warmup: number;
  /** --wait-quiet: how long to wait for a quiet machine before a stage and before re-running a disturbed step (0 = never). */
  readonly quietWaitMs: number;
  /** Extra settings for every node the stages start (--node-env), e.g. ORT_INTRA_OP_THREADS=1. */
  readonly nodeEnv: Readonly<Record<string, string>>;
}

export interface StepRecord extends StepResult {
  readonly label: string;
  readonly target: string;
  /** Means of the timings in the answers. */
  readonly server?: ServerTimings;
  /** Items per model run on the core(s) during the step (from categorize_batch_size). */
  readonly batch?: BatchDistribution;
  readonly usage: UsageReport;
  /** Run a second time because other work disturbed the first run. */
  readonly retried?: boolean;
}

export interface StageRecord {
  readonly stage: string;
  readonly status: "ok" | "skipped" | "failed";
  readonly reason?: string;
  /** On failure: the last lines each child node wrote. */
  readonly logTail?: string;
  readonly config?: Readonly<Record<string, string>>;
  readonly steps: readonly StepRecord[];
  readonly notes?: readonly string[];
}

type Log = (s: string) => void;

/** A log sink that drops lines: nodes log at info as in production, without filling the terminal. */
const discard = () =>
  new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });

/** Runs one load step in the client worker while watching CPU, memory and the cores' batch sizes. */
async function measure(
  watched: readonly Watched[],
  coreUrls: readonly string[],
  client: LoadClient,
  urls: readonly string[],
  images: readonly Buffer[],
  loop: Parameters<LoadClient["run"]>[2],
): Promise<Omit<StepRecord, "label" | "target">> {
  const before = coreUrls.length > 0 ? await scrapeBatchSizes(coreUrls) : undefined;
  const monitor = new ResourceMonitor(watched);
  monitor.start();
  const { result, server } = await client.run(urls, images, loop);
  const usage = monitor.stop();
  const batch = before === undefined ? undefined : batchDistribution(diffHistogram(before, await scrapeBatchSizes(coreUrls)));
  return { ...result, ...(server === undefined ? {} : { server }), ...(batch === undefined ? {} : { batch }), usage };
}

/**
 * One load step. When other work on the machine disturbed it (more than
 * NOISE_CORES CPUs not ours) and plan.quietWaitMs > 0, waits for the machine
 * to calm down and runs it once more with fresh images, keeping the quieter run.
 */
async function step(
  label: string,
  target: string,
  watched: readonly Watched[],
  coreUrls: readonly string[],
  client: LoadClient,
  urls: readonly string[],
  images: (attempt: number) => Buffer[],
  loop: Parameters<LoadClient["run"]>[2],
  plan: LoadPlan,
  log: Log,
): Promise<StepRecord> {
  let rec: StepRecord = { label, target, ...(await measure(watched, coreUrls, client, urls, images(0), loop)) };
  if (rec.usage.otherCores > NOISE_CORES && plan.quietWaitMs > 0) {
    log(`  ${target} ${label}: other work took ${rec.usage.otherCores} CPUs; waiting for a quiet machine to run it again`);
    await waitQuiet(plan.quietWaitMs);
    const again: StepRecord = { label, target, ...(await measure(watched, coreUrls, client, urls, images(1), loop)), retried: true };
    if (again.usage.otherCores < rec.usage.otherCores) rec = again;
  }
  const { usage, batch, server } = rec;
  const errs = Object.entries(rec.errors).map(([k, v]) => `${k}=${v}`).join(" ");
  log(
    `  ${target.padEnd(9)} ${label.padEnd(10)} ${String(rec.throughput).padStart(8)} req/s  p50 ${rec.latencyMs.p50} p95 ${rec.latencyMs.p95} p99 ${rec.latencyMs.p99} ms` +
      `${batch === undefined ? "" : `  batch ${batch.meanSize}`}  CPU ${usage.machineCores}/${usage.cpus} (other ${usage.otherCores})${errs === "" ? "" : `  errors ${errs}`}`,
  );
  for (const [code, message] of Object.entries(rec.errorSamples)) log(`            first ${code}: ${message}`);
  if (server !== undefined && target !== "no-op") {
    log(`            server means: edge total ${server.totalMs} ms = preprocess ${server.preprocessMs} + queue ${server.queueMs} + inference ${server.inferenceMs} + rest; batch ${server.batchSize}; cached ${server.cached}/${server.answers}`);
  }
  return rec;
}

/** This process, with the load client's thread named in the per-thread CPU. */
const harness = (name: string, client: LoadClient): Watched => ({ name, pid: process.pid, threadNames: { [client.tid]: "load client" } });

export const peakOf = (steps: readonly StepRecord[]): StepRecord | undefined =>
  steps.filter((s) => s.mode === "closed").reduce<StepRecord | undefined>((a, s) => (a === undefined || s.throughput > a.throughput ? s : a), undefined);

/**
 * Stage 2: the embedded node (edge + core in this process, PGlite store)
 * through its real gRPC port, every request a new image, edge cache off;
 * then a paced open-loop step at 70 % of the peak found.
 */
export async function embeddedStage(src: ImageSource, plan: LoadPlan, log: Log, client: LoadClient): Promise<StageRecord> {
  const env = { ...plan.nodeEnv, CACHE_MAX_ENTRIES: "0", LOG_LEVEL: "info" };
  const node: RunningNode = await startTestNode("all", env, discard());
  const release = holding(() => node.stop("benchmark interrupted"));
  const steps: StepRecord[] = [];
  try {
    const urls = [node.url];
    const watched = [harness("bench+embedded", client)];
    await client.run(urls, src.distinct("embedded-warmup", plan.warmup), { mode: "closed", concurrency: 4, maxMs: 60_000 });
    for (const c of plan.concurrency) {
      const images = (attempt: number) => src.distinct(`embedded-c${c}-${attempt}`, plan.requests);
      steps.push(await step(`c=${c}`, "embedded", watched, urls, client, urls, images, { mode: "closed", concurrency: c, maxMs: plan.maxMs }, plan, log));
    }
    const peak = peakOf(steps);
    if (peak !== undefined && peak.throughput > 0) {
      const rate = 0.7 * peak.throughput;
      const images = (attempt: number) => src.distinct(`embedded-paced-${attempt}`, Math.max(20, Math.ceil((rate * plan.pacedMs) / 1000)));
      steps.push(await step("paced 70%", "embedded", watched, urls, client, urls, images, { mode: "open", rate, maxMs: plan.pacedMs + 1_000 }, plan, log));
    }
    return { stage: "embedded", status: "ok", config: { ...env, BATCH_MAX_SIZE: String(node.config.batching.maxBatchSize), BATCH_MAX_DELAY_MS: String(node.config.batching.maxDelayMs), store: "PGlite (in memory)" }, steps };
  } finally {
    release();
    await node.stop("benchmark done");
  }
}

/** The data-service variables a full-stack core needs. */
export const DATA_ENV = ["DATABASE_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET", "KAFKA_BROKERS"] as const;

export interface FullStackResult extends StageRecord {
  /** Largest VmRSS sampled during the load steps, per role. */
  readonly rssMaxMB?: { readonly core: number; readonly edge: number };
}

/**
 * Stage 3: 2 cores and 2 edges as child processes on loopback, the cores
 * on Postgres, MinIO and Kafka (DATABASE_URL, S3_*, KAFKA_BROKERS passed
 * through), clients alternating between the edges, every request a new image.
 */
export type Spawner = (role: "core" | "edge", env: Record<string, string | undefined>) => Promise<NodeProcess>;

export async function fullStackStage(
  src: ImageSource,
  plan: LoadPlan,
  log: Log,
  env: Readonly<Record<string, string | undefined>>,
  client: LoadClient,
  runtime: { readonly name: string; readonly spawn: Spawner } = { name: "tsx (spawnNode)", spawn: spawnNode },
): Promise<FullStackResult> {
  const missing = DATA_ENV.filter((k) => (env[k] ?? "") === "");
  if (missing.length > 0) {
    return {
      stage: "fullstack",
      status: "skipped",
      reason: `skipped: data services not configured (missing ${missing.join(", ")})`,
      notes: ['to run it: infra/local/services.sh up && eval "$(infra/local/services.sh env)" && npm run bench'],
      steps: [],
    };
  }
  const dataEnv = Object.fromEntries(DATA_ENV.map((k) => [k, env[k]]));
  const started: NodeProcess[] = [];
  const steps: StepRecord[] = [];
  const notes: string[] = [];
  try {
    const cores = await Promise.all([1, 2].map((i) => runtime.spawn("core", { ...plan.nodeEnv, ...dataEnv, NODE_ID: `bench-core-${i}` }).then(track)));
    started.push(...cores);
    const coreUrls = cores.map((c) => c.url);
    const edgeEnv = { ...plan.nodeEnv, CORE_URLS: coreUrls.join(","), CACHE_MAX_ENTRIES: "0" };
    const edges = await Promise.all([1, 2].map((i) => runtime.spawn("edge", { ...edgeEnv, NODE_ID: `bench-edge-${i}` }).then(track)));
    started.push(...edges);
    const all = [...cores, ...edges];
    const checks = await Promise.all(all.map((n) => waitReady(n.url, 60_000)));
    const coreChecks = Object.keys(checks[0] ?? {}).sort();
    notes.push(`core readiness checks: ${coreChecks.join(", ")}`);
    for (const [dep, pattern] of [["S3/MinIO", /s3|object|minio/i], ["Kafka", /kafka|outbox|event/i], ["Postgres", /database|postgres|db/i]] as const) {
      if (!coreChecks.some((c) => pattern.test(c))) notes.push(`core reports no readiness check for ${dep}: it may not use that service yet`);
    }
    log(`  cores ${coreUrls.join(" ")}  edges ${edges.map((e) => e.url).join(" ")}  (${notes.join("; ")})`);

    const services = localServicePids();
    if (services.length > 0) notes.push(`watching local data services: ${services.map((s) => `${s.name} (pid ${s.pid} and children)`).join(", ")}`);
    const watched: Watched[] = [
      harness("bench (client)", client),
      ...cores.map((c, i) => ({ name: `core-${i + 1}`, pid: c.child.pid! })),
      ...edges.map((e, i) => ({ name: `edge-${i + 1}`, pid: e.child.pid! })),
      ...services,
    ];
    const urls = edges.map((e) => e.url);
    await client.run(urls, src.distinct("fullstack-warmup", plan.warmup), { mode: "closed", concurrency: 4, maxMs: 60_000 });
    for (const c of plan.concurrency) {
      const images = (attempt: number) => src.distinct(`fullstack-c${c}-${attempt}`, plan.requests);
      steps.push(await step(`c=${c}`, "fullstack", watched, coreUrls, client, urls, images, { mode: "closed", concurrency: c, maxMs: plan.maxMs }, plan, log));
    }
    const maxOf = (prefix: string) =>
      round(Math.max(...steps.flatMap((s) => s.usage.processes.filter((p) => p.name.startsWith(prefix)).map((p) => p.rssMaxMB))), 1);
    return {
      stage: "fullstack",
      status: "ok",
      config: { ...edgeEnv, CORE_URLS: "2 cores", data: "DATABASE_URL, S3_*, KAFKA_BROKERS from the environment", runtime: runtime.name },
      steps,
      notes,
      rssMaxMB: { core: maxOf("core"), edge: maxOf("edge") },
    };
  } catch (err) {
    const logTail = started.map((n, i) => `--- ${i < 2 ? `core-${i + 1}` : `edge-${i - 1}`}\n${n.output().split("\n").slice(-12).join("\n")}`).join("\n");
    const exited = started.map((n, i) => (n.child.exitCode !== null || n.child.signalCode !== null ? `${i < 2 ? `core-${i + 1}` : `edge-${i - 1}`} exited (${n.child.exitCode ?? n.child.signalCode})` : "")).filter((x) => x !== "");
    const message = err instanceof Error ? err.message : String(err);
    return { stage: "fullstack", status: "failed", reason: `failed: ${message.split("\n")[0]}${exited.length > 0 ? `; ${exited.join(", ")}` : ""}`, logTail, steps, notes };
  } finally {
    // Edges first, so nothing is in flight when the cores go.
    for (const n of [...started].reverse()) await n.kill("SIGTERM").catch(() => undefined);
  }
}

/** Child nodes still running: if the harness dies half way, they are sent SIGTERM as it exits. */
const children = new Set<NodeProcess>();
function track(n: NodeProcess): NodeProcess {
  children.add(n);
  n.child.once("exit", () => children.delete(n));
  return n;
}
process.once("exit", () => {
  for (const n of children) n.child.kill("SIGTERM");
});

/** Stops for whatever the stages have running (in-process nodes, the no-op server, child nodes), for an interrupted run. */
const running = new Set<() => Promise<void>>();
function holding<T>(stop: () => Promise<T>): () => void {
  const fn = async () => {
    await stop();
  };
  running.add(fn);
  return () => running.delete(fn);
}

/** Stops everything still running (SIGINT/SIGTERM during a run); waits at most `ms`. */
export async function stopEverything(ms = 10_000): Promise<void> {
  const all = [...running].map((f) => f().catch(() => undefined));
  for (const n of children) all.push(n.kill("SIGTERM").catch(() => undefined));
  await Promise.race([Promise.all(all), new Promise((r) => setTimeout(r, ms))]);
}

/**
 * The data services infra/local/services.sh runs on this machine (its pid
 * files under .local/run), watched with their children so their CPU is not
 * lumped in with unrelated work. Empty when they run elsewhere.
 */
function localServicePids(): Watched[] {
  const out: Watched[] = [];
  for (const name of ["postgres", "kafka", "minio"]) {
    try {
      const pid = Number(readFileSync(join(repoRoot, ".local", "run", `${name}.pid`), "utf8").trim());
      if (Number.isInteger(pid) && pid > 0 && existsSync(`/proc/${pid}`)) out.push({ name, pid, tree: true });
    } catch {
      // not run by services.sh here
    }
  }
  return out;
}

/** Waits until GET /readyz answers 200; returns its checks. */
async function waitReady(url: string, timeoutMs: number): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < deadline) {
    try {
      const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(3_000) });
      const body = (await res.json()) as { checks?: Record<string, unknown> };
      if (res.ok) return body.checks ?? {};
      last = JSON.stringify(body);
    } catch (err) {
      last = err instanceof Error ? err.message : String(err);
    }
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} not ready after ${timeoutMs} ms: ${last}`);
}

/**
 * Stage 4: the cache-hit path. The embedded node with its edge cache on is
 * warmed with a set of images, then sent the same set over and over; the
 * no-op server (same server stack, empty answer) gets the same payloads.
 * Steps alternate between the two at each concurrency level.
 */
export async function cacheHitStage(src: ImageSource, plan: LoadPlan, log: Log, client: LoadClient): Promise<StageRecord> {
  const env = { ...plan.nodeEnv, LOG_LEVEL: "info" };
  const set = src.distinct("cache-set", 64);
  const node = await startTestNode("all", env, discard());
  const releaseNode = holding(() => node.stop("benchmark interrupted"));
  const noop = await startNoopServer();
  const releaseNoop = holding(() => noop.close(AbortSignal.timeout(2_000)));
  const steps: StepRecord[] = [];
  const notes: string[] = [];
  try {
    const cacheUrls = [node.url];
    const noopUrls = [noop.url];
    await client.run(cacheUrls, set, { mode: "closed", concurrency: 4, maxMs: 60_000 });
    const probe = await categorizeClient(node.url, "grpc").classify({ image: set[0]!, topK: 5 });
    notes.push(`after warm-up a repeat answers cached=${probe.cached}`);
    const watched = [harness("bench (in-process)", client)];
    // Warm both paths (connections, JIT) before measuring.
    await client.run(noopUrls, ImageSource.repeat(set, 200), { mode: "closed", concurrency: 4, maxMs: 10_000 });
    await client.run(cacheUrls, ImageSource.repeat(set, 200), { mode: "closed", concurrency: 4, maxMs: 10_000 });
    const images = () => ImageSource.repeat(set, plan.cacheRequests);
    for (const c of plan.concurrency) {
      const loop = { mode: "closed", concurrency: c, maxMs: plan.maxMs } as const;
      steps.push(await step(`c=${c}`, "cache-hit", watched, [], client, cacheUrls, images, loop, plan, log));
      steps.push(await step(`c=${c}`, "no-op", watched, [], client, noopUrls, images, loop, plan, log));
    }
    return { stage: "cachehit", status: "ok", config: { ...env, CACHE_MAX_ENTRIES: String(node.config.edge.cacheMaxEntries), imageSet: String(set.length) }, steps, notes };
  } finally {
    releaseNoop();
    releaseNode();
    await noop.close(AbortSignal.timeout(2_000));
    await node.stop("benchmark done");
  }
}
