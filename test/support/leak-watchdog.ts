/**
 * The leak watchdog, loaded into every test file's process by test/run.sh
 * (`--import ./test/support/leak-watchdog.ts`). A forgotten socket, timer,
 * server or child process keeps a test file's process alive after its last
 * test, and the runner then waits, silently, until something inside gives up.
 * Here, once the file's last test and hooks are done, whatever still holds the
 * event loop after LEAK_GRACE_MS (default 5000) is reported on stderr by what
 * it is (a socket's addresses, a server's port, a child's pid, a timer's
 * delay and callback), by the test that was running when it was created and by
 * the stack that created it, and the file fails (exit code 1). A file that
 * closes everything exits as before: the watchdog's own timer does not hold
 * the loop. LEAK_WATCHDOG=off disables it; LEAK_WATCHDOG_IDLE=1 prints how long
 * each file took to exit after its last test.
 *
 * Creation is recorded by wrapping the functions that make loop-holding
 * resources (timers, socket connect, server listen, child spawn), not with
 * async_hooks: an init hook turns on V8's promise hooks too, which made
 * promise-heavy code several times slower.
 */
import { ChildProcess } from "node:child_process";
import dgram from "node:dgram";
import { writeSync } from "node:fs";
import { syncBuiltinESMExports } from "node:module";
import net from "node:net";
import { relative } from "node:path";
import { after, afterEach, beforeEach } from "node:test";
import timers from "node:timers";
import { fileURLToPath } from "node:url";

interface Origin {
  /** The test running when the resource was created (or the last one before it). */
  readonly during: string;
  /** Holds the creation stack; formatted only when the resource is reported. */
  readonly stack: Error;
}

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const graceMs = Number(process.env.LEAK_GRACE_MS ?? 5000);

let during = "loading the test file";
const origins = new WeakMap<object, Origin>();

function record(resource: object): void {
  if (origins.has(resource)) return;
  // Deep enough to reach the test through a client library's frames; only this capture pays for it.
  const limit = Error.stackTraceLimit;
  Error.stackTraceLimit = 40;
  const stack = new Error("created here");
  Error.stackTraceLimit = limit;
  origins.set(resource, { during, stack });
}

/** Timers are not in process._getActiveHandles(): the recorded ones are kept here, swept as they finish. */
const timersMade = new Set<WeakRef<NodeJS.Timeout>>();
let sinceSweep = 0;

function timerDone(t: NodeJS.Timeout | undefined): boolean {
  return t === undefined || (t as unknown as { _destroyed?: boolean })._destroyed === true;
}

function recordTimer(t: NodeJS.Timeout): void {
  record(t);
  timersMade.add(new WeakRef(t));
  if (++sinceSweep >= 10_000) {
    sinceSweep = 0;
    for (const ref of timersMade) if (timerDone(ref.deref())) timersMade.delete(ref);
  }
}

function wrapTimers(): void {
  const g = globalThis as unknown as Record<string, (...args: unknown[]) => unknown>;
  const t = timers as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const name of ["setTimeout", "setInterval"] as const) {
    const original = g[name]!;
    const wrapped = function (this: unknown, ...args: unknown[]) {
      const timer = original.apply(this, args) as NodeJS.Timeout;
      recordTimer(timer);
      return timer;
    };
    // util.promisify(setTimeout) keeps working: the custom promisified form is carried over.
    Object.defineProperties(wrapped, Object.getOwnPropertyDescriptors(original));
    g[name] = wrapped;
    if (t[name] === original) t[name] = wrapped;
  }
  syncBuiltinESMExports();
}

function wrapMethod<T extends object>(proto: T, name: keyof T & string): void {
  const original = proto[name] as unknown as (...args: unknown[]) => unknown;
  (proto as Record<string, unknown>)[name] = function (this: object, ...args: unknown[]) {
    record(this);
    return original.apply(this, args);
  };
}

/** Installs the watchdog in a test file's process. */
function install(): void {
  wrapTimers();
  wrapMethod(net.Socket.prototype, "connect");
  wrapMethod(net.Server.prototype, "listen");
  // Not in the typings, but every spawn/exec/fork goes through it.
  wrapMethod(ChildProcess.prototype as ChildProcess & { spawn: unknown }, "spawn");
  wrapMethod(dgram.Socket.prototype, "bind");

  // Tests of one file run one after the other unless a file opts into concurrency: the label is then a hint.
  beforeEach((t) => {
    during = `test "${t.name}"`;
  });
  afterEach((t) => {
    during = `after test "${t.name}" (in a hook or the next suite's before)`;
  });
  after(() => {
    during = "after the last test";
    const lastTestAt = performance.now();
    // LEAK_WATCHDOG_IDLE=1 reports every file's idle time; a slow close (over 2 s) is always worth a line.
    process.once("exit", () => {
      const idle = Math.round(performance.now() - lastTestAt);
      if (process.env.LEAK_WATCHDOG_IDLE === "1" || idle >= 2000) writeSync(2, `[leak-watchdog] ${fileName()}: exited ${idle} ms after its last test (${process.uptime().toFixed(1)} s in all)\n`);
    });
    const timer = setTimeout(() => {
      const found = holders(timer);
      writeSync(2, formatReport(found));
      // The file has to fail: the runner marks a file whose process exits non-zero as failed.
      process.exit(1);
    }, graceMs);
    timer.unref();
  });
}

interface Holder {
  readonly what: string;
  readonly origin: Origin | undefined;
}

interface HandleOwner {
  readonly _handle?: { hasRef?: () => boolean } | null;
  readonly constructor: { name: string };
}

/** What still holds the loop: referenced handles and timers, each with its origin when it was recorded. */
function holders(own: NodeJS.Timeout): Holder[] {
  const found: Holder[] = [];
  const getHandles = (process as unknown as { _getActiveHandles?: () => HandleOwner[] })._getActiveHandles;
  for (const h of getHandles?.call(process) ?? []) {
    if (h === (process.stdin as unknown) || h === (process.stdout as unknown) || h === (process.stderr as unknown)) continue;
    const handle = h._handle;
    if (handle?.hasRef !== undefined && !handle.hasRef()) continue;
    if (h instanceof net.Socket) {
      // An accepted connection was made by its server: that server's creation names the test.
      const server = (h as net.Socket & { server?: net.Server }).server;
      const accepted = server !== undefined && !origins.has(h);
      found.push({ what: `${accepted ? "accepted " : ""}socket ${h.localAddress ?? "?"}:${h.localPort ?? "?"} -> ${h.remoteAddress ?? "(not connected)"}:${h.remotePort ?? ""}`, origin: origins.get(h) ?? (server && origins.get(server)) });
    } else if (h instanceof net.Server) {
      const addr = h.address();
      found.push({ what: `server listening on ${typeof addr === "string" ? addr : `${addr?.address ?? "?"}:${addr?.port ?? "?"}`}`, origin: origins.get(h) });
    } else if (h instanceof ChildProcess) {
      found.push({ what: `child process pid ${h.pid ?? "?"} (${h.spawnargs.slice(0, 3).join(" ")})`, origin: origins.get(h) });
    } else {
      found.push({ what: h.constructor.name, origin: origins.get(h) });
    }
  }
  for (const ref of timersMade) {
    const t = ref.deref();
    if (t === own || timerDone(t) || !t!.hasRef()) continue;
    const raw = t as unknown as { _idleTimeout?: number; _repeat?: number | null; _onTimeout?: { name?: string } };
    const fn = raw._onTimeout?.name;
    found.push({ what: `${raw._repeat != null ? "setInterval" : "setTimeout"} of ${raw._idleTimeout ?? "?"} ms${fn ? ` calling ${fn}()` : ""}`, origin: origins.get(t!) });
  }
  if (found.length === 0) {
    const kinds = process.getActiveResourcesInfo().filter((k) => k !== "TTYWrap");
    found.push({ what: `nothing the watchdog recorded; active: ${kinds.join(", ") || "none listed (a worker thread or a native addon's handle?)"}`, origin: undefined });
  }
  return found;
}

/**
 * Creation stack frames: the repository's own and its dependencies' (shortened to the package path),
 * node's internals folded into one line each time.
 */
function frames(stack: Error): string[] {
  const out: string[] = [];
  for (const raw of (stack.stack ?? "").split("\n").slice(1)) {
    const line = raw.trim();
    if (line.includes("leak-watchdog.ts")) continue;
    if (line.includes("node:") && !line.includes(repoRoot)) {
      if (out.at(-1) !== "(node internals)") out.push("(node internals)");
      continue;
    }
    out.push(line.replaceAll(`file://${repoRoot}`, "").replaceAll(repoRoot, "").replace(/\S*node_modules\//, ""));
  }
  return out.slice(0, 24);
}

function fileName(): string {
  return process.argv[1] === undefined ? "this test file" : relative(repoRoot, process.argv[1]);
}

function formatReport(found: readonly Holder[]): string {
  const lines = [`\n[leak-watchdog] ${fileName()}: still running ${graceMs} ms after its last test; what holds the event loop:`];
  for (const h of found) {
    lines.push(`  - ${h.what}`);
    if (h.origin !== undefined) {
      lines.push(`      created during ${h.origin.during}`);
      for (const f of frames(h.origin.stack)) lines.push(`        ${f}`);
    }
  }
  lines.push("  The file fails: close these in the test's after/finally (or unref what must not hold the process).\n");
  return lines.join("\n");
}

// NODE_TEST_CONTEXT marks a process the test runner started for one file (the runner's own process runs no tests).
if (process.env.NODE_TEST_CONTEXT !== undefined && process.env.LEAK_WATCHDOG !== "off") install();
