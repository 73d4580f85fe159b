import { createRegistry, type DescFile, type DescService } from "@bufbuild/protobuf";
import type { ConnectRouter, Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { OutgoingHttpHeaders } from "node:http";
import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { Config } from "../config.js";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import * as ReflectionV1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as ReflectionV1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { withCors } from "./cors.js";
import { registerHealthService } from "./health-service.js";
import { startNodeServer, type NodeServer } from "./node-server.js";
import type { AccessControl } from "./access-control.js";
import type { Readiness } from "./readiness.js";
import { registerReflectionService } from "./reflection-service.js";
import { createRpcObserver } from "./rpc-observer.js";

type Req = IncomingMessage | Http2ServerRequest;
/** The part of an HTTP/1.1 or HTTP/2 response a plain route uses. */
export interface HttpResponse {
  writeHead(status: number, headers?: OutgoingHttpHeaders): unknown;
  end(chunk?: string | Uint8Array): unknown;
}
type Res = HttpResponse;

/** Plain HTTP handler for a path not served by an RPC; returns false when it does not handle the request. */
export type HttpRoute = (req: Req, res: Res, url: URL) => boolean;

/** What a node puts on its one port. */
export interface NodeHostOptions {
  readonly config: Config;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly readiness: Readiness;
  readonly shutdownSignal: AbortSignal;
  /** The application services, for health and reflection. */
  readonly services: readonly DescService[];
  readonly routes: (router: ConnectRouter) => void;
  readonly httpRoutes?: readonly HttpRoute[];
  readonly interceptors?: readonly Interceptor[];
  /** Largest message accepted by any RPC. */
  readonly readMaxBytes: number;
  /** Who may read /metrics and readiness details on the public port (when there is no admin port). */
  readonly operatorAccess: AccessControl["allowOperator"];
}

/** The node's listeners: the public port, and the operations port when configured. */
export interface NodeHost extends NodeServer {
  readonly admin: NodeServer | undefined;
}

/**
 * Starts the node's one port: the application services, grpc.health.v1,
 * server reflection, and HTTP /healthz, /health, /readyz and /metrics.
 * With an admin port configured, /readyz and /metrics move there (plain
 * HTTP for probes and scrapers inside the cluster) and the public port
 * keeps only /healthz; without one, /metrics and readiness details on the
 * public port need the admin scope, unless the node runs open on loopback.
 */
export async function startNodeHost(options: NodeHostOptions): Promise<NodeHost> {
  const { config, logger, metrics, readiness } = options;
  const files = new Set<DescFile>();
  const addFile = (f: DescFile): void => {
    if (files.has(f)) return;
    files.add(f);
    f.dependencies.forEach(addFile);
  };
  // Health and reflection are described too, so grpcurl and buf curl can call them without .proto files.
  const described = [...options.services, Health, ReflectionV1.ServerReflection, ReflectionV1alpha.ServerReflection];
  described.forEach((s) => addFile(s.file));
  const registry = createRegistry(...files);
  const rpc = connectNodeAdapter({
    readMaxBytes: options.readMaxBytes,
    // No shutdownSignal here: it would cancel in-flight calls; the drain lets them finish.
    interceptors: [createRpcObserver(metrics, logger), ...(options.interceptors ?? [])],
    routes(router) {
      options.routes(router);
      registerHealthService(router, readiness, options.services.map((s) => s.typeName), options.shutdownSignal);
      registerReflectionService(router, registry, described);
    },
    fallback(req, res) {
      const url = new URL(req.url ?? "/", "http://node");
      // Liveness stays on the public port (it says only that this listener answers).
      const ops = config.server.admin === undefined ? operationsRoute(options, options.operatorAccess) : livenessRoute(options);
      for (const route of [ops, ...(options.httpRoutes ?? [])]) {
        if (route(req, res, url)) return;
      }
      sendJson(res, 404, { error: "not found" });
    },
  });
  // Started first and closed last: probes and scrapes keep answering (not ready) through the drain.
  let admin: NodeServer | undefined;
  if (config.server.admin !== undefined) {
    const route = operationsRoute(options, undefined);
    admin = await startNodeServer({
      host: config.server.admin.host,
      port: config.server.admin.port,
      logger,
      handler: (req, res) => {
        const url = new URL(req.url ?? "/", "http://node");
        if (!route(req, res, url)) sendJson(res, 404, { error: "not found" });
      },
    });
  }
  let server: NodeServer;
  try {
    server = await startNodeServer({
      host: config.server.host,
      port: config.server.port,
      tls: config.server.tls,
      clientCaFile: config.server.clientCaFile,
      logger,
      handler: withCors(rpc, config.access.corsOrigins),
    });
  } catch (err) {
    await admin?.close(AbortSignal.timeout(0));
    throw err;
  }
  return {
    port: server.port,
    url: server.url,
    admin,
    async close(signal) {
      await server.close(signal);
      await admin?.close(signal);
    },
  };
}

function livenessRoute(options: NodeHostOptions): HttpRoute {
  const ops = operationsRoute(options, undefined);
  return (req, res, url) => (url.pathname === "/healthz" || url.pathname === "/health") && ops(req, res, url);
}

/**
 * /healthz (/health), /readyz and /metrics. `access` undefined means the
 * listener itself is trusted (the admin port); otherwise metrics need an
 * operator and readiness details are shown to operators only (they name
 * internal hosts and errors).
 */
function operationsRoute(options: NodeHostOptions, access: AccessControl["allowOperator"] | undefined): HttpRoute {
  const authorization = (req: Req): string | null => {
    const h = req.headers.authorization;
    return typeof h === "string" ? h : null;
  };
  const denied = (res: Res, result: { status: 401 | 403; message: string }) => {
    res.writeHead(result.status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...(result.status === 401 ? { "www-authenticate": 'Bearer realm="categorize"' } : {}) });
    res.end(JSON.stringify({ error: result.message }));
  };
  const failed = (res: Res, err: unknown) => {
    options.logger.error({ err }, "operations route failed");
    sendJson(res, 500, { error: "internal error" });
  };
  return (req, res, url) => {
    if (req.method !== "GET" && req.method !== "HEAD") return false;
    if (url.pathname === "/healthz" || url.pathname === "/health") {
      sendJson(res, 200, { status: "ok", node_id: options.config.nodeId, role: options.config.role });
      return true;
    }
    if (url.pathname === "/readyz") {
      const snap = options.readiness.snapshot();
      const status = snap.ready ? 200 : 503;
      if (access === undefined) sendJson(res, status, snap);
      else {
        access(authorization(req)).then(
          (allowed) => sendJson(res, status, allowed.ok ? snap : { ready: snap.ready, draining: snap.draining }),
          (err: unknown) => failed(res, err),
        );
      }
      return true;
    }
    if (url.pathname === "/metrics") {
      (access === undefined ? Promise.resolve({ ok: true } as const) : access(authorization(req)))
        .then(async (allowed) => {
          if (!allowed.ok) return denied(res, allowed);
          const text = await options.metrics.registry.metrics();
          res.writeHead(200, { "content-type": options.metrics.registry.contentType });
          res.end(text);
        })
        .catch((err: unknown) => failed(res, err));
      return true;
    }
    return false;
  };
}

/** Writes a JSON response. */
export function sendJson(res: Res, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  res.end(text);
}
