import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { dirname, join } from "node:path";
import { Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { loadConfig, type NodeRole } from "../../common/config.js";
import { startNode, type RunningNode } from "../../cli/start-node.js";
import { modelPath } from "./fixtures.js";

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Environment of a test node: port 0, the shared model, quiet logs, short drains. */
export function testEnv(extra: Record<string, string | undefined> = {}): Record<string, string | undefined> {
  return {
    HOST: "127.0.0.1",
    PORT: "0",
    CATEGORIZE_MODEL: modelPath,
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? "silent",
    SHUTDOWN_GRACE_MS: "3000",
    READINESS_INTERVAL_MS: "200",
    // Load tests share one anonymous caller; limits get their own tests.
    RATE_LIMIT_CONCURRENCY: "10000",
    RATE_LIMIT_RPS: "100000",
    RATE_LIMIT_BURST: "100000",
    ...extra,
  };
}

/** Log lines a node wrote, kept in memory for assertions. */
export function captureLogs(): { stream: Writable; lines: () => Record<string, unknown>[] } {
  const lines: Record<string, unknown>[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString("utf8").split("\n")) if (l.trim() !== "") lines.push(JSON.parse(l) as Record<string, unknown>);
      cb();
    },
  });
  return { stream, lines: () => lines };
}

/** Starts a node in this process on port 0. */
export async function startTestNode(role: NodeRole, extra: Record<string, string | undefined> = {}, logs?: Writable): Promise<RunningNode> {
  const config = loadConfig(role, testEnv(extra));
  return startNode(config, logs === undefined ? {} : { logDestination: logs });
}

/** A node in a child process (for kill -9 and restart tests). */
export interface NodeProcess {
  readonly url: string;
  /** The operations listener, when the node was given ADMIN_PORT. */
  readonly adminUrl: string | undefined;
  readonly child: ChildProcess;
  readonly output: () => string;
  kill(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `categorize serve ROLE` in a child process and waits until it listens. */
export function spawnNode(role: NodeRole, extra: Record<string, string | undefined> = {}): Promise<NodeProcess> {
  return spawnNodeWith(["--import", "tsx", join(repoRoot, "cli", "main.ts")], role, extra);
}

/** Starts `<node args> serve ROLE` (the sources through tsx, or a compiled tree) and waits until it listens. */
export async function spawnNodeWith(entry: readonly string[], role: NodeRole, extra: Record<string, string | undefined> = {}): Promise<NodeProcess> {
  const env = { ...process.env, ...testEnv({ LOG_LEVEL: "info", ...extra }) };
  const child = spawn(process.execPath, [...entry, "serve", role], { env, stdio: ["ignore", "pipe", "pipe"], cwd: repoRoot });
  const { output, value: url } = await waitForOutput(child, "node", (out) => /"url":"(http[^"]+)".*"msg":"node listening"/.exec(out)?.[1]);
  const out = output();
  return {
    url,
    adminUrl: /"adminUrl":"(http[^"]+)".*"msg":"node listening"/.exec(out)?.[1],
    child,
    output,
    async kill(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill(signal);
      await exited;
    },
  };
}

/**
 * Collects a child's stdout and stderr and waits until `ready` finds what it
 * looks for in them; a child that exits first or takes longer than
 * `timeoutMs` is killed and the wait fails with its output.
 */
export async function waitForOutput<T>(child: ChildProcess, what: string, ready: (out: string) => T | undefined, timeoutMs = 60_000): Promise<{ value: T; output: () => string }> {
  let out = "";
  child.stdout?.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr?.on("data", (d: Buffer) => (out += d.toString()));
  const value = await new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what} did not start in time:\n${out}`)), timeoutMs);
    const onData = () => {
      const found = ready(out);
      if (found === undefined) return;
      clearTimeout(timer);
      child.stdout?.off("data", onData);
      child.stderr?.off("data", onData);
      child.off("exit", onExit);
      resolve(found);
    };
    const onExit = (code: number | null) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited with ${code}:\n${out}`));
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("exit", onExit);
  }).catch((err: unknown) => {
    // A process that never came up must not outlive the caller.
    child.kill("SIGKILL");
    throw err;
  });
  return { value, output: () => out };
}

/** Handles that outlive a test show up here (sockets, servers, timers). */
export function activeResources(): Map<string, number> {
  const counts = new Map<string, number>();
  for (const r of process.getActiveResourcesInfo()) counts.set(r, (counts.get(r) ?? 0) + 1);
  return counts;
}

/** Waits until no TCP handle is left beyond the baseline; returns what is left. */
export async function leakedHandles(baseline: Map<string, number>, waitMs = 3000): Promise<string[]> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    const now = activeResources();
    const leaked = [...now].filter(([k, n]) => /TCP|Pipe|Http2/.test(k) && n > (baseline.get(k) ?? 0)).map(([k, n]) => `${k} x${n - (baseline.get(k) ?? 0)}`);
    if (leaked.length === 0 || Date.now() > deadline) return leaked;
    await new Promise((r) => setTimeout(r, 50));
  }
}
