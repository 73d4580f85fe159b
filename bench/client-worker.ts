/**
 * The load generator's thread. The embedded node and the no-op server run on
 * the harness's main thread; sending from a worker keeps the client's own
 * work (HTTP/2, protobuf, timers) off that event loop, as a remote client
 * would be. One message in (a step), one message out (its result).
 */
import { readlinkSync } from "node:fs";
import { parentPort } from "node:worker_threads";
import type { Client } from "@connectrpc/connect";
import type { CategorizeService } from "../gen/categorize/v1/categorize_pb.js";
import { categorizeClient } from "../test/support/clients.js";
import { closedLoop, openLoop, type StepResult } from "./load.js";
import { round } from "./stats.js";

export interface StepRequest {
  readonly id: number;
  readonly urls: readonly string[];
  readonly images: readonly Uint8Array[];
  readonly topK: number;
  readonly timeoutMs: number;
  readonly loop: { readonly mode: "closed"; readonly concurrency: number; readonly maxMs: number } | { readonly mode: "open"; readonly rate: number; readonly maxMs: number };
}

/** Means of the timings the edge put in its answers (ms). */
export interface ServerTimings {
  readonly answers: number;
  readonly preprocessMs: number;
  readonly queueMs: number;
  readonly inferenceMs: number;
  /** Edge handling time of the request (receipt to answer). */
  readonly totalMs: number;
  readonly batchSize: number;
  /** Answers marked cached (edge cache or result store). */
  readonly cached: number;
}

export type WorkerMessage =
  | { readonly type: "ready"; readonly tid: number }
  | { readonly type: "done"; readonly id: number; readonly result: StepResult; readonly server: ServerTimings | undefined }
  | { readonly type: "failed"; readonly id: number; readonly error: string };

const port = parentPort;
if (port === null) throw new Error("bench/client-worker.ts runs as a worker thread");

const clients = new Map<string, Client<typeof CategorizeService>>();
const clientFor = (url: string) => {
  let c = clients.get(url);
  if (c === undefined) {
    c = categorizeClient(url, "grpc");
    clients.set(url, c);
  }
  return c;
};

async function run(req: StepRequest): Promise<WorkerMessage> {
  const sums = { n: 0, preprocessMs: 0, queueMs: 0, inferenceMs: 0, totalMs: 0, batchSize: 0, cached: 0 };
  const targets = req.urls.map(clientFor);
  const images = req.images.map((u) => Buffer.from(u.buffer, u.byteOffset, u.byteLength));
  const send = async (image: Buffer, i: number) => {
    const res = await targets[i % targets.length]!.classify({ image, topK: req.topK }, { timeoutMs: req.timeoutMs });
    const t = res.timings;
    if (res.cached) sums.cached++;
    if (t === undefined) return;
    sums.n++;
    sums.preprocessMs += t.preprocessMs;
    sums.queueMs += t.queueMs;
    sums.inferenceMs += t.inferenceMs;
    sums.totalMs += t.totalMs;
    sums.batchSize += t.batchSize;
  };
  const result = req.loop.mode === "closed" ? await closedLoop(send, images, req.loop) : await openLoop(send, images, req.loop);
  const m = (x: number) => round(x / sums.n);
  const server =
    sums.n === 0
      ? undefined
      : { answers: sums.n, preprocessMs: m(sums.preprocessMs), queueMs: m(sums.queueMs), inferenceMs: m(sums.inferenceMs), totalMs: m(sums.totalMs), batchSize: m(sums.batchSize), cached: sums.cached };
  return { type: "done", id: req.id, result, server };
}

port.on("message", (req: StepRequest) => {
  run(req).then(
    (msg) => port.postMessage(msg),
    (err: unknown) => port.postMessage({ type: "failed", id: req.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies WorkerMessage),
  );
});

// "PID/task/TID": lets the resource monitor name this thread in its per-thread CPU.
const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
port.postMessage({ type: "ready", tid } satisfies WorkerMessage);
