import type { DescService } from "@bufbuild/protobuf";
import type { Config } from "../common/config.js";
import { createLogger, type Logger } from "../common/logger.js";
import { createMetrics, type Metrics } from "../common/metrics.js";
import { randomBytes } from "node:crypto";
import { keepByteOrderMarks } from "../common/text-encoding.js";
import { createAccessControl } from "../common/server/access-control.js";
import { startNodeHost } from "../common/server/node-host.js";
import { createReadiness, type Readiness } from "../common/server/readiness.js";
import { createShutdown, type Closable } from "../common/shutdown.js";
import { startTracing } from "../common/tracing.js";
import type { CoreNode } from "../core/core-node.js";
import type { EdgeNode } from "../edge/edge-node.js";
import { openInfrastructure } from "./infrastructure.js";
import { planThreadBudget, threadBudgetGauge } from "../common/thread-budget.js";
import type pino from "pino";

/** A running node: its URL and the handles tests and the CLI need. */
export interface RunningNode {
  readonly url: string;
  readonly port: number;
  /** The operations listener (/healthz, /readyz, /metrics) when ADMIN_PORT is set. */
  readonly adminUrl: string | undefined;
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly readiness: Readiness;
  readonly core: CoreNode | undefined;
  readonly edge: EdgeNode | undefined;
  /** Graceful stop: not ready, stop accepting, drain, close in reverse order. */
  stop(reason?: string): Promise<void>;
}

/**
 * Starts one node (edge, core, or both in one process) on one port.
 * The embedded node ("all") points its edge at its own port, so the
 * edge -> core path is the same gRPC stream as in a distributed deployment.
 */
export async function startNode(config: Config, options: { logDestination?: pino.DestinationStream } = {}): Promise<RunningNode> {
  keepByteOrderMarks();
  const service = `categorize-${config.role}`;
  const logger = createLogger({ level: config.logLevel, service, nodeId: config.nodeId, ...(options.logDestination === undefined ? {} : { destination: options.logDestination }) });
  // Before anything that makes spans; off (nothing registered) unless an OTEL_* variable asks for it.
  const tracing = await startTracing({ serviceName: service, nodeId: config.nodeId, enabled: config.tracing.enabled });
  const metrics = createMetrics({ node_role: config.role, node_id: config.nodeId });
  const readiness = createReadiness({ intervalMs: config.readinessIntervalMs, logger, metrics });
  const shutdown = createShutdown({ graceMs: config.shutdownGraceMs, logger, onNotReady: () => readiness.setDraining() });
  // Closed in reverse order of registration, so tracing, opened first, is closed last: it flushes the spans of the drain too.
  const opened: Closable[] = [tracing];
  try {
    const infra = await openInfrastructure(config, { logger, metrics });
    infra.closables.forEach((c) => opened.push(c));
    // The embedded node's core listens on the public port too: a random secret keeps InferenceService internal.
    const internalSecret = config.access.internalSecret ?? (config.role === "all" ? randomBytes(24).toString("hex") : undefined);
    const budget = planThreadBudget(config);
    for (const [kind, n] of threadBudgetGauge(budget)) metrics.threadBudget.set({ kind }, n);
    logger.info({ threads: budget, store: config.store.kind }, "thread budget");
    const deps = { logger, metrics, shutdownSignal: shutdown.signal, objects: infra.objects, bus: infra.bus, internalSecret, budget };
    // Loaded by role: an edge image carries no onnxruntime, a core image no sharp.
    const core = config.role === "edge" ? undefined : await (await import("../core/core-node.js")).createCoreNode(config, deps);
    core?.closables.forEach((c) => opened.push(c));
    // A separate edge keeps originals only in shared storage (S3); its own disk would be invisible to cores.
    // A node on the memory store keeps nothing across restarts, so it keeps no originals either.
    const edgeObjects = (config.role === "edge" && config.objects.s3 === undefined) || config.store.kind === "memory" ? undefined : infra.objects;
    const edge = config.role === "core" ? undefined : (await import("../edge/edge-node.js")).createEdgeNode(config, { ...deps, objects: edgeObjects });
    const services: DescService[] = [...(edge === undefined ? [] : [edge.service]), ...(core === undefined ? [] : [core.service])];
    const access = await createAccessControl({ ...config.access, internalSecret }, logger);
    const server = await startNodeHost({
      config,
      logger,
      metrics,
      readiness,
      shutdownSignal: shutdown.signal,
      services,
      readMaxBytes: config.edge.maxImageBytes + 64 * 1024,
      routes(router) {
        edge?.routes(router);
        core?.routes(router);
      },
      httpRoutes: edge?.httpRoutes ?? [],
      interceptors: [access.interceptor],
      operatorAccess: (authorization) => access.allowOperator(authorization),
    });
    opened.push({ name: "server", close: (signal) => server.close(signal) });
    // Closed before the server: edge requests drain, then the streams to core end.
    edge?.closables.forEach((c) => opened.push(c));
    // The embedded node's edge calls its own core in process (IN_PROCESS_CORE=false: over its gRPC port, as a distributed edge does).
    if (edge !== undefined && core !== undefined) edge.cores.addCore(server.url, config.edge.inProcessCore ? core.inProcess : undefined);
    for (const check of [...(core?.checks ?? []), ...(edge?.checks ?? [])]) readiness.add(check);
    opened.forEach((c) => shutdown.register(c));
    opened.length = 0;
    if (edge !== undefined) await edge.cores.waitReady(AbortSignal.timeout(10_000)).catch(() => logger.warn("no core reachable yet; the edge is not ready"));
    await readiness.start(shutdown.signal);
    logger.info({ url: server.url, adminUrl: server.admin?.url, role: config.role, tls: config.server.tls !== undefined, tracing: tracing.enabled }, "node listening");
    return {
      url: server.url,
      port: server.port,
      adminUrl: server.admin?.url,
      config,
      logger,
      metrics,
      readiness,
      core,
      edge,
      stop: (reason = "stop requested") => shutdown.run(reason),
    };
  } catch (err) {
    // Start-up failed half way: close what was opened, newest first.
    for (const c of opened.reverse()) await c.close(AbortSignal.timeout(2_000)).catch(() => undefined);
    throw err;
  }
}
