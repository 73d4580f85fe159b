import * as net from "node:net";

/**
 * Slowloris-style clients: raw TCP connections that start a request and never
 * finish it. Every connection is bounded: it stops writing after `maxMs` and
 * is destroyed by stop(), whatever the server did.
 */
export interface SlowClients {
  /** Connections the server has not closed yet. */
  open(): number;
  /** Milliseconds from connect to the server closing it, per closed connection. */
  closedAfterMs(): number[];
  /** Bytes the server sent back (an HTTP/1.1 408, a GOAWAY frame, ...), per connection. */
  replies(): string[];
  /** Resolves when every connection is closed, or after `ms`; true when all closed. */
  allClosed(ms: number): Promise<boolean>;
  stop(): void;
}

const H2_PREFACE = Buffer.from("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "latin1");

export type SlowKind =
  /** An HTTP/1.1 request line and headers trickled one byte per interval, never ending the header block. */
  | "http1-trickle"
  /** The HTTP/2 connection preface, then nothing: no SETTINGS frame ever. */
  | "http2-no-settings"
  /** A TCP connection that sends nothing at all. */
  | "silent";

export async function openSlowClients(url: string, kind: SlowKind, count: number, options: { intervalMs?: number; maxMs?: number } = {}): Promise<SlowClients> {
  const { hostname, port } = new URL(url);
  const intervalMs = options.intervalMs ?? 1_000;
  const maxMs = options.maxMs ?? 120_000;
  const request = Buffer.from(`GET /healthz HTTP/1.1\r\nHost: ${hostname}\r\nUser-Agent: slowloris\r\nX-a: ${"b".repeat(4000)}\r\n`, "latin1");
  const sockets: net.Socket[] = [];
  const closed: number[] = [];
  const replies: string[] = [];
  const timers: NodeJS.Timeout[] = [];
  let stopped = false;

  await Promise.all(
    Array.from({ length: count }, (_, i) =>
      new Promise<void>((resolve) => {
        const started = Date.now();
        const socket = net.connect({ host: hostname, port: Number(port) });
        sockets.push(socket);
        replies[i] = "";
        socket.on("data", (d: Buffer) => (replies[i] = (replies[i]! + d.toString("latin1")).slice(0, 200)));
        socket.on("error", () => undefined);
        socket.once("close", () => {
          if (!stopped) closed.push(Date.now() - started);
          resolve();
        });
        socket.once("connect", () => {
          resolve();
          if (kind === "http2-no-settings") socket.write(H2_PREFACE);
          if (kind !== "http1-trickle") return;
          let at = 0;
          const t = setInterval(() => {
            if (socket.destroyed || Date.now() - started > maxMs || at >= request.length) {
              clearInterval(t);
              return;
            }
            socket.write(request.subarray(at, at + 1));
            at++;
          }, intervalMs);
          timers.push(t);
        });
      }),
    ),
  );

  const openCount = () => sockets.filter((s) => !s.destroyed && s.readyState !== "closed").length;
  return {
    open: openCount,
    closedAfterMs: () => [...closed],
    replies: () => [...replies],
    async allClosed(ms) {
      const until = Date.now() + ms;
      while (openCount() > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 250));
      return openCount() === 0;
    },
    stop() {
      stopped = true;
      for (const t of timers) clearInterval(t);
      for (const s of sockets) s.destroy();
    },
  };
}

/**
 * Sends an HTTP/1.1 request whose first TCP segment is only `firstBytes`
 * long, then the rest after a pause: what a client with tiny writes, a proxy,
 * or a slow link produces. Resolves with the status line the server answered.
 */
export function splitHttp1Request(url: string, request: string, firstBytes: number, pauseMs = 100): Promise<string> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = net.connect({ host: hostname, port: Number(port) });
    let reply = "";
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve(reply.split("\r\n")[0] ?? "");
    };
    const timer = setTimeout(done, 5_000);
    socket.setNoDelay(true);
    socket.on("data", (d: Buffer) => {
      reply += d.toString("latin1");
      if (reply.includes("\r\n")) done();
    });
    socket.on("error", done);
    socket.on("close", done);
    socket.once("connect", () => {
      socket.write(request.slice(0, firstBytes), "latin1");
      setTimeout(() => {
        if (!socket.destroyed) socket.write(request.slice(firstBytes), "latin1");
      }, pauseMs);
    });
  });
}
