import { context, propagation, trace } from "@opentelemetry/api";
import type { Closable } from "./shutdown.js";

/** The process's tracing: a no-op when off; a Closable that flushes and unregisters when on. */
export interface Tracing extends Closable {
  readonly enabled: boolean;
  /** Flushes pending spans and unregisters the SDK; safe to call twice. */
  shutdown(): Promise<void>;
}

/**
 * Registers OpenTelemetry tracing for this process when `enabled`
 * (config.tracing.enabled: OTEL_TRACES_EXPORTER=otlp or an OTLP endpoint):
 * a NodeTracerProvider (AsyncLocalStorage context) with a BatchSpanProcessor
 * and the OTLP http/protobuf exporter, and the W3C trace-context propagator.
 * The exporter, sampler and batch processor read the standard OTEL_*
 * variables themselves (endpoint, headers, timeout, OTEL_TRACES_SAMPLER,
 * OTEL_BSP_*); OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override the
 * resource given here.
 *
 * When off nothing is registered or even loaded: the API stays the no-op,
 * and a provider a test registered itself is left alone.
 */
export async function startTracing(options: { serviceName: string; nodeId: string; enabled: boolean }): Promise<Tracing> {
  if (!options.enabled) {
    return { name: "tracing", enabled: false, close: () => Promise.resolve(), shutdown: () => Promise.resolve() };
  }
  // Loaded only when tracing is on, so a node without it carries no SDK.
  const [{ W3CTraceContextPropagator }, { NodeTracerProvider }, { BatchSpanProcessor }, { OTLPTraceExporter }, resources] = await Promise.all([
    import("@opentelemetry/core"),
    import("@opentelemetry/sdk-trace-node"),
    import("@opentelemetry/sdk-trace-base"),
    import("@opentelemetry/exporter-trace-otlp-proto"),
    import("@opentelemetry/resources"),
  ]);
  const { ATTR_SERVICE_NAME } = await import("@opentelemetry/semantic-conventions");
  const resource = resources
    .defaultResource()
    .merge(resources.resourceFromAttributes({ [ATTR_SERVICE_NAME]: options.serviceName, "service.instance.id": options.nodeId }))
    .merge(resources.detectResources({ detectors: [resources.envDetector] }));
  const provider = new NodeTracerProvider({ resource, spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())] });
  provider.register({ propagator: new W3CTraceContextPropagator() });

  let done: Promise<void> | undefined;
  const shutdown = () =>
    (done ??= provider
      .shutdown()
      .catch(() => undefined)
      .finally(() => {
        trace.disable();
        propagation.disable();
        context.disable();
      }));
  return {
    name: "tracing",
    enabled: true,
    shutdown,
    // Bounded by the shutdown grace: an unreachable collector must not hold the process.
    close: (signal) =>
      new Promise<void>((resolve) => {
        void shutdown().then(resolve);
        if (signal.aborted) resolve();
        else signal.addEventListener("abort", () => resolve(), { once: true });
      }),
  };
}
