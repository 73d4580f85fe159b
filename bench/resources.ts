import { readFileSync, readdirSync } from "node:fs";
import { monitorEventLoopDelay, type IntervalHistogram } from "node:perf_hooks";
import { round } from "./stats.js";

/** USER_HZ: the unit of /proc/PID/stat times; 100 on every Linux the project targets. */
const CLOCK_TICKS = 100;
const MiB = 1024 * 1024;
const LOOP_RESOLUTION_MS = 10;
const delayMs = (ns: number) => round(Math.max(0, ns / 1e6 - LOOP_RESOLUTION_MS));

/** A process the harness watches: this one (in-process nodes) or a child. */
export interface Watched {
  readonly name: string;
  readonly pid: number;
  /** Count the process and all its descendants (e.g. postgres and its backends); RSS is then their sum. */
  readonly tree?: boolean;
  /** Names for some thread ids in the per-thread CPU (e.g. the load client's worker). */
  readonly threadNames?: Readonly<Record<number, string>>;
}

export interface ProcessUsage {
  readonly name: string;
  readonly pid: number;
  /** CPU seconds (user + system, all threads) spent during the step. */
  readonly cpuSeconds: number;
  /** Average CPUs busy during the step (1.0 = one core fully used). */
  readonly cpuCores: number;
  /** Largest VmRSS sampled during the step. */
  readonly rssMaxMB: number;
  /** VmRSS at the end of the step. */
  readonly rssEndMB: number;
  /** VmHWM: the peak RSS since the process started (includes start-up). */
  readonly hwmMB: number;
  /** CPUs used by the JavaScript (main) thread: near 1.0 means the event loop is the bottleneck. */
  readonly mainThreadCores: number;
  /** CPUs used by the other threads, by thread name ("node": onnxruntime and libuv pool threads, which Node does not name). */
  readonly threadCores: Readonly<Record<string, number>>;
  /** This process only: event-loop delay during the step (ms), e.g. from synchronous work such as inference on the main thread. */
  readonly eventLoopDelayMs?: { readonly p50: number; readonly p99: number; readonly max: number };
}

export interface UsageReport {
  readonly wallMs: number;
  readonly processes: readonly ProcessUsage[];
  /** Whole machine, from /proc/stat: CPUs busy on average, of `cpus`. */
  readonly machineCores: number;
  readonly cpus: number;
  /** machineCores minus the watched processes: data services, the OS, anything else. */
  readonly otherCores: number;
}

/** The pid and every descendant, from the ppid field of each /proc/PID/stat. */
function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(entry));
      children.set(ppid, list);
    } catch {
      // exited meanwhile
    }
  }
  const out: number[] = [];
  const todo = [root];
  while (todo.length > 0) {
    const pid = todo.pop()!;
    out.push(pid);
    todo.push(...(children.get(pid) ?? []));
  }
  return out;
}

function cpuSecondsOf(pid: number): number {
  if (pid === process.pid) {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  }
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Fields after the parenthesised command name (which may contain spaces).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // utime and stime are fields 14 and 15 of the full line: 12 and 13 after "pid (comm)".
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** VmRSS and VmHWM of a process in bytes. */
export function memoryOf(pid: number): { rss: number; hwm: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN) * 1024;
  return { rss: kb("VmRSS"), hwm: kb("VmHWM") };
}

/** CPU seconds per thread group of a process: "main" (tid = pid) and the other threads by name. */
function threadSeconds(pid: number, names: Readonly<Record<number, string>> = {}): Map<string, number> {
  const out = new Map<string, number>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
      const comm = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const key = tid === String(pid) ? "main" : (names[Number(tid)] ?? comm);
      out.set(key, (out.get(key) ?? 0) + (Number(f[11]) + Number(f[12])) / CLOCK_TICKS);
    } catch {
      // thread exited
    }
  }
  return out;
}

function machineJiffies(): { busy: number; total: number } {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0] ?? "";
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

function cpuCount(): number {
  return readFileSync("/proc/stat", "utf8").split("\n").filter((l) => /^cpu\d+ /.test(l)).length;
}

/**
 * Watches processes over one step: CPU time (process.cpuUsage for this
 * process, /proc/PID/stat for children, all threads), VmRSS sampled every
 * `sampleMs`, VmHWM at the end, and the whole machine's CPU from /proc/stat.
 */
export class ResourceMonitor {
  private readonly cpu0 = new Map<number, number>();
  private readonly threads0 = new Map<number, Map<string, number>>();
  /** Tree members' CPU seconds at start, by member pid. */
  private readonly tree0 = new Map<number, Map<number, number>>();
  private loopDelay: IntervalHistogram | undefined;
  private readonly rssMax = new Map<number, number>();
  private timer: NodeJS.Timeout | undefined;
  private started = 0;
  private machine0 = { busy: 0, total: 0 };

  constructor(
    private readonly watched: readonly Watched[],
    private readonly sampleMs = 200,
  ) {}

  start(): void {
    this.started = performance.now();
    this.machine0 = machineJiffies();
    for (const w of this.watched) {
      if (w.tree === true) {
        const base = new Map<number, number>();
        for (const pid of processTree(w.pid)) base.set(pid, safe(() => cpuSecondsOf(pid), 0));
        this.tree0.set(w.pid, base);
      } else {
        this.cpu0.set(w.pid, cpuSecondsOf(w.pid));
        this.threads0.set(w.pid, threadSeconds(w.pid, w.threadNames));
      }
      this.rssMax.set(w.pid, this.rssOf(w));
    }
    if (this.watched.some((w) => w.pid === process.pid)) {
      this.loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
      this.loopDelay.enable();
    }
    this.timer = setInterval(() => this.sample(), this.sampleMs);
    this.timer.unref();
  }

  private rssOf(w: Watched): number {
    if (w.tree !== true) return memoryOf(w.pid).rss;
    return processTree(w.pid).reduce((sum, pid) => sum + safe(() => memoryOf(pid).rss, 0), 0);
  }

  private sample(): void {
    for (const w of this.watched) {
      try {
        const rss = this.rssOf(w);
        if (rss > (this.rssMax.get(w.pid) ?? 0)) this.rssMax.set(w.pid, rss);
      } catch {
        // The process exited; its last sample stands.
      }
    }
  }

  stop(): UsageReport {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.loopDelay?.disable();
    this.sample();
    const wallMs = performance.now() - this.started;
    const seconds = wallMs / 1000;
    const m1 = machineJiffies();
    const cpus = cpuCount();
    const processes = this.watched.map((w): ProcessUsage => {
      if (w.tree === true) {
        const base = this.tree0.get(w.pid) ?? new Map<number, number>();
        const members = processTree(w.pid);
        const cpu = members.reduce((sum, pid) => sum + safe(() => cpuSecondsOf(pid), 0) - (base.get(pid) ?? 0), 0);
        const rss = members.reduce((sum, pid) => sum + safe(() => memoryOf(pid).rss, 0), 0);
        return {
          name: w.name,
          pid: w.pid,
          cpuSeconds: round(cpu, 3),
          cpuCores: round(cpu / seconds),
          rssMaxMB: round((this.rssMax.get(w.pid) ?? Number.NaN) / MiB, 1),
          rssEndMB: round(rss / MiB, 1),
          hwmMB: Number.NaN,
          mainThreadCores: Number.NaN,
          threadCores: {},
        };
      }
      let cpu = Number.NaN;
      let mem = { rss: Number.NaN, hwm: Number.NaN };
      try {
        cpu = cpuSecondsOf(w.pid) - (this.cpu0.get(w.pid) ?? 0);
        mem = memoryOf(w.pid);
      } catch {
        // exited
      }
      const t0 = this.threads0.get(w.pid) ?? new Map<string, number>();
      const threadCores: Record<string, number> = {};
      let main = Number.NaN;
      for (const [k, v] of threadSeconds(w.pid, w.threadNames)) {
        const cores = round((v - (t0.get(k) ?? 0)) / seconds);
        if (k === "main") main = cores;
        else if (cores >= 0.01) threadCores[k] = cores;
      }
      const h = w.pid === process.pid ? this.loopDelay : undefined;
      return {
        name: w.name,
        pid: w.pid,
        cpuSeconds: round(cpu, 3),
        cpuCores: round(cpu / seconds),
        rssMaxMB: round((this.rssMax.get(w.pid) ?? Number.NaN) / MiB, 1),
        rssEndMB: round(mem.rss / MiB, 1),
        hwmMB: round(mem.hwm / MiB, 1),
        mainThreadCores: main,
        threadCores,
        // The histogram holds whole timer periods: subtract the sampling resolution to get the delay.
        ...(h === undefined ? {} : { eventLoopDelayMs: { p50: delayMs(h.percentile(50)), p99: delayMs(h.percentile(99)), max: delayMs(h.max) } }),
      };
    });
    const totalJ = m1.total - this.machine0.total;
    const machineCores = totalJ > 0 ? ((m1.busy - this.machine0.busy) / totalJ) * cpus : Number.NaN;
    const watchedCores = processes.reduce((a, p) => a + (Number.isFinite(p.cpuCores) ? p.cpuCores : 0), 0);
    return { wallMs: round(wallMs), processes, machineCores: round(machineCores), cpus, otherCores: round(Math.max(0, machineCores - watchedCores)) };
  }
}

function safe<T>(fn: () => T, fallback: T): T {
  try {
    return fn();
  } catch {
    return fallback;
  }
}

/** CPUs busy on the whole machine over `ms` while the harness itself idles: noise from other work. */
export async function backgroundCores(ms = 1_000): Promise<number> {
  const a = machineJiffies();
  const self0 = cpuSecondsOf(process.pid);
  await new Promise((r) => setTimeout(r, ms));
  const b = machineJiffies();
  const self = cpuSecondsOf(process.pid) - self0;
  const total = b.total - a.total;
  if (total <= 0) return Number.NaN;
  const busy = ((b.busy - a.busy) / total) * cpuCount();
  return round(Math.max(0, busy - self / (ms / 1000)));
}

/** Other work on the machine took more than this many CPUs during a step: its numbers are not clean. */
export const NOISE_CORES = 0.3;

/** Waits up to `maxMs` until other work on the machine uses less than NOISE_CORES CPUs; returns the last reading. */
export async function waitQuiet(maxMs: number): Promise<number> {
  const until = Date.now() + maxMs;
  let busy = await backgroundCores(2_000);
  while (busy > NOISE_CORES && Date.now() < until) busy = await backgroundCores(2_000);
  return busy;
}
