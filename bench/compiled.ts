import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { servingNodeFlags } from "../cli/node-flags.js";
import type { NodeRole } from "../common/config.js";
import { repoRoot, spawnNodeWith, type NodeProcess } from "../test/support/nodes.js";

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

/** spawnNode for the compiled tree: same test environment, `node <servingNodeFlags> dist/cli/main.js serve ROLE`, as the images run it. */
export function spawnCompiled(tree: CompiledTree, role: NodeRole, extra: Record<string, string | undefined> = {}): Promise<NodeProcess> {
  return spawnNodeWith([...servingNodeFlags, join(tree.dir, "dist", "cli", "main.js")], role, { SERVE_PAGE: "false", ...extra });
}
