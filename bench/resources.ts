import { readFileSync } from "node:fs";
import { round } from "./stats.js";

/** USER_HZ: the unit of /proc/PID/stat times; 100 on every Linux the project targets. */
const CLOCK_TICKS = 100;
const MiB = 1024 * 1024;

/** A process the harness watches: this one (in-process nodes) or a child. */
export interface Watched {
  readonly name: string;
  readonly pid: number;
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
      this.cpu0.set(w.pid, cpuSecondsOf(w.pid));
      this.rssMax.set(w.pid, memoryOf(w.pid).rss);
    }
    this.timer = setInterval(() => this.sample(), this.sampleMs);
    this.timer.unref();
  }

  private sample(): void {
    for (const w of this.watched) {
      try {
        const { rss } = memoryOf(w.pid);
        if (rss > (this.rssMax.get(w.pid) ?? 0)) this.rssMax.set(w.pid, rss);
      } catch {
        // The process exited; its last sample stands.
      }
    }
  }

  stop(): UsageReport {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.sample();
    const wallMs = performance.now() - this.started;
    const m1 = machineJiffies();
    const cpus = cpuCount();
    const processes = this.watched.map((w): ProcessUsage => {
      let cpu = Number.NaN;
      let mem = { rss: Number.NaN, hwm: Number.NaN };
      try {
        cpu = cpuSecondsOf(w.pid) - (this.cpu0.get(w.pid) ?? 0);
        mem = memoryOf(w.pid);
      } catch {
        // exited
      }
      return {
        name: w.name,
        pid: w.pid,
        cpuSeconds: round(cpu, 3),
        cpuCores: round(cpu / (wallMs / 1000)),
        rssMaxMB: round((this.rssMax.get(w.pid) ?? Number.NaN) / MiB, 1),
        rssEndMB: round(mem.rss / MiB, 1),
        hwmMB: round(mem.hwm / MiB, 1),
      };
    });
    const totalJ = m1.total - this.machine0.total;
    const machineCores = totalJ > 0 ? ((m1.busy - this.machine0.busy) / totalJ) * cpus : Number.NaN;
    const watchedCores = processes.reduce((a, p) => a + (Number.isFinite(p.cpuCores) ? p.cpuCores : 0), 0);
    return { wallMs: round(wallMs), processes, machineCores: round(machineCores), cpus, otherCores: round(Math.max(0, machineCores - watchedCores)) };
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
