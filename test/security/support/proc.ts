import { readFileSync, writeFileSync } from "node:fs";
import type { NodeProcess } from "../../support/nodes.js";

/** Resident set size now and its peak (VmHWM), in MiB, from /proc/PID/status; undefined once the process is gone. */
export function memoryOf(pid: number): { rssMb: number; peakMb: number } | undefined {
  let status: string;
  try {
    status = readFileSync(`/proc/${pid}/status`, "utf8");
  } catch {
    return undefined;
  }
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? "0");
  return { rssMb: kb("VmRSS") / 1024, peakMb: kb("VmHWM") / 1024 };
}

/** Resets the kernel's peak-RSS mark (VmHWM) of a process we own, so a later peak belongs to what ran since. */
export function resetPeak(pid: number): void {
  try {
    // "5" resets the peak resident set size (Linux >= 4.0).
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
  } catch {
    // Not permitted or not Linux: the sampler's own maximum still counts.
  }
}

/**
 * Samples a process's RSS every `intervalMs` and keeps the highest value,
 * also reading the kernel's peak mark so a spike between samples is not missed.
 */
export class RssSampler {
  #timer: NodeJS.Timeout | undefined;
  #maxMb = 0;
  #samples = 0;

  constructor(
    private readonly pid: number,
    private readonly intervalMs = 100,
  ) {}

  start(): this {
    resetPeak(this.pid);
    this.#maxMb = 0;
    this.sample();
    this.#timer = setInterval(() => this.sample(), this.intervalMs);
    this.#timer.unref();
    return this;
  }

  sample(): number {
    const m = memoryOf(this.pid);
    if (m !== undefined) {
      this.#samples++;
      this.#maxMb = Math.max(this.#maxMb, m.rssMb, m.peakMb);
    }
    return this.#maxMb;
  }

  /** Stops sampling; returns the highest RSS seen, in MiB. */
  stop(): number {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    this.#timer = undefined;
    return this.sample();
  }

  get maxMb(): number {
    return this.#maxMb;
  }

  get samples(): number {
    return this.#samples;
  }
}

/** True while the child has not exited. */
export function alive(node: NodeProcess): boolean {
  return node.child.exitCode === null && node.child.signalCode === null;
}

/** GET /healthz with a time limit; the HTTP status, or 0 when there was no answer. */
export async function healthz(url: string, timeoutMs = 5_000): Promise<number> {
  try {
    const res = await fetch(`${url}/healthz`, { signal: AbortSignal.timeout(timeoutMs) });
    await res.arrayBuffer();
    return res.status;
  } catch {
    return 0;
  }
}

/** Environment for a child node under attack: embedded store, no external services, whatever the test run exported. */
export function isolatedEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    DATABASE_URL: undefined,
    KAFKA_BROKERS: undefined,
    S3_ENDPOINT: undefined,
    OTEL_TRACES_EXPORTER: undefined,
    OTEL_EXPORTER_OTLP_ENDPOINT: undefined,
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: undefined,
    ...extra,
  };
}
