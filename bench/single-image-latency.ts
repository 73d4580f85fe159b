/**
 * Single-image latency through the edge (embedded node, real gRPC port, cache
 * off, one request at a time) next to raw onnxruntime session.run at batch 1,
 * both in this process, medians of many runs.
 *   node --import tsx bench/single-image-latency.ts [--runs=N]
 */
import { parseArgs } from "node:util";
import { loadModel } from "../core/loaded-model.js";
import { resolveLocalModel } from "../core/model-manifest.js";
import { categorizeClient } from "../test/support/clients.js";
import { modelPath } from "../test/support/fixtures.js";
import { makeVariants } from "../test/support/image-variants.js";
import { startTestNode } from "../test/support/nodes.js";

const { values } = parseArgs({ options: { runs: { type: "string", default: "200" } } });
const runs = Number(values.runs);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const p = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]!;

const model = await loadModel(await resolveLocalModel(modelPath), { intraOpThreads: 0, interOpThreads: 1 });
const input = new Float32Array(model.encoder.inputFloats);
for (let i = 0; i < input.length; i++) input[i] = Math.sin(i) * 2;
for (let i = 0; i < 20; i++) await model.runner.run(input, 1);
const raw: number[] = [];
for (let i = 0; i < runs; i++) {
  const t = performance.now();
  await model.runner.run(input, 1);
  raw.push(performance.now() - t);
}
await model.runner.close();

const images = await makeVariants(runs + 20, { width: 640 });
const node = await startTestNode("all", { CACHE_MAX_ENTRIES: "0", BATCH_MAX_DELAY_MS: "0" });
const client = categorizeClient(node.url);
for (const image of images.slice(0, 20)) await client.classify({ image });
const edge: number[] = [];
const pre: number[] = [];
const inf: number[] = [];
for (const image of images.slice(20)) {
  const t = performance.now();
  const res = await client.classify({ image });
  edge.push(performance.now() - t);
  pre.push(res.timings?.preprocessMs ?? 0);
  inf.push(res.timings?.inferenceMs ?? 0);
}
await node.stop();
const fmt = (x: number) => x.toFixed(2).padStart(7);
console.log(`runs: ${runs} (640 px wide JPEG variants of the shared photos)`);
console.log(`raw session.run, batch 1      median ${fmt(median(raw))} ms  p90 ${fmt(p(raw, 0.9))} ms`);
console.log(`through the edge (gRPC, e2e)  median ${fmt(median(edge))} ms  p90 ${fmt(p(edge, 0.9))} ms`);
console.log(`  of which preprocess         median ${fmt(median(pre))} ms`);
console.log(`  of which inference (batch)  median ${fmt(median(inf))} ms`);
