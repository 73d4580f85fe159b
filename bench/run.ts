/**
 * `npm run bench [-- --quick] [--stages=1,2,3,4] [--concurrency=1,4,16,32] [--requests=N] [--seconds=S] [--wait-quiet=S] [--runtime=tsx|dist] [--node-env=K=V,...]`
 *
 * One run measures, on this machine and so comparably:
 *   1. limit      in-process sharp preprocessing + onnxruntime, best batch size, no network/storage
 *   2. embedded   the embedded node through its gRPC port, distinct images, edge cache off,
 *                 plus a paced open-loop step at 70 % of its peak
 *   3. fullstack  2 edges + 2 cores as child processes on Postgres, MinIO and Kafka
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
import { buildCompiled, spawnCompiled, type CompiledTree } from "./compiled.js";
import { LoadClient } from "./client.js";
import { ImageSource } from "./images.js";
import { measureLimit } from "./limit.js";
import { evaluate, render, type BenchResult } from "./report.js";
import { backgroundCores, NOISE_CORES, waitQuiet } from "./resources.js";
import { cacheHitStage, embeddedStage, fullStackStage, stopEverything, type LoadPlan, type StageRecord } from "./stages.js";

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    stages: { type: "string", default: "1,2,3,4" },
    concurrency: { type: "string" },
    requests: { type: "string" },
    seconds: { type: "string" },
    "wait-quiet": { type: "string" },
    runtime: { type: "string", default: "dist" },
    "node-env": { type: "string" },
  },
});
const quick = values.quick;
if (values.runtime !== "tsx" && values.runtime !== "dist") throw new Error(`--runtime must be tsx or dist, not ${values.runtime}`);
const stages = new Set(values.stages.split(",").map((s) => s.trim()));
const numbers = (s: string | undefined) => s?.split(",").map(Number).filter((n) => Number.isInteger(n) && n > 0);

const plan: LoadPlan = {
  concurrency: numbers(values.concurrency) ?? (quick ? [1, 8] : [1, 4, 16, 32]),
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
};
// intra-op 0 = the nodes' default (one thread per core); 1 = inference on the calling thread only.
const limitPlan = { images: quick ? 48 : 240, batchSizes: quick ? [1, 4, 16] : [1, 2, 4, 8, 16], intraOpThreads: [0, 1] };
const poolSize = quick ? 24 : 160;

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
    childRuntime: values.runtime,
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
const src = await ImageSource.create(poolSize);
log(`  ${poolSize} variants, mean ${Math.round(src.meanBytes / 1024)} KiB; every request gets its own bytes (run ${src.runId})`);

if (stages.has("1")) {
  await beforeStage("stage 1: limit");
  try {
    result.limit = await measureLimit({ modelPath, images: src.distinct("limit", limitPlan.images), batchSizes: limitPlan.batchSizes, intraOpThreads: limitPlan.intraOpThreads, quietWaitMs: plan.quietWaitMs, log });
  } catch (err) {
    const reason = err instanceof Error ? (err.stack ?? err.message) : String(err);
    result.limit = { status: "failed", reason };
    log(`  failed: ${reason}`);
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

if (stages.has("2")) {
  await beforeStage("stage 2: embedded node, distinct images");
  result.embedded = await guarded("embedded", () => embeddedStage(src, plan, log, client));
}
if (stages.has("3")) {
  await beforeStage("stage 3: full stack, distinct images");
  if (values.runtime === "dist") {
    // Child nodes as the container images run them: compiled JavaScript on plain node.
    const tree = buildCompiled(log);
    compiledTree = tree;
    try {
      result.fullstack = await fullStackStage(src, plan, log, process.env, client, { name: "dist (tsc output on plain node)", spawn: (role, env) => spawnCompiled(tree, role, env) });
    } finally {
      tree.cleanup();
      compiledTree = undefined;
    }
  } else {
    result.fullstack = await fullStackStage(src, plan, log, process.env, client);
  }
  if (result.fullstack.status !== "ok") log(`  ${result.fullstack.reason ?? result.fullstack.status}${result.fullstack.status === "skipped" ? `; ${result.fullstack.notes?.join("; ") ?? ""}` : ""}`);
}
if (stages.has("4")) {
  await beforeStage("stage 4: cache hits vs no-op");
  result.cachehit = await guarded("cachehit", () => cacheHitStage(src, plan, log, client));
}

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
