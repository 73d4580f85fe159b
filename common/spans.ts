import {
  context,
  propagation,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
} from "@opentelemetry/api";
import { codeName, toCategorizeError } from "./errors.js";

/**
 * Span helpers on the OpenTelemetry API only. Domain code (edge/, core/) uses
 * these; the SDK, when tracing is on, is registered by common/tracing.ts.
 * With tracing off every call here is the API's no-op.
 *
 * Attributes never carry image bytes or secrets: hashes, sizes, counts, codes.
 */

export { SpanKind, type Context, type Span };

/** The context in effect here (to parent a span started later inside another). */
export const activeContext = (): Context => context.active();

/** The tracer of this service (looked up per use, so a provider registered later is honoured). */
export function tracer() {
  return trace.getTracer("categorize");
}

/**
 * Runs fn inside a new active span, a child of `parent` (default: the active
 * context). A throw marks the span ERROR with the gRPC code name; the span
 * ends when fn settles.
 */
export function inSpan<T>(name: string, options: { attributes?: Attributes; kind?: SpanKind; parent?: Context }, fn: (span: Span) => Promise<T>): Promise<T> {
  const spanOptions = { ...(options.attributes === undefined ? {} : { attributes: options.attributes }), ...(options.kind === undefined ? {} : { kind: options.kind }) };
  return tracer().startActiveSpan(name, spanOptions, options.parent ?? context.active(), async (span) => {
    try {
      return await fn(span);
    } catch (err) {
      markError(span, err);
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Synchronous variant of {@link inSpan}, for short CPU work such as hashing. */
export function inSpanSync<T>(name: string, fn: (span: Span) => T): T {
  return tracer().startActiveSpan(name, (span) => {
    try {
      return fn(span);
    } catch (err) {
      markError(span, err);
      throw err;
    } finally {
      span.end();
    }
  });
}

/** Span status ERROR with the gRPC code name (INVALID_ARGUMENT, UNAVAILABLE, ...). */
export function markError(span: Span, err: unknown): void {
  const name = codeName(toCategorizeError(err).code);
  span.setStatus({ code: SpanStatusCode.ERROR, message: name });
  span.setAttribute("error.type", name);
}

/** The W3C trace context (traceparent, tracestate) of the active span, or of `ctx`; empty when no span is recording. */
export function injectTraceContext(ctx: Context = context.active()): Record<string, string> {
  const carrier: Record<string, string> = {};
  propagation.inject(ctx, carrier);
  return carrier;
}

/** Kafka header values are strings, Buffers or arrays of them. */
type HeaderValue = string | Buffer | readonly (string | Buffer)[] | undefined;

const recordGetter: TextMapGetter<Readonly<Record<string, HeaderValue>>> = {
  keys: (carrier) => Object.keys(carrier),
  get(carrier, key) {
    const v = carrier[key] ?? carrier[Object.keys(carrier).find((k) => k.toLowerCase() === key) ?? ""];
    if (v === undefined) return undefined;
    const one = (x: string | Buffer) => (typeof x === "string" ? x : x.toString("utf8"));
    return Array.isArray(v) ? (v as readonly (string | Buffer)[]).map(one) : one(v as string | Buffer);
  },
};

const headersGetter: TextMapGetter<Headers> = {
  keys(carrier) {
    const keys: string[] = [];
    carrier.forEach((_, k) => keys.push(k));
    return keys;
  },
  get: (carrier, key) => carrier.get(key) ?? undefined,
};

/**
 * The remote parent carried in a map (InferRequest.trace_context, Kafka
 * headers) or HTTP headers. Extracted onto the root context, so a carrier
 * without a traceparent starts a new trace rather than joining whatever
 * happens to be active (a long-lived stream's context).
 */
export function extractTraceContext(carrier: Readonly<Record<string, HeaderValue>> | Headers | undefined, base: Context = ROOT_CONTEXT): Context {
  if (carrier === undefined) return base;
  if (carrier instanceof Headers) return propagation.extract(base, carrier, headersGetter);
  return propagation.extract(base, carrier, recordGetter);
}

/** trace_id and span_id of the active span, for log lines; empty outside a valid span. */
export function activeTraceIds(): { trace_id: string; span_id: string } | Record<string, never> {
  const sc = trace.getActiveSpan()?.spanContext();
  if (sc === undefined || !trace.isSpanContextValid(sc)) return {};
  return { trace_id: sc.traceId, span_id: sc.spanId };
}
