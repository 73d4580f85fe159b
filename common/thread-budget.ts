import { availableParallelism } from "node:os";
import type { Config } from "./config.js";

/** How a node spends its cores: chosen once at start, logged and exported as categorize_thread_budget. */
export interface ThreadBudget {
  readonly cores: number;
  /** Images preprocessed at once (the edge's admission gate). */
  readonly preprocessConcurrency: number;
  /** libvips worker threads per image (sharp.concurrency). */
  readonly vipsThreads: number;
  /** libuv pool threads (sharp's pipelines, fs, dns run there). */
  readonly uvThreads: number;
  readonly ortIntraOpThreads: number;
  readonly ortInterOpThreads: number;
  /** onnxruntime sessions of the model (batches that run at once). */
  readonly ortSessions: number;
  /** Worker threads that run those sessions (0: on the event loop). */
  readonly modelWorkerThreads: number;
}

/**
 * The thread budget of a small machine. Images are preprocessed
 * `cores` at a time, each on one libvips thread: parallel requests fill the
 * cores better than one image split across threads (a 224 px crop of a
 * shrink-on-load JPEG gives libvips little to share), and no thread waits
 * for another. onnxruntime gets one session with `cores` intra-op threads
 * whose idle threads sleep instead of spinning: a lone request's batch uses
 * every core (c=1 p50 17.8 vs 20.4 ms with 2 sessions of 1 thread on 2
 * vCPUs), a loaded node's throughput is the same (69 vs 72 images/s at
 * c=8, within noise) and the second session's ~80 MB of weights and arenas
 * are not paid. The libuv pool must hold every concurrent sharp pipeline
 * plus file and DNS work.
 */
export function planThreadBudget(config: Config, cores = availableParallelism()): ThreadBudget {
  const e = config.edge;
  const role = config.role;
  const preprocessConcurrency = role === "core" ? 0 : e.preprocessConcurrency > 0 ? e.preprocessConcurrency : cores;
  const vipsThreads = role === "core" ? 0 : e.vipsThreads > 0 ? e.vipsThreads : 1;
  const intra = role === "edge" ? 0 : config.model.intraOpThreads > 0 ? config.model.intraOpThreads : cores;
  // As many sessions as the cores hold at the intra-op width: one by default, 2 with ORT_INTRA_OP_THREADS=1 on 2 cores.
  const sessions = role === "edge" ? 0 : config.model.sessions > 0 ? config.model.sessions : Math.max(1, Math.floor(cores / intra));
  return Object.freeze({
    cores,
    preprocessConcurrency,
    vipsThreads,
    uvThreads: e.uvThreads,
    ortIntraOpThreads: intra,
    ortInterOpThreads: role === "edge" ? 0 : config.model.interOpThreads,
    ortSessions: sessions,
    modelWorkerThreads: role !== "edge" && config.model.inWorker ? sessions : 0,
  });
}

/** The budget as the categorize_thread_budget gauge's (kind, threads) pairs. */
export function threadBudgetGauge(b: ThreadBudget): [kind: string, threads: number][] {
  return [
    ["cores", b.cores],
    ["preprocess_concurrency", b.preprocessConcurrency],
    ["vips", b.vipsThreads],
    ["uv", b.uvThreads],
    ["ort_intra_op", b.ortIntraOpThreads],
    ["ort_inter_op", b.ortInterOpThreads],
    ["ort_sessions", b.ortSessions],
    ["model_worker", b.modelWorkerThreads],
  ];
}
