import { cors as connectCors } from "@connectrpc/connect";
import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import type { NodeRequestHandler } from "./node-server.js";

/**
 * CORS for browsers (Connect-web, gRPC-Web) restricted to configured origins.
 * Same-origin requests (the page served by the edge) need none of it; a
 * preflight from an origin not on the list is refused.
 */
export function withCors(handler: NodeRequestHandler, allowedOrigins: readonly string[]): NodeRequestHandler {
  const allowed = new Set(allowedOrigins);
  const allowHeaders = [...connectCors.allowedHeaders, "Authorization", "Traceparent", "Tracestate"].join(", ");
  const exposeHeaders = [...connectCors.exposedHeaders, "Retry-After-Ms"].join(", ");
  return (req: IncomingMessage | Http2ServerRequest, res) => {
    const origin = req.headers.origin;
    if (typeof origin === "string" && origin !== "" && !isSameOrigin(req, origin)) {
      if (!allowed.has(origin) && !allowed.has("*")) {
        if (req.method === "OPTIONS") {
          res.writeHead(403, { "content-type": "text/plain" });
          res.end("origin not allowed\n");
          return;
        }
        // Without the CORS headers the browser withholds the answer.
        handler(req, res);
        return;
      }
      res.setHeader("access-control-allow-origin", origin);
      res.setHeader("vary", "Origin");
      res.setHeader("access-control-expose-headers", exposeHeaders);
      if (req.method === "OPTIONS") {
        res.writeHead(204, {
          "access-control-allow-methods": connectCors.allowedMethods.join(", "),
          "access-control-allow-headers": allowHeaders,
          "access-control-max-age": "7200",
        });
        res.end();
        return;
      }
    }
    handler(req, res);
  };
}

function isSameOrigin(req: IncomingMessage | Http2ServerRequest, origin: string): boolean {
  const host = req.headers[":authority"] ?? req.headers.host;
  try {
    return typeof host === "string" && new URL(origin).host === host;
  } catch {
    return false;
  }
}
