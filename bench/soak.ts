/**
 * `npm run soak -- [--minutes=M] [--rate=R] [--concurrency=C] [--warmup-seconds=S] [--new-every=N] [--pool=P] [--max-slope=MB_PER_MIN] [--max-fd-growth=N] [--max-failures=N]`
 *
 * The long soak: the embedded node (`categorize serve all`) as a child process
 * under steady traffic for M minutes (default 10): R requests per second
 * (default 10) with at most C in flight; every Nth request (default 10) is a
 * new image (inference, a new row), the others cycle over P distinct images
 * (preprocessing, the core stream and a dedup hit in the store). Samples the
 * node's RSS, open fds and threads every second, fits the RSS slope after the
 * warm-up (default: 30 % of the run, at most 3 min), and compares open fds at
 * the end of warm-up with the end. Defaults bound the slope at 2 MB/min, fd
 * growth at 4 and failed requests at 0 (steady traffic on a healthy node).
 * Writes results/soak-<timestamp>.json and prints PASS/FAIL; exit code 1 on FAIL.
 * Bounded: traffic stops after M minutes (at most 24 h).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { availableParallelism, loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { repoRoot } from "../test/support/nodes.js";
import { runSoak } from "../test/reliability/support/soak.js";

const { values } = parseArgs({
  options: {
    minutes: { type: "string", default: "10" },
    rate: { type: "string", default: "10" },
    concurrency: { type: "string", default: "4" },
    "warmup-seconds": { type: "string" },
    "new-every": { type: "string", default: "10" },
    pool: { type: "string", default: "64" },
    "max-slope": { type: "string", default: "2" },
    "max-fd-growth": { type: "string", default: "4" },
    "max-failures": { type: "string", default: "0" },
  },
});
const num = (name: keyof typeof values, min: number, max: number): number => {
  const v = Number(values[name]);
  if (!Number.isFinite(v) || v < min || v > max) throw new Error(`--${name} must be a number in [${min}, ${max}], not '${values[name]}'`);
  return v;
};
const minutes = num("minutes", 0.5, 24 * 60);
// Default: the first 30 % of the run, at most 3 minutes (pools, caches and the JIT settle in the first minutes).
values["warmup-seconds"] ??= String(Math.min(180, Math.round(minutes * 60 * 0.3)));
const warmupSeconds = num("warmup-seconds", 0, minutes * 60 - 10);
const maxSlope = num("max-slope", 0, 10_000);
const maxFdGrowth = num("max-fd-growth", 0, 100_000);
const maxFailures = num("max-failures", 0, 1_000_000);

console.log(`categorize soak: ${minutes} min of ${values.rate}/s on the embedded node, ${availableParallelism()} CPUs, load ${loadavg()[0]!.toFixed(2)}`);
const result = await runSoak({
  durationMs: minutes * 60_000,
  warmupMs: warmupSeconds * 1000,
  ratePerSecond: num("rate", 0.1, 1_000),
  concurrency: num("concurrency", 1, 256),
  newEvery: num("new-every", 1, 1_000_000),
  poolSize: num("pool", 1, 10_000),
  progress: (line) => console.log(line),
});

const fdGrowth = result.fds.atEnd - result.fds.atWarmup;
const verdicts = [
  { name: `RSS slope after warm-up ${result.rssSlopeMBPerMin} MB/min < ${maxSlope} MB/min`, pass: result.rssSlopeMBPerMin < maxSlope },
  { name: `open fds at end ${result.fds.atEnd} - at warm-up ${result.fds.atWarmup} = ${fdGrowth} <= ${maxFdGrowth}`, pass: fdGrowth <= maxFdGrowth },
  { name: `no request lost (${result.load.failed.LOST ?? 0})`, pass: (result.load.failed.LOST ?? 0) === 0 },
  // Steady, modest traffic on a healthy node: any failed request is a finding (see "failures" for when and why).
  { name: `failed requests ${result.load.sent - result.load.ok} <= ${maxFailures}`, pass: result.load.sent - result.load.ok <= maxFailures },
  { name: `node alive${result.nodeExited === undefined ? "" : `: ${result.nodeExited}`}`, pass: result.nodeExited === undefined },
];
const { samples, ...summary } = result;
console.log(JSON.stringify(summary, null, 2));
for (const v of verdicts) console.log(`${v.pass ? "PASS" : "FAIL"} ${v.name}`);

const dir = join(repoRoot, "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `soak-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
writeFileSync(file, JSON.stringify({ ...summary, verdicts, samples }, null, 2));
console.log(`wrote results/${file.slice(dir.length + 1)}`);
if (verdicts.some((v) => !v.pass)) process.exitCode = 1;
