import type { ModelManifest, ResolvedModel } from "./model-manifest.js";
import { readLabels } from "./model-manifest.js";
import { createOnnxModelRunner, type ModelRunner } from "./model-runner.js";
import { createInputEncoder, type InputEncoder } from "./tensor.js";

/** A verified model loaded into a session, with its labels and input encoder. */
export interface LoadedModel {
  readonly manifest: ModelManifest;
  readonly runner: ModelRunner;
  readonly labels: readonly string[];
  readonly encoder: InputEncoder;
  readonly origin: string;
}

export async function loadModel(resolved: ResolvedModel, threads: { intraOpThreads: number; interOpThreads: number }): Promise<LoadedModel> {
  const labels = await readLabels(resolved.labelsPath, resolved.manifest.output.numClasses);
  const runner = await createOnnxModelRunner(resolved.manifest, resolved.modelPath, threads);
  return { manifest: resolved.manifest, runner, labels, encoder: createInputEncoder(resolved.manifest), origin: resolved.origin };
}
