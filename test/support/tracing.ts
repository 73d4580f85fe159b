import { context, propagation, trace } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from "@opentelemetry/sdk-trace-base";
import { NodeTracerProvider } from "@opentelemetry/sdk-trace-node";

/** Spans of this test process, kept in memory. */
export interface TestTracing {
  readonly provider: NodeTracerProvider;
  spans(): ReadableSpan[];
  /** Every finished span of one trace. */
  trace(traceId: string): ReadableSpan[];
  reset(): void;
  uninstall(): Promise<void>;
}

/**
 * Registers an in-memory tracer in this process (AsyncLocalStorage context,
 * W3C propagation), as a node with tracing on would register the OTLP one.
 * Nodes started in-process with tracing off leave it in place.
 */
export function installTestTracing(): TestTracing {
  const exporter = new InMemorySpanExporter();
  const provider = new NodeTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  provider.register({ contextManager: new AsyncLocalStorageContextManager(), propagator: new W3CTraceContextPropagator() });
  return {
    provider,
    spans: () => exporter.getFinishedSpans(),
    trace: (traceId) => exporter.getFinishedSpans().filter((s) => s.spanContext().traceId === traceId),
    reset: () => exporter.reset(),
    async uninstall() {
      await provider.shutdown();
      trace.disable();
      propagation.disable();
      context.disable();
    },
  };
}

/** The parent span id of a finished span ("" for a root). */
export function parentId(span: ReadableSpan): string {
  return span.parentSpanContext?.spanId ?? "";
}
