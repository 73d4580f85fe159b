import type { ModelManifest, ResolvedModel } from "./model-manifest.js";
import { readLabels } from "./model-manifest.js";
import { createModelRunnerPool, createOnnxModelRunner, createWorkerModelRunner, type ModelRunner, type RunnerOptions } from "./model-runner.js";
import { createInputEncoder, type InputEncoder } from "./tensor.js";

/** A verified model loaded into a session, with its labels and input encoder. */
export interface LoadedModel {
  readonly manifest: ModelManifest;
  readonly runner: ModelRunner;
  readonly labels: readonly string[];
  readonly encoder: InputEncoder;
  readonly origin: string;
  /** Sessions behind the runner (batches that may run at once). */
  readonly sessions: number;
}

/**
 * Loads the model; `inWorker` runs each session on a worker thread (the
 * node's default), else on the calling thread; `sessions` (default 1) loads
 * that many sessions behind one runner.
 */
export async function loadModel(resolved: ResolvedModel, threads: RunnerOptions & { inWorker?: boolean; sessions?: number }): Promise<LoadedModel> {
  const labels = await readLabels(resolved.labelsPath, resolved.manifest.output.numClasses);
  const create = threads.inWorker === true ? createWorkerModelRunner : createOnnxModelRunner;
  const options: RunnerOptions = { intraOpThreads: threads.intraOpThreads, interOpThreads: threads.interOpThreads, ...(threads.x64QuantPrecision === undefined ? {} : { x64QuantPrecision: threads.x64QuantPrecision }) };
  const sessions = Math.max(1, threads.sessions ?? 1);
  const started = await Promise.allSettled(Array.from({ length: sessions }, () => create(resolved.manifest, resolved.modelPath, options)));
  const runners = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
  const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed !== undefined) {
    await Promise.all(runners.map((r) => r.close().catch(() => undefined)));
    throw failed.reason;
  }
  return { manifest: resolved.manifest, runner: createModelRunnerPool(runners), labels, encoder: createInputEncoder(resolved.manifest), origin: resolved.origin, sessions };
}
