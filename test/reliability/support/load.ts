import { Code, ConnectError } from "@connectrpc/connect";
import { categorizeClient } from "../../support/clients.js";
import { percentile } from "../../../bench/stats.js";
import { sha256Hex } from "./images.js";

/** What happened to one request. `outcome` is "OK", a gRPC code name, or "LOST" (no answer long after its deadline). */
export interface RequestRecord {
  readonly index: number;
  readonly sha256: string;
  /** Epoch ms when it was sent and when it settled (to line up with fault times). */
  readonly sentAt: number;
  readonly endedAt: number;
  readonly latencyMs: number;
  readonly outcome: string;
  readonly message?: string;
  readonly cached?: boolean;
}

export interface LatencyStats {
  readonly n: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
}

export interface LoadSummary {
  readonly sent: number;
  readonly ok: number;
  /** Failed requests by gRPC code name ("LOST" = never settled). */
  readonly failed: Readonly<Record<string, number>>;
  readonly okLatencyMs: LatencyStats;
  readonly failedLatencyMs: LatencyStats;
  readonly wallMs: number;
  readonly stoppedBy: "count" | "time" | "stop";
}

export interface LoadOptions {
  /** Edge URL (gRPC, h2c). */
  readonly url: string;
  readonly concurrency: number;
  /** Upper bounds: no request starts after either is reached. */
  readonly maxRequests: number;
  readonly maxMs: number;
  /** The deadline each request carries (grpc-timeout). */
  readonly deadlineMs: number;
  /** Image number i; must differ per i when distinct images are wanted. */
  readonly image: (i: number) => Buffer;
  /** A worker waits this long after a failed request (a client backing off), so outages do not spin. Default 50. */
  readonly failureBackoffMs?: number;
  /** Requests started per second over all workers (steady traffic); unset = closed loop as fast as answers come. */
  readonly ratePerSecond?: number;
  /** A request not settled this long after its deadline is recorded as LOST and abandoned. Default 5000. */
  readonly lostAfterMs?: number;
  readonly topK?: number;
}

export interface LoadRun {
  /** Every settled request so far (in completion order). */
  readonly records: readonly RequestRecord[];
  /** Requests sent and not yet settled. */
  inFlight(): number;
  /** No new request starts; those in flight finish. */
  stop(): void;
  /** Resolves when every worker has finished. */
  readonly done: Promise<LoadSummary>;
  /** Polls until the predicate holds over the records; rejects after timeoutMs or when the run ends first. */
  waitFor(what: string, predicate: (records: readonly RequestRecord[]) => boolean, timeoutMs: number): Promise<number>;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export function latencyStats(values: readonly number[]): LatencyStats {
  const sorted = [...values].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x);
  return { n: sorted.length, p50: r(percentile(sorted, 50)), p99: r(percentile(sorted, 99)), max: r(sorted[sorted.length - 1] ?? Number.NaN) };
}

export function summarize(records: readonly RequestRecord[], wallMs: number, stoppedBy: LoadSummary["stoppedBy"]): LoadSummary {
  const failed: Record<string, number> = {};
  for (const r of records) if (r.outcome !== "OK") failed[r.outcome] = (failed[r.outcome] ?? 0) + 1;
  return {
    sent: records.length,
    ok: records.filter((r) => r.outcome === "OK").length,
    failed,
    okLatencyMs: latencyStats(records.filter((r) => r.outcome === "OK").map((r) => r.latencyMs)),
    failedLatencyMs: latencyStats(records.filter((r) => r.outcome !== "OK" && r.outcome !== "LOST").map((r) => r.latencyMs)),
    wallMs: Math.round(wallMs),
    stoppedBy,
  };
}

/**
 * The load generator of the reliability tests: `concurrency` workers, each
 * with its own connection, send Classify of distinct images with a deadline
 * and record, per request, when it was sent, whether it was answered or with
 * which code it failed, and its latency. Bounded by count and by time.
 */
export function startLoad(options: LoadOptions): LoadRun {
  const records: RequestRecord[] = [];
  const backoff = options.failureBackoffMs ?? 50;
  const lostAfter = options.lostAfterMs ?? 5_000;
  let next = 0;
  let inFlight = 0;
  let stopped = false;
  let stoppedBy: LoadSummary["stoppedBy"] = "count";
  let finished = false;
  const started = performance.now();
  const startedEpoch = Date.now();

  const slot = (i: number) => (options.ratePerSecond === undefined ? 0 : startedEpoch + (i * 1000) / options.ratePerSecond);

  const one = async (client: ReturnType<typeof categorizeClient>, i: number): Promise<RequestRecord> => {
    const image = options.image(i);
    const sha256 = sha256Hex(image);
    const abort = new AbortController();
    const sentAt = Date.now();
    const t0 = performance.now();
    let guard: NodeJS.Timeout | undefined;
    const lost = new Promise<{ outcome: string; message: string }>((resolve) => {
      guard = setTimeout(() => {
        abort.abort();
        resolve({ outcome: "LOST", message: `no answer ${options.deadlineMs + lostAfter} ms after sending` });
      }, options.deadlineMs + lostAfter);
    });
    const call = client.classify({ image, requestId: `load-${i}`, topK: options.topK ?? 3 }, { timeoutMs: options.deadlineMs, signal: abort.signal }).then(
      (res) => ({ outcome: "OK", message: "", cached: res.cached, sha: res.sha256 }),
      (err: unknown) => {
        const e = ConnectError.from(err);
        return { outcome: Code[e.code] ?? String(e.code), message: e.rawMessage };
      },
    );
    const result = await Promise.race([call, lost]);
    clearTimeout(guard);
    const latencyMs = performance.now() - t0;
    const rec: RequestRecord = {
      index: i,
      sha256,
      sentAt,
      endedAt: Date.now(),
      latencyMs,
      outcome: result.outcome,
      ...(result.message === "" ? {} : { message: result.message }),
      ...("cached" in result ? { cached: result.cached } : {}),
    };
    if ("sha" in result && result.sha !== sha256) return { ...rec, outcome: "WRONG_ANSWER", message: `answered for ${result.sha}` };
    return rec;
  };

  const worker = async () => {
    const client = categorizeClient(options.url);
    for (;;) {
      if (stopped) {
        stoppedBy = "stop";
        return;
      }
      if (next >= options.maxRequests) return;
      if (performance.now() - started >= options.maxMs) {
        stoppedBy = "time";
        return;
      }
      const i = next++;
      const wait = slot(i) - Date.now();
      if (wait > 0) await sleep(wait);
      if (stopped) {
        stoppedBy = "stop";
        return;
      }
      inFlight++;
      const rec = await one(client, i);
      inFlight--;
      records.push(rec);
      if (rec.outcome !== "OK" && backoff > 0) await sleep(backoff);
    }
  };

  const done = Promise.all(Array.from({ length: options.concurrency }, worker)).then(() => {
    finished = true;
    return summarize(records, performance.now() - started, stoppedBy);
  });

  return {
    records,
    inFlight: () => inFlight,
    stop: () => {
      stopped = true;
    },
    done,
    async waitFor(what, predicate, timeoutMs) {
      const t = Date.now();
      while (!predicate(records)) {
        if (finished) throw new Error(`load ended before ${what}`);
        if (Date.now() - t > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
        await sleep(50);
      }
      return Date.now() - t;
    },
  };
}

/** OK answers to requests sent at or after the given epoch ms. */
export const okSentAfter = (records: readonly RequestRecord[], t: number): RequestRecord[] => records.filter((r) => r.outcome === "OK" && r.sentAt >= t);

/** The first OK answer to a request sent at or after t (epoch ms), by completion time. */
export function firstOkAfter(records: readonly RequestRecord[], t: number): RequestRecord | undefined {
  let best: RequestRecord | undefined;
  for (const r of okSentAfter(records, t)) if (best === undefined || r.endedAt < best.endedAt) best = r;
  return best;
}

/** Human-readable one-liner of a summary, for the test output. */
export function describeSummary(s: LoadSummary): string {
  const failed = Object.entries(s.failed).map(([k, v]) => `${k}=${v}`).join(" ") || "none";
  return `sent ${s.sent}, answered OK ${s.ok}, failed ${s.sent - s.ok} (${failed}); OK latency p50 ${s.okLatencyMs.p50} ms p99 ${s.okLatencyMs.p99} ms max ${s.okLatencyMs.max} ms; failed latency p50 ${s.failedLatencyMs.p50} ms p99 ${s.failedLatencyMs.p99} ms max ${s.failedLatencyMs.max} ms; ${s.wallMs} ms, stopped by ${s.stoppedBy}`;
}
