import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { lookup } from "node:dns/promises";
import { ALL_TENANTS_HEADER, TENANT_HEADER } from "../common/tenant.js";
import { setMaxListeners } from "node:events";
import { isIP } from "node:net";
import { readFileSync } from "node:fs";
import type { ClassifyResponse, GetQualityResponse, ListCategoriesResponse, SubmitFeedbackResponse } from "../gen/categorize/v1/categorize_pb.js";
import {
  InferRequestSchema,
  InferenceService,
  type GetModelInfoResponse,
  type InferRequest,
  type InferResponse,
} from "../gen/categorize/v1/inference_pb.js";
import { createAsyncQueue, type AsyncQueue } from "../common/async-queue.js";
import { CategorizeError, Code, codeName, deadlineExceeded, resourceExhausted, toCategorizeError, unavailable } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import { sleep } from "../common/sleep.js";
import { INTERNAL_SECRET_HEADER } from "../common/server/access-control.js";
import type { Metrics } from "../common/metrics.js";
import { injectTraceContext } from "../common/spans.js";
import { Health, HealthCheckResponse_ServingStatus as ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { trace } from "@opentelemetry/api";

/** TLS material for edge -> core (mTLS when a client certificate is given). */
export interface CoreTls {
  readonly caFile: string;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

/** One inference request before the pool assigns its stream id. */
export type InferItem = Omit<InferRequest, "id" | "$typeName" | "$unknown">;

/** The edge's view of all cores: balanced, retried, bounded. */
export interface CorePool {
  /** Resolves when at least one core answered, or rejects when the signal aborts first. */
  waitReady(signal: AbortSignal): Promise<void>;
  /** Sends one tensor to a core; retries on another core if its core fails. */
  infer(item: InferItem, options: { signal: AbortSignal; deadline: number }): Promise<ClassifyResponse>;
  /** The stored answer of an image this tenant sent, or NOT_FOUND. */
  lookup(sha256: string, topK: number, tenant: string, signal: AbortSignal): Promise<ClassifyResponse>;
  /** Forwards feedback of this tenant to a core. */
  feedback(req: { sha256: string; trueClass: number; source: string }, tenant: string, signal: AbortSignal): Promise<SubmitFeedbackResponse>;
  /** Removes this tenant's reference to an image on a core (the store is shared by all cores), or NOT_FOUND. */
  forget(sha256: string, tenant: string, signal: AbortSignal): Promise<void>;
  /** The taxonomy a core scores categories with (every core of a fleet runs the same configuration). */
  listCategories(signal: AbortSignal): Promise<ListCategoriesResponse>;
  /** Model quality from a core (cores share the feedback store, so any one answers for all): this tenant's, or everyone's with each tenant's beside it for an admin (tenant undefined). */
  quality(req: { topWrong: number }, tenant: string | undefined, signal: AbortSignal): Promise<GetQualityResponse>;
  /**
   * Adds a core at run time (the embedded node adds itself once its port is
   * known). Its health is not followed: it shares the node's readiness, which
   * would otherwise wait on itself. With `local`, the core in this process is
   * called through that transport (no serialization); `url` names it.
   */
  addCore(url: string, local?: Transport): void;
  /** Model facts of a connected core, undefined while none is connected. */
  modelInfo(): GetModelInfoResponse | undefined;
  /** Per-core state for readiness and tests; serving is the core's own grpc.health.v1 status. */
  states(): { url: string; state: ChannelState; serving: boolean; inFlight: number }[];
  /** True when some core has an open stream and reports SERVING. */
  anyServing(): boolean;
  close(signal: AbortSignal): Promise<void>;
}

type ChannelState = "connecting" | "ready" | "down" | "closed";

interface Pending {
  readonly resolve: (r: ClassifyResponse) => void;
  readonly reject: (e: CategorizeError) => void;
}

interface Channel {
  readonly url: string;
  /** Aborted when discovery drops this address. */
  readonly stop: AbortController;
  /** Address no longer resolved: takes no new requests, closes once drained. */
  retiring: boolean;
  state: ChannelState;
  /** The core's readiness, followed through grpc.health.v1 Watch: a core that is not ready gets no requests. */
  serving: boolean;
  readonly followsHealth: boolean;
  info: GetModelInfoResponse | undefined;
  inFlight: number;
  readonly pending: Map<string, Pending>;
  requests: AsyncQueue<InferRequest> | undefined;
  readonly client: Client<typeof InferenceService>;
  readonly health: Client<typeof Health>;
}

/**
 * Persistent InferenceService streams to every configured core. Requests go
 * round-robin to ready cores with free window; a core whose stream breaks
 * is marked down, its outstanding requests are re-sent to another core
 * (core dedups by hash, so a request that did finish is not run twice), and
 * the stream reconnects with backoff. When every ready core's window is full
 * the edge answers RESOURCE_EXHAUSTED instead of queuing.
 */
export function createCorePool(options: {
  urls: readonly string[];
  tls?: CoreTls | undefined;
  retryAttempts: number;
  /** How often core names are resolved again (new pods join, gone ones drain). */
  discoveryMs?: number;
  /** Name resolution (tests replace it); the system resolver by default. */
  resolve?: (host: string) => Promise<{ address: string; family: number }[]>;
  /** Sent on every call so the core knows an edge is calling. */
  internalSecret?: string | undefined;
  logger: Logger;
  metrics: Metrics;
}): CorePool {
  const { logger, metrics } = options;
  const closing = new AbortController();
  // Not tied to the shutdown signal: in-flight requests finish during the drain, then close() ends the streams.
  const lifetime = closing.signal;
  // Every in-flight request listens on it; their number is bounded by the cores' windows.
  setMaxListeners(0, lifetime);
  const nodeOptions =
    options.tls === undefined
      ? {}
      : {
          ca: readFileSync(options.tls.caFile),
          ...(options.tls.certFile === undefined ? {} : { cert: readFileSync(options.tls.certFile) }),
          ...(options.tls.keyFile === undefined ? {} : { key: readFileSync(options.tls.keyFile) }),
        };
  const secret = options.internalSecret;
  const newChannel = (url: string, servername?: string, followsHealth = true, local?: Transport): Channel => {
    const transport = local ?? createGrpcTransport({
      baseUrl: url,
      // Pings find a silently dead core; a killed process closes its sockets at once anyway.
      pingIntervalMs: 5_000,
      pingTimeoutMs: 5_000,
      idleConnectionTimeoutMs: 60_000,
      readMaxBytes: 64 * 1024 * 1024,
      // Dialled by address, verified by name.
      nodeOptions: servername === undefined || options.tls === undefined ? nodeOptions : { ...nodeOptions, servername },
      interceptors: secret === undefined ? [] : [(next) => (req) => (req.header.set(INTERNAL_SECRET_HEADER, secret), next(req))],
    });
    return {
      url,
      stop: new AbortController(),
      retiring: false,
      state: "connecting",
      serving: false,
      followsHealth,
      info: undefined,
      inFlight: 0,
      pending: new Map(),
      requests: undefined,
      client: createClient(InferenceService, transport),
      health: createClient(Health, transport),
    };
  };
  const channels: Channel[] = [];
  let nextId = 0;
  let rr = 0;
  const readyWaiters = new Set<() => void>();

  const usable = (c: Channel) => c.state === "ready" && c.serving;
  const publishStates = () => {
    for (const s of ["connecting", "ready", "down"] as const) metrics.coreStreams.set({ state: s }, channels.filter((c) => c.state === s).length);
    metrics.coreStreams.set({ state: "not_serving" }, channels.filter((c) => c.state === "ready" && !c.serving).length);
    if (channels.some(usable)) for (const w of readyWaiters) w();
  };

  async function checkServing(ch: Channel, signal: AbortSignal): Promise<boolean> {
    try {
      return (await ch.health.check({ service: InferenceService.typeName }, { signal })).status === ServingStatus.SERVING;
    } catch (err) {
      if (isUnimplemented(err)) return true;
      throw err;
    }
  }

  /**
   * Follows the core's readiness while its stream is open. A core without
   * the health service counts as serving (its answers on the stream still
   * say what it can do); a Watch that breaks is opened again with backoff,
   * the last status standing meanwhile.
   */
  async function followHealth(ch: Channel, signal: AbortSignal): Promise<void> {
    let backoff = 200;
    while (!signal.aborted && ch.state === "ready") {
      try {
        for await (const res of ch.health.watch({ service: InferenceService.typeName }, { signal })) {
          const serving = res.status === ServingStatus.SERVING;
          backoff = 200;
          if (serving !== ch.serving) {
            ch.serving = serving;
            logger.info({ core: ch.url, serving }, serving ? "core serving" : "core not serving; sending it no requests");
            publishStates();
          }
        }
      } catch (err) {
        if (signal.aborted) return;
        if (isUnimplemented(err) && !ch.serving) {
          ch.serving = true;
          publishStates();
          return;
        }
      }
      await sleep(backoff, signal).catch(() => undefined);
      backoff = Math.min(backoff * 2, 2_000);
    }
  }

  function failChannel(ch: Channel, reason: string): void {
    if (ch.state === "closed") return;
    const wasReady = ch.state === "ready";
    ch.state = "down";
    ch.serving = false;
    ch.requests?.end();
    ch.requests = undefined;
    const err = unavailable(`core ${ch.url} stream ended: ${reason}`);
    for (const p of ch.pending.values()) p.reject(err);
    ch.pending.clear();
    ch.inFlight = 0;
    publishStates();
    if (wasReady) logger.warn({ core: ch.url, reason }, "core stream down");
  }

  async function connectLoop(ch: Channel): Promise<void> {
    let backoff = 100;
    const life = AbortSignal.any([lifetime, ch.stop.signal]);
    while (!life.aborted) {
      try {
        ch.state = "connecting";
        publishStates();
        const connectSignal = AbortSignal.any([life, AbortSignal.timeout(3_000)]);
        ch.info = await ch.client.getModelInfo({}, { signal: connectSignal });
        // Its first word decides whether requests go there at once; Watch follows changes.
        const first = !ch.followsHealth || (await checkServing(ch, connectSignal));
        const requests = createAsyncQueue<InferRequest>();
        ch.requests = requests;
        ch.state = "ready";
        ch.serving = first;
        backoff = 100;
        publishStates();
        const streamLife = new AbortController();
        if (ch.followsHealth) void followHealth(ch, AbortSignal.any([life, streamLife.signal]));
        logger.info({ core: ch.url, model: ch.info.model?.version }, "core stream ready");
        // A core may swap its model while serving: its facts are refreshed, not only read at connect.
        const refresh = setInterval(() => {
          ch.client.getModelInfo({}, { signal: AbortSignal.timeout(3_000) }).then(
            (info) => {
              if (ch.state === "ready") ch.info = info;
            },
            () => undefined,
          );
        }, 5_000);
        try {
          for await (const res of ch.client.infer(requests.iterate(life), { signal: life })) onResponse(ch, res);
        } finally {
          clearInterval(refresh);
          streamLife.abort();
        }
        failChannel(ch, "closed by core");
      } catch (err) {
        failChannel(ch, err instanceof Error ? err.message : String(err));
      }
      if (life.aborted) break;
      await sleep(backoff, life);
      backoff = Math.min(backoff * 2, 2_000);
    }
    ch.state = "closed";
    const i = channels.indexOf(ch);
    if (i >= 0 && ch.retiring) channels.splice(i, 1);
    publishStates();
  }

  /**
   * Keeps one stream per core address: literal addresses as given, names
   * (such as a headless Kubernetes Service) resolved to every address they
   * have, again every discoveryMs. A vanished address stops taking requests
   * and closes once its outstanding ones are answered.
   */
  async function discover(): Promise<void> {
    const wanted = new Map<string, string | undefined>();
    for (const raw of options.urls) {
      const u = new URL(raw);
      const host = u.hostname.replace(/^\[|\]$/g, "");
      if (isIP(host) !== 0 || host === "localhost") {
        wanted.set(raw.replace(/\/$/, ""), undefined);
        continue;
      }
      try {
        for (const a of await (options.resolve ?? ((h: string) => lookup(h, { all: true })))(host)) {
          wanted.set(`${u.protocol}//${a.family === 6 ? `[${a.address}]` : a.address}:${u.port || (u.protocol === "https:" ? "443" : "80")}`, host);
        }
      } catch (err) {
        logger.warn({ host, err: err instanceof Error ? err.message : String(err) }, "core address lookup failed; keeping the known addresses");
        for (const ch of channels) if (!ch.retiring) wanted.set(ch.url, undefined);
      }
    }
    for (const [url, servername] of wanted) {
      if (!channels.some((c) => c.url === url && !c.retiring)) {
        const ch = newChannel(url, servername);
        channels.push(ch);
        void connectLoop(ch);
      }
    }
    for (const ch of channels) {
      if (!wanted.has(ch.url) && !ch.retiring && !addedByHand.has(ch.url)) {
        ch.retiring = true;
        logger.info({ core: ch.url }, "core address no longer resolved; draining its stream");
        void (async () => {
          while (ch.inFlight > 0 && !lifetime.aborted) await sleep(50, lifetime);
          ch.stop.abort(unavailable("core address retired"));
        })();
      }
    }
    publishStates();
  }
  const addedByHand = new Set<string>();
  void discover();
  const discovery = setInterval(() => void discover(), options.discoveryMs ?? 10_000);
  discovery.unref();

  function onResponse(ch: Channel, res: InferResponse): void {
    const p = ch.pending.get(res.id);
    // A late answer for a request that already timed out is dropped, never delivered twice.
    if (p === undefined) return;
    ch.pending.delete(res.id);
    ch.inFlight--;
    metrics.coreInFlight.dec();
    if (res.outcome.case === "result") p.resolve(res.outcome.value);
    else if (res.outcome.case === "error") {
      const e = res.outcome.value;
      p.reject(new CategorizeError(e.code as Code, e.message, { retryable: e.retryable }));
    } else p.reject(new CategorizeError(Code.Internal, "core sent an empty answer"));
  }

  function pick(exclude: ReadonlySet<Channel>): Channel {
    const ready = channels.filter((c) => usable(c) && !c.retiring && !exclude.has(c));
    if (ready.length === 0) {
      if (channels.some(usable)) throw unavailable("no other core is available to retry on");
      const notServing = channels.filter((c) => c.state === "ready" && !c.serving).length;
      throw unavailable(notServing > 0 ? `no core is serving (${notServing} connected, not ready)` : "no core is available");
    }
    for (let i = 0; i < ready.length; i++) {
      const ch = ready[(rr + i) % ready.length]!;
      if (ch.inFlight < (ch.info?.maxInFlight ?? 1)) {
        rr = (rr + i + 1) % Math.max(ready.length, 1);
        return ch;
      }
    }
    throw resourceExhausted("all cores are at capacity; retry later");
  }

  function sendOnce(ch: Channel, item: InferItem, signal: AbortSignal): Promise<ClassifyResponse> {
    const id = `${++nextId}`;
    return new Promise<ClassifyResponse>((resolve, reject) => {
      const cleanup = () => signal.removeEventListener("abort", onAbort);
      const onAbort = () => {
        if (ch.pending.delete(id)) {
          ch.inFlight--;
          metrics.coreInFlight.dec();
        }
        cleanup();
        reject(toCategorizeError(signal.reason));
      };
      ch.pending.set(id, {
        resolve: (r) => {
          cleanup();
          resolve(r);
        },
        reject: (e) => {
          cleanup();
          reject(e);
        },
      });
      ch.inFlight++;
      metrics.coreInFlight.inc();
      signal.addEventListener("abort", onAbort, { once: true });
      ch.requests!.push(create(InferRequestSchema, { ...item, id }));
    });
  }

  const retryable = (e: CategorizeError) => e.code === Code.Unavailable || (e.code === Code.ResourceExhausted && e.retryable);

  publishStates();

  return {
    async waitReady(signal) {
      if (channels.some(usable)) return;
      await new Promise<void>((resolve, reject) => {
        const done = () => {
          readyWaiters.delete(done);
          resolve();
        };
        readyWaiters.add(done);
        signal.addEventListener("abort", () => {
          readyWaiters.delete(done);
          reject(unavailable("no core became ready in time"));
        }, { once: true });
      });
    },
    async infer(item, { signal, deadline }) {
      const tried = new Set<Channel>();
      const timeLeft = deadline - Date.now();
      if (timeLeft <= 0) throw deadlineExceeded("deadline passed before inference");
      const callSignal = AbortSignal.any([signal, lifetime, AbortSignal.timeout(timeLeft)]);
      for (let attempt = 0; ; attempt++) {
        if (callSignal.aborted) throw timeoutOr(callSignal);
        const ch = pick(tried);
        tried.add(ch);
        // On the edge.forward span: which core got it, and how many tries it took.
        forwardSpan()?.setAttributes({ "core.url": ch.url, "core.attempts": attempt + 1 });
        try {
          return await sendOnce(ch, { ...item, deadlineUnixMs: BigInt(deadline) }, callSignal);
        } catch (err) {
          const e = callSignal.aborted ? timeoutOr(callSignal) : toCategorizeError(err);
          if (!retryable(e) || attempt >= options.retryAttempts || callSignal.aborted) throw e;
          metrics.coreRetries.inc({ reason: e.code === Code.Unavailable ? "unavailable" : "exhausted" });
          forwardSpan()?.addEvent("retry", { "core.url": ch.url, "error.type": codeName(e.code) });
          logger.debug({ core: ch.url, code: e.code, attempt }, "retrying on another core");
          // Nowhere else to go: the error stands.
          if (!channels.some((c) => usable(c) && !tried.has(c))) throw e;
        }
      }
    },
    async lookup(sha256, topK, tenant, signal) {
      const ready = channels.filter(usable);
      if (ready.length === 0) throw unavailable("no core is available");
      const ch = ready[rr++ % ready.length]!;
      try {
        return await ch.client.lookupResult({ sha256, topK, tenant }, { signal, headers: injectTraceContext() });
      } catch (err) {
        throw toCategorizeError(err);
      }
    },
    async forget(sha256, tenant, signal) {
      const ready = channels.filter(usable);
      if (ready.length === 0) throw unavailable("no core is available");
      try {
        await ready[rr++ % ready.length]!.client.forgetImage({ sha256, tenant }, { signal, headers: injectTraceContext() });
      } catch (err) {
        throw toCategorizeError(err);
      }
    },
    addCore(url, local) {
      addedByHand.add(url);
      const ch = newChannel(url, undefined, false, local);
      channels.push(ch);
      void connectLoop(ch);
    },
    async listCategories(signal) {
      const ready = channels.filter(usable);
      if (ready.length === 0) throw unavailable("no core is available");
      try {
        return await ready[rr++ % ready.length]!.client.listCategories({}, { signal, headers: injectTraceContext() });
      } catch (err) {
        throw toCategorizeError(err);
      }
    },
    async feedback(req, tenant, signal) {
      const ready = channels.filter(usable);
      if (ready.length === 0) throw unavailable("no core is available");
      try {
        // SubmitFeedbackRequest is the public message: the tenant rides in a header.
        return await ready[rr++ % ready.length]!.client.recordFeedback(req, { signal, headers: { ...injectTraceContext(), [TENANT_HEADER]: tenant } });
      } catch (err) {
        throw toCategorizeError(err);
      }
    },
    async quality(req, tenant, signal) {
      const ready = channels.filter(usable);
      if (ready.length === 0) throw unavailable("no core is available");
      try {
        const who = tenant === undefined ? { [ALL_TENANTS_HEADER]: "1" } : { [TENANT_HEADER]: tenant };
        return await ready[rr++ % ready.length]!.client.readQuality(req, { signal, headers: { ...injectTraceContext(), ...who } });
      } catch (err) {
        throw toCategorizeError(err);
      }
    },
    // A connected core that is not ready still knows its model: preprocessing goes on meanwhile.
    modelInfo: () => (channels.find(usable) ?? channels.find((c) => c.state === "ready"))?.info,
    states: () => channels.map((c) => ({ url: c.url, state: c.state, serving: c.serving, inFlight: c.inFlight })),
    anyServing: () => channels.some(usable),
    async close(signal) {
      // Outstanding requests finish first (the edge drains before the pool closes).
      while (channels.some((c) => c.inFlight > 0) && !signal.aborted) await sleep(10, signal);
      clearInterval(discovery);
      closing.abort(unavailable("edge is shutting down"));
      for (const ch of channels) failChannel(ch, "edge shutting down");
      for (const ch of channels) ch.state = "closed";
    },
  };

  function timeoutOr(signal: AbortSignal): CategorizeError {
    const reason: unknown = signal.reason;
    if (reason instanceof DOMException && reason.name === "TimeoutError") return deadlineExceeded("deadline exceeded waiting for inference");
    return toCategorizeError(reason);
  }
}

const isUnimplemented = (err: unknown): boolean => err instanceof Error && "code" in err && (err as { code: unknown }).code === Code.Unimplemented;

/** The caller's active span while it is still open (an in-process async job runs after its span ended). */
function forwardSpan() {
  const span = trace.getActiveSpan();
  return span?.isRecording() === true ? span : undefined;
}
