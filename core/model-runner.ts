import { once } from "node:events";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import { int8GemmSaturates } from "./cpu-features.js";
import type { ModelManifest } from "./model-manifest.js";
import { createInputEncoder } from "./tensor.js";
import type { WorkerReply, WorkerRequest } from "./model-worker-protocol.js";

/** The ONNX port: runs one batch of model-ready input and returns the raw output. */
export interface ModelRunner {
  /** Runs `batch` items laid out back to back in `input` (NCHW float32); returns batch x numClasses values. */
  run(input: Float32Array, batch: number): Promise<Float32Array>;
  /**
   * Runs wire tensors (uint8 HWC, one per item), encoded to the model's
   * input by the runner: in the worker thread for the worker runner, so the
   * event loop neither writes nor copies the 4x larger float input.
   */
  runWire(items: readonly Uint8Array[]): Promise<Float32Array>;
  close(): Promise<void>;
}

/** Session threads and int8 precision (config.model). */
export interface RunnerOptions {
  readonly intraOpThreads: number;
  readonly interOpThreads: number;
  /** auto: exact int8 sums only where the CPU's fast kernels saturate (see int8GemmSaturates). */
  readonly x64QuantPrecision?: "auto" | "on" | "off";
}

/** Whether a session with these options widens int8 sums. */
export const exactInt8 = (options: RunnerOptions): boolean => options.x64QuantPrecision === "on" || ((options.x64QuantPrecision ?? "auto") === "auto" && int8GemmSaturates());

/** Creates an onnxruntime-node CPU session for the manifest's model. */
export async function createOnnxModelRunner(manifest: ModelManifest, modelPath: string, options: RunnerOptions): Promise<ModelRunner> {
  // Nodes pass the thread budget's width (planThreadBudget); "auto" here serves direct callers
  // (the bench's limit stage) and leaves one core to pipelined preprocessing.
  const intra = options.intraOpThreads > 0 ? options.intraOpThreads : Math.max(1, availableParallelism() - 1);
  const session = await ort.InferenceSession.create(modelPath, {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    intraOpNumThreads: intra,
    // Idle pool threads must not busy-wait on CPU that sharp and the event loop need.
    extra: { session: { intra_op: { allow_spinning: "0" }, inter_op: { allow_spinning: "0" }, ...(exactInt8(options) ? { x64quantprecision: "1" } : {}) } },
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
  const encoder = createInputEncoder(manifest);
  const run = async (input: Float32Array, batch: number): Promise<Float32Array> => {
    const tensor = new ort.Tensor("float32", input.subarray(0, batch * c * h * w), [batch, c, h, w]);
    const out = await session.run({ [manifest.input.name]: tensor });
    const result = out[manifest.output.name];
    if (result === undefined || result.dims.length !== 2 || result.dims[0] !== batch || result.dims[1] !== classes) {
      throw new Error(`model ${manifest.name}: unexpected output shape [${result?.dims.join(", ") ?? ""}]`);
    }
    return result.data as Float32Array;
  };
  return {
    run,
    runWire(items) {
      // Its own buffer per run: the session reads it until the run ends, and runs may overlap.
      const input = new Float32Array(items.length * encoder.inputFloats);
      items.forEach((hwc, i) => encoder.encode(hwc, input, i));
      return run(input, items.length);
    },
    async close() {
      await session.release();
    },
  };
}

/**
 * The same session in a worker thread. onnxruntime-node's run() blocks the
 * thread that calls it for the whole model run; here that is the worker, so
 * the event loop keeps serving the network, the database client and sharp's
 * callbacks meanwhile. A worker that dies fails the runs it had and is
 * started again on the next run.
 */
export async function createWorkerModelRunner(manifest: ModelManifest, modelPath: string, options: RunnerOptions): Promise<ModelRunner> {
  // In a compiled tree the entry is the .js beside this file. Run from the sources, the worker loads
  // the .ts entry through tsx's loader, which a worker thread does not inherit from --import.
  const fromSources = import.meta.url.endsWith(".ts");
  const entryUrl = new URL(fromSources ? "./model-worker.ts" : "./model-worker.js", import.meta.url);
  const bootstrap = `import("tsx/esm/api").then((tsx) => { tsx.register(); return import(${JSON.stringify(entryUrl.href)}); })`;
  const pending = new Map<number, { resolve: (out: Float32Array) => void; reject: (err: Error) => void }>();
  const [, c, h, w] = manifest.input.shape;
  const perItem = c * h * w;
  let nextId = 0;
  let closed = false;

  let current: Promise<Worker> | undefined;
  const forget = (attempt: Promise<Worker>) => {
    if (current === attempt) current = undefined;
  };
  // The worker in use, or the one starting; a worker that dies or fails to start is forgotten, so the next run starts another.
  const launch = (): Promise<Worker> => {
    const attempt: Promise<Worker> = start(() => forget(attempt));
    current = attempt;
    attempt.catch(() => forget(attempt));
    return attempt;
  };

  async function start(onLost: () => void): Promise<Worker> {
    const workerData = { manifest, modelPath, threads: options };
    const worker = fromSources ? new Worker(bootstrap, { eval: true, workerData }) : new Worker(entryUrl, { workerData });
    const [first] = (await Promise.race([once(worker, "message"), once(worker, "error").then(([err]) => Promise.reject(err as Error))])) as [WorkerReply];
    if (first.type !== "ready") {
      await worker.terminate();
      throw new Error(first.type === "load-failed" ? first.message : `model worker answered ${first.type} before ready`);
    }
    worker.on("message", (m: WorkerReply) => {
      if (m.type !== "result" && m.type !== "failed") return;
      const p = pending.get(m.id);
      pending.delete(m.id);
      if (m.type === "result") p?.resolve(new Float32Array(m.output));
      else p?.reject(new Error(m.message));
    });
    const lost = (why: string) => {
      onLost();
      for (const p of pending.values()) p.reject(new Error(`model worker ${why}`));
      pending.clear();
    };
    worker.on("error", (err) => lost(`failed: ${err.message}`));
    worker.on("exit", (code) => lost(`exited with code ${code}`));
    return worker;
  }
  await launch();

  return {
    async run(input, batch) {
      if (closed) throw new Error("model session is closed");
      // Copied before any await: the caller may reuse its buffer once run() returns its promise.
      const copy = input.slice(0, batch * perItem);
      const worker = await (current ?? launch());
      const id = ++nextId;
      return new Promise<Float32Array>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        const message: WorkerRequest = { type: "run", id, input: copy.buffer, batch };
        worker.postMessage(message, [copy.buffer]);
      });
    },
    async runWire(items) {
      if (closed) throw new Error("model session is closed");
      // One buffer for the batch, transferred (not copied) to the worker, which encodes it.
      const wire = new Uint8Array(items.reduce((n, x) => n + x.byteLength, 0));
      let at = 0;
      for (const x of items) {
        wire.set(x, at);
        at += x.byteLength;
      }
      const worker = await (current ?? launch());
      const id = ++nextId;
      return new Promise<Float32Array>((resolve, reject) => {
        pending.set(id, { resolve, reject });
        const message: WorkerRequest = { type: "run-wire", id, input: wire.buffer, batch: items.length };
        worker.postMessage(message, [wire.buffer]);
      });
    },
    async close() {
      closed = true;
      const worker = await current?.catch(() => undefined);
      if (worker === undefined) return;
      const exited = once(worker, "exit");
      const message: WorkerRequest = { type: "close" };
      worker.postMessage(message);
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000).unref())]);
      await worker.terminate();
    },
  };
}

/**
 * Several sessions of one model behind one runner: each run goes to the
 * session with the fewest runs under way (ORT_SESSIONS > 1 or a narrow
 * ORT_INTRA_OP_THREADS): batches then run side by side, as a multi-worker
 * server's requests do.
 */
export function createModelRunnerPool(runners: readonly ModelRunner[]): ModelRunner {
  if (runners.length === 1) return runners[0]!;
  const busy = runners.map(() => 0);
  const pick = (): number => busy.reduce((best, n, i) => (n < busy[best]! ? i : best), 0);
  const on = async (fn: (r: ModelRunner) => Promise<Float32Array>): Promise<Float32Array> => {
    const i = pick();
    busy[i]!++;
    try {
      return await fn(runners[i]!);
    } finally {
      busy[i]!--;
    }
  };
  return {
    run: (input, batch) => on((r) => r.run(input, batch)),
    runWire: (items) => on((r) => r.runWire(items)),
    async close() {
      await Promise.all(runners.map((r) => r.close()));
    },
  };
}
