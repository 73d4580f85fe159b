import { Worker } from "node:worker_threads";
import type { StepResult } from "./load.js";
import type { LoadProtocol, PoolMessage, ServerTimings, StepRequest, WorkerMessage } from "./client-worker.js";
import type { ImageRecipe } from "./jpeg-stamp.js";

export type { LoadProtocol, ServerTimings };

/** The load generator in its own thread (bench/client-worker.ts); run() sends one step to it. */
export class LoadClient {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve: (v: { result: StepResult; server: ServerTimings | undefined }) => void; reject: (e: Error) => void }>();

  private constructor(
    private readonly worker: Worker,
    /** Kernel thread id of the worker, for per-thread CPU. */
    readonly tid: number,
  ) {
    worker.on("message", (msg: WorkerMessage) => {
      if (msg.type === "ready") return;
      const p = this.pending.get(msg.id);
      this.pending.delete(msg.id);
      if (msg.type === "done") p?.resolve({ result: msg.result, server: msg.server });
      else p?.reject(new Error(`load client failed: ${msg.error}`));
    });
    worker.on("error", (err) => {
      for (const p of this.pending.values()) p.reject(err);
      this.pending.clear();
    });
  }

  /**
   * Starts the worker. Loader hooks do not carry over to worker threads on
   * Node 20, so a two-line bootstrap registers tsx in the worker before it
   * imports the TypeScript entry.
   */
  static async start(): Promise<LoadClient> {
    const entry = new URL("./client-worker.ts", import.meta.url).href;
    const bootstrap = `import(${JSON.stringify(import.meta.resolve("tsx/esm/api"))}).then(({ register }) => { register(); return import(${JSON.stringify(entry)}); });`;
    const worker = new Worker(bootstrap, { eval: true });
    const tid = await new Promise<number>((resolve, reject) => {
      worker.once("error", reject);
      worker.once("message", (msg: WorkerMessage) => {
        worker.off("error", reject);
        if (msg.type === "ready") resolve(msg.tid);
        else reject(new Error(`unexpected first message from the load client: ${msg.type}`));
      });
    });
    return new LoadClient(worker, tid);
  }

  /** Sends a named image pool to the worker once, for steps given as an ImageRecipe. */
  setPool(name: string, images: readonly Buffer[]): void {
    this.worker.postMessage({ type: "pool", name, images } satisfies PoolMessage);
  }

  /** One step: `images` in order (or made from a recipe over a pool set before), over gRPC unless options.protocol says otherwise. */
  run(
    urls: readonly string[],
    images: readonly Buffer[] | ImageRecipe,
    loop: StepRequest["loop"],
    options: { topK?: number; timeoutMs?: number; protocol?: LoadProtocol } = {},
  ): Promise<{ result: StepResult; server: ServerTimings | undefined }> {
    const id = ++this.nextId;
    const req: StepRequest = { type: "step", id, urls, images, protocol: options.protocol ?? "grpc", loop, topK: options.topK ?? 5, timeoutMs: options.timeoutMs ?? 30_000 };
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage(req);
    });
  }

  async close(): Promise<void> {
    await this.worker.terminate();
  }
}
