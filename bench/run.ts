/**
 * `npm run bench [-- --quick] [--stages=1,2,3,4,5] [--concurrency=1,4,8,16,32] [--requests=N] [--seconds=S] [--wait-quiet=S]
 *   [--runtime=dist|tsx] [--protocol=h1|grpc] [--fullstack=1+1] [--node-env=K=V,...]`
 *
 * One run measures, on this machine and so comparably:
 *   1. limit      in-process sharp preprocessing + onnxruntime, best batch size, no network/storage;
 *                 on the small photos and on the 12 MP JPEGs
 *   2. embedded   the embedded node (compiled, child process) over HTTP/1.1 keep-alive: distinct
 *                 small photos, a paced open-loop step at 70 % of its peak, distinct 12 MP JPEGs,
 *                 50 % repeated images (edge cache on, as in production)
 *   5. baseline   the stack categorize replaces (bench/baseline: Flask + gunicorn + Pillow + numpy +
 *                 onnxruntime, in .local/bench-venv), the same steps interleaved with stage 2's
 *   3. fullstack  1 edge + 1 core (--fullstack=E+C) as child processes on Postgres, MinIO and Kafka
 *                 (skipped unless DATABASE_URL, S3_*, KAFKA_BROKERS are set)
 *   4. cachehit   repeated images on a warm edge cache vs a no-op handler on the same server stack
 * then writes results/bench-<timestamp>.json, prints the tables and PASS/FAIL lines.
 * Exit code 0 whatever the verdicts; non-zero only when the harness itself fails.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { modelPath } from "../test/support/fixtures.js";
import { repoRoot } from "../test/support/nodes.js";
import { ensureVenv } from "./baseline.js";
import { buildCompiled, spawnCompiled, type CompiledTree } from "./compiled.js";
import { LoadClient } from "./client.js";
import { ImageSource } from "./images.js";
import { measureLimit } from "./limit.js";
import { evaluate, isLimit, render, type BenchResult } from "./report.js";
import { backgroundCores, NOISE_CORES, waitQuiet } from "./resources.js";
import { round } from "./stats.js";
import { cacheHitStage, embeddedStage, fullStackStage, stopEverything, TSX_RUNTIME, type LoadPlan, type NodeRuntime, type StageRecord } from "./stages.js";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    stages: { type: "string", default: "1,2,3,4,5" },
    concurrency: { type: "string" },
    requests: { type: "string" },
    seconds: { type: "string" },
    "wait-quiet": { type: "string" },
    runtime: { type: "string", default: "dist" },
    protocol: { type: "string", default: "h1" },
    fullstack: { type: "string", default: "1+1" },
    "node-env": { type: "string" },
  },
});
const quick = values.quick;
if (values.runtime !== "tsx" && values.runtime !== "dist") throw new Error(`--runtime must be tsx or dist, not ${values.runtime}`);
if (values.protocol !== "h1" && values.protocol !== "grpc") throw new Error(`--protocol must be h1 or grpc, not ${values.protocol}`);
const topology = /^(\d+)\+(\d+)$/.exec(values.fullstack);
if (topology === null || Number(topology[1]) < 1 || Number(topology[2]) < 1) throw new Error(`--fullstack must be EDGES+CORES, e.g. 1+1, not ${values.fullstack}`);
const stages = new Set(values.stages.split(",").map((s) => s.trim()));
const numbers = (s: string | undefined) => s?.split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0);

const plan: LoadPlan = {
  concurrency: numbers(values.concurrency) ?? (quick ? [1, 8] : [1, 4, 8, 16, 32]),
  requests: Number(values.requests ?? (quick ? 40 : 300)),
  maxMs: Number(values.seconds ?? (quick ? 5 : 20)) * 1000,
  cacheRequests: quick ? 400 : 3000,
  pacedMs: quick ? 4_000 : 15_000,
  warmup: quick ? 8 : 24,
  quietWaitMs: Number(values["wait-quiet"] ?? 0) * 1000,
  nodeEnv: Object.fromEntries(
    (values["node-env"] ?? "")
      .split(",")
      .filter((kv) => kv.includes("="))
      .map((kv) => [kv.slice(0, kv.indexOf("=")).trim(), kv.slice(kv.indexOf("=") + 1).trim()]),
  ),
  largeRequests: quick ? 16 : 120,
  largeConcurrency: [4],
  repeatRequests: quick ? 60 : 300,
  repeatConcurrency: 8,
  protocol: values.protocol === "h1" ? "connect-h1" : "grpc",
  fullStack: { edges: Number(topology[1]), cores: Number(topology[2]) },
};
// intra-op 0 = the nodes' default (one thread per core); 1 = inference on the calling thread only.
const limitPlan = { images: quick ? 48 : 240, batchSizes: quick ? [1, 4, 16] : [1, 2, 4, 8, 16], intraOpThreads: [0, 1], largeImages: quick ? 16 : 48, largeBatchSizes: quick ? [1, 4] : [1, 2, 4, 8] };
const poolSize = quick ? 24 : 160;
// 12 MP JPEGs for stages 1, 2 and 5 (about 0.7 s each to make).
const largePoolSize = ["1", "2", "5"].some((s) => stages.has(s)) ? (quick ? 7 : 14) : 0;

const log = (s: string) => console.log(s);

let compiledTree: CompiledTree | undefined;
// Ctrl-C or SIGTERM: stop the nodes this run started (their temporary folders go with them), then exit.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  process.once(signal, () => {
    log(`\n${signal}: stopping the nodes this run started...`);
    void stopEverything().finally(() => {
      compiledTree?.cleanup();
      process.exit(130);
    });
  });
}
const t0 = Date.now();
const stamp = new Date().toISOString().replace(/[:.]/g, "-");
const gitCommit = (() => {
  try {
    return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: repoRoot, encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
})();

const result: BenchResult = {
  meta: {
    startedAt: new Date().toISOString(),
    quick,
    gitCommit,
    node: process.version,
    cpus: availableParallelism(),
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    loadavgAtStart: loadavg().map((x) => Math.round(x * 100) / 100),
    plan,
    limitPlan,
    imagePool: poolSize,
    largeImagePool: largePoolSize,
    childRuntime: values.runtime,
    protocol: plan.protocol,
  },
};
const background: Record<string, number> = {};
(result.meta as Record<string, unknown>).backgroundCoresBeforeStage = background;

async function beforeStage(name: string): Promise<void> {
  // --wait-quiet=S: wait up to S seconds for other work on the machine to calm down first.
  const busy = plan.quietWaitMs > 0 ? await waitQuiet(plan.quietWaitMs) : await backgroundCores(2_000);
  background[name] = busy;
  log(`\n== ${name} (other work on the machine: ${busy} CPUs busy${busy > NOISE_CORES ? " - numbers will be noisy" : ""})`);
}

log(`categorize bench${quick ? " --quick" : ""}: ${availableParallelism()} CPUs, commit ${gitCommit}; making ${poolSize} distinct photo variants...`);
// The client worker first: its TypeScript is compiled (by tsx's esbuild process) before anything is measured.
const client = await LoadClient.start();
const src = await ImageSource.create(poolSize, largePoolSize);
client.setPool("small", src.pool);
client.setPool("large", src.large);
log(
  `  ${poolSize} variants, mean ${Math.round(src.meanBytes / 1024)} KiB` +
    `${largePoolSize > 0 ? `; ${largePoolSize} 12 MP (4000x3000) JPEGs, mean ${round(src.largeMeanBytes / 2 ** 20, 2)} MiB` : ""}; every request gets its own bytes (run ${src.runId})`,
);

if (stages.has("1")) {
  await beforeStage("stage 1: limit");
  try {
    result.limit = await measureLimit({ modelPath, images: src.distinct("limit", limitPlan.images), batchSizes: limitPlan.batchSizes, intraOpThreads: limitPlan.intraOpThreads, quietWaitMs: plan.quietWaitMs, log });
  } catch (err) {
    const reason = err instanceof Error ? (err.stack ?? err.message) : String(err);
    result.limit = { status: "failed", reason };
    log(`  failed: ${reason}`);
  }
  if (largePoolSize > 0) {
    log("  limit on the 12 MP JPEGs:");
    const intra = isLimit(result.limit) ? result.limit.best.intraOpThreads : 1;
    try {
      result.limitLarge = await measureLimit({ modelPath, images: src.distinctLarge("limit", limitPlan.largeImages), batchSizes: limitPlan.largeBatchSizes, intraOpThreads: [intra], quietWaitMs: plan.quietWaitMs, log });
    } catch (err) {
      const reason = err instanceof Error ? (err.stack ?? err.message) : String(err);
      result.limitLarge = { status: "failed", reason };
      log(`  failed: ${reason}`);
    }
  }
}
/** A stage that throws is recorded as failed and the run goes on. */
async function guarded(stage: string, run: () => Promise<StageRecord>): Promise<StageRecord> {
  try {
    return await run();
  } catch (err) {
    const reason = `failed: ${err instanceof Error ? err.message.split("\n")[0] : String(err)}`;
    log(`  ${reason}`);
    return { stage, status: "failed", reason, steps: [] };
  }
}

// Child nodes as the container images run them: compiled JavaScript on plain node (built once for stages 2 and 3).
let runtime: NodeRuntime = TSX_RUNTIME;
if (values.runtime === "dist" && (stages.has("2") || stages.has("3"))) {
  const tree = buildCompiled(log);
  compiledTree = tree;
  runtime = { name: "dist (tsc output on plain node)", spawn: (role, env) => spawnCompiled(tree, role, env) };
}

if (stages.has("2") || stages.has("5")) {
  await beforeStage(`stage ${[stages.has("2") ? "2: embedded node" : "", stages.has("5") ? "5: baseline (Flask + gunicorn + Pillow + onnxruntime)" : ""].filter((x) => x !== "").join(" vs ")}`);
  let baseline = stages.has("5");
  if (baseline) {
    try {
      ensureVenv(log);
    } catch (err) {
      baseline = false;
      result.baseline = { stage: "baseline", status: "failed", reason: `failed: ${err instanceof Error ? err.message : String(err)}`, steps: [] };
      log(`  baseline ${result.baseline.reason}`);
    }
  }
  const both = await embeddedStage(src, plan, log, client, { embedded: stages.has("2") ? runtime : undefined, baseline });
  if (both.embedded !== undefined) result.embedded = both.embedded;
  if (both.baseline !== undefined) result.baseline = both.baseline;
}
if (stages.has("3")) {
  await beforeStage(`stage 3: full stack (${plan.fullStack.edges} edge + ${plan.fullStack.cores} core), distinct images`);
  result.fullstack = await fullStackStage(src, plan, log, process.env, client, runtime);
  if (result.fullstack.status !== "ok") log(`  ${result.fullstack.reason ?? result.fullstack.status}${result.fullstack.status === "skipped" ? `; ${result.fullstack.notes?.join("; ") ?? ""}` : ""}`);
}
if (stages.has("4")) {
  await beforeStage("stage 4: cache hits vs no-op");
  result.cachehit = await guarded("cachehit", () => cacheHitStage(src, plan, log, client));
}

compiledTree?.cleanup();
compiledTree = undefined;
await client.close();
result.targets = evaluate(result);
(result.meta as Record<string, unknown>).durationSec = Math.round((Date.now() - t0) / 1000);
const dir = join(repoRoot, "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `bench-${stamp}.json`);
writeFileSync(file, JSON.stringify(result, null, 2) + "\n");

log("\n" + render(result));
log("");
for (const t of result.targets) log(`${t.status} ${t.name}: ${t.detail}`);
log(`\nresults: results/bench-${stamp}.json (${Math.round((Date.now() - t0) / 1000)} s)`);
// Client HTTP/2 sessions may linger until their idle timeout; the run is over.
process.exit(0);
