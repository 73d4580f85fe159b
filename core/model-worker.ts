/**
 * Worker-thread entry of {@link createWorkerModelRunner}: owns one
 * onnxruntime session. onnxruntime-node runs a session synchronously on the
 * calling thread; here that thread is this worker, not the node's event loop.
 */
import { parentPort, workerData } from "node:worker_threads";
import type { ModelManifest } from "./model-manifest.js";
import { createOnnxModelRunner, type RunnerOptions } from "./model-runner.js";
import type { WorkerReply, WorkerRequest } from "./model-worker-protocol.js";

const port = parentPort;
if (port === null) throw new Error("model-worker must run in a worker thread");
const data = workerData as { manifest: ModelManifest; modelPath: string; threads: RunnerOptions };
const reply = (m: WorkerReply, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer);

try {
  const runner = await createOnnxModelRunner(data.manifest, data.modelPath, data.threads);
  port.on("message", (m: WorkerRequest) => {
    if (m.type === "close") {
      void runner.close().catch(() => undefined).finally(() => port.close());
      return;
    }
    const run =
      m.type === "run-wire"
        ? runner.runWire(Array.from({ length: m.batch }, (_, i) => new Uint8Array(m.input, (i * m.input.byteLength) / m.batch, m.input.byteLength / m.batch)))
        : runner.run(new Float32Array(m.input), m.batch);
    run.then(
      (out) => {
        // The session's output may live in native memory: copy it into a buffer that can be transferred.
        const copy = out.slice();
        reply({ type: "result", id: m.id, output: copy.buffer }, [copy.buffer]);
      },
      (err: unknown) => reply({ type: "failed", id: m.id, message: err instanceof Error ? err.message : String(err) }),
    );
  });
  reply({ type: "ready" });
} catch (err) {
  reply({ type: "load-failed", message: err instanceof Error ? err.message : String(err) });
}
