import { create, type DescMessage, type DescMethod, type DescService, type MessageInitShape, type MessageShape } from "@bufbuild/protobuf";
import { Code, ConnectError, createHandlerContext, type HandlerContext, type StreamResponse, type Transport, type UnaryResponse } from "@connectrpc/connect";

type AnyImpl = (input: unknown, ctx: HandlerContext) => unknown;

/**
 * A Connect transport that calls a service implementation in this process:
 * the messages are handed over as objects, with no serialization, HTTP/2
 * framing or socket in between. The embedded node's edge reaches its own
 * core through it; a distributed edge uses the gRPC transport to the same
 * implementation. Server interceptors (access control, RPC metrics) are not
 * on this path: only code in this process can call it.
 */
export function createInProcessTransport<S extends DescService>(service: S, impl: Readonly<Record<string, unknown>>): Transport {
  const handler = (method: DescMethod): AnyImpl => {
    const fn = impl[method.localName];
    if (typeof fn !== "function") throw new ConnectError(`${service.typeName}/${method.name} is not implemented`, Code.Unimplemented);
    return fn as AnyImpl;
  };
  const context = (method: DescMethod, signal: AbortSignal | undefined, timeoutMs: number | undefined, header: HeadersInit | undefined) =>
    createHandlerContext({
      service,
      method,
      protocolName: "in-process",
      requestMethod: "POST",
      url: `in-process:///${service.typeName}/${method.name}`,
      ...(timeoutMs === undefined ? {} : { timeoutMs }),
      ...(signal === undefined ? {} : { requestSignal: signal }),
      ...(header === undefined ? {} : { requestHeader: header }),
    });
  const toError = (err: unknown) => ConnectError.from(err);
  async function* messages<M extends DescMessage>(schema: M, input: AsyncIterable<MessageInitShape<M>>): AsyncIterable<MessageShape<M>> {
    for await (const m of input) yield create(schema, m);
  }
  async function* outputs<M extends DescMessage>(schema: M, source: AsyncIterable<unknown> | Iterable<unknown>): AsyncIterable<MessageShape<M>> {
    try {
      for await (const m of source) yield create(schema, m as MessageInitShape<M>);
    } catch (err) {
      throw toError(err);
    }
  }

  return {
    async unary(method, signal, timeoutMs, header, input) {
      const ctx = context(method, signal, timeoutMs, header);
      try {
        const out = await handler(method)(create(method.input, input), ctx);
        return { stream: false, service, method, header: ctx.responseHeader, trailer: ctx.responseTrailer, message: create(method.output, out as MessageInitShape<typeof method.output>) } as UnaryResponse<typeof method.input, typeof method.output>;
      } catch (err) {
        throw toError(err);
      }
    },
    async stream(method, signal, timeoutMs, header, input) {
      const ctx = context(method, signal, timeoutMs, header);
      const fn = handler(method);
      const requests = messages(method.input, input);
      let source: AsyncIterable<unknown> | Iterable<unknown>;
      try {
        if (method.methodKind === "server_streaming") {
          let first: unknown;
          for await (const m of requests) {
            first = m;
            break;
          }
          source = fn(first ?? create(method.input), ctx) as AsyncIterable<unknown>;
        } else if (method.methodKind === "client_streaming") {
          source = [await (fn(requests, ctx) as Promise<unknown>)];
        } else {
          source = fn(requests, ctx) as AsyncIterable<unknown>;
        }
      } catch (err) {
        throw toError(err);
      }
      return { stream: true, service, method, header: ctx.responseHeader, trailer: ctx.responseTrailer, message: outputs(method.output, source) } as StreamResponse<typeof method.input, typeof method.output>;
    },
  };
}
