/** Messages between the node and its model worker thread. */
export type WorkerRequest =
  /** Model-ready float32 input. */
  | { readonly type: "run"; readonly id: number; readonly input: ArrayBuffer; readonly batch: number }
  /** uint8 HWC wire tensors back to back, encoded by the worker. */
  | { readonly type: "run-wire"; readonly id: number; readonly input: ArrayBuffer; readonly batch: number }
  | { readonly type: "close" };

export type WorkerReply =
  | { readonly type: "ready" }
  | { readonly type: "load-failed"; readonly message: string }
  | { readonly type: "result"; readonly id: number; readonly output: ArrayBuffer }
  | { readonly type: "failed"; readonly id: number; readonly message: string };
