import type { ModelManifest, ResolvedModel } from "./model-manifest.js";
import { readLabels } from "./model-manifest.js";
import { createOnnxModelRunner, createWorkerModelRunner, type ModelRunner, type RunnerOptions } from "./model-runner.js";
import { createInputEncoder, type InputEncoder } from "./tensor.js";

/** A verified model loaded into a session, with its labels and input encoder. */
export interface LoadedModel {
  readonly manifest: ModelManifest;
  readonly runner: ModelRunner;
  readonly labels: readonly string[];
  readonly encoder: InputEncoder;
  readonly origin: string;
}

/** Loads the model; `inWorker` runs its session on a worker thread (the node's default), else on the calling thread. */
export async function loadModel(resolved: ResolvedModel, threads: RunnerOptions & { inWorker?: boolean }): Promise<LoadedModel> {
  const labels = await readLabels(resolved.labelsPath, resolved.manifest.output.numClasses);
  const create = threads.inWorker === true ? createWorkerModelRunner : createOnnxModelRunner;
  const runner = await create(resolved.manifest, resolved.modelPath, { intraOpThreads: threads.intraOpThreads, interOpThreads: threads.interOpThreads, ...(threads.x64QuantPrecision === undefined ? {} : { x64QuantPrecision: threads.x64QuantPrecision }) });
  return { manifest: resolved.manifest, runner, labels, encoder: createInputEncoder(resolved.manifest), origin: resolved.origin };
}
