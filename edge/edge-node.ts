import type { ConnectRouter } from "@connectrpc/connect";
import { CategorizeService } from "../gen/categorize/v1/categorize_pb.js";
import type { Config } from "../common/config.js";
import type { Logger } from "../common/logger.js";
import type { Metrics } from "../common/metrics.js";
import type { HttpRoute } from "../common/server/node-host.js";
import type { ReadinessCheck } from "../common/server/readiness.js";
import type { Closable } from "../common/shutdown.js";
import { registerCategorizeService } from "./categorize-service.js";
import { createCorePool, type CorePool } from "./core-pool.js";
import { createEdgeClassifier, type EdgeClassifier } from "./edge-classifier.js";
import { createPageRoute } from "./page-route.js";
import type { KafkaBus } from "../common/kafka.js";
import type { ObjectStore } from "../common/object-store.js";
import { createInProcessJobQueue, createKafkaJobQueue } from "./job-queue.js";
import { setLibvipsThreads } from "./preprocess.js";
import type { ThreadBudget } from "../common/thread-budget.js";

/** Edge's parts, ready to be put on a port. */
export interface EdgeNode {
  readonly cores: CorePool;
  readonly classifier: EdgeClassifier;
  readonly service: typeof CategorizeService;
  readonly routes: (router: ConnectRouter) => void;
  readonly httpRoutes: readonly HttpRoute[];
  readonly checks: readonly ReadinessCheck[];
  readonly closables: readonly Closable[];
}

export function createEdgeNode(
  config: Config,
  deps: { logger: Logger; metrics: Metrics; shutdownSignal: AbortSignal; objects: ObjectStore | undefined; bus: KafkaBus | undefined; internalSecret: string | undefined; budget: ThreadBudget },
): EdgeNode {
  const e = config.edge;
  const cores = createCorePool({ urls: e.coreUrls, tls: e.coreTls, retryAttempts: e.retryAttempts, internalSecret: deps.internalSecret, logger: deps.logger, metrics: deps.metrics });
  const jobs =
    deps.bus === undefined
      ? createInProcessJobQueue((item) => cores.infer(item, { signal: AbortSignal.timeout(e.requestTimeoutMs), deadline: Date.now() + e.requestTimeoutMs }), deps.logger)
      : createKafkaJobQueue(deps.bus);
  const concurrency = deps.budget.preprocessConcurrency;
  setLibvipsThreads(deps.budget.vipsThreads);
  const classifier = createEdgeClassifier({
    cores,
    metrics: deps.metrics,
    limits: { maxImageBytes: e.maxImageBytes, maxPixels: e.maxImagePixels, maxDimension: e.maxImageDimension, decodeTimeoutMs: e.decodeTimeoutMs },
    cacheMaxEntries: e.cacheMaxEntries,
    cacheTtlMs: e.cacheTtlMs,
    preprocessConcurrency: concurrency,
    // Enough to keep every core's window busy; beyond it the edge sheds load.
    maxWaiting: Math.max(64, concurrency * 32),
    shutdownSignal: deps.shutdownSignal,
    objects: deps.objects,
    jobs,
  });
  return {
    cores,
    classifier,
    service: CategorizeService,
    routes: (router) => registerCategorizeService(router, { classifier, cores, requestTimeoutMs: e.requestTimeoutMs, streamWindow: e.streamWindow }),
    httpRoutes: config.server.servePage ? [createPageRoute()] : [],
    checks: [
      {
        name: "core",
        check: () => {
          // Ready only while some core is: an edge in front of unready cores would take traffic it can only refuse.
          if (!cores.anyServing()) {
            const states = cores.states();
            const describe = (st: (typeof states)[number]) => `${st.url}: ${st.state === "ready" && !st.serving ? "not serving" : st.state}`;
            return Promise.reject(new Error(states.length === 0 ? "no core configured" : `no core serving (${states.map(describe).join(", ")})`));
          }
          return Promise.resolve();
        },
      },
      ...(deps.objects === undefined ? [] : [{ name: "objects", check: (signal: AbortSignal) => deps.objects!.ping(signal) }]),
      // Only ClassifyAsync needs the broker (it answers UNAVAILABLE meanwhile); synchronous calls go on.
      ...(deps.bus === undefined ? [] : [{ name: "kafka", critical: false, check: () => deps.bus!.ping() }]),
    ],
    closables: [{ name: "core streams", close: (signal) => cores.close(signal) }],
  };
}
