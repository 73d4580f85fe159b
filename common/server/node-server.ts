import { readFileSync } from "node:fs";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import type { TlsFiles } from "../config.js";
import type { Logger } from "../logger.js";

/** A request handler that serves both HTTP/1.1 and HTTP/2 requests. */
export type NodeRequestHandler = (
  req: http.IncomingMessage | http2.Http2ServerRequest,
  res: http.ServerResponse | http2.Http2ServerResponse,
) => void;

/** A listening node port serving gRPC, gRPC-Web, Connect and plain HTTP. */
export interface NodeServer {
  readonly port: number;
  readonly url: string;
  /** Stops accepting connections, lets open requests finish until the signal aborts, then destroys what is left. */
  close(signal: AbortSignal): Promise<void>;
}

// Every HTTP/2 connection opens with this preface; no HTTP/1.x request line does.
const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");

/**
 * Serves one handler on one port. Without TLS, each connection's first bytes
 * decide: the HTTP/2 preface goes to an h2c server, anything else to HTTP/1.1.
 * With TLS, ALPN negotiates h2 or http/1.1; a client CA turns on mTLS.
 */
export async function startNodeServer(options: {
  host: string;
  port: number;
  handler: NodeRequestHandler;
  tls?: TlsFiles | undefined;
  clientCaFile?: string | undefined;
  logger: Logger;
  /** Largest header block accepted; bounds what one slow or hostile client can pin. */
  maxHeaderBytes?: number;
}): Promise<NodeServer> {
  const maxHeaderBytes = options.maxHeaderBytes ?? 64 * 1024;
  const sockets = new Set<net.Socket>();
  const sessions = new Set<http2.Http2Session>();
  // The default 64 KiB stream window caps one stream at ~60 tensors/s (150 KB each) and hides the
  // backlog in the sender's buffer, out of reach of admission control: open it to 4 MiB per stream.
  const http2Settings: http2.Settings = { maxHeaderListSize: maxHeaderBytes, maxConcurrentStreams: 1000, initialWindowSize: 4 * 1024 * 1024 };
  let listener: net.Server;
  let h2: http2.Http2Server | http2.Http2SecureServer;
  let h1: http.Server | undefined;

  if (options.tls !== undefined) {
    const secure = http2.createSecureServer(
      {
        cert: readFileSync(options.tls.certFile),
        key: readFileSync(options.tls.keyFile),
        allowHTTP1: true,
        minVersion: "TLSv1.2",
        settings: http2Settings,
        maxSessionMemory: 64,
        ...(options.clientCaFile === undefined ? {} : { ca: readFileSync(options.clientCaFile), requestCert: true, rejectUnauthorized: true }),
      },
      options.handler,
    );
    h2 = secure;
    listener = secure;
  } else {
    h2 = http2.createServer({ settings: http2Settings, maxSessionMemory: 64 }, options.handler);
    h1 = http.createServer({ maxHeaderSize: maxHeaderBytes, requestTimeout: 120_000, headersTimeout: 30_000 }, options.handler);
    const plain1 = h1;
    const plain2 = h2;
    // Node starts HTTP/1.1 header and request timeouts when its server emits 'listening';
    // this one never listens itself (connections are handed to it), so start them here.
    plain1.emit("listening");
    listener = net.createServer((socket) => {
      let seen = Buffer.alloc(0);
      const decide = (chunk: Buffer) => {
        seen = Buffer.concat([seen, chunk]);
        const n = Math.min(seen.length, H2_PREFACE.length);
        const prefixOfPreface = seen.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
        // A first segment may be as short as one byte: wait until it is the whole preface or differs from it.
        if (prefixOfPreface && seen.length < H2_PREFACE.length) return;
        socket.off("data", decide);
        socket.pause();
        socket.unshift(seen);
        if (prefixOfPreface) {
          // The HTTP/2 session takes the unshifted bytes from the socket's buffer itself.
          plain2.emit("connection", socket);
        } else {
          plain1.emit("connection", socket);
          socket.resume();
        }
      };
      socket.on("data", decide);
    });
  }
  h2.on("session", (session: http2.Http2Session) => {
    sessions.add(session);
    // Connection-level window to match (all streams of the session share it).
    session.once("connect", () => session.setLocalWindowSize(16 * 1024 * 1024));
    if (!session.connecting) session.setLocalWindowSize(16 * 1024 * 1024);
    // An idle session (no frame for 5 minutes; pings count) is closed; a busy one never is.
    session.setTimeout(300_000, () => session.close());
    session.once("close", () => sessions.delete(session));
  });
  h2.on("sessionError", (err) => options.logger.debug({ err }, "http2 session error"));

  listener.on("connection", (socket: net.Socket) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));

  });
  listener.on("error", (err) => options.logger.error({ err }, "listener error"));

  await new Promise<void>((resolve, reject) => {
    listener.once("error", reject);
    listener.listen(options.port, options.host, () => {
      listener.off("error", reject);
      resolve();
    });
  });
  const port = (listener.address() as AddressInfo).port;
  const scheme = options.tls === undefined ? "http" : "https";
  const hostForUrl = options.host.includes(":") ? `[${options.host}]` : options.host === "0.0.0.0" ? "127.0.0.1" : options.host;

  return {
    port,
    url: `${scheme}://${hostForUrl}:${port}`,
    async close(signal) {
      const closed = new Promise<void>((resolve) => listener.close(() => resolve()));
      // GOAWAY lets HTTP/2 clients finish open streams and open no new ones.
      for (const session of sessions) session.close();
      h1?.closeIdleConnections();
      const forced = new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        else signal.addEventListener("abort", () => resolve(), { once: true });
      });
      await Promise.race([closed, forced]);
      for (const session of sessions) session.destroy();
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}
