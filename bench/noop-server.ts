import { create } from "@bufbuild/protobuf";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { pathToFileURL } from "node:url";
import { CategorizeService, ClassifyResponseSchema } from "../gen/categorize/v1/categorize_pb.js";
import { createLogger } from "../common/logger.js";
import { startNodeServer, type NodeServer } from "../common/server/node-server.js";

/**
 * The baseline of the cache-hit comparison: the node's server stack (one
 * port, h2c/HTTP/1.1 sniffing in startNodeServer, connect-node adapter)
 * serving CategorizeService.Classify with an empty ClassifyResponse and
 * nothing else: what parsing the request and framing the answer cost.
 */
export async function startNoopServer(options: { host?: string; port?: number; readMaxBytes?: number } = {}): Promise<NodeServer> {
  const handler = connectNodeAdapter({
    // The same message limit a node uses for the default MAX_IMAGE_BYTES (20 MiB + 64 KiB).
    readMaxBytes: options.readMaxBytes ?? 20 * 1024 * 1024 + 64 * 1024,
    routes(router) {
      router.service(CategorizeService, { classify: () => create(ClassifyResponseSchema) });
    },
  });
  return startNodeServer({
    host: options.host ?? "127.0.0.1",
    port: options.port ?? 0,
    handler,
    logger: createLogger({ level: "silent", service: "categorize-bench-noop", nodeId: `noop-${process.pid}` }),
  });
}

// `node --import tsx bench/noop-server.ts [PORT]`: serve it until SIGINT/SIGTERM (e.g. for k6).
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const server = await startNoopServer({ port: Number(process.argv[2] ?? process.env.PORT ?? 0) });
  console.log(`no-op CategorizeService listening on ${server.url}`);
  const stop = () => void server.close(AbortSignal.timeout(2_000)).then(() => process.exit(0));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
}
