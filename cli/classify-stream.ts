import { readFile } from "node:fs/promises";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CategorizeService, type ClassifyResponse } from "../gen/categorize/v1/categorize_pb.js";

/**
 * The server's default STREAM_WINDOW: it reads no further ahead than this, so
 * more in flight would only wait in HTTP/2 buffers (the client cannot ask a
 * node for its setting).
 */
export const maxConcurrency = 16;

/** A CategorizeService client of the edge at `baseUrl`, over gRPC (HTTP/2). */
export function edgeClient(baseUrl: string): Client<typeof CategorizeService> {
  return createClient(CategorizeService, createGrpcTransport({ baseUrl, readMaxBytes: 64 << 20 }));
}

/** What became of one file. */
export type FileOutcome =
  | { readonly path: string; readonly ok: true; readonly result: ClassifyResponse }
  | { readonly path: string; readonly ok: false; readonly message: string };

/** Options of one streamed run. */
export interface StreamOptions {
  readonly client: Client<typeof CategorizeService>;
  readonly files: readonly string[];
  readonly topK: number;
  readonly concurrency: number;
  /** The stream is given up when nothing is answered for this long while images are in flight. */
  readonly idleTimeoutMs?: number;
  /** Called once per file as its answer (or error) arrives, in arrival order. */
  readonly onOutcome: (outcome: FileOutcome) => void;
}

/** How a run ended beyond the per-file outcomes. */
export interface StreamSummary {
  /** Set when the stream itself broke: the files never sent got no outcome. */
  readonly streamError: string | undefined;
  readonly unsent: readonly string[];
}

/**
 * Classifies the files over one ClassifyStream call, at most `concurrency`
 * images between send and answer. Files are read just before they are sent,
 * so memory holds the window, not the folder.
 */
export async function classifyFiles(options: StreamOptions): Promise<StreamSummary> {
  const { files, onOutcome } = options;
  const concurrency = Math.max(1, Math.min(options.concurrency, maxConcurrency));
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const { client } = options;
  const abort = new AbortController();
  const pending = new Map<string, string>();
  let next = 0;
  let wake: (() => void) | undefined;
  const release = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  let idle: NodeJS.Timeout | undefined;
  // One deadline for the whole stream would fail a large folder; what matters is that answers keep coming.
  const armIdle = () => {
    clearTimeout(idle);
    idle = pending.size === 0 ? undefined : setTimeout(() => abort.abort(new ConnectError(`no answer for ${idleTimeoutMs / 1000} s`, Code.DeadlineExceeded)), idleTimeoutMs);
  };
  abort.signal.addEventListener("abort", release);

  async function* requests() {
    while (next < files.length) {
      while (pending.size >= concurrency && !abort.signal.aborted) await new Promise<void>((r) => (wake = r));
      if (abort.signal.aborted) return;
      const index = next++;
      const path = files[index]!;
      let image: Buffer;
      try {
        image = await readFile(path);
      } catch (err) {
        onOutcome({ path, ok: false, message: err instanceof Error ? err.message : String(err) });
        continue;
      }
      const requestId = String(index);
      pending.set(requestId, path);
      if (idle === undefined) armIdle();
      yield { image, topK: options.topK, requestId };
    }
  }

  let streamError: string | undefined;
  try {
    for await (const res of client.classifyStream(requests(), { signal: abort.signal })) {
      const path = pending.get(res.requestId);
      if (path === undefined) continue;
      pending.delete(res.requestId);
      armIdle();
      release();
      const outcome = res.outcome;
      if (outcome.case === "result") onOutcome({ path, ok: true, result: outcome.value });
      else onOutcome({ path, ok: false, message: outcome.case === "error" ? `[${codeName(outcome.value.code)}] ${outcome.value.message}` : "empty answer" });
    }
  } catch (err) {
    streamError = ConnectError.from(err).message;
  } finally {
    clearTimeout(idle);
    abort.abort();
  }
  // Sent but never answered: the stream ended (or broke) under them.
  for (const path of pending.values()) onOutcome({ path, ok: false, message: streamError ?? "the stream ended without an answer" });
  return { streamError, unsent: files.slice(next) };
}

/** The gRPC status name the way Connect prints it ("invalid_argument"). */
function codeName(code: number): string {
  return (Code[code] ?? String(code)).replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase();
}
