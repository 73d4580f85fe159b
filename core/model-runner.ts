import { availableParallelism } from "node:os";
import * as ort from "onnxruntime-node";
import type { ModelManifest } from "./model-manifest.js";

/** The ONNX port: runs one batch of model-ready input and returns the raw output. */
export interface ModelRunner {
  /** Runs `batch` items laid out back to back in `input` (NCHW float32); returns batch x numClasses values. */
  run(input: Float32Array, batch: number): Promise<Float32Array>;
  close(): Promise<void>;
}

/** Creates an onnxruntime-node CPU session for the manifest's model. */
export async function createOnnxModelRunner(
  manifest: ModelManifest,
  modelPath: string,
  options: { intraOpThreads: number; interOpThreads: number },
): Promise<ModelRunner> {
  // "Auto" leaves one core to preprocessing and the event loop: measured on 2 vCPUs, one intra-op
  // thread gave the best pipelined throughput (201 vs 165 images/s) because idle pool threads spin.
  const intra = options.intraOpThreads > 0 ? options.intraOpThreads : Math.max(1, availableParallelism() - 1);
  const session = await ort.InferenceSession.create(modelPath, {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    intraOpNumThreads: intra,
    // Idle pool threads must not busy-wait on CPU that sharp and the event loop need.
    extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" } } },
    ...(options.interOpThreads > 0 ? { interOpNumThreads: options.interOpThreads } : {}),
    executionMode: "sequential",
  });
  if (!session.inputNames.includes(manifest.input.name) || !session.outputNames.includes(manifest.output.name)) {
    await session.release();
    throw new Error(
      `model ${manifest.name}: manifest names input '${manifest.input.name}' and output '${manifest.output.name}', the graph has inputs [${session.inputNames.join(", ")}] and outputs [${session.outputNames.join(", ")}]`,
    );
  }
  const [, c, h, w] = manifest.input.shape;
  const classes = manifest.output.numClasses;
  return {
    async run(input, batch) {
      const tensor = new ort.Tensor("float32", input.subarray(0, batch * c * h * w), [batch, c, h, w]);
      const out = await session.run({ [manifest.input.name]: tensor });
      const result = out[manifest.output.name];
      if (result === undefined || result.dims.length !== 2 || result.dims[0] !== batch || result.dims[1] !== classes) {
        throw new Error(`model ${manifest.name}: unexpected output shape [${result?.dims.join(", ") ?? ""}]`);
      }
      return result.data as Float32Array;
    },
    async close() {
      await session.release();
    },
  };
}
