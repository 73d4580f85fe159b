/**
 * `node --import tsx bench/k6/run.ts [k6 run options...]`
 *
 * Runs bench/k6/classify.js with k6. When CATEGORIZE_ADDR is unset it first
 * starts an embedded node in this process (port 0, the shared model) and
 * points k6 at it; a few node settings are passed to that node from the
 * environment: CACHE_MAX_ENTRIES, BATCH_*, ORT_INTRA_OP_THREADS,
 * PREPROCESS_CONCURRENCY, and TLS_CERT_FILE/TLS_KEY_FILE (then k6 talks TLS;
 * add CORE_TLS_CA_FILE so the node's edge trusts its own core). With
 * CATEGORIZE_ADDR set it only runs k6 against that address. When
 * CATEGORIZE_IMAGE is unset it sends one of the shared photos. k6 is taken
 * from K6_BIN, else .local/bin/k6 (infra/local/tools.sh k6), else PATH.
 * Exits with k6's exit code (99 when a threshold failed).
 */
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { Writable } from "node:stream";
import type { RunningNode } from "../../cli/start-node.js";
import { imageNames, imagesDir } from "../../test/support/fixtures.js";
import { repoRoot, startTestNode } from "../../test/support/nodes.js";

const k6 = process.env.K6_BIN ?? (existsSync(join(repoRoot, ".local", "bin", "k6")) ? join(repoRoot, ".local", "bin", "k6") : "k6");
const env: Record<string, string | undefined> = { ...process.env };
if ((env.CATEGORIZE_IMAGE ?? "") === "") {
  const name = imageNames().find((n) => /\.jpe?g$/i.test(n));
  if (name === undefined) throw new Error(`no JPEG in ${imagesDir}; set CATEGORIZE_IMAGE`);
  env.CATEGORIZE_IMAGE = join(imagesDir, name);
}

// k6 resolves relative file paths from the script's folder; make them relative to where this runs instead.
for (const k of ["CATEGORIZE_IMAGE", "CATEGORIZE_TLS_CA", "CATEGORIZE_TLS_CERT", "CATEGORIZE_TLS_KEY"]) {
  const v = env[k];
  if (v !== undefined && v !== "") env[k] = resolve(v);
}

let node: RunningNode | undefined;
if ((env.CATEGORIZE_ADDR ?? "") === "") {
  const discard = new Writable({
    write(_c, _e, cb) {
      cb();
    },
  });
  // The node's own settings can still come from the environment (e.g. CACHE_MAX_ENTRIES=0).
  const passthrough = Object.fromEntries(
    ["CACHE_MAX_ENTRIES", "BATCH_MAX_SIZE", "BATCH_MAX_DELAY_MS", "ORT_INTRA_OP_THREADS", "PREPROCESS_CONCURRENCY", "TLS_CERT_FILE", "TLS_KEY_FILE", "CORE_TLS_CA_FILE"]
      .filter((k) => env[k] !== undefined)
      .map((k) => [k, env[k]]),
  );
  // A node started with a certificate serves TLS only: talk TLS to it.
  if (env.TLS_CERT_FILE !== undefined && env.CATEGORIZE_TLS === undefined) env.CATEGORIZE_TLS = "1";
  node = await startTestNode("all", { LOG_LEVEL: "info", ...passthrough }, discard);
  env.CATEGORIZE_ADDR = new URL(node.url).host;
  console.log(`embedded node on ${node.url} (in this process)`);
}

console.log(`k6 run bench/k6/classify.js -> ${env.CATEGORIZE_ADDR} (profile ${env.K6_PROFILE ?? "steady"}, image ${env.CATEGORIZE_IMAGE})`);
const child = spawn(k6, ["run", ...process.argv.slice(2), join(repoRoot, "bench", "k6", "classify.js")], { env, stdio: "inherit" });
const code = await new Promise<number>((resolve) => {
  child.once("error", (err) => {
    console.error(`cannot run k6 (${k6}): ${err.message}; build it with infra/local/tools.sh k6 or set K6_BIN`);
    resolve(127);
  });
  child.once("exit", (c, signal) => resolve(c ?? (signal === null ? 1 : 128)));
});
// Ctrl-C reaches k6 too (same process group); the node stops after it.
process.once("SIGINT", () => undefined);
await node?.stop("k6 run finished");
process.exit(code);
