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
}

/**
 * Starts the node's one port: the application services, grpc.health.v1,
 * server reflection, and HTTP /healthz, /health, /readyz and /metrics.
 */
export async function startNodeHost(options: NodeHostOptions): Promise<NodeServer> {
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
      for (const route of [...builtinRoutes(options), ...(options.httpRoutes ?? [])]) {
        if (route(req, res, url)) return;
      }
      sendJson(res, 404, { error: "not found" });
    },
  });
  return startNodeServer({
    host: config.server.host,
    port: config.server.port,
    tls: config.server.tls,
    clientCaFile: config.server.clientCaFile,
    logger,
    handler: withCors(rpc, config.access.corsOrigins),
  });
}

function builtinRoutes(options: NodeHostOptions): HttpRoute[] {
  return [
    (req, res, url) => {
      if (req.method !== "GET" && req.method !== "HEAD") return false;
      if (url.pathname === "/healthz" || url.pathname === "/health") {
        sendJson(res, 200, { status: "ok", node_id: options.config.nodeId, role: options.config.role });
        return true;
      }
      if (url.pathname === "/readyz") {
        const snap = options.readiness.snapshot();
        sendJson(res, snap.ready ? 200 : 503, snap);
        return true;
      }
      if (url.pathname === "/metrics") {
        options.metrics.registry.metrics().then(
          (text) => {
            res.writeHead(200, { "content-type": options.metrics.registry.contentType });
            res.end(text);
          },
          (err: unknown) => {
            options.logger.error({ err }, "metrics collection failed");
            sendJson(res, 500, { error: "metrics collection failed" });
          },
        );
        return true;
      }
      return false;
    },
  ];
}

/** Writes a JSON response. */
export function sendJson(res: Res, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json; charset=utf-8", "cache-control": "no-store" });
  res.end(text);
}
