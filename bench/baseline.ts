import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { modelPath, sharedDir } from "../test/support/fixtures.js";
import { repoRoot, waitForOutput, type NodeProcess } from "../test/support/nodes.js";

/**
 * The stack categorize replaces (bench/baseline/): Flask on gunicorn (gthread
 * workers, HTTP/1.1 keep-alive), Pillow, numpy and onnxruntime from PyPI, in a
 * virtual environment the bench makes under .local/ (gitignored) when it is
 * missing, and brings up to date when bench/baseline/requirements.txt changes.
 */
export const BASELINE_DIR = join(repoRoot, "bench", "baseline");
export const VENV_DIR = join(repoRoot, ".local", "bench-venv");
const REQUIREMENTS = join(BASELINE_DIR, "requirements.txt");
const STAMP = join(VENV_DIR, ".requirements.sha256");

/** The baseline's shape: processes, threads per process, onnxruntime threads per session. */
export interface BaselineOptions {
  readonly workers: number;
  readonly threads: number;
  readonly intraOpThreads: number;
}

export const DEFAULT_BASELINE: BaselineOptions = { workers: 2, threads: 4, intraOpThreads: 1 };

/** A running baseline: the gunicorn master (as a NodeProcess, so the harness can stop it like a node) and its workers. */
export interface BaselineProcess extends NodeProcess {
  readonly workerPids: readonly number[];
  /** Python and package versions in the venv. */
  readonly versions: Readonly<Record<string, string>>;
}

/** Makes .local/bench-venv when it is missing and installs the pinned requirements when they changed. */
export function ensureVenv(log: (s: string) => void): void {
  const wanted = createHash("sha256").update(readFileSync(REQUIREMENTS)).digest("hex");
  const python = join(VENV_DIR, "bin", "python");
  if (!existsSync(python)) {
    log(`  creating the baseline's virtual environment (.local/bench-venv)...`);
    execFileSync("python3", ["-m", "venv", VENV_DIR], { stdio: "pipe" });
  }
  const have = existsSync(STAMP) ? readFileSync(STAMP, "utf8").trim() : "";
  if (have === wanted) return;
  const t0 = Date.now();
  log(`  installing bench/baseline/requirements.txt from PyPI into .local/bench-venv...`);
  try {
    execFileSync(python, ["-m", "pip", "install", "--disable-pip-version-check", "--no-input", "-q", "-r", REQUIREMENTS], { stdio: "pipe", timeout: 15 * 60_000 });
  } catch (err) {
    const out = `${(err as { stdout?: Buffer }).stdout?.toString() ?? ""}${(err as { stderr?: Buffer }).stderr?.toString() ?? ""}`;
    throw new Error(`pip install of the baseline failed: ${out.split("\n").slice(-8).join("\n")}`);
  }
  writeFileSync(STAMP, wanted + "\n");
  log(`  installed in ${Math.round((Date.now() - t0) / 1000)} s`);
}

function versionsOf(): Record<string, string> {
  const python = join(VENV_DIR, "bin", "python");
  const script = "import sys, flask, gunicorn, PIL, numpy, onnxruntime, importlib.metadata as m; print(sys.version.split()[0]); [print(p, m.version(p)) for p in ('flask', 'gunicorn', 'pillow', 'numpy', 'onnxruntime')]";
  const out = execFileSync(python, ["-c", script], { encoding: "utf8" }).trim().split("\n");
  return Object.fromEntries([["python", out[0] ?? "?"], ...out.slice(1).map((l) => l.split(" ") as [string, string])]);
}

/** Starts gunicorn on 127.0.0.1, port 0; resolves once every worker has its onnxruntime session. */
export async function startBaseline(options: BaselineOptions = DEFAULT_BASELINE): Promise<BaselineProcess> {
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    HOME: process.env.HOME ?? "/tmp",
    LANG: "C.UTF-8",
    CATEGORIZE_MODEL: modelPath,
    CATEGORIZE_LABELS: join(sharedDir, "models", "imagenet_labels.txt"),
    ORT_INTRA_OP_THREADS: String(options.intraOpThreads),
    BASELINE_WORKERS: String(options.workers),
    BASELINE_THREADS: String(options.threads),
    BASELINE_BIND: "127.0.0.1:0",
    // numpy's OpenBLAS would start a thread per CPU in every worker; the app does no BLAS work.
    OPENBLAS_NUM_THREADS: "1",
    OMP_NUM_THREADS: "1",
    PYTHONUNBUFFERED: "1",
  };
  const child = spawn(join(VENV_DIR, "bin", "gunicorn"), ["-c", "gunicorn.conf.py", "app:app"], { cwd: BASELINE_DIR, env, stdio: ["ignore", "pipe", "pipe"] });
  const { value: url, output } = await waitForOutput(child, "baseline", (out) => {
    const m = /Listening at: (http:\/\/[\d.]+:\d+)/.exec(out);
    // Every worker has its onnxruntime session before the first request.
    return m !== null && (out.match(/onnxruntime session ready/g) ?? []).length >= options.workers ? m[1] : undefined;
  });
  const out = output();
  const workerPids = [...out.matchAll(/Booting worker with pid: (\d+)/g)].map((m) => Number(m[1]));
  return {
    url,
    adminUrl: undefined,
    child,
    output,
    workerPids,
    versions: versionsOf(),
    async kill(signal = "SIGTERM") {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill(signal);
      const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
