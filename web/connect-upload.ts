import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { ClassifyResponseSchema, ClassifyUploadRequestSchema, type ClassifyResponse } from "../gen/categorize/v1/categorize_pb.js";

const CHUNK_BYTES = 256 * 1024;

/**
 * ClassifyUpload (client streaming) over the Connect protocol with fetch.
 * connect-web refuses client streams because fetch cannot stream a request
 * body; a page has the whole file anyway, so every chunk goes in one body of
 * enveloped messages and the server still checks the declared size first and
 * each chunk against its limit as it reads.
 */
export async function classifyUpload(file: Blob, options: { topK: number; requestId: string; timeoutMs: number; signal?: AbortSignal }): Promise<ClassifyResponse> {
  const bytes = new Uint8Array(await file.arrayBuffer());
  const parts: Uint8Array[] = [];
  for (let at = 0, first = true; at < bytes.byteLength || first; at += CHUNK_BYTES, first = false) {
    const msg = create(ClassifyUploadRequestSchema, {
      chunk: bytes.subarray(at, Math.min(at + CHUNK_BYTES, bytes.byteLength)),
      ...(first ? { topK: options.topK, requestId: options.requestId, totalSize: BigInt(bytes.byteLength) } : {}),
    });
    parts.push(envelope(0, toBinary(ClassifyUploadRequestSchema, msg)));
  }
  const signal = AbortSignal.any([AbortSignal.timeout(options.timeoutMs), ...(options.signal === undefined ? [] : [options.signal])]);
  const res = await fetch("/categorize.v1.CategorizeService/ClassifyUpload", {
    method: "POST",
    headers: { "content-type": "application/connect+proto", "connect-protocol-version": "1", "connect-timeout-ms": String(options.timeoutMs) },
    body: new Blob(parts as BlobPart[]),
    signal,
  });
  const body = new Uint8Array(await res.arrayBuffer());
  if (!res.ok) throw new ConnectError(`the server answered HTTP ${res.status}`, Code.Unavailable);
  let answer: ClassifyResponse | undefined;
  for (let at = 0; at + 5 <= body.byteLength; ) {
    const flags = body[at]!;
    const len = new DataView(body.buffer, body.byteOffset + at + 1, 4).getUint32(0);
    const data = body.subarray(at + 5, at + 5 + len);
    at += 5 + len;
    if ((flags & 0b10) === 0) {
      answer = fromBinary(ClassifyResponseSchema, data);
      continue;
    }
    // The end-of-stream message: JSON, with an error when the call failed.
    const end = JSON.parse(new TextDecoder().decode(data)) as { error?: { code?: string; message?: string } };
    if (end.error !== undefined) throw new ConnectError(end.error.message ?? "upload failed", codeOf(end.error.code));
  }
  if (answer === undefined) throw new ConnectError("the server sent no answer", Code.Internal);
  return answer;
}

function envelope(flags: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(5 + data.byteLength);
  out[0] = flags;
  new DataView(out.buffer).setUint32(1, data.byteLength);
  out.set(data, 5);
  return out;
}

function codeOf(name: string | undefined): Code {
  const key = (name ?? "unknown").replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()).replace(/^[a-z]/, (c) => c.toUpperCase());
  const code = (Code as unknown as Record<string, number>)[key];
  return typeof code === "number" ? (code as Code) : Code.Unknown;
}
