import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, constants, readFileSync, readdirSync } from "node:fs";
import { delimiter, join } from "node:path";
import { repoRoot } from "../../support/nodes.js";

/** True on CI (CI=true, or any non-empty value other than false/0): a missing tool is then a failure. */
export function isCI(): boolean {
  const v = (process.env.CI ?? "").trim().toLowerCase();
  return v !== "" && v !== "false" && v !== "0";
}

function executable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * Finds a command-line tool: the repo's gitignored .local/bin first (where
 * infra/local/tools.sh installs), then node_modules/.bin, then PATH.
 */
export function findTool(name: string): string | undefined {
  const dirs = [join(repoRoot, ".local", "bin"), join(repoRoot, "node_modules", ".bin"), ...(process.env.PATH ?? "").split(delimiter).filter((d) => d !== "")];
  for (const dir of dirs) {
    const candidate = join(dir, name);
    if (executable(candidate)) return candidate;
  }
  return undefined;
}

/** A tool the tests of a file need: where it is, or why the tests skip (never on CI). */
export interface RequiredTool {
  readonly name: string;
  readonly path: string | undefined;
  /** For describe(..., { skip }): a reason locally when the tool is missing, false otherwise. */
  readonly skip: string | false;
  /** The tool's path; throws (a test failure) when it is missing, which on CI is the outcome. */
  require(): string;
}

export function requiredTool(name: string, path: string | undefined, installHint: string): RequiredTool {
  const missing = `${name} is not installed (${installHint})`;
  return {
    name,
    path,
    skip: path === undefined && !isCI() ? `${missing}; skipped locally, a failure on CI` : false,
    require() {
      if (path === undefined) throw new Error(`${missing}; it is required on CI`);
      return path;
    },
  };
}

/** The outcome of one bounded child process. */
export interface RunResult {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
  readonly ms: number;
}

const live = new Set<ChildProcess>();

function killByPid(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, signal);
  } catch {
    // Already gone.
  }
}

/**
 * Runs a command with a hard time limit (SIGKILL by pid when it is over),
 * optional stdin, and collects its output. Never rejects for a non-zero
 * exit: callers assert on the result.
 */
export function run(command: string, args: readonly string[], options: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv; cwd?: string } = {}): Promise<RunResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const started = performance.now();
  return new Promise<RunResult>((resolve, reject) => {
    const child = spawn(command, args, { cwd: options.cwd ?? repoRoot, env: options.env ?? process.env, stdio: ["pipe", "pipe", "pipe"] });
    live.add(child);
    let stdout = "";
    let stderr = "";
    let timedOut = false;
    child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
    child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
    const timer = setTimeout(() => {
      timedOut = true;
      killByPid(child, "SIGKILL");
    }, timeoutMs);
    child.once("error", (err) => {
      clearTimeout(timer);
      live.delete(child);
      reject(err);
    });
    child.once("close", (code, signal) => {
      clearTimeout(timer);
      live.delete(child);
      resolve({ code, signal, stdout, stderr, timedOut, ms: Math.round(performance.now() - started) });
    });
    // A child that exits before reading all of stdin must not crash the test with EPIPE.
    child.stdin.on("error", () => undefined);
    child.stdin.end(options.input ?? "");
  });
}

/** Kills (SIGKILL, by pid) every child started with run() that is still running. */
export function killChildren(): void {
  for (const child of live) killByPid(child, "SIGKILL");
}

/** A readable description of a run for assertion messages. */
export function describeRun(what: string, r: RunResult): string {
  return `${what}: exit ${r.code ?? r.signal}${r.timedOut ? " (timed out)" : ""} after ${r.ms} ms\nstdout: ${r.stdout.slice(0, 2000)}\nstderr: ${r.stderr.slice(0, 2000)}`;
}

/** Stops a node started with spawnNode: SIGTERM, then SIGKILL by pid when it has not exited within graceMs. */
export async function stopSpawned(node: { readonly child: ChildProcess; kill(signal?: NodeJS.Signals): Promise<void> } | undefined, graceMs = 10_000): Promise<void> {
  if (node === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  const overdue = new Promise<"overdue">((resolve) => (timer = setTimeout(() => resolve("overdue"), graceMs)));
  try {
    if ((await Promise.race([node.kill("SIGTERM"), overdue])) === "overdue") {
      killByPid(node.child, "SIGKILL");
      await node.kill("SIGKILL");
    }
  } finally {
    clearTimeout(timer);
  }
}

/** host:port of a node URL, as grpcurl wants it. */
export function authority(url: string): string {
  return new URL(url).host;
}

/**
 * Safety net for nodes whose start failed half way (spawnNode rejects without
 * handing back its child): SIGKILLs, by pid, every direct child process of
 * this test process running `categorize serve`. Linux /proc only; elsewhere a no-op.
 */
export function killStrayNodes(): number[] {
  const killed: number[] = [];
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((d) => /^\d+$/.test(d));
  } catch {
    return killed;
  }
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== process.pid) continue;
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      if (!cmdline.some((a) => a.endsWith(join("cli", "main.ts"))) || !cmdline.includes("serve")) continue;
      process.kill(Number(pid), "SIGKILL");
      killed.push(Number(pid));
    } catch {
      // Gone meanwhile, or not readable.
    }
  }
  return killed;
}
