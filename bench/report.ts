import type { LimitResult } from "./limit.js";
import { NOISE_CORES } from "./resources.js";
import { peakOf, type EmbeddedResult, type FullStackResult, type StageRecord, type StepRecord } from "./stages.js";
import { round } from "./stats.js";

export interface BenchResult {
  readonly meta: Readonly<Record<string, unknown>>;
  limit?: LimitResult | { readonly status: "skipped" | "failed"; readonly reason: string };
  /** Stage 1 again on the 12 MP JPEGs (the best ORT thread setting of the small run). */
  limitLarge?: LimitResult | { readonly status: "skipped" | "failed"; readonly reason: string };
  embedded?: EmbeddedResult;
  /** Stage 5: the stack categorize replaces, driven like stage 2. */
  baseline?: StageRecord;
  fullstack?: FullStackResult;
  cachehit?: StageRecord;
  targets?: TargetResult[];
}

export interface TargetResult {
  readonly name: string;
  readonly status: "PASS" | "FAIL" | "SKIP";
  readonly detail: string;
}

export const isLimit = (x: BenchResult["limit"]): x is LimitResult => x !== undefined && "best" in x;

/** Aligned plain-text table. */
export function table(header: readonly string[], rows: readonly (readonly (string | number)[])[]): string {
  const cells = [header, ...rows].map((r) => r.map((c) => (typeof c === "number" ? fmt(c) : c)));
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? "").length)));
  const line = (r: readonly string[]) => "| " + r.map((c, i) => c.padEnd(widths[i]!)).join(" | ") + " |";
  return [line(cells[0]!), "| " + widths.map((w) => "-".repeat(w)).join(" | ") + " |", ...cells.slice(1).map(line)].join("\n");
}

function fmt(x: number): string {
  if (!Number.isFinite(x)) return "-";
  return String(round(x, Math.abs(x) >= 100 ? 1 : 2));
}

const noisy = (s: StepRecord) => s.usage.otherCores > NOISE_CORES;

function stepRow(s: StepRecord): (string | number)[] {
  const errs = Object.values(s.errors).reduce((a, b) => a + b, 0);
  const batch = s.batch === undefined ? "-" : `${s.batch.meanSize} (${Object.entries(s.batch.byBucket).map(([k, v]) => `${k}:${v}`).join(" ")})`;
  const procs = s.usage.processes
    .map((p) => `${p.name} ${fmt(p.cpuCores)}c (main ${fmt(p.mainThreadCores)}) ${fmt(p.rssMaxMB)}MB${p.eventLoopDelayMs === undefined ? "" : ` loop-delay p99 ${fmt(p.eventLoopDelayMs.p99)}ms`}`)
    .join(", ");
  return [
    s.target,
    (s.mode === "open" ? `${s.label} (${fmt(s.targetRate ?? Number.NaN)}/s)` : s.label) + (s.retried === true ? " (rerun)" : ""),
    s.ok,
    errs,
    s.throughput,
    s.latencyMs.p50,
    s.latencyMs.p95,
    s.latencyMs.p99,
    batch,
    s.server === undefined || s.target === "no-op" ? "-" : `${fmt(s.server.preprocessMs)}/${fmt(s.server.queueMs)}/${fmt(s.server.inferenceMs)}/${fmt(s.server.totalMs)}`,
    `${fmt(s.usage.machineCores)}/${s.usage.cpus} (other ${fmt(s.usage.otherCores)})${noisy(s) ? " NOISY" : ""}`,
    Object.entries(s.cpuMsPerImage ?? {})
      .filter(([k]) => !k.startsWith("bench"))
      .map(([k, v]) => `${k} ${fmt(v)}`)
      .join(", "),
    procs,
  ];
}

/** The readable report: stage 1 tables, one table of every load step, stage notes. */
export function render(r: BenchResult): string {
  const out: string[] = [];
  const lim = r.limit;
  if (isLimit(lim)) {
    out.push(`Stage 1 - limit: in-process sharp + onnxruntime, ${lim.images} distinct images, ${lim.cpus} CPUs, preprocess concurrency ${lim.preprocessConcurrency}`);
    out.push(`  isolated: preprocess ${lim.isolated.preprocessMs} ms/image (one at a time), ${lim.isolated.preprocessImagesPerSec} images/s at ${lim.preprocessConcurrency} at once; encode uint8 HWC -> float32 CHW ${lim.isolated.encodeMs} ms/image`);
    out.push(
      table(
        ["ORT intra-op", "batch", "session.run ms/run", "ms/image", "inference-only img/s", "pipelined img/s", "pipelined preprocess ms", "encode ms", "run ms/image", "CPU"],
        lim.pipelined.map((p) => {
          const inf = lim.isolated.inference.find((i) => i.batchSize === p.batchSize && i.intraOpThreads === p.intraOpThreads);
          return [p.intraOpThreads === 0 ? "auto" : String(p.intraOpThreads), p.batchSize, inf?.msPerRun ?? Number.NaN, inf?.msPerImage ?? Number.NaN, inf?.imagesPerSec ?? Number.NaN, p.imagesPerSec, p.stageMs.preprocess, p.stageMs.encode, p.stageMs.run, `${fmt(p.usage.machineCores)}/${p.usage.cpus} (other ${fmt(p.usage.otherCores)})${p.usage.otherCores > NOISE_CORES ? " NOISY" : ""}${p.retried === true ? " (rerun)" : ""}`];
        }),
      ),
    );
    out.push(`  limit = best pipelined: ${lim.best.imagesPerSec} images/s at batch ${lim.best.batchSize}, ORT intra-op ${lim.best.intraOpThreads === 0 ? "auto" : lim.best.intraOpThreads}`);
    out.push(table(["wire tensor", "bytes/image", "edge encode ms", "serialize ms", "parse ms", "core decode ms", "total ms"], lim.wire.rows.map((w) => [w.format, w.bytesPerImage, w.edgeEncodeMs, w.serializeMs, w.parseMs, w.coreDecodeMs, w.totalMs])));
    out.push(`  used: ${lim.wire.used}`);
  } else if (lim !== undefined) {
    out.push(`Stage 1 - limit: ${lim.status}: ${lim.reason}`);
  }
  const large = r.limitLarge;
  if (isLimit(large)) {
    out.push(
      `Stage 1 - limit on 12 MP JPEGs (${large.images} images): preprocess ${large.isolated.preprocessMs} ms/image one at a time, ${large.isolated.preprocessImagesPerSec} images/s at ${large.preprocessConcurrency} at once; pipelined ${large.pipelined.map((p) => `b${p.batchSize} ${p.imagesPerSec}/s`).join(", ")}; limit = ${large.best.imagesPerSec} images/s (batch ${large.best.batchSize})`,
    );
  } else if (large !== undefined) out.push(`Stage 1 - limit on 12 MP JPEGs: ${large.status}: ${large.reason}`);
  const stages = [r.embedded, r.baseline, r.fullstack, r.cachehit].filter((s): s is StageRecord => s !== undefined);
  const steps = stages.flatMap((s) => s.steps);
  if (steps.length > 0) {
    out.push("");
    out.push("Load steps: closed loop at concurrency c, or paced open loop; latency in ms at the client; batch = mean items per model run (runs per size);");
    out.push("server ms = means from the answers' timings: preprocess/queue/inference/edge total; CPU = machine CPUs busy (other = not the watched processes); per process: CPUs (main = JS thread), max RSS, event-loop delay p99 of this process");
    out.push("CPU ms/img = CPU milliseconds per answered image, per process of the system under test (all threads)");
    out.push(table(["target", "step", "ok", "err", "req/s", "p50", "p95", "p99", "batch", "server ms", "CPU", "CPU ms/img", "processes"], steps.map(stepRow)));
    if (steps.some(noisy)) out.push(`NOISY: other work on the machine used more than ${NOISE_CORES} CPUs during the step; rerun when the machine is quiet (--wait-quiet=SECONDS).`);
  }
  for (const s of stages) {
    if (s.status !== "ok") out.push(`Stage ${s.stage}: ${s.reason ?? s.status}`);
    for (const n of s.notes ?? []) out.push(`  ${s.stage}: ${n}`);
  }
  const budgets = [
    ["embedded node", r.embedded?.threads],
    ["core", r.fullstack?.threads?.core],
    ["edge", r.fullstack?.threads?.edge],
  ] as const;
  for (const [who, tb] of budgets) {
    if (tb === undefined) continue;
    out.push(`Thread budget of the ${who}: ${Object.entries(tb.settings).map(([k, v]) => `${k} = ${v}`).join("; ")}`);
    out.push(`  threads seen idle (${tb.total}): ${Object.entries(tb.observed).map(([k, v]) => `${k} x${v}`).join(", ")}`);
  }
  const notes = budgets.find(([, tb]) => tb !== undefined)?.[1]?.notes ?? [];
  for (const n of notes) out.push(`  ${n}`);
  return out.join("\n");
}

/** The PASS/FAIL lines. */
export function evaluate(r: BenchResult): TargetResult[] {
  const t: TargetResult[] = [];
  const lim = isLimit(r.limit) ? r.limit.best.imagesPerSec : undefined;
  // The best step, among those other work did not disturb when there are any.
  // Distinct small-photo steps only ("c=N"): not the 12 MP or repeated-image steps.
  const peak = (s: StageRecord | undefined, target?: string) => {
    if (s?.status !== "ok") return undefined;
    const steps = s.steps.filter((x) => (target === undefined || x.target === target) && /^c=\d+$/.test(x.label));
    const clean = steps.filter((x) => !noisy(x));
    return peakOf(clean.length > 0 ? clean : steps);
  };
  const ratio = (name: string, got: StepRecord | undefined, base: number | undefined, factor: number, baseName: string, skipWhy: string) => {
    if (got === undefined || base === undefined || !(base > 0)) return t.push({ name, status: "SKIP", detail: skipWhy });
    const need = factor * base;
    t.push({
      name,
      status: got.throughput >= need ? "PASS" : "FAIL",
      detail: `${got.throughput} req/s (${got.label}) vs ${factor} x ${baseName} ${round(base)} = ${round(need)} (ratio ${round(got.throughput / base)})${noisy(got) ? ` [noisy: other work used ${got.usage.otherCores} CPUs during that step]` : ""}`,
    });
  };
  const skipWhy = (s: StageRecord | undefined, what: string) => (s === undefined ? `${what} not run` : (s.reason ?? `${what} ${s.status}`));
  ratio("full-stack distinct throughput >= 0.75 x limit", peak(r.fullstack), lim, 0.75, "limit", lim === undefined ? "limit not measured" : skipWhy(r.fullstack, "full stack"));
  ratio("embedded distinct throughput >= 0.9 x limit", peak(r.embedded), lim, 0.9, "limit", lim === undefined ? "limit not measured" : skipWhy(r.embedded, "embedded stage"));
  const noop = peak(r.cachehit, "no-op");
  ratio("cache-hit throughput >= 0.5 x no-op", peak(r.cachehit, "cache-hit"), noop?.throughput, 0.5, "no-op", skipWhy(r.cachehit, "cache-hit stage"));
  const paced = r.embedded?.steps.find((s) => s.mode === "open");
  if (paced === undefined) t.push({ name: "at 70% of peak p99 <= 3 x p50", status: "SKIP", detail: skipWhy(r.embedded, "embedded stage") });
  else {
    const { p50, p99 } = paced.latencyMs;
    const errs = Object.values(paced.errors).reduce((a, b) => a + b, 0);
    t.push({
      name: "at 70% of peak p99 <= 3 x p50",
      status: p99 <= 3 * p50 && errs === 0 ? "PASS" : "FAIL",
      detail: `embedded paced at ${paced.targetRate} req/s: p50 ${p50} ms, p99 ${p99} ms (${round(p99 / p50)} x)${errs > 0 ? `, ${errs} errors` : ""}${noisy(paced) ? ` [noisy: other work used ${paced.usage.otherCores} CPUs during that step]` : ""}`,
    });
  }
  // Issue #11: against the stack categorize replaces, and the limit, from steps of this run.
  const at = (s: StageRecord | undefined, label: string) => (s?.status === "ok" ? s.steps.find((x) => x.label === label && x.mode === "closed") : undefined);
  const vsStep = (name: string, got: StepRecord | undefined, base: StepRecord | undefined, factor: number, baseName: string, gotWhy: string, baseWhy: string) => {
    if (got === undefined) return t.push({ name, status: "SKIP", detail: gotWhy });
    if (base === undefined) return t.push({ name, status: "SKIP", detail: baseWhy });
    const extra = noisy(base) ? ` [noisy: other work used ${base.usage.otherCores} CPUs during the ${baseName} step]` : "";
    ratio(name, got, base.throughput, factor, `${baseName} (${base.label})`, "");
    const last = t[t.length - 1]!;
    t[t.length - 1] = { ...last, detail: last.detail + extra };
  };
  const c8 = "c=8";
  const stepWhy = (s: StageRecord | undefined, what: string, label: string) => (s === undefined || s.status !== "ok" ? skipWhy(s, what) : `${what} has no ${label} step (--concurrency without 8?)`);
  const emb8 = at(r.embedded, c8);
  const base8 = at(r.baseline, c8);
  vsStep("embedded distinct c=8 >= 1.2 x baseline", emb8, base8, 1.2, "baseline", stepWhy(r.embedded, "embedded stage", c8), stepWhy(r.baseline, "baseline stage", c8));
  ratio("embedded distinct c=8 >= 0.85 x limit", emb8, lim, 0.85, "limit", lim === undefined ? "limit not measured" : stepWhy(r.embedded, "embedded stage", c8));
  const emb1 = at(r.embedded, "c=1");
  const base1 = at(r.baseline, "c=1");
  {
    const name = "embedded c=1 p50 <= 0.9 x baseline p50";
    if (emb1 === undefined || base1 === undefined) t.push({ name, status: "SKIP", detail: emb1 === undefined ? stepWhy(r.embedded, "embedded stage", "c=1") : stepWhy(r.baseline, "baseline stage", "c=1") });
    else {
      const need = 0.9 * base1.latencyMs.p50;
      t.push({
        name,
        status: emb1.latencyMs.p50 <= need ? "PASS" : "FAIL",
        detail: `p50 ${emb1.latencyMs.p50} ms vs 0.9 x baseline ${base1.latencyMs.p50} ms = ${round(need)} ms (ratio ${round(emb1.latencyMs.p50 / base1.latencyMs.p50)})${noisy(emb1) || noisy(base1) ? " [noisy step]" : ""}`,
      });
    }
  }
  const l4 = "12MP c=4";
  const emb12 = at(r.embedded, l4);
  vsStep("embedded 12 MP c=4 >= 4 x baseline", emb12, at(r.baseline, l4), 4, "baseline", stepWhy(r.embedded, "embedded stage", l4), stepWhy(r.baseline, "baseline stage", l4));
  const limLarge = isLimit(r.limitLarge) ? r.limitLarge.best.imagesPerSec : undefined;
  ratio("embedded 12 MP c=4 >= 0.85 x limit on 12 MP", emb12, limLarge, 0.85, "12 MP limit", limLarge === undefined ? "limit on 12 MP not measured" : stepWhy(r.embedded, "embedded stage", l4));
  const fs8 = at(r.fullstack, c8);
  const fsTopology = r.fullstack?.config?.topology ?? "";
  const fsWhy = stepWhy(r.fullstack, "full stack", c8);
  vsStep(`full stack (${fsTopology || "1 edge + 1 core"}) c=8 >= 1.0 x baseline`, fs8, base8, 1.0, "baseline", fsWhy, stepWhy(r.baseline, "baseline stage", c8));
  vsStep(`full stack (${fsTopology || "1 edge + 1 core"}) c=8 >= 0.8 x embedded`, fs8, emb8, 0.8, "embedded", fsWhy, stepWhy(r.embedded, "embedded stage", c8));
  const rep = (s: StageRecord | undefined) => (s?.status === "ok" ? s.steps.find((x) => x.label.startsWith("50% repeat")) : undefined);
  vsStep("50 % repeated images c=8 >= 2 x baseline", rep(r.embedded), rep(r.baseline), 2, "baseline", skipWhy(r.embedded, "embedded stage"), skipWhy(r.baseline, "baseline stage"));

  const compiled = (s: StageRecord | undefined) => (s?.config?.runtime ?? "").startsWith("dist");
  const rssLine = (name: string, value: number | undefined, limitMB: number, what: string, s: StageRecord | undefined, stageName: string) => {
    if (value === undefined || !Number.isFinite(value)) t.push({ name, status: "SKIP", detail: skipWhy(s, stageName) });
    else t.push({ name, status: value <= limitMB ? "PASS" : "FAIL", detail: `${what}: ${value} MB${compiled(s) ? "" : " [not the compiled node: --runtime=tsx]"}` });
  };
  const er = r.embedded?.rss;
  rssLine("embedded idle RSS <= 300 MB", er?.idleMB, 300, "VmRSS of the embedded node, ready, before any request", r.embedded, "embedded stage");
  rssLine("embedded RSS after the run <= 400 MB", er?.afterRunMB, 400, `VmRSS a second after the last step (largest during the steps ${er?.maxMB ?? "-"} MB)`, r.embedded, "embedded stage");
  const rss = r.fullstack?.rssMaxMB;
  rssLine("edge RSS <= 150 MB", rss?.edge, 150, "largest VmRSS of any edge during the full-stack load steps", r.fullstack, "full stack");
  rssLine("core RSS <= 250 MB", rss?.core, 250, "largest VmRSS of any core during the full-stack load steps", r.fullstack, "full stack");
  return t;
}
