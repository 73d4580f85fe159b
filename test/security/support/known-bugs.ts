/**
 * Product bugs the security tests found. While a bug is open, the named test
 * that proves it runs as a `todo` (it runs and is reported, but does not fail
 * the suite) and the fuzz harness tolerates its exact signature (or, for a
 * crash, avoids its trigger) instead of failing on it. When a fix lands, set
 * `open: false`: the todo becomes a real test and the fuzz stops tolerating
 * or avoiding it. FUZZ_STRICT=1 treats every bug as fixed, to check a fix or
 * to see what is still open.
 *
 * B1-B3 and B5-B8 were fixed together (request_id and feedback source at most
 * 128/200 characters without control characters; core checks the image facts
 * it stores; HTTP/1.1 timeouts started; the protocol sniff waits for a whole
 * preface; a client going away is CANCELED). The upload deadline of that fix
 * does not work yet (B4).
 *
 * F1-F3 (INTERNAL for an unparsable message or a compressed flag without
 * grpc-encoding, UNIMPLEMENTED for a unary call with zero or two messages)
 * were listed here until checked against the gRPC specification, which
 * prescribes exactly those codes; they are asserted as such now (see
 * protocolStatusOf in fuzz-run.ts).
 */
export const KNOWN_BUGS = {
  B1: {
    open: false,
    title:
      "the edge process crashes (unhandled rejection, exit 1) when a Classify or ClassifyUpload call's deadline has passed before edge-classifier races its signal and the image is invalid (e.g. any gRPC client with a 1 ms timeout): raceSignal() returns early without observing the in-flight promise",
  },
  B2: {
    open: false,
    title: "a NUL character (U+0000) in request_id, feedback source or an InferRequest text field reaches Postgres and answers INTERNAL instead of INVALID_ARGUMENT",
  },
  B3: {
    open: false,
    title: "cleartext HTTP/1.1 headersTimeout/requestTimeout are never enforced (the HTTP/1.1 server never emits 'listening', so Node never starts its connection checks): a byte-by-byte slow client is held indefinitely",
  },
  B4: {
    open: false,
    title:
      "ClassifyUpload enforces no deadline while receiving chunks: a stream that never sends its last chunk is not ended at grpc-timeout nor at REQUEST_TIMEOUT_MS (the fix's withDeadline() awaits it.return(), which an async generator queues behind the still-pending it.next(), so the deadline error is never thrown while the client is silent)",
  },
  B5: {
    open: false,
    title: "a ClassifyUpload whose client goes away is logged and counted as INTERNAL ('Premature close') instead of CANCELED",
  },
  B6: {
    open: false,
    title: "an InferRequest sent straight to core with image width/height above 2^31-1 or size_bytes above 2^63-1 answers INTERNAL (Postgres out of range) instead of INVALID_ARGUMENT",
  },
  B7: {
    open: false,
    title: "the cleartext protocol sniff decides HTTP/2 on a partial first segment: an HTTP/1.1 request whose first TCP segment is just 'P' is handed to the HTTP/2 server and fails",
  },
  B8: {
    open: false,
    title:
      "request_id has no length limit and the edge's answer cache (bounded by entry count, not bytes) keeps the first caller's request_id in every entry: unique images with multi-MiB request ids pin that memory (80 x 5 MiB ids -> +580 MiB RSS)",
  },
  B9: {
    open: false,
    title:
      "a string field that starts with U+FEFF loses it: protobuf-es decodes with a default TextDecoder, which drops a leading BOM, so a request_id is not echoed (or stored) verbatim",
  },
} as const;

export type BugId = keyof typeof KNOWN_BUGS;

const strict = (): boolean => process.env.FUZZ_STRICT === "1";

/** True while the bug is open (and FUZZ_STRICT is not set). */
export function isOpen(id: BugId): boolean {
  return KNOWN_BUGS[id].open && !strict();
}

/** For a test's `todo` option: the bug's text while it is open, else undefined (a real test). */
export function todoWhileOpen(...ids: BugId[]): string | undefined {
  const open = ids.filter(isOpen);
  return open.length === 0 ? undefined : open.map((id) => `known bug ${id}: ${KNOWN_BUGS[id].title}`).join("; ");
}
