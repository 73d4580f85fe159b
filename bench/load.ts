import { Code, ConnectError } from "@connectrpc/connect";
import { summarize, round, type LatencySummary } from "./stats.js";

/** Sends one image; resolves on an OK answer, rejects with the RPC error. */
export type Send = (image: Buffer, index: number) => Promise<unknown>;

export interface StepResult {
  readonly mode: "closed" | "open";
  /** Closed loop: requests kept in flight. */
  readonly concurrency?: number;
  /** Open loop: requests started per second. */
  readonly targetRate?: number;
  readonly sent: number;
  readonly ok: number;
  readonly errors: Readonly<Record<string, number>>;
  /** The first message seen for each error code. */
  readonly errorSamples: Readonly<Record<string, string>>;
  readonly wallMs: number;
  /** OK answers per second of wall time. */
  readonly throughput: number;
  /** OK answers only; open loop measures from each request's scheduled start (no coordinated omission). */
  readonly latencyMs: LatencySummary;
  readonly stoppedBy: "count" | "time";
}

/** Counts an error under its gRPC code name and keeps the first message of each code. */
function recordError(err: unknown, errors: Record<string, number>, samples: Record<string, string>): void {
  const e = ConnectError.from(err);
  const name = Code[e.code] ?? String(e.code);
  errors[name] = (errors[name] ?? 0) + 1;
  samples[name] ??= e.rawMessage.slice(0, 300);
}

/**
 * Closed loop: `concurrency` workers each send the next image as soon as their
 * previous answer arrives, until `images` run out or `maxMs` has passed (no new
 * request starts after that; those in flight finish).
 */
export async function closedLoop(send: Send, images: readonly Buffer[], options: { concurrency: number; maxMs: number }): Promise<StepResult> {
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  const errorSamples: Record<string, string> = {};
  let next = 0;
  let stoppedBy: "count" | "time" = "count";
  const started = performance.now();
  const deadline = started + options.maxMs;
  const worker = async () => {
    for (;;) {
      if (next >= images.length) return;
      if (performance.now() >= deadline) {
        stoppedBy = "time";
        return;
      }
      const i = next++;
      const t0 = performance.now();
      try {
        await send(images[i]!, i);
        latencies.push(performance.now() - t0);
      } catch (err) {
        recordError(err, errors, errorSamples);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, worker));
  const wallMs = performance.now() - started;
  return {
    mode: "closed",
    concurrency: options.concurrency,
    sent: next,
    ok: latencies.length,
    errors,
    errorSamples,
    wallMs: round(wallMs),
    throughput: round((latencies.length * 1000) / wallMs),
    latencyMs: summarize(latencies),
    stoppedBy,
  };
}

/**
 * Open loop: request i starts at t0 + i / rate whatever the answers do, until
 * `images` run out or `maxMs` has passed. Latency counts from the scheduled
 * start, so a stall shows up in the percentiles instead of slowing the sender.
 * More than `maxOutstanding` unanswered requests count as "CLIENT_BACKLOG" errors.
 */
export async function openLoop(send: Send, images: readonly Buffer[], options: { rate: number; maxMs: number; maxOutstanding?: number }): Promise<StepResult> {
  const maxOutstanding = options.maxOutstanding ?? 512;
  const latencies: number[] = [];
  const errors: Record<string, number> = {};
  const errorSamples: Record<string, string> = {};
  const inFlight = new Set<Promise<void>>();
  const interval = 1000 / options.rate;
  let stoppedBy: "count" | "time" = "count";
  const started = performance.now();
  let i = 0;
  for (; i < images.length; i++) {
    const due = started + i * interval;
    if (due - started >= options.maxMs) {
      stoppedBy = "time";
      break;
    }
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    if (inFlight.size >= maxOutstanding) {
      errors.CLIENT_BACKLOG = (errors.CLIENT_BACKLOG ?? 0) + 1;
      continue;
    }
    const p: Promise<void> = send(images[i]!, i).then(
      () => {
        latencies.push(performance.now() - due);
      },
      (err: unknown) => recordError(err, errors, errorSamples),
    );
    const tracked = p.finally(() => inFlight.delete(tracked));
    inFlight.add(tracked);
  }
  await Promise.all([...inFlight]);
  const wallMs = performance.now() - started;
  return {
    mode: "open",
    targetRate: round(options.rate),
    sent: i,
    ok: latencies.length,
    errors,
    errorSamples,
    wallMs: round(wallMs),
    throughput: round((latencies.length * 1000) / wallMs),
    latencyMs: summarize(latencies),
    stoppedBy,
  };
}
