/**
 * Load profiles for the inference path with ghz (gRPC load generator, Apache-2.0; k6 is
 * AGPL-licensed and not used in this project):
 *
 *   npm run bench:load                                  # embedded node started here, steady profile
 *   LOAD_PROFILE=ramp|steady|spike npm run bench:load
 *   CATEGORIZE_ADDR=edge.example.com:443 CATEGORIZE_TLS_CA=ca.pem CATEGORIZE_API_KEY=... npm run bench:load
 *
 * The schema comes from the committed protos. Thresholds (P95_MS, default 500; MAX_ERROR_RATE, default
 * 0.01) are checked on ghz's JSON report; the exit code is 1 when one fails. Every run is bounded:
 * LOAD_SECONDS (default 30) and LOAD_RPS (the peak rate, default 40). ghz comes from GHZ_BIN, else
 * .local/bin/ghz (infra/local/tools.sh ghz), else PATH.
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { RunningNode } from "../../cli/start-node.js";
import { imagesDir } from "../../test/support/fixtures.js";
import { repoRoot, startTestNode } from "../../test/support/nodes.js";

const env = process.env;
const ghz = env.GHZ_BIN ?? (existsSync(join(repoRoot, ".local", "bin", "ghz")) ? join(repoRoot, ".local", "bin", "ghz") : "ghz");
const profile = env.LOAD_PROFILE ?? "steady";
const seconds = Number(env.LOAD_SECONDS ?? 30);
const peak = Number(env.LOAD_RPS ?? 40);
const p95Limit = Number(env.P95_MS ?? 500);
const maxErrorRate = Number(env.MAX_ERROR_RATE ?? 0.01);

const schedules: Record<string, string[]> = {
  // A constant rate.
  steady: [`--rps=${peak}`, `--duration=${seconds}s`],
  // From 10 % of the peak up to the peak, linearly.
  ramp: ["--load-schedule=line", `--load-start=${Math.max(1, Math.round(peak / 10))}`, `--load-end=${peak}`, `--load-step=${Math.max(1, Math.round(peak / seconds))}`, `--duration=${seconds}s`],
  // A quarter of the peak, then the full peak in one step, then back.
  spike: ["--load-schedule=step", `--load-start=${Math.max(1, Math.round(peak / 4))}`, `--load-step=${peak - Math.max(1, Math.round(peak / 4))}`, `--load-step-duration=${Math.max(1, Math.round(seconds / 3))}s`, `--load-end=${peak}`, `--duration=${seconds}s`],
};
const schedule = schedules[profile];
if (schedule === undefined) throw new Error(`LOAD_PROFILE must be one of ${Object.keys(schedules).join(", ")}`);

let node: RunningNode | undefined;
let addr = env.CATEGORIZE_ADDR ?? "";
if (addr === "") {
  node = await startTestNode("all", { LOG_LEVEL: "silent" });
  addr = new URL(node.url).host;
}
const dir = await mkdtemp(join(tmpdir(), "categorize-ghz-"));
try {
  const image = await readFile(env.CATEGORIZE_IMAGE ?? join(imagesDir, "bald_eagle.jpeg"));
  await writeFile(join(dir, "data.json"), JSON.stringify({ image: image.toString("base64"), top_k: 5 }));
  const tls = env.CATEGORIZE_TLS_CA === undefined ? ["--insecure"] : [`--cacert=${env.CATEGORIZE_TLS_CA}`];
  const auth = env.CATEGORIZE_API_KEY === undefined ? [] : ["-m", JSON.stringify({ authorization: `Bearer ${env.CATEGORIZE_API_KEY}` })];
  const args = [
    ...tls,
    ...auth,
    // The committed contracts (ghz's reflection client does not resolve our descriptors; grpcurl and buf curl do).
    `--proto=${join(repoRoot, "proto", "categorize", "v1", "categorize.proto")}`,
    `--import-paths=${join(repoRoot, "proto")}`,
    "--call=categorize.v1.CategorizeService/Classify",
    "-D",
    join(dir, "data.json"),
    `--concurrency=${Math.max(2, Math.ceil(peak / 10))}`,
    "--connections=2",
    "--timeout=10s",
    "--format=json",
    `--output=${join(dir, "report.json")}`,
    ...schedule,
    addr,
  ];
  console.log(`ghz ${profile}: peak ${peak} req/s for ${seconds} s against ${addr}`);
  const code = await new Promise<number>((resolve, reject) => {
    const child = spawn(ghz, args, { stdio: ["ignore", "inherit", "inherit"], timeout: (seconds + 60) * 1000 });
    child.on("error", reject);
    child.on("exit", (c) => resolve(c ?? 1));
  });
  if (code !== 0) throw new Error(`ghz exited with ${code}`);
  const report = JSON.parse(await readFile(join(dir, "report.json"), "utf8")) as {
    count: number;
    rps: number;
    average: number;
    latencyDistribution: { percentage: number; latency: number }[] | null;
    statusCodeDistribution: Record<string, number>;
  };
  const ok = report.statusCodeDistribution.OK ?? 0;
  const errorRate = report.count === 0 ? 1 : 1 - ok / report.count;
  const p = (q: number) => (report.latencyDistribution?.find((d) => d.percentage === q)?.latency ?? Number.NaN) / 1e6;
  console.log(`requests ${report.count}, ${report.rps.toFixed(1)} req/s, p50 ${p(50).toFixed(1)} ms, p95 ${p(95).toFixed(1)} ms, p99 ${p(99).toFixed(1)} ms`);
  console.log(`status codes: ${JSON.stringify(report.statusCodeDistribution)}`);
  const checks = [
    { name: `p95 <= ${p95Limit} ms`, ok: p(95) <= p95Limit },
    { name: `error rate <= ${maxErrorRate}`, ok: errorRate <= maxErrorRate },
  ];
  for (const c of checks) console.log(`${c.ok ? "PASS" : "FAIL"} ${c.name}`);
  process.exitCode = checks.every((c) => c.ok) ? 0 : 1;
} finally {
  await rm(dir, { recursive: true, force: true });
  await node?.stop();
}
