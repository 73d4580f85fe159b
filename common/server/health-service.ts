import { create } from "@bufbuild/protobuf";
import type { ConnectRouter } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { Health, HealthCheckResponseSchema, HealthCheckResponse_ServingStatus as Status } from "../../gen/grpc/health/v1/health_pb.js";
import type { Readiness } from "./readiness.js";

/**
 * grpc.health.v1.Health over the node's readiness: "" and every service this
 * node serves report SERVING while the node is ready, NOT_SERVING otherwise.
 */
export function registerHealthService(router: ConnectRouter, readiness: Readiness, services: readonly string[], shutdownSignal: AbortSignal): void {
  const known = new Set(["", ...services]);
  const status = (ready: boolean) => (ready ? Status.SERVING : Status.NOT_SERVING);
  router.service(Health, {
    check(req) {
      if (!known.has(req.service)) throw new ConnectError(`unknown service '${req.service}'`, Code.NotFound);
      return create(HealthCheckResponseSchema, { status: status(readiness.isReady()) });
    },
    async *watch(req, ctx) {
      if (!known.has(req.service)) {
        yield create(HealthCheckResponseSchema, { status: Status.SERVICE_UNKNOWN });
        return;
      }
      const signal = AbortSignal.any([ctx.signal, shutdownSignal]);
      let previous: Status | undefined;
      for await (const ready of readiness.watch(signal)) {
        const next = status(ready);
        if (next !== previous) {
          previous = next;
          yield create(HealthCheckResponseSchema, { status: next });
        }
      }
    },
  });
}
