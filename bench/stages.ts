import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { Writable } from "node:stream";
import { availableParallelism } from "node:os";
import sharp from "sharp";
import { loadConfig, type NodeRole } from "../common/config.js";
import { categorizeClient } from "../test/support/clients.js";
import { imageNames, readImage } from "../test/support/fixtures.js";
import { repoRoot, spawnNode, startTestNode, testEnv, type NodeProcess } from "../test/support/nodes.js";
import { DEFAULT_BASELINE, startBaseline, type BaselineProcess } from "./baseline.js";
import { ImageSource } from "./images.js";
import type { LoadClient, LoadProtocol, ServerTimings } from "./client.js";
import type { ImageRecipe } from "./jpeg-stamp.js";
import type { StepResult } from "./load.js";
import { startNoopServer } from "./noop-server.js";
import { batchDistribution, diffHistogram, scrape, scrapeBatchSizes, type BatchDistribution } from "./prom.js";
import { memoryOf, NOISE_CORES, ResourceMonitor, waitQuiet, type UsageReport, type Watched } from "./resources.js";
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
  /** Requests per 12 MP step and the concurrency levels of those steps. */
  readonly largeRequests: number;
  readonly largeConcurrency: readonly number[];
  /** Sends of the 50 %-repeated step, and its concurrency. */
  readonly repeatRequests: number;
  readonly repeatConcurrency: number;
  /** How the load client talks to categorize in stages 2 and 3 ("connect-h1": the HTTP/1.1 keep-alive driver the baseline gets). */
  readonly protocol: LoadProtocol;
  /** Edges and cores of stage 3. */
  readonly fullStack: { readonly edges: number; readonly cores: number };
}

export interface StepRecord extends StepResult {
  readonly label: string;
  readonly target: string;
  /** Means of the timings in the answers. */
  readonly server?: ServerTimings;
  /** Items per model run on the core(s) during the step (from categorize_batch_size). */
  readonly batch?: BatchDistribution;
  readonly usage: UsageReport;
  /** CPU milliseconds per answered image, per watched process (all its threads). */
  readonly cpuMsPerImage: Readonly<Record<string, number>>;
  /** How the client talked to the target. */
  readonly protocol: LoadProtocol;
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
  images: readonly Buffer[] | ImageRecipe,
  loop: Parameters<LoadClient["run"]>[2],
  protocol: LoadProtocol,
): Promise<Omit<StepRecord, "label" | "target">> {
  const before = coreUrls.length > 0 ? await scrapeBatchSizes(coreUrls) : undefined;
  const monitor = new ResourceMonitor(watched);
  monitor.start();
  const { result, server } = await client.run(urls, images, loop, { protocol });
  const usage = monitor.stop();
  const batch = before === undefined ? undefined : batchDistribution(diffHistogram(before, await scrapeBatchSizes(coreUrls)));
  const cpuMsPerImage = Object.fromEntries(usage.processes.map((p) => [p.name, result.ok > 0 ? round((p.cpuSeconds * 1000) / result.ok) : Number.NaN]));
  return { ...result, ...(server === undefined ? {} : { server }), ...(batch === undefined ? {} : { batch }), usage, cpuMsPerImage, protocol };
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
  images: (attempt: number) => Buffer[] | ImageRecipe,
  loop: Parameters<LoadClient["run"]>[2],
  plan: LoadPlan,
  log: Log,
  protocol: LoadProtocol = "grpc",
): Promise<StepRecord> {
  let rec: StepRecord = { label, target, ...(await measure(watched, coreUrls, client, urls, images(0), loop, protocol)) };
  if (rec.usage.otherCores > NOISE_CORES && plan.quietWaitMs > 0) {
    log(`  ${target} ${label}: other work took ${rec.usage.otherCores} CPUs; waiting for a quiet machine to run it again`);
    await waitQuiet(plan.quietWaitMs);
    const again: StepRecord = { label, target, ...(await measure(watched, coreUrls, client, urls, images(1), loop, protocol)), retried: true };
    if (again.usage.otherCores < rec.usage.otherCores) rec = again;
  }
  const { usage, batch, server } = rec;
  const errs = Object.entries(rec.errors).map(([k, v]) => `${k}=${v}`).join(" ");
  log(
    `  ${target.padEnd(9)} ${label.padEnd(14)} ${String(rec.throughput).padStart(8)} req/s  p50 ${rec.latencyMs.p50} p95 ${rec.latencyMs.p95} p99 ${rec.latencyMs.p99} ms` +
      `${batch === undefined ? "" : `  batch ${batch.meanSize}`}  CPU ${usage.machineCores}/${usage.cpus} (other ${usage.otherCores})${errs === "" ? "" : `  errors ${errs}`}`,
  );
  for (const [code, message] of Object.entries(rec.errorSamples)) log(`            first ${code}: ${message}`);
  if (server !== undefined && target !== "no-op") {
    log(`            server means: total ${server.totalMs} ms = preprocess ${server.preprocessMs} + queue ${server.queueMs} + inference ${server.inferenceMs} + rest; batch ${server.batchSize}; cached ${server.cached}/${server.answers}`);
  }
  log(`            CPU ms/image: ${Object.entries(rec.cpuMsPerImage).map(([k, v]) => `${k} ${v}`).join(", ")}`);
  return rec;
}

/** This process, with the load client's thread named in the per-thread CPU. */
const harness = (name: string, client: LoadClient): Watched => ({ name, pid: process.pid, threadNames: { [client.tid]: "load client" } });

export const peakOf = (steps: readonly StepRecord[]): StepRecord | undefined =>
  steps.filter((s) => s.mode === "closed").reduce<StepRecord | undefined>((a, s) => (a === undefined || s.throughput > a.throughput ? s : a), undefined);

/** How a stage starts a categorize node in a child process. */
export type Spawner = (role: NodeRole, env: Record<string, string | undefined>) => Promise<NodeProcess>;

/** The runtime of the child nodes: compiled (dist) or the sources through tsx. */
export interface NodeRuntime {
  readonly name: string;
  readonly spawn: Spawner;
}

export const TSX_RUNTIME: NodeRuntime = { name: "tsx (node --import tsx cli/main.ts)", spawn: spawnNode };

/** The threads a node has: what its settings give, and the threads seen in /proc. */
export interface ThreadBudget {
  /** Settings as the node's own config loader reads the environment the bench gives it (effective values where the code fixes them). */
  readonly settings: Readonly<Record<string, string>>;
  /** Threads of the process by name (/proc/PID/task/TID/comm), idle after start-up. */
  readonly observed: Readonly<Record<string, number>>;
  readonly total: number;
  /** What the node does not tell (no log line or metric) and the bench inferred. */
  readonly notes: readonly string[];
}

/** The node's own categorize_thread_budget gauge from its /metrics (empty when it has none). */
async function exportedBudget(url: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  try {
    for (const line of (await scrape(url)).split("\n")) {
      const m = /^categorize_thread_budget\{[^}]*kind="([^"]+)"[^}]*\}\s+(\S+)/.exec(line);
      if (m !== null) out[m[1]!] = m[2]!;
    }
  } catch {
    // no /metrics on this port
  }
  return out;
}

/**
 * The thread budget of a node: its categorize_thread_budget gauge when it
 * exports one, else its settings as its config loader reads `env`; and its
 * threads in /proc.
 */
export async function threadBudget(role: NodeRole, pid: number, url: string, env: Readonly<Record<string, string | undefined>>): Promise<ThreadBudget> {
  const exported = await exportedBudget(url);
  const observed = threadsOf(pid);
  if (Object.keys(exported).length > 0) {
    return { settings: Object.fromEntries(Object.entries(exported).map(([k, v]) => [k, v])), observed: observed.byName, total: observed.total, notes: ["from the node's categorize_thread_budget gauge (/metrics)"] };
  }
  const inferred = inferredBudget(role, env);
  return { settings: inferred, observed: observed.byName, total: observed.total, notes: ["TODO (node code): the node exports no categorize_thread_budget: settings are its config as the bench reads it, threads are counted in /proc"] };
}

function threadsOf(pid: number): { byName: Record<string, number>; total: number } {
  const byName: Record<string, number> = {};
  let total = 0;
  try {
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      try {
        const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, "utf8").trim();
        byName[comm] = (byName[comm] ?? 0) + 1;
        total++;
      } catch {
        // thread exited
      }
    }
  } catch {
    // process gone
  }
  return { byName, total };
}

/** What the bench can tell of a node's threads from its config when the node does not say. */
function inferredBudget(role: NodeRole, env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const full = { ...process.env, ...testEnv({ LOG_LEVEL: "info", ...env }) };
  const config = loadConfig(role, full);
  const cpus = availableParallelism();
  const settings: Record<string, string> = {};
  settings.UV_THREADPOOL_SIZE = full.UV_THREADPOOL_SIZE ?? "4 (libuv default: not set)";
  // sharp sizes libvips' pool from VIPS_CONCURRENCY or the CPU count; the node does not call sharp.concurrency().
  // sharp's default: CPUs, or 1 on glibc without jemalloc; the harness's sharp is the node's, on this machine.
  settings["libvips concurrency"] = full.VIPS_CONCURRENCY ?? `${sharp.concurrency()} (sharp's default here; the node does not set it)`;
  if (role !== "core") {
    const pc = config.edge.preprocessConcurrency;
    settings.PREPROCESS_CONCURRENCY = pc > 0 ? String(pc) : `${cpus} (0 = CPUs)`;
  }
  if (role !== "edge") {
    const intra = config.model.intraOpThreads;
    settings["ORT intra-op threads"] = intra > 0 ? String(intra) : `${Math.max(1, cpus - 1)} (0 = CPUs - 1)`;
    settings["ORT inter-op threads"] = String(config.model.interOpThreads);
    settings["ORT worker thread"] = String(config.model.inWorker);
  }
  return settings;
}

/** The embedded node's store as its config resolves it. */
function storeOf(env: Readonly<Record<string, string | undefined>>): string {
  const c = loadConfig("all", { ...process.env, ...testEnv(env) });
  return `${c.store.kind}${c.store.databaseUrl === undefined && c.store.dataDir === undefined ? " (in memory)" : ""}`;
}

/** RSS of the embedded node at the points the targets name (MB). */
export interface EmbeddedRss {
  /** Ready, before any request. */
  readonly idleMB: number;
  /** After the warm-up requests. */
  readonly warmMB: number;
  /** A second after the last load step. */
  readonly afterRunMB: number;
  /** Largest VmRSS sampled during the load steps. */
  readonly maxMB: number;
}

export interface EmbeddedResult extends StageRecord {
  readonly rss?: EmbeddedRss;
  readonly threads?: ThreadBudget;
}

/** Both sides of stage 2 (either may be missing when not selected). */
export interface ComparisonResult {
  readonly embedded?: EmbeddedResult;
  readonly baseline?: StageRecord;
}

interface Side {
  readonly key: "embedded" | "baseline";
  readonly urls: readonly string[];
  readonly coreUrls: readonly string[];
  readonly protocol: LoadProtocol;
  readonly watched: readonly Watched[];
  readonly steps: StepRecord[];
}

const MiB = 1024 * 1024;
const rssMB = (pid: number) => round(memoryOf(pid).rss / MiB, 1);
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Top-1 of each shared photo from both systems over HTTP/1.1 (not timed): the baseline computes the same thing. */
async function compareAnswers(embeddedUrl: string, baselineUrl: string): Promise<string> {
  const client = categorizeClient(embeddedUrl, "connect-h1");
  const rows: string[] = [];
  let same = 0;
  const names = imageNames();
  for (const name of names) {
    const image = readImage(name);
    const a = await client.classify({ image, topK: 5 });
    const res = await fetch(`${baselineUrl}/classify`, { method: "POST", body: new Uint8Array(image), headers: { "content-type": "application/octet-stream" } });
    const b = (await res.json()) as { labels: { index: number; score: number }[] };
    const ai = a.labels[0]?.index;
    const bi = b.labels[0]?.index;
    if (ai === bi) same++;
    rows.push(`${name} ${ai}/${bi}${ai === bi ? "" : " (differs)"} p ${round(a.labels[0]?.score ?? Number.NaN, 3)}/${round(b.labels[0]?.score ?? Number.NaN, 3)}`);
  }
  return `top-1 categorize/baseline on the shared photos: same on ${same}/${names.length}: ${rows.join("; ")}`;
}

/**
 * Stage 2 (embedded) and stage 5 (baseline), step by step side by side: the
 * embedded node (edge + core in one child process, production settings: edge
 * cache on, PGlite store) and the baseline (bench/baseline on gunicorn) get
 * the same steps from the same client with the same images, one after the
 * other, so other work on the machine drifts as little as possible between
 * the two numbers a ratio compares:
 *   - distinct small photos at each concurrency (every request a new image),
 *   - the embedded node paced at 70 % of its peak (open loop),
 *   - distinct 12 MP JPEGs at plan.largeConcurrency,
 *   - a sequence where every other send repeats an earlier image (the edge
 *     cache answers those; the baseline has none and computes them again).
 * categorize is driven over plan.protocol (HTTP/1.1 Connect by default), the
 * baseline over HTTP/1.1 POST, both through the same keep-alive agent code.
 */
export async function embeddedStage(
  src: ImageSource,
  plan: LoadPlan,
  log: Log,
  client: LoadClient,
  options: { readonly embedded: NodeRuntime | undefined; readonly baseline: boolean },
): Promise<ComparisonResult> {
  const started: NodeProcess[] = [];
  const sides: Side[] = [];
  // The data services the harness may have in its environment (for stage 3) are not the embedded node's.
  const env: Record<string, string> = { ...Object.fromEntries(DATA_ENV.filter((k) => k !== "S3_BUCKET").map((k) => [k, ""])), ...plan.nodeEnv, LOG_LEVEL: "info" };
  let node: NodeProcess | undefined;
  let base: BaselineProcess | undefined;
  let rssIdle = Number.NaN;
  let rssWarm = Number.NaN;
  let threads: ThreadBudget | undefined;
  const notes: { embedded: string[]; baseline: string[] } = { embedded: [], baseline: [] };
  const failures: Partial<Record<Side["key"], string>> = {};
  try {
    if (options.embedded !== undefined) {
      try {
        node = track(await options.embedded.spawn("all", env));
        started.push(node);
        await waitReady(node.url, 60_000);
        await pause(1_000);
        rssIdle = rssMB(node.child.pid!);
        threads = await threadBudget("all", node.child.pid!, node.url, env);
        sides.push({ key: "embedded", urls: [node.url], coreUrls: [node.url], protocol: plan.protocol, watched: [harness("bench (client)", client), { name: "embedded", pid: node.child.pid! }], steps: [] });
        log(`  embedded ${node.url} (${options.embedded.name}), idle RSS ${rssIdle} MB; threads ${threads.total}: ${Object.entries(threads.settings).map(([k, v]) => `${k} ${v}`).join(", ")}`);
      } catch (err) {
        failures.embedded = `failed: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`;
        log(`  embedded ${failures.embedded}`);
      }
    }
    if (options.baseline) {
      try {
        base = await startBaseline();
        track(base);
        started.push(base);
        const watched: Watched[] = [
          harness("bench (client)", client),
          { name: "gunicorn master", pid: base.child.pid! },
          ...base.workerPids.map((pid, i) => ({ name: `baseline worker-${i + 1}`, pid })),
        ];
        sides.push({ key: "baseline", urls: [base.url], coreUrls: [], protocol: "baseline-h1", watched, steps: [] });
        notes.baseline.push(`${Object.entries(base.versions).map(([k, v]) => `${k} ${v}`).join(", ")}; gunicorn gthread, ${DEFAULT_BASELINE.workers} workers x ${DEFAULT_BASELINE.threads} threads, keep-alive 75 s; onnxruntime ${DEFAULT_BASELINE.intraOpThreads} intra-op thread per worker, session per worker after the fork`);
        notes.baseline.push("decodes every image at full resolution as the model's preprocessing says (no Pillow draft() / JPEG DCT scaling); categorize's sharp pipeline lets libjpeg shrink on load, which is where most of its 12 MP advantage comes from");
        notes.baseline.push("resize: Pillow bilinear with antialiasing (torchvision's convention), computed for the crop only (resize box), then /255, mean/std in one vectorised numpy expression; categorize resizes with sharp's (libvips) antialiased linear kernel, the same filter family");
        log(`  baseline ${base.url}: ${notes.baseline[0]}`);
      } catch (err) {
        failures.baseline = `failed: ${err instanceof Error ? err.message.split("\n").slice(0, 3).join(" ") : String(err)}`;
        log(`  baseline ${failures.baseline}`);
      }
    }
    if (node !== undefined && base !== undefined) {
      const check = await compareAnswers(node.url, base.url);
      notes.baseline.push(check);
      log(`  ${check}`);
    }
    // Warm-up: connections, JIT, allocator arenas, on both sizes.
    for (const side of sides) {
      await client.run(side.urls, src.recipe("small", `${side.key}-warmup`, plan.warmup), { mode: "closed", concurrency: 4, maxMs: 60_000 }, { protocol: side.protocol });
      if (src.large.length > 0) await client.run(side.urls, src.recipe("large", `${side.key}-warmup`, 4), { mode: "closed", concurrency: 2, maxMs: 60_000 }, { protocol: side.protocol });
    }
    if (node !== undefined) rssWarm = rssMB(node.child.pid!);

    const each = async (label: string, images: (attempt: number) => ImageRecipe, loop: Parameters<LoadClient["run"]>[2]) => {
      for (const side of sides) side.steps.push(await step(label, side.key, side.watched, side.coreUrls, client, side.urls, images, loop, plan, log, side.protocol));
    };
    for (const c of plan.concurrency) await each(`c=${c}`, (attempt) => src.recipe("small", `c${c}-${attempt}`, plan.requests), { mode: "closed", concurrency: c, maxMs: plan.maxMs });
    const emb = sides.find((x) => x.key === "embedded");
    const peak = emb === undefined ? undefined : peakOf(emb.steps);
    if (emb !== undefined && peak !== undefined && peak.throughput > 0) {
      const rate = 0.7 * peak.throughput;
      const images = (attempt: number) => src.recipe("small", `paced-${attempt}`, Math.max(20, Math.ceil((rate * plan.pacedMs) / 1000)));
      emb.steps.push(await step("paced 70%", "embedded", emb.watched, emb.coreUrls, client, emb.urls, images, { mode: "open", rate, maxMs: plan.pacedMs + 1_000 }, plan, log, emb.protocol));
    }
    if (src.large.length > 0) {
      for (const c of plan.largeConcurrency) await each(`12MP c=${c}`, (attempt) => src.recipe("large", `12mp-c${c}-${attempt}`, plan.largeRequests), { mode: "closed", concurrency: c, maxMs: plan.maxMs });
    }
    const rc = plan.repeatConcurrency;
    await each(`50% repeat c=${rc}`, (attempt) => src.repeatedRecipe(`repeat-${attempt}`, plan.repeatRequests, 7 + attempt), { mode: "closed", concurrency: rc, maxMs: plan.maxMs });

    const out: { embedded?: EmbeddedResult; baseline?: StageRecord } = {};
    if (options.embedded !== undefined) {
      if (node === undefined || emb === undefined) out.embedded = { stage: "embedded", status: "failed", reason: failures.embedded ?? "not started", steps: [] };
      else {
        await pause(1_000);
        const rss: EmbeddedRss = {
          idleMB: rssIdle,
          warmMB: rssWarm,
          afterRunMB: rssMB(node.child.pid!),
          maxMB: round(Math.max(...emb.steps.flatMap((x) => x.usage.processes.filter((p) => p.name === "embedded").map((p) => p.rssMaxMB))), 1),
        };
        notes.embedded.push(`RSS idle ${rss.idleMB} MB, after warm-up ${rss.warmMB} MB, after the run ${rss.afterRunMB} MB, largest during the steps ${rss.maxMB} MB`);
        out.embedded = {
          stage: "embedded",
          status: "ok",
          config: { ...plan.nodeEnv, CACHE_MAX_ENTRIES: "default (edge cache on, as in production)", store: storeOf(env), runtime: options.embedded.name, protocol: plan.protocol },
          steps: emb.steps,
          notes: notes.embedded,
          rss,
          ...(threads === undefined ? {} : { threads }),
        };
      }
    }
    if (options.baseline) {
      const b = sides.find((x) => x.key === "baseline");
      out.baseline =
        b === undefined
          ? { stage: "baseline", status: "failed", reason: failures.baseline ?? "not started", steps: [], notes: notes.baseline }
          : { stage: "baseline", status: "ok", config: { server: "gunicorn gthread", workers: String(DEFAULT_BASELINE.workers), threads: String(DEFAULT_BASELINE.threads), ORT_INTRA_OP_THREADS: String(DEFAULT_BASELINE.intraOpThreads), protocol: "HTTP/1.1 POST /classify (body = image)" }, steps: b.steps, notes: notes.baseline };
    }
    return out;
  } catch (err) {
    const reason = `failed: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`;
    const logTail = started.map((n) => n.output().split("\n").slice(-12).join("\n")).join("\n---\n");
    const of = (key: Side["key"]): StageRecord => ({ stage: key, status: "failed", reason, logTail, steps: sides.find((x) => x.key === key)?.steps ?? [] });
    return { ...(options.embedded === undefined ? {} : { embedded: of("embedded") }), ...(options.baseline ? { baseline: of("baseline") } : {}) };
  } finally {
    for (const n of started) await n.kill("SIGTERM").catch(() => undefined);
  }
}

/** The data-service variables a full-stack core needs. */
export const DATA_ENV = ["DATABASE_URL", "S3_ENDPOINT", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_BUCKET", "KAFKA_BROKERS"] as const;

export interface FullStackResult extends StageRecord {
  /** Largest VmRSS sampled during the load steps, per role. */
  readonly rssMaxMB?: { readonly core: number; readonly edge: number };
  /** Thread budget of the first core and the first edge. */
  readonly threads?: { readonly core: ThreadBudget; readonly edge: ThreadBudget };
}

/**
 * Stage 3: plan.fullStack.cores cores and plan.fullStack.edges edges (1 + 1
 * by default) as child processes on loopback, the cores on Postgres, MinIO
 * and Kafka (DATABASE_URL, S3_*, KAFKA_BROKERS passed through), clients
 * alternating between the edges over plan.protocol, every request a new image.
 */
export async function fullStackStage(
  src: ImageSource,
  plan: LoadPlan,
  log: Log,
  env: Readonly<Record<string, string | undefined>>,
  client: LoadClient,
  runtime: NodeRuntime = TSX_RUNTIME,
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
    const nums = (n: number) => Array.from({ length: n }, (_, i) => i + 1);
    const cores = await Promise.all(nums(plan.fullStack.cores).map((i) => runtime.spawn("core", { ...plan.nodeEnv, ...dataEnv, NODE_ID: `bench-core-${i}` }).then(track)));
    started.push(...cores);
    const coreUrls = cores.map((c) => c.url);
    const edgeEnv = { ...plan.nodeEnv, CORE_URLS: coreUrls.join(","), CACHE_MAX_ENTRIES: "0" };
    const edges = await Promise.all(nums(plan.fullStack.edges).map((i) => runtime.spawn("edge", { ...edgeEnv, NODE_ID: `bench-edge-${i}` }).then(track)));
    started.push(...edges);
    const all = [...cores, ...edges];
    const checks = await Promise.all(all.map((n) => waitReady(n.url, 60_000)));
    const coreChecks = Object.keys(checks[0] ?? {}).sort();
    notes.push(`core readiness checks: ${coreChecks.join(", ")}`);
    for (const [dep, pattern] of [["S3/MinIO", /s3|object|minio/i], ["Kafka", /kafka|outbox|event/i], ["Postgres", /database|postgres|db/i]] as const) {
      if (!coreChecks.some((c) => pattern.test(c))) notes.push(`core reports no readiness check for ${dep}: it may not use that service yet`);
    }
    log(`  cores ${coreUrls.join(" ")}  edges ${edges.map((e) => e.url).join(" ")}  (${notes.join("; ")})`);

    const threads = { core: await threadBudget("core", cores[0]!.child.pid!, cores[0]!.url, { ...plan.nodeEnv, ...dataEnv }), edge: await threadBudget("edge", edges[0]!.child.pid!, edges[0]!.url, edgeEnv) };
    const services = localServicePids();
    if (services.length > 0) notes.push(`watching local data services: ${services.map((s) => `${s.name} (pid ${s.pid} and children)`).join(", ")}`);
    const watched: Watched[] = [
      harness("bench (client)", client),
      ...cores.map((c, i) => ({ name: `core-${i + 1}`, pid: c.child.pid! })),
      ...edges.map((e, i) => ({ name: `edge-${i + 1}`, pid: e.child.pid! })),
      ...services,
    ];
    const urls = edges.map((e) => e.url);
    await client.run(urls, src.recipe("small", "fullstack-warmup", plan.warmup), { mode: "closed", concurrency: 4, maxMs: 60_000 }, { protocol: plan.protocol });
    for (const c of plan.concurrency) {
      const images = (attempt: number) => src.recipe("small", `fullstack-c${c}-${attempt}`, plan.requests);
      steps.push(await step(`c=${c}`, "fullstack", watched, coreUrls, client, urls, images, { mode: "closed", concurrency: c, maxMs: plan.maxMs }, plan, log, plan.protocol));
    }
    const maxOf = (prefix: string) =>
      round(Math.max(...steps.flatMap((s) => s.usage.processes.filter((p) => p.name.startsWith(prefix)).map((p) => p.rssMaxMB))), 1);
    return {
      stage: "fullstack",
      status: "ok",
      config: { ...edgeEnv, CORE_URLS: `${cores.length} core(s)`, topology: `${edges.length} edge${edges.length > 1 ? "s" : ""} + ${cores.length} core${cores.length > 1 ? "s" : ""}`, data: "DATABASE_URL, S3_*, KAFKA_BROKERS from the environment", runtime: runtime.name, protocol: plan.protocol },
      steps,
      notes,
      rssMaxMB: { core: maxOf("core"), edge: maxOf("edge") },
      threads,
    };
  } catch (err) {
    const nameOf = (i: number) => (i < plan.fullStack.cores ? `core-${i + 1}` : `edge-${i - plan.fullStack.cores + 1}`);
    const logTail = started.map((n, i) => `--- ${nameOf(i)}\n${n.output().split("\n").slice(-12).join("\n")}`).join("\n");
    const exited = started.map((n, i) => (n.child.exitCode !== null || n.child.signalCode !== null ? `${nameOf(i)} exited (${n.child.exitCode ?? n.child.signalCode})` : "")).filter((x) => x !== "");
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
