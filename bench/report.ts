import type { LimitResult } from "./limit.js";
import { NOISE_CORES } from "./resources.js";
import { peakOf, type FullStackResult, type StageRecord, type StepRecord } from "./stages.js";
import { round } from "./stats.js";

export interface BenchResult {
  readonly meta: Readonly<Record<string, unknown>>;
  limit?: LimitResult | { readonly status: "skipped" | "failed"; readonly reason: string };
  embedded?: StageRecord;
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
  const stages = [r.embedded, r.fullstack, r.cachehit].filter((s): s is StageRecord => s !== undefined);
  const steps = stages.flatMap((s) => s.steps);
  if (steps.length > 0) {
    out.push("");
    out.push("Load steps: closed loop at concurrency c, or paced open loop; latency in ms at the client; batch = mean items per model run (runs per size);");
    out.push("server ms = means from the answers' timings: preprocess/queue/inference/edge total; CPU = machine CPUs busy (other = not the watched processes); per process: CPUs (main = JS thread), max RSS, event-loop delay p99 of this process");
    out.push(table(["target", "step", "ok", "err", "req/s", "p50", "p95", "p99", "batch", "server ms", "CPU", "processes"], steps.map(stepRow)));
    if (steps.some(noisy)) out.push(`NOISY: other work on the machine used more than ${NOISE_CORES} CPUs during the step; rerun when the machine is quiet (--wait-quiet=SECONDS).`);
  }
  for (const s of stages) {
    if (s.status !== "ok") out.push(`Stage ${s.stage}: ${s.reason ?? s.status}`);
    for (const n of s.notes ?? []) out.push(`  ${s.stage}: ${n}`);
  }
  return out.join("\n");
}

/** The PASS/FAIL lines. */
export function evaluate(r: BenchResult): TargetResult[] {
  const t: TargetResult[] = [];
  const lim = isLimit(r.limit) ? r.limit.best.imagesPerSec : undefined;
  // The best step, among those other work did not disturb when there are any.
  const peak = (s: StageRecord | undefined, target?: string) => {
    if (s?.status !== "ok") return undefined;
    const steps = s.steps.filter((x) => target === undefined || x.target === target);
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
  const rss = r.fullstack?.rssMaxMB;
  for (const [role, limitMB] of [["core", 300], ["edge", 200]] as const) {
    const name = `${role} steady-state RSS <= ${limitMB} MB`;
    if (rss === undefined) t.push({ name, status: "SKIP", detail: skipWhy(r.fullstack, "full stack") });
    else t.push({ name, status: rss[role] <= limitMB ? "PASS" : "FAIL", detail: `largest VmRSS of any ${role} during the full-stack load steps: ${rss[role]} MB` });
  }
  return t;
}
