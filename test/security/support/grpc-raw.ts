import * as http2 from "node:http2";
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { configureTextEncoding, getTextEncoding } from "@bufbuild/protobuf/wire";

/**
 * A gRPC client with no library in the way: hand-made length-prefixed frames
 * over node:http2, so tests can send what no generated client would (random
 * bytes, wrong lengths, compressed flags, never-ending streams) and read back
 * exactly what the server answered: trailers, trailers-only headers, an HTTP
 * status, an RST_STREAM, or nothing.
 */

export const GRPC_CODE_NAMES = [
  "OK",
  "CANCELED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

export const codeName = (code: number): string => GRPC_CODE_NAMES[code] ?? `CODE_${code}`;

/** What a gRPC client would report for an RST_STREAM without a status (the gRPC HTTP/2 spec's mapping). */
export function rstToStatus(rst: number): string {
  switch (rst) {
    case http2.constants.NGHTTP2_REFUSED_STREAM:
      return "UNAVAILABLE";
    case http2.constants.NGHTTP2_CANCEL:
      return "CANCELED";
    case http2.constants.NGHTTP2_ENHANCE_YOUR_CALM:
      return "RESOURCE_EXHAUSTED";
    case http2.constants.NGHTTP2_INADEQUATE_SECURITY:
      return "PERMISSION_DENIED";
    default:
      return "INTERNAL";
  }
}

/** A gRPC length-prefixed message: flags, 4-byte big-endian length (or a lie), payload. */
export function grpcFrame(payload: Uint8Array, options: { compressed?: boolean; declaredLength?: number } = {}): Buffer {
  const head = Buffer.alloc(5);
  head[0] = options.compressed === true ? 1 : 0;
  head.writeUInt32BE(options.declaredLength ?? payload.length, 1);
  return Buffer.concat([head, payload]);
}

/** Splits a response body into its messages (a partial tail is ignored). */
export function splitFrames(body: Buffer): Uint8Array[] {
  const out: Uint8Array[] = [];
  let o = 0;
  while (o + 5 <= body.length) {
    const len = body.readUInt32BE(o + 1);
    if (o + 5 + len > body.length) break;
    out.push(body.subarray(o + 5, o + 5 + len));
    o += 5 + len;
  }
  return out;
}

export interface RawReply {
  /**
   * The status as a gRPC client would see it: the code name from grpc-status,
   * the mapped name of an RST_STREAM, `HTTP_<n>` for a non-gRPC answer,
   * `NO_STATUS` when the stream ended without one, `NO_ANSWER` when nothing
   * came within the wait, `CONNECTION_ERROR` when the connection failed.
   */
  readonly status: string;
  readonly message: string;
  readonly httpStatus: number | undefined;
  readonly rstCode: number | undefined;
  readonly contentType: string | undefined;
  readonly messages: readonly Uint8Array[];
  readonly ms: number;
}

export interface RawCallOptions {
  /** Bytes written in order (usually frames; anything goes). */
  readonly body?: readonly Uint8Array[];
  readonly headers?: http2.OutgoingHttpHeaders;
  /** Ends the request stream after the body (default true). */
  readonly endStream?: boolean;
  /** Sent as grpc-timeout (milliseconds). */
  readonly timeoutMs?: number;
  /** How long to wait for an answer before giving up with NO_ANSWER (then the stream is cancelled). */
  readonly waitMs: number;
  /** Pause between body writes. */
  readonly writeGapMs?: number;
  /** Called with each response message as it arrives. */
  readonly onMessage?: (m: Uint8Array) => void;
  readonly signal?: AbortSignal;
}

/**
 * One HTTP/2 connection, reopened when the server closes it or sends GOAWAY,
 * and replaced every `streamsPerConnection` streams: a fuzzer cancels many
 * streams, and a server rightly closes a connection that resets too many
 * (the HTTP/2 rapid-reset defence), which is not what the cases test.
 */
export class RawGrpcClient {
  #session: http2.ClientHttp2Session | undefined;
  #streams = 0;

  constructor(
    readonly url: string,
    private readonly options: { streamsPerConnection?: number; session?: http2.SecureClientSessionOptions } = {},
  ) {}

  session(): http2.ClientHttp2Session {
    const s = this.#session;
    const limit = this.options.streamsPerConnection ?? 200;
    if (s !== undefined && !s.closed && !s.destroyed && this.#streams < limit) {
      this.#streams++;
      return s;
    }
    // The old connection finishes its streams, then closes.
    if (s !== undefined && !s.closed && !s.destroyed) s.close();
    // A large session memory: Node's client default (10 MB) makes the client itself refuse every
    // later stream (ENHANCE_YOUR_CALM) once a server answers early while an oversized body is still queued.
    const fresh = http2.connect(this.url, { maxSendHeaderBlockLength: 1 << 20, maxSessionMemory: 1024, ...this.options.session });
    // Errors of the connection show up on the streams that used it.
    fresh.on("error", () => undefined);
    fresh.on("goaway", () => {
      if (this.#session === fresh) this.#session = undefined;
    });
    fresh.unref();
    this.#session = fresh;
    this.#streams = 1;
    return fresh;
  }

  close(): void {
    this.#session?.destroy();
    this.#session = undefined;
  }

  call(path: string, options: RawCallOptions): Promise<RawReply> {
    const started = performance.now();
    return new Promise<RawReply>((resolve) => {
      let settled = false;
      let httpStatus: number | undefined;
      let contentType: string | undefined;
      let grpcStatus: string | undefined;
      let grpcMessage = "";
      let errorText = "";
      const chunks: Buffer[] = [];
      const finish = (status: string | undefined) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        options.signal?.removeEventListener("abort", onAbort);
        const body = Buffer.concat(chunks);
        const rst = req.rstCode;
        let s = status ?? grpcStatus;
        if (s === undefined) {
          if (httpStatus !== undefined && httpStatus !== 200) s = `HTTP_${httpStatus}`;
          else if (rst !== undefined && rst !== 0) s = rstToStatus(rst);
          else s = errorText !== "" && httpStatus === undefined ? "CONNECTION_ERROR" : "NO_STATUS";
        }
        resolve({
          status: s,
          message: grpcMessage !== "" ? grpcMessage : errorText,
          httpStatus,
          rstCode: rst,
          contentType,
          messages: httpStatus === 200 ? splitFrames(body) : [body],
          ms: performance.now() - started,
        });
      };
      const headers: http2.OutgoingHttpHeaders = {
        ":method": "POST",
        ":path": path,
        "content-type": "application/grpc",
        te: "trailers",
        ...(options.timeoutMs === undefined ? {} : { "grpc-timeout": `${Math.max(1, Math.round(options.timeoutMs))}m` }),
        ...options.headers,
      };
      let req: http2.ClientHttp2Stream;
      try {
        req = this.session().request(headers, { endStream: false });
      } catch (err) {
        resolve({ status: "CONNECTION_ERROR", message: err instanceof Error ? err.message : String(err), httpStatus: undefined, rstCode: undefined, contentType: undefined, messages: [], ms: 0 });
        return;
      }
      const timer = setTimeout(() => {
        finish("NO_ANSWER");
        req.close(http2.constants.NGHTTP2_CANCEL);
      }, options.waitMs);
      const onAbort = () => {
        finish("NO_ANSWER");
        req.close(http2.constants.NGHTTP2_CANCEL);
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const readStatus = (h: http2.IncomingHttpHeaders) => {
        const st = h["grpc-status"];
        if (typeof st === "string") {
          grpcStatus = codeName(Number(st));
          const m = h["grpc-message"];
          grpcMessage = typeof m === "string" ? safeDecode(m) : "";
        }
      };
      // The status is final once it arrives (trailers, or trailers-only headers): a server may answer
      // while the request is still being sent, and then our side is cancelled.
      const statusArrived = () => {
        finish(undefined);
        if (!req.closed) req.close(http2.constants.NGHTTP2_CANCEL);
      };
      req.on("response", (h, flags) => {
        httpStatus = Number(h[":status"]);
        contentType = typeof h["content-type"] === "string" ? h["content-type"] : undefined;
        readStatus(h);
        // END_STREAM on the headers: a trailers-only answer, or a plain HTTP answer without a body.
        if (grpcStatus !== undefined && (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0) statusArrived();
      });
      req.on("trailers", (h: http2.IncomingHttpHeaders) => {
        readStatus(h);
        statusArrived();
      });
      let pending = Buffer.alloc(0);
      req.on("data", (d: Buffer) => {
        chunks.push(d);
        if (options.onMessage === undefined || httpStatus !== 200) return;
        // Deliver complete messages as they arrive.
        pending = Buffer.concat([pending, d]);
        let used = 0;
        for (const f of splitFrames(pending)) {
          options.onMessage(f);
          used += 5 + f.byteLength;
        }
        pending = pending.subarray(used);
      });
      req.on("error", (err: Error) => {
        errorText = err.message;
      });
      req.on("close", () => finish(undefined));
      void (async () => {
        for (const part of options.body ?? []) {
          if (settled || req.destroyed) return;
          if (!req.write(part)) {
            await new Promise<void>((r) => {
              const done = () => {
                req.off("drain", done);
                req.off("close", done);
                r();
              };
              req.on("drain", done);
              req.on("close", done);
            });
          }
          if (options.writeGapMs !== undefined) await new Promise((r) => setTimeout(r, options.writeGapMs));
        }
        if ((options.endStream ?? true) && !req.destroyed && !settled) req.end();
      })().catch(() => undefined);
    });
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/**
 * fromBinary with strings decoded exactly as sent: protobuf-es's default
 * TextDecoder drops a leading U+FEFF, which would hide what the server echoed.
 */
export function decodeExact<D extends DescMessage>(schema: D, bytes: Uint8Array): MessageShape<D> {
  const previous = getTextEncoding();
  const exact = new TextDecoder("utf-8", { ignoreBOM: true });
  const strict = new TextDecoder("utf-8", { ignoreBOM: true, fatal: true });
  configureTextEncoding({ ...previous, decodeUtf8: (b, isStrict) => (isStrict === true ? strict : exact).decode(b) });
  try {
    return fromBinary(schema, bytes);
  } finally {
    configureTextEncoding(previous);
  }
}
