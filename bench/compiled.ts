import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { NodeRole } from "../common/config.js";
import { repoRoot, testEnv, type NodeProcess } from "../test/support/nodes.js";

/**
 * The production runtime for child nodes (`--runtime=dist`): the code compiled
 * by tsc with tsconfig.build.json, run by plain `node` as the container images
 * do (dist/cli/main.js), instead of `node --import tsx cli/main.ts`. The tsx
 * loader keeps a second V8 isolate and transpiled sources alive, which adds
 * tens of MB to every process's RSS. Built into a temporary folder (with the
 * model catalog and migrations beside it, and node_modules linked), removed
 * by cleanup().
 */
export interface CompiledTree {
  readonly dir: string;
  cleanup(): void;
}

export function buildCompiled(log: (s: string) => void): CompiledTree {
  const dir = mkdtempSync(join(tmpdir(), "categorize-bench-dist-"));
  try {
    const t0 = Date.now();
    execFileSync(process.execPath, [join(repoRoot, "node_modules", "typescript", "bin", "tsc"), "-p", join(repoRoot, "tsconfig.build.json"), "--outDir", join(dir, "dist")], { cwd: repoRoot, stdio: "pipe" });
    cpSync(join(repoRoot, "core", "models"), join(dir, "dist", "core", "models"), { recursive: true });
    cpSync(join(repoRoot, "core", "store", "migrations"), join(dir, "dist", "core", "store", "migrations"), { recursive: true });
    writeFileSync(join(dir, "package.json"), JSON.stringify({ type: "module", private: true }));
    symlinkSync(join(repoRoot, "node_modules"), join(dir, "node_modules"), "dir");
    log(`  compiled the nodes with tsc in ${Math.round((Date.now() - t0) / 1000)} s (temporary folder)`);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    const out = (err as { stdout?: Buffer }).stdout?.toString() ?? "";
    throw new Error(`tsc build for --runtime=dist failed: ${err instanceof Error ? err.message : String(err)}\n${out}`);
  }
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** spawnNode's twin for the compiled tree: same test environment, `node dist/cli/main.js serve ROLE`. */
export async function spawnCompiled(tree: CompiledTree, role: NodeRole, extra: Record<string, string | undefined> = {}): Promise<NodeProcess> {
  const env = { ...process.env, ...testEnv({ LOG_LEVEL: "info", SERVE_PAGE: "false", ...extra }) };
  const child = spawn(process.execPath, [join(tree.dir, "dist", "cli", "main.js"), "serve", role], { env, stdio: ["ignore", "pipe", "pipe"], cwd: repoRoot });
  let out = "";
  child.stdout.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr.on("data", (d: Buffer) => (out += d.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`node did not start in time:\n${out}`)), 60_000);
    const onData = () => {
      const m = /"url":"(http[^"]+)".*"msg":"node listening"/.exec(out);
      if (m !== null) {
        clearTimeout(timer);
        child.stdout.off("data", onData);
        resolve(m[1]!);
      }
    };
    child.stdout.on("data", onData);
    child.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`node exited with ${code}:\n${out}`));
    });
  });
  return {
    url,
    child,
    output: () => out,
    async kill(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill(signal);
      await exited;
    },
  };
}
