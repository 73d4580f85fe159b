/**
 * The load generator's thread. The embedded node and the no-op server run on
 * the harness's main thread; sending from a worker keeps the client's own
 * work (HTTP/2, protobuf, timers) off that event loop, as a remote client
 * would be. Messages in: image pools (once) and steps; one message out per step.
 *
 * Protocols:
 * - "grpc": the Connect client over gRPC (HTTP/2), as before.
 * - "connect-h1": categorize's Classify as a Connect unary call over HTTP/1.1
 *   (POST /categorize.v1.CategorizeService/Classify, application/proto).
 * - "baseline-h1": POST /classify with the image as the body (bench/baseline).
 * Both HTTP/1.1 modes go through the same node:http keep-alive agent per URL,
 * so the systems compared over HTTP/1.1 see the same driver.
 */
import { readlinkSync } from "node:fs";
import { Agent, request } from "node:http";
import { parentPort } from "node:worker_threads";
import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import { codeFromHttpStatus, errorFromJsonBytes } from "@connectrpc/connect/protocol-connect";
import { ClassifyResponseSchema, type CategorizeService } from "../gen/categorize/v1/categorize_pb.js";
import { categorizeClient } from "../test/support/clients.js";
import { classifyRequestParts } from "./classify-request.js";
import { recipeImage, type ImageRecipe } from "./jpeg-stamp.js";
import { closedLoop, openLoop, type StepResult } from "./load.js";
import { round } from "./stats.js";

/** How the client talks to the target. */
export type LoadProtocol = "grpc" | "connect-h1" | "baseline-h1";

export interface StepRequest {
  readonly type: "step";
  readonly id: number;
  readonly urls: readonly string[];
  /** The images to send, or a recipe over a pool sent before (see PoolMessage). */
  readonly images: readonly Uint8Array[] | ImageRecipe;
  readonly protocol: LoadProtocol;
  readonly topK: number;
  readonly timeoutMs: number;
  readonly loop: { readonly mode: "closed"; readonly concurrency: number; readonly maxMs: number } | { readonly mode: "open"; readonly rate: number; readonly maxMs: number };
}

/** A named image pool for recipes; replaces an earlier pool of that name. */
export interface PoolMessage {
  readonly type: "pool";
  readonly name: string;
  readonly images: readonly Uint8Array[];
}

/** Means of the timings the server put in its answers (ms). */
export interface ServerTimings {
  readonly answers: number;
  readonly preprocessMs: number;
  readonly queueMs: number;
  readonly inferenceMs: number;
  /** Handling time of the request on the server (receipt to answer). */
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

interface Timings {
  readonly preprocessMs: number;
  readonly queueMs: number;
  readonly inferenceMs: number;
  readonly totalMs: number;
  readonly batchSize: number;
}
type Sender = (url: string, image: Buffer, topK: number, timeoutMs: number) => Promise<{ cached: boolean; timings: Timings | undefined }>;

const grpcClients = new Map<string, Client<typeof CategorizeService>>();
const grpcSend: Sender = async (url, image, topK, timeoutMs) => {
  let c = grpcClients.get(url);
  if (c === undefined) {
    c = categorizeClient(url, "grpc");
    grpcClients.set(url, c);
  }
  const res = await c.classify({ image, topK }, { timeoutMs });
  return { cached: res.cached, timings: res.timings };
};

// One keep-alive agent per target: at most one connection per request in flight, reused across steps.
const agents = new Map<string, Agent>();
const agentFor = (url: string) => {
  let a = agents.get(url);
  if (a === undefined) {
    a = new Agent({ keepAlive: true, keepAliveMsecs: 30_000, maxFreeSockets: 1024, scheduling: "lifo" });
    agents.set(url, a);
  }
  return a;
};

/** One HTTP/1.1 POST on the keep-alive agent of `url`. */
function post(url: string, path: string, headers: Record<string, string>, body: Uint8Array | readonly Uint8Array[], timeoutMs: number): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  const u = new URL(url);
  const parts = body instanceof Uint8Array ? [body] : body;
  const length = parts.reduce((n, p) => n + p.byteLength, 0);
  return new Promise((resolve, reject) => {
    const req = request(
      { agent: agentFor(url), host: u.hostname, port: u.port, path, method: "POST", headers: { ...headers, "content-length": String(length) } },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
        res.on("error", reject);
      },
    );
    req.setTimeout(timeoutMs, () => req.destroy(new ConnectError(`no answer in ${timeoutMs} ms`, Code.DeadlineExceeded)));
    req.on("error", reject);
    // Parts written back to back (one writev): the image is sent from the pool's bytes, not copied into a body first.
    req.cork();
    for (const p of parts) req.write(p);
    req.end();
  });
}

const CLASSIFY_PATH = "/categorize.v1.CategorizeService/Classify";
const connectH1Send: Sender = async (url, image, topK, timeoutMs) => {
  const body = classifyRequestParts(image, topK);
  const res = await post(url, CLASSIFY_PATH, { "content-type": "application/proto", "connect-protocol-version": "1", "connect-timeout-ms": String(timeoutMs) }, body, timeoutMs);
  if (res.status !== 200) {
    let err: ConnectError;
    try {
      err = errorFromJsonBytes(res.body, undefined, new ConnectError(`HTTP ${res.status}`, codeFromHttpStatus(res.status)));
    } catch {
      err = new ConnectError(`HTTP ${res.status}: ${res.body.toString("utf8").slice(0, 200)}`, codeFromHttpStatus(res.status));
    }
    throw err;
  }
  const answer = fromBinary(ClassifyResponseSchema, res.body);
  return { cached: answer.cached, timings: answer.timings };
};

/** Server-Timing of the baseline: "preprocess;dur=12.3, inference;dur=4.5, total;dur=17.1". */
function serverTiming(header: string | string[] | undefined): Map<string, number> {
  const out = new Map<string, number>();
  for (const part of (Array.isArray(header) ? header.join(",") : (header ?? "")).split(",")) {
    const m = /^\s*([\w-]+)\s*;\s*dur=([\d.]+)/.exec(part);
    if (m !== null) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

const baselineSend: Sender = async (url, image, topK, timeoutMs) => {
  const res = await post(url, "/classify", { "content-type": "application/octet-stream" }, image, timeoutMs);
  if (res.status !== 200) throw new ConnectError(`HTTP ${res.status}: ${res.body.toString("utf8").slice(0, 200)}`, codeFromHttpStatus(res.status));
  const answer = JSON.parse(res.body.toString("utf8")) as { labels?: unknown[] };
  if (!Array.isArray(answer.labels) || answer.labels.length < Math.min(topK, 5)) throw new ConnectError("baseline answered no labels", Code.Internal);
  const t = serverTiming(res.headers["server-timing"]);
  const get = (k: string) => t.get(k) ?? 0;
  return { cached: false, timings: t.size === 0 ? undefined : { preprocessMs: get("preprocess"), queueMs: 0, inferenceMs: get("inference"), totalMs: get("total"), batchSize: 1 } };
};

const senders: Record<LoadProtocol, Sender> = { grpc: grpcSend, "connect-h1": connectH1Send, "baseline-h1": baselineSend };

const pools = new Map<string, Buffer[]>();
const toBuffer = (u: Uint8Array) => Buffer.from(u.buffer, u.byteOffset, u.byteLength);

async function run(req: StepRequest): Promise<WorkerMessage> {
  const sums = { n: 0, preprocessMs: 0, queueMs: 0, inferenceMs: 0, totalMs: 0, batchSize: 0, cached: 0 };
  const sender = senders[req.protocol];
  let images: Buffer[];
  let imageAt: (i: number, image: Buffer) => Buffer = (_i, image) => image;
  if (Array.isArray(req.images)) images = (req.images as readonly Uint8Array[]).map(toBuffer);
  else {
    const recipe = req.images as ImageRecipe;
    const pool = pools.get(recipe.pool);
    if (pool === undefined || pool.length === 0) throw new Error(`no image pool "${recipe.pool}" in the load client`);
    // The loops index `images`; each image is made when it is sent (a 12 MP set would not fit in a message).
    images = recipe.keys.map(() => pool[0]!);
    imageAt = (i) => recipeImage(pool, recipe.label, recipe.keys[i]!);
  }
  const send = async (image: Buffer, i: number) => {
    const res = await sender(req.urls[i % req.urls.length]!, imageAt(i, image), req.topK, req.timeoutMs);
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

port.on("message", (msg: StepRequest | PoolMessage) => {
  if (msg.type === "pool") {
    pools.set(msg.name, msg.images.map(toBuffer));
    return;
  }
  run(msg).then(
    (out) => port.postMessage(out),
    (err: unknown) => port.postMessage({ type: "failed", id: msg.id, error: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies WorkerMessage),
  );
});

// "PID/task/TID": lets the resource monitor name this thread in its per-thread CPU.
const tid = Number(readlinkSync("/proc/thread-self").split("/").pop());
port.postMessage({ type: "ready", tid } satisfies WorkerMessage);
