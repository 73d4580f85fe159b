import { createHash } from "node:crypto";
import { create, fromBinary, toBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import fc from "fast-check";
import {
  ClassifyRequestSchema,
  ClassifyResponseSchema,
  ClassifyStreamResponseSchema,
  ClassifyUploadRequestSchema,
  GetResultRequestSchema,
  SubmitFeedbackRequestSchema,
} from "../../../gen/categorize/v1/categorize_pb.js";
import { InferRequestSchema, InferResponseSchema, TensorSchema } from "../../../gen/categorize/v1/inference_pb.js";
import { ImageInfoSchema } from "../../../gen/categorize/v1/types_pb.js";
import { readImage } from "../../support/fixtures.js";
import { INTERNAL_SECRET_HEADER } from "../../../common/server/access-control.js";
import { codeName, decodeExact, grpcFrame, RawGrpcClient, type RawCallOptions, type RawReply } from "./grpc-raw.js";
import { isOpen, type BugId } from "./known-bugs.js";
import { applyMutations, buildCorpus, describeMutations, mutationArb, type Corpus, type Mutation } from "./mutate.js";
import { healthz, RssSampler } from "./proc.js";

/**
 * The fuzz harness shared by `npm test` (bounded) and bench/fuzz.ts (long):
 * fast-check generates cases (mutated real images through Classify,
 * ClassifyUpload and ClassifyStream; random and protobuf-shaped bytes as
 * request frames at the edge; random and structured InferRequest frames
 * straight at core; hostile strings in GetResult and SubmitFeedback), sends
 * each over raw HTTP/2 to a node in a child process, and checks:
 *
 * - every answer is a proper gRPC status from the allowed set (per call and
 *   per stream item), never INTERNAL or UNKNOWN, and arrives within the
 *   call's deadline plus a margin;
 * - the node stays alive and its /healthz answers 200 (checked every few
 *   cases and at the end);
 * - the node's RSS, sampled from /proc, stays under the ceiling;
 * - a request_id is echoed back verbatim.
 *
 * Three answers outside that set are what the gRPC specification itself
 * prescribes for protocol violations (see {@link protocolStatusOf}); they are
 * accepted by exact signature and counted separately.
 *
 * Open known bugs (known-bugs.ts) are tolerated by exact signature, counted
 * separately, or (a crash) their trigger is not generated.
 */

const P = {
  classify: "/categorize.v1.CategorizeService/Classify",
  upload: "/categorize.v1.CategorizeService/ClassifyUpload",
  stream: "/categorize.v1.CategorizeService/ClassifyStream",
  getResult: "/categorize.v1.CategorizeService/GetResult",
  feedback: "/categorize.v1.CategorizeService/SubmitFeedback",
  infer: "/categorize.v1.InferenceService/Infer",
} as const;

export const ALLOWED = new Set(["OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELED"]);
/** Lookups of a hash may also say it is unknown. */
const ALLOWED_LOOKUP = new Set([...ALLOWED, "NOT_FOUND"]);
/** Calls without valid credentials: refused, whatever else they carry. */
const ALLOWED_AUTH = new Set(["UNAUTHENTICATED", "PERMISSION_DENIED"]);

type EdgeMethod = "Classify" | "ClassifyUpload" | "ClassifyStream" | "GetResult" | "SubmitFeedback";

interface RawFrame {
  readonly payload: Uint8Array;
  readonly compressed: boolean;
  readonly lengthDelta: number;
}

interface InferItemSpec {
  readonly id: string;
  readonly sha256: string;
  readonly dtype: number;
  readonly layout: number;
  readonly shape: readonly number[];
  readonly dataLength: number;
  readonly fill: number;
  readonly topK: number;
  readonly requestId: string;
  readonly deadline: "none" | "past" | "future" | bigint;
  readonly image: { mime: string; sizeBytes: bigint; width: number; height: number; objectKey: string } | null;
  readonly traceContext: Record<string, string>;
}

export type FuzzCase =
  | {
      readonly kind: "image";
      readonly via: "Classify" | "ClassifyUpload" | "ClassifyStream";
      readonly base: number;
      readonly mutations: readonly Mutation[];
      readonly requestId: string;
      readonly topK: number;
      readonly timeoutMs: number;
      readonly chunkSize: number;
      readonly declared: "exact" | "none" | "wrong";
      readonly copies: number;
      /** A pause between the first bytes of the request body and the rest (a slow link). */
      readonly gapMs: number;
    }
  | { readonly kind: "edge-frames"; readonly method: EdgeMethod; readonly frames: readonly RawFrame[]; readonly timeoutMs: number }
  | { readonly kind: "core-frames"; readonly frames: readonly RawFrame[]; readonly timeoutMs: number }
  | { readonly kind: "core-infer"; readonly items: readonly InferItemSpec[]; readonly timeoutMs: number }
  | {
      readonly kind: "auth";
      readonly method: EdgeMethod | "Infer";
      readonly credential: "none" | "garbage" | "wrong-scope" | "wrong-secret";
      readonly value: string;
      readonly timeoutMs: number;
    }
  | {
      readonly kind: "text";
      readonly method: "GetResult" | "SubmitFeedback";
      readonly sha256: string;
      readonly topK: number;
      readonly trueClass: number;
      readonly source: string;
      readonly timeoutMs: number;
    };

// --- generators -------------------------------------------------------------------

/** Strings that break naive code: traversal, SQL, templates, bidi, emoji, CR/LF, terminal escapes, NUL. */
export const hostileStrings = [
  "",
  "../../etc/passwd",
  "..\\..\\windows\\win.ini",
  "originals/../../../../etc/shadow",
  "'; DROP TABLE classifications; --",
  "\" OR \"1\"=\"1",
  "1; SELECT pg_sleep(10)--",
  "${jndi:ldap://127.0.0.1:1/a}",
  "{{7*7}}<%= 7*7 %>",
  "<script>alert(1)</script>",
  "\u202e\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
  "🦅".repeat(64),
  "a\r\nx-injected: 1",
  "\u0007\u001b[31mred\u001b[0m\b\t\v\f",
  "%00%2e%2e%2f",
  "\u0000",
  "x\u0000y",
  "\ufeff\ufffe\uffff",
];

/** Strings for every text field: hostile constants, arbitrary code points (control characters included), long ones. */
export const textArb: fc.Arbitrary<string> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...hostileStrings) },
  { weight: 3, arbitrary: fc.string({ unit: "binary", maxLength: 64 }) },
  { weight: 1, arbitrary: fc.string({ unit: "grapheme", maxLength: 300 }) },
  { weight: 1, arbitrary: fc.string({ unit: "binary-ascii", minLength: 1000, maxLength: 20_000 }) },
);

/** request_id values: while B8 (request ids pinned in the answer cache, no length limit) is open, none longer than 1000 characters. */
function requestIdArb(): fc.Arbitrary<string> {
  return isOpen("B8") ? textArb.filter((s) => s.length <= 1000) : textArb;
}

const hex64 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString("hex"));

const topKArb = fc.oneof(fc.constantFrom(0, 1, 5, 10, 999, 1000, 1001, 2 ** 32 - 1), fc.nat({ max: 2000 }));

/** Deadlines, some very short; while B1 (crash when the deadline passes before the call is raced) is open, none short enough to trigger it. */
function timeoutArb(): fc.Arbitrary<number> {
  return fc.oneof(
    { weight: 6, arbitrary: fc.constant(15_000) },
    { weight: 2, arbitrary: fc.integer({ min: 2_000, max: 20_000 }) },
    ...(isOpen("B1") ? [] : [{ weight: 2, arbitrary: fc.integer({ min: 1, max: 50 }) }]),
  );
}

const frameArb: fc.Arbitrary<RawFrame> = fc.record({
  payload: fc.oneof(fc.uint8Array({ maxLength: 64 }), fc.uint8Array({ maxLength: 4096 })),
  compressed: fc.oneof({ weight: 9, arbitrary: fc.constant(false) }, { weight: 1, arbitrary: fc.constant(true) }),
  lengthDelta: fc.oneof({ weight: 8, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: -4, max: 64 }) }),
});

/** Protobuf-shaped bytes: random (field, wire type, value) triples, mostly well-formed, some with the wrong wire type. */
function protobufish(corpus: Corpus): fc.Arbitrary<Uint8Array> {
  const field = fc.record({
    no: fc.oneof(fc.integer({ min: 1, max: 8 }), fc.integer({ min: 1, max: 2 ** 29 - 1 })),
    wire: fc.oneof({ weight: 9, arbitrary: fc.constantFrom(0, 1, 2, 5) }, { weight: 1, arbitrary: fc.constantFrom(3, 4, 6, 7) }),
    varint: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }),
    bytes: fc.oneof(fc.uint8Array({ maxLength: 256 }), fc.nat({ max: corpus.images.length - 1 }).map((i) => corpus.images[i]!.subarray(0, 65536)), textArb.map((s) => Buffer.from(s, "utf8"))),
  });
  return fc.array(field, { minLength: 1, maxLength: 8 }).map((fields) => Buffer.concat(fields.map((f) => encodeField(f.no, f.wire, f.varint, f.bytes))));
}

function varint(v: bigint): Buffer {
  const out: number[] = [];
  let x = v;
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x > 0n) b |= 0x80;
    out.push(b);
  } while (x > 0n);
  return Buffer.from(out);
}

function encodeField(no: number, wire: number, v: bigint, bytes: Uint8Array): Buffer {
  const tag = varint(BigInt(no) * 8n + BigInt(wire));
  switch (wire) {
    case 0:
      return Buffer.concat([tag, varint(v)]);
    case 1:
      return Buffer.concat([tag, Buffer.from(new BigUint64Array([v & (2n ** 64n - 1n)]).buffer)]);
    case 2:
      return Buffer.concat([tag, varint(BigInt(bytes.length)), bytes]);
    case 5:
      return Buffer.concat([tag, Buffer.from(new Uint32Array([Number(v & 0xffffffffn)]).buffer)]);
    default:
      return tag;
  }
}

function inferItemArb(): fc.Arbitrary<InferItemSpec> {
  return fc.record({
    id: fc.oneof({ weight: 6, arbitrary: fc.integer({ min: 1, max: 1e9 }).map(String) }, { weight: 1, arbitrary: textArb }),
    sha256: fc.oneof({ weight: 5, arbitrary: hex64 }, { weight: 1, arbitrary: textArb }),
    dtype: fc.constantFrom(0, 1, 1, 1, 2, 2, 3, 99),
    layout: fc.constantFrom(0, 1, 1, 1, 2, 2, 5),
    shape: fc.oneof(fc.constant([224, 224, 3]), fc.constant([3, 224, 224]), fc.array(fc.integer({ min: 0, max: 2 ** 32 - 1 }), { maxLength: 5 })),
    dataLength: fc.oneof(fc.constant(224 * 224 * 3), fc.constant(224 * 224 * 3 * 4), fc.nat({ max: 300_000 })),
    fill: fc.nat({ max: 255 }),
    topK: topKArb,
    requestId: fc.oneof(fc.constant(""), textArb),
    deadline: fc.oneof(fc.constantFrom("none" as const, "past" as const, "future" as const), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })),
    image: fc.option(
      fc.record({
        mime: fc.oneof(fc.constantFrom("image/jpeg", "image/png", ""), textArb),
        sizeBytes: fc.oneof(fc.bigInt({ min: 0n, max: 2n ** 40n }), fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })),
        width: fc.oneof(fc.nat({ max: 20_000 }), fc.nat({ max: 2 ** 32 - 1 })),
        height: fc.oneof(fc.nat({ max: 20_000 }), fc.nat({ max: 2 ** 32 - 1 })),
        objectKey: fc.oneof(fc.constant(""), textArb),
      }),
      { freq: 2 },
    ),
    traceContext: fc.dictionary(fc.constantFrom("traceparent", "tracestate", "baggage", "x-other"), textArb, { maxKeys: 3 }),
  });
}

export function caseArb(corpus: Corpus, knownSha256: readonly string[]): fc.Arbitrary<FuzzCase> {
  const timeout = timeoutArb();
  const image = fc.record({
    kind: fc.constant("image" as const),
    via: fc.constantFrom("Classify" as const, "Classify" as const, "ClassifyUpload" as const, "ClassifyStream" as const),
    base: fc.nat({ max: corpus.images.length - 1 }),
    mutations: fc.oneof({ weight: 1, arbitrary: fc.constant([]) }, { weight: 12, arbitrary: fc.array(mutationArb(corpus), { minLength: 1, maxLength: 4 }) }),
    requestId: fc.oneof({ weight: 4, arbitrary: fc.constant("") }, { weight: 3, arbitrary: requestIdArb() }),
    topK: topKArb,
    timeoutMs: timeout,
    chunkSize: fc.integer({ min: 1024, max: 1 << 20 }),
    declared: fc.constantFrom("exact" as const, "none" as const, "wrong" as const),
    copies: fc.integer({ min: 1, max: 3 }),
    gapMs: fc.oneof({ weight: 4, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 100 }) }),
  });
  const edgeFrames = fc.record({
    kind: fc.constant("edge-frames" as const),
    method: fc.constantFrom<EdgeMethod>("Classify", "ClassifyUpload", "ClassifyStream", "GetResult", "SubmitFeedback"),
    frames: fc.oneof(
      fc.array(frameArb, { minLength: 1, maxLength: 3 }),
      fc.array(protobufish(corpus).map((payload) => ({ payload, compressed: false, lengthDelta: 0 })), { minLength: 1, maxLength: 3 }),
    ),
    timeoutMs: timeout,
  });
  const coreFrames = fc.record({
    kind: fc.constant("core-frames" as const),
    frames: fc.oneof(
      fc.array(frameArb, { minLength: 1, maxLength: 4 }),
      fc.array(protobufish(corpus).map((payload) => ({ payload, compressed: false, lengthDelta: 0 })), { minLength: 1, maxLength: 4 }),
    ),
    timeoutMs: timeout,
  });
  const coreInfer = fc.record({ kind: fc.constant("core-infer" as const), items: fc.array(inferItemArb(), { minLength: 1, maxLength: 5 }), timeoutMs: timeout });
  const text = fc.record({
    kind: fc.constant("text" as const),
    method: fc.constantFrom("GetResult" as const, "SubmitFeedback" as const),
    sha256: fc.oneof(textArb, hex64, fc.constantFrom(...knownSha256)),
    topK: topKArb,
    trueClass: fc.oneof(fc.nat({ max: 1100 }), fc.constant(2 ** 32 - 1)),
    source: textArb,
    timeoutMs: timeout,
  });
  const headerValue = fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength: 200 });
  const auth = fc.record({
    kind: fc.constant("auth" as const),
    method: fc.constantFrom<EdgeMethod | "Infer">("Classify", "ClassifyUpload", "ClassifyStream", "GetResult", "SubmitFeedback", "Infer"),
    credential: fc.constantFrom("none" as const, "garbage" as const, "wrong-scope" as const, "wrong-secret" as const),
    value: fc.oneof(headerValue, fc.constantFrom("Bearer", "Bearer ", "Basic YWRtaW46YWRtaW4=", "Bearer a.b.c", "Bearer eyJhbGciOiJub25lIn0.eyJzY29wZSI6ImFkbWluIn0.")),
    timeoutMs: timeout,
  });
  return fc.oneof(
    { weight: 1, arbitrary: auth },
    { weight: 10, arbitrary: image },
    { weight: 2, arbitrary: edgeFrames },
    { weight: 2, arbitrary: coreFrames },
    { weight: 2, arbitrary: coreInfer },
    { weight: 2, arbitrary: text },
  );
}

// --- running one case ----------------------------------------------------------------

interface Outcome {
  readonly target: string;
  readonly reply: RawReply;
  /** Codes of per-item errors inside a stream (ClassifyStream items, Infer items). */
  readonly itemCodes: readonly string[];
  /** request_id values echoed back in OK answers, with the values they may be (what was sent, as UTF-8 carries it). */
  readonly echoes: readonly { expected: readonly string[]; got: string }[];
  /** Deadline the call carried. */
  readonly timeoutMs: number;
}

const frameOf = (f: RawFrame) => grpcFrame(f.payload, { compressed: f.compressed, declaredLength: Math.max(0, f.payload.length + f.lengthDelta) });
const bin = <D extends DescMessage>(schema: D, init: Parameters<typeof create<D>>[1]) => grpcFrame(toBinary(schema, create(schema, init)));

/** What UTF-8 can carry of a string (lone surrogates become U+FFFD; a leading U+FEFF is kept): the most a protobuf string can echo back. */
const bomKeepingDecoder = new TextDecoder("utf-8", { ignoreBOM: true });
const utf8 = (s: string) => bomKeepingDecoder.decode(new TextEncoder().encode(s));

/** Decodes answers; `keepBom` reads strings exactly as sent (the default text decoder drops a leading U+FEFF). */
function decodeAll<D extends DescMessage>(schema: D, messages: readonly Uint8Array[], keepBom = false): MessageShape<D>[] {
  const out: MessageShape<D>[] = [];
  for (const m of messages) {
    try {
      out.push(keepBom ? decodeExact(schema, m) : fromBinary(schema, m));
    } catch {
      // A malformed answer is caught by the status check.
    }
  }
  return out;
}

function inferRequestOf(s: InferItemSpec) {
  const deadline = s.deadline === "none" ? 0n : s.deadline === "past" ? BigInt(Date.now() - 60_000) : s.deadline === "future" ? BigInt(Date.now() + 60_000) : s.deadline;
  const data = Buffer.alloc(s.dataLength, s.fill);
  return create(InferRequestSchema, {
    id: s.id,
    sha256: s.sha256,
    tensor: create(TensorSchema, { dtype: s.dtype, layout: s.layout, shape: [...s.shape], data }),
    ...(s.image === null ? {} : { image: create(ImageInfoSchema, s.image) }),
    deadlineUnixMs: deadline,
    topK: s.topK,
    requestId: s.requestId,
    traceContext: s.traceContext,
  });
}

/** Credentials of the node under test: an API key with every public scope, two with one scope each, and the edge-to-core secret. */
export interface Credentials {
  readonly apiKey: string;
  readonly readOnlyKey: string;
  readonly feedbackOnlyKey: string;
  readonly coreSecret: string;
}

export async function runCase(raw: RawGrpcClient, c: FuzzCase, corpus: Corpus, marginMs: number, creds: Credentials): Promise<Outcome> {
  const waitMs = c.timeoutMs + marginMs;
  const edgeHeaders = { authorization: `Bearer ${creds.apiKey}` };
  const coreHeaders = { [INTERNAL_SECRET_HEADER]: creds.coreSecret };
  const client = {
    call: (path: string, o: RawCallOptions) => raw.call(path, { ...o, headers: { ...(path === P.infer ? coreHeaders : edgeHeaders), ...o.headers } }),
  };
  switch (c.kind) {
    case "auth": {
      const path = { Classify: P.classify, ClassifyUpload: P.upload, ClassifyStream: P.stream, GetResult: P.getResult, SubmitFeedback: P.feedback, Infer: P.infer }[c.method];
      const headers: Record<string, string> = {};
      const name = c.method === "Infer" ? INTERNAL_SECRET_HEADER : "authorization";
      if (c.credential === "garbage" || c.credential === "wrong-secret") headers[name] = c.value;
      if (c.credential === "wrong-scope") headers[name] = c.method === "Infer" ? `${creds.coreSecret}x` : `Bearer ${c.method === "GetResult" ? creds.feedbackOnlyKey : creds.readOnlyKey}`;
      // Only the credentials differ: the request itself is a plain one.
      const image = corpus.images[0]!;
      const body = {
        Classify: [bin(ClassifyRequestSchema, { image })],
        ClassifyStream: [bin(ClassifyRequestSchema, { image })],
        ClassifyUpload: [bin(ClassifyUploadRequestSchema, { chunk: image })],
        GetResult: [bin(GetResultRequestSchema, { sha256: "0".repeat(64) })],
        SubmitFeedback: [bin(SubmitFeedbackRequestSchema, { sha256: "0".repeat(64), trueClass: 1 })],
        Infer: [],
      }[c.method];
      const reply = await raw.call(path, { body, headers, timeoutMs: c.timeoutMs, waitMs });
      return { target: `auth ${c.method} (${c.credential})`, reply, itemCodes: [], echoes: [], timeoutMs: c.timeoutMs };
    }
    case "image": {
      const image = applyMutations(corpus.images[c.base]!, c.mutations, corpus);
      if (c.via === "Classify") {
        const frame = bin(ClassifyRequestSchema, { image, topK: c.topK, requestId: c.requestId });
        const body = c.gapMs === 0 ? [frame] : [frame.subarray(0, 16), frame.subarray(16)];
        const reply = await client.call(P.classify, { body, writeGapMs: c.gapMs, timeoutMs: c.timeoutMs, waitMs });
        const echoes = reply.status === "OK" && c.requestId !== "" ? decodeAll(ClassifyResponseSchema, reply.messages, true).map((r) => ({ expected: [utf8(c.requestId)], got: r.requestId })) : [];
        return { target: "edge.Classify", reply, itemCodes: [], echoes, timeoutMs: c.timeoutMs };
      }
      if (c.via === "ClassifyUpload") {
        const frames: Buffer[] = [];
        const total = c.declared === "exact" ? BigInt(image.length) : c.declared === "wrong" ? BigInt(image.length + 1) : 0n;
        for (let o = 0; o === 0 || o < image.length; o += c.chunkSize) {
          const chunk = image.subarray(o, o + c.chunkSize);
          frames.push(o === 0 ? bin(ClassifyUploadRequestSchema, { chunk, topK: c.topK, requestId: c.requestId, totalSize: total }) : bin(ClassifyUploadRequestSchema, { chunk }));
        }
        // One pause after the first message (the slow link), not after every chunk.
        const body = c.gapMs === 0 || frames.length < 2 ? frames : [frames[0]!, Buffer.concat(frames.slice(1))];
        const reply = await client.call(P.upload, { body, writeGapMs: c.gapMs, timeoutMs: c.timeoutMs, waitMs });
        const echoes = reply.status === "OK" && c.requestId !== "" ? decodeAll(ClassifyResponseSchema, reply.messages, true).map((r) => ({ expected: [utf8(c.requestId)], got: r.requestId })) : [];
        return { target: "edge.ClassifyUpload", reply, itemCodes: [], echoes, timeoutMs: c.timeoutMs };
      }
      const ids = Array.from({ length: c.copies }, (_, i) => (c.requestId === "" ? "" : `${c.requestId}#${i}`));
      const reply = await client.call(P.stream, { body: ids.map((requestId) => bin(ClassifyRequestSchema, { image, topK: c.topK, requestId })), timeoutMs: c.timeoutMs, waitMs });
      const items = decodeAll(ClassifyStreamResponseSchema, reply.messages, true);
      const itemCodes = items.flatMap((r) => (r.outcome.case === "error" ? [codeName(r.outcome.value.code)] : []));
      const expected = ids.filter((x) => x !== "").map(utf8);
      const echoes = expected.length === 0 ? [] : items.flatMap((r) => (r.outcome.case === "result" ? [{ expected, got: r.requestId }] : []));
      return { target: "edge.ClassifyStream", reply, itemCodes, echoes, timeoutMs: c.timeoutMs };
    }
    case "edge-frames": {
      const path = { Classify: P.classify, ClassifyUpload: P.upload, ClassifyStream: P.stream, GetResult: P.getResult, SubmitFeedback: P.feedback }[c.method];
      const reply = await client.call(path, { body: c.frames.map(frameOf), timeoutMs: c.timeoutMs, waitMs });
      const itemCodes =
        c.method === "ClassifyStream" && reply.httpStatus === 200
          ? decodeAll(ClassifyStreamResponseSchema, reply.messages).flatMap((r) => (r.outcome.case === "error" ? [codeName(r.outcome.value.code)] : []))
          : [];
      return { target: `edge.${c.method} (raw frames)`, reply, itemCodes, echoes: [], timeoutMs: c.timeoutMs };
    }
    case "core-frames":
    case "core-infer": {
      const body = c.kind === "core-frames" ? c.frames.map(frameOf) : c.items.map((s) => grpcFrame(toBinary(InferRequestSchema, inferRequestOf(s))));
      const reply = await client.call(P.infer, { body, timeoutMs: c.timeoutMs, waitMs });
      const itemCodes = reply.httpStatus === 200 ? decodeAll(InferResponseSchema, reply.messages).flatMap((r) => (r.outcome.case === "error" ? [codeName(r.outcome.value.code)] : [])) : [];
      return { target: c.kind === "core-frames" ? "core.Infer (raw frames)" : "core.Infer", reply, itemCodes, echoes: [], timeoutMs: c.timeoutMs };
    }
    case "text": {
      const reply =
        c.method === "GetResult"
          ? await client.call(P.getResult, { body: [bin(GetResultRequestSchema, { sha256: c.sha256, topK: c.topK })], timeoutMs: c.timeoutMs, waitMs })
          : await client.call(P.feedback, { body: [bin(SubmitFeedbackRequestSchema, { sha256: c.sha256, trueClass: c.trueClass, source: c.source })], timeoutMs: c.timeoutMs, waitMs });
      return { target: `edge.${c.method}`, reply, itemCodes: [], echoes: [], timeoutMs: c.timeoutMs };
    }
  }
}

// --- judging -------------------------------------------------------------------------

const hasNul = (s: string | undefined) => s !== undefined && s.includes("\u0000");

/** The text fields of a case that are stored (request ids, feedback source, core image facts), decoded from raw frames where needed. */
function storedTexts(c: FuzzCase): string[] {
  const fromFrames = <D extends DescMessage>(schema: D, frames: readonly RawFrame[], pick: (m: MessageShape<D>) => string[]) =>
    frames.flatMap((f) => {
      try {
        return pick(fromBinary(schema, f.payload));
      } catch {
        return [];
      }
    });
  switch (c.kind) {
    case "image":
      return [c.requestId];
    case "text":
      return [c.source];
    case "auth":
      return [];
    case "core-infer":
      return c.items.flatMap((i) => [i.requestId, i.image?.mime ?? "", i.image?.objectKey ?? ""]);
    case "core-frames":
      return fromFrames(InferRequestSchema, c.frames, (m) => [m.requestId, m.image?.mime ?? "", m.image?.objectKey ?? ""]);
    case "edge-frames":
      if (c.method === "ClassifyUpload") return fromFrames(ClassifyUploadRequestSchema, c.frames, (m) => [m.requestId]);
      if (c.method === "SubmitFeedback") return fromFrames(SubmitFeedbackRequestSchema, c.frames, (m) => [m.source]);
      return fromFrames(ClassifyRequestSchema, c.frames, (m) => [m.requestId]);
  }
}

/** Image facts beyond what Postgres integer/bigint columns hold. */
function outOfRangeImageFacts(c: FuzzCase): boolean {
  const big = (i: { sizeBytes: bigint; width: number; height: number } | undefined) =>
    i !== undefined && (i.sizeBytes > 2n ** 63n - 1n || i.width > 2 ** 31 - 1 || i.height > 2 ** 31 - 1);
  if (c.kind === "core-infer") return c.items.some((i) => big(i.image ?? undefined));
  if (c.kind === "core-frames") {
    return c.frames.some((f) => {
      try {
        return big(fromBinary(InferRequestSchema, f.payload).image);
      } catch {
        return false;
      }
    });
  }
  return false;
}

/**
 * A status the gRPC specification mandates for a protocol violation, named,
 * or undefined. grpc/doc/statuscodes.md: "Error parsing request proto" is
 * INTERNAL and a "Request cardinality violation" (a unary call with zero or
 * two messages) is UNIMPLEMENTED; grpc/doc/compression.md: a message with
 * the Compressed-Flag set and no grpc-encoding "MUST fail with INTERNAL".
 * grpc-go and grpc-java answer the same; the message says what was wrong.
 */
export function protocolStatusOf(status: string, message: string): string | undefined {
  if (status === "UNIMPLEMENTED" && /(missing|received extra) input message for unary method/.test(message)) return "cardinality";
  if (status === "INTERNAL" && message.startsWith("parse binary")) return "unparsable-proto";
  if (status === "INTERNAL" && message.includes("compressed envelope")) return "compressed-flag-without-encoding";
  return undefined;
}

/** The open known bug a wrong status of this case is, or undefined. */
function knownBugOf(c: FuzzCase, status: string): BugId | undefined {
  if (status !== "INTERNAL") return undefined;
  if (isOpen("B2") && storedTexts(c).some(hasNul)) return "B2";
  if (isOpen("B6") && outOfRangeImageFacts(c)) return "B6";
  return undefined;
}

export interface Violation {
  readonly iteration: number;
  readonly what: string;
  readonly target: string;
  readonly status: string;
  readonly message: string;
  readonly ms: number;
  readonly input: string;
}

export function describeCase(c: FuzzCase, corpus: Corpus): string {
  const s = (x: string) => JSON.stringify(x.length > 80 ? `${x.slice(0, 80)}…(${x.length})` : x);
  switch (c.kind) {
    case "image":
      return `${c.via} of ${corpus.names[c.base]} mutated [${describeMutations(c.mutations)}] request_id=${s(c.requestId)} top_k=${c.topK} timeout=${c.timeoutMs}ms${c.via === "ClassifyUpload" ? ` chunk=${c.chunkSize} declared=${c.declared}` : ""}${c.via === "ClassifyStream" ? ` copies=${c.copies}` : ""}${c.gapMs > 0 ? ` gap=${c.gapMs}ms` : ""}`;
    case "edge-frames":
    case "core-frames":
      return `${c.kind === "edge-frames" ? c.method : "Infer"} raw frames ${c.frames.map((f) => `[${f.payload.length}B${f.compressed ? " compressed" : ""}${f.lengthDelta !== 0 ? ` len${f.lengthDelta > 0 ? "+" : ""}${f.lengthDelta}` : ""} ${Buffer.from(f.payload.subarray(0, 24)).toString("hex")}]`).join(" ")} timeout=${c.timeoutMs}ms`;
    case "core-infer":
      return `Infer items ${JSON.stringify(c.items.map((i) => ({ ...i, shape: i.shape.join("x"), deadline: String(i.deadline), image: i.image === null ? null : { ...i.image, sizeBytes: String(i.image.sizeBytes) } })), (_k, v: unknown) => (typeof v === "string" && v.length > 80 ? `${v.slice(0, 80)}…` : v))}`;
    case "auth":
      return `${c.method} with credential ${c.credential} ${JSON.stringify(c.value.slice(0, 80))}`;
    case "text":
      return `${c.method} sha256=${s(c.sha256)} top_k=${c.topK} true_class=${c.trueClass} source=${s(c.source)}`;
  }
}

// --- the run ---------------------------------------------------------------------------

/**
 * Highest RSS the node under fuzz may reach, MiB: an embedded node rests at
 * about 560 MiB (model, onnxruntime, PGlite), and one allowed decode of a
 * 64 Mpx GIF canvas adds about 280 MiB.
 */
export const DEFAULT_RSS_CEILING_MB = 1_200;

export interface FuzzOptions {
  readonly url: string;
  readonly pid: number;
  /** Cases to run at most. */
  readonly numRuns: number;
  /** Stop generating after this long. */
  readonly timeLimitMs: number;
  readonly seed?: number | undefined;
  /** fast-check's replay path of a failure (with its seed). */
  readonly path?: string | undefined;
  /** Highest RSS allowed, MiB. */
  readonly rssCeilingMb: number;
  /** Allowed lateness past a call's deadline. */
  readonly marginMs?: number;
  /** /healthz and liveness every this many cases. */
  readonly healthEvery?: number;
  readonly isAlive: () => boolean;
  /** The node's log so far: an "unhandled rejection" line (the process guard that keeps it alive) is a violation too. */
  readonly output?: () => string;
  readonly credentials: Credentials;
  readonly log?: (line: string) => void;
}

export interface FuzzReport {
  readonly seed: number;
  readonly iterations: number;
  readonly elapsedMs: number;
  readonly maxRssMb: number;
  readonly rssSamples: number;
  readonly maxLatencyMs: number;
  /** Call statuses, by name. */
  readonly histogram: Record<string, number>;
  /** Per-item statuses inside streams. */
  readonly itemHistogram: Record<string, number>;
  readonly byTarget: Record<string, Record<string, number>>;
  /** Answers that matched an open known bug, by bug id. */
  readonly tolerated: Record<string, number>;
  /** Spec-mandated answers to protocol violations (protocolStatusOf), by kind. */
  readonly protocolStatuses: Record<string, number>;
  readonly violations: readonly Violation[];
  /** fast-check's replay path for the first failure. */
  readonly counterexamplePath: string | undefined;
}

export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const corpus = await buildCorpus();
  const client = new RawGrpcClient(options.url);
  const marginMs = options.marginMs ?? 3_000;
  const healthEvery = options.healthEvery ?? 20;
  const log = options.log ?? (() => undefined);
  const histogram: Record<string, number> = {};
  const itemHistogram: Record<string, number> = {};
  const byTarget: Record<string, Record<string, number>> = {};
  const tolerated: Record<string, number> = {};
  const protocolStatuses: Record<string, number> = {};
  const violations: Violation[] = [];
  const bump = (h: Record<string, number>, k: string) => (h[k] = (h[k] ?? 0) + 1);
  const sampler = new RssSampler(options.pid, 100).start();
  const started = performance.now();
  let iterations = 0;
  let maxLatencyMs = 0;
  const recent: string[] = [];

  // One plain answer first: the node serves, and its hash is a known one for GetResult/SubmitFeedback.
  const eagle = readImage("bald_eagle.jpeg");
  const auth = { authorization: `Bearer ${options.credentials.apiKey}` };
  const warm = await client.call(P.classify, { body: [bin(ClassifyRequestSchema, { image: eagle })], headers: auth, timeoutMs: 30_000, waitMs: 35_000 });
  if (warm.status !== "OK") throw new Error(`the node does not classify the eagle before fuzzing: ${warm.status} ${warm.message}`);
  const knownSha = [createHash("sha256").update(eagle).digest("hex")];

  // After the time limit fast-check ignores a case still running; so do we, and start no new one.
  let stopped = false;
  const property = fc.asyncProperty(caseArb(corpus, knownSha), async (c) => {
    if (stopped || performance.now() - started > options.timeLimitMs) return true;
    const iteration = ++iterations;
    const input = () => describeCase(c, corpus);
    recent.push(input());
    if (recent.length > 3) recent.shift();
    const fail = async (what: string, o?: Outcome) => {
      if (stopped) return true;
      // A crash shows on whichever case was running when the process went: name the last few cases.
      await new Promise((r) => setTimeout(r, 300));
      const died = !options.isAlive();
      const text = died ? `the node process exited (${what})` : what;
      const shown = died ? recent.map((r, i) => `[${i - recent.length + 1}] ${r}`).join("\n    ") : input();
      violations.push({ iteration, what: text, target: o?.target ?? "", status: o?.reply.status ?? "", message: o?.reply.message ?? "", ms: o?.reply.ms ?? 0, input: shown });
      log(`violation #${iteration}: ${text}\n  input: ${shown}`);
      return false;
    };
    const o = await runCase(client, c, corpus, marginMs, options.credentials);
    maxLatencyMs = Math.max(maxLatencyMs, o.reply.ms);
    bump(histogram, o.reply.status);
    bump((byTarget[o.target] ??= {}), o.reply.status);
    for (const code of o.itemCodes) bump(itemHistogram, code);

    if (o.reply.status === "NO_ANSWER") return fail(`no answer within deadline ${o.timeoutMs} ms + ${marginMs} ms margin`, o);
    if (o.reply.ms > o.timeoutMs + marginMs) return fail(`answered after ${Math.round(o.reply.ms)} ms, past deadline ${o.timeoutMs} ms + ${marginMs} ms`, o);
    const allowed = c.kind === "text" ? ALLOWED_LOOKUP : c.kind === "auth" ? ALLOWED_AUTH : ALLOWED;
    const protocol = c.kind === "auth" ? undefined : protocolStatusOf(o.reply.status, o.reply.message);
    if (protocol !== undefined) bump(protocolStatuses, protocol);
    const bad = [o.reply.status, ...o.itemCodes].filter((s) => !allowed.has(s) && !(s === o.reply.status && protocol !== undefined));
    if (bad.length > 0) {
      const bugs = new Set(bad.map((s) => knownBugOf(c, s)));
      const bug = bugs.size === 1 ? [...bugs][0] : undefined;
      if (bug === undefined) return fail(`status ${bad.join(", ")} is not a proper answer`, o);
      bump(tolerated, bug);
    }
    for (const e of o.echoes) {
      if (e.expected.includes(e.got)) continue;
      if (isOpen("B9") && e.expected.map((x) => x.replace(/^\ufeff/, "")).includes(e.got)) {
        bump(tolerated, "B9");
        continue;
      }
      return fail(`request_id came back as ${JSON.stringify(e.got)}, not ${JSON.stringify(e.expected[0])}`, o);
    }
    if (sampler.sample() > options.rssCeilingMb) return fail(`RSS ${sampler.maxMb.toFixed(0)} MiB is over the ${options.rssCeilingMb} MiB ceiling`, o);
    if (iteration % healthEvery === 0) {
      if (!options.isAlive()) return fail("the node process exited", o);
      const h = await healthz(options.url);
      if (h !== 200) return fail(`/healthz answered ${h}`, o);
      log(`${iteration} cases, ${((performance.now() - started) / 1000).toFixed(0)} s, max RSS ${sampler.maxMb.toFixed(0)} MiB, ${JSON.stringify(histogram)}`);
    }
    return true;
  });

  const details = await fc.check(property, {
    numRuns: options.numRuns,
    ...(options.seed === undefined ? {} : { seed: options.seed }),
    ...(options.path === undefined ? {} : { path: options.path }),
    endOnFailure: true,
    plugins: [fc.interruptAfterTimeLimit(options.timeLimitMs)],
  });
  stopped = true;
  if (details.failed && violations.length === 0) {
    // The property threw (a harness error): report it as a violation too.
    violations.push({ iteration: iterations, what: `harness error: ${String(details.errorInstance)}`, target: "", status: "", message: "", ms: 0, input: "" });
  }
  // Final checks: alive, healthy, still classifying.
  if (!options.isAlive()) violations.push({ iteration: iterations, what: "the node process exited", target: "", status: "", message: "", ms: 0, input: "" });
  else {
    const h = await healthz(options.url);
    if (h !== 200) violations.push({ iteration: iterations, what: `/healthz answered ${h} after the run`, target: "", status: "", message: "", ms: 0, input: "" });
    const after = await client.call(P.classify, { body: [bin(ClassifyRequestSchema, { image: eagle, topK: 1 })], headers: auth, timeoutMs: 30_000, waitMs: 35_000 });
    if (after.status !== "OK") violations.push({ iteration: iterations, what: `a normal classify after the run answered ${after.status}`, target: "edge.Classify", status: after.status, message: after.message, ms: after.ms, input: "bald_eagle.jpeg" });
  }
  const unhandled = (options.output?.() ?? "").split("\n").filter((l) => l.includes('"msg":"unhandled rejection"'));
  if (unhandled.length > 0) {
    violations.push({ iteration: iterations, what: `the node logged ${unhandled.length} unhandled rejection(s)`, target: "", status: "", message: unhandled[0]!.slice(0, 300), ms: 0, input: "" });
  }
  const maxRssMb = sampler.stop();
  if (maxRssMb > options.rssCeilingMb) violations.push({ iteration: iterations, what: `RSS ${maxRssMb.toFixed(0)} MiB is over the ${options.rssCeilingMb} MiB ceiling`, target: "", status: "", message: "", ms: 0, input: "" });
  client.close();
  return {
    seed: details.seed,
    iterations,
    elapsedMs: performance.now() - started,
    maxRssMb,
    rssSamples: sampler.samples,
    maxLatencyMs,
    histogram,
    itemHistogram,
    byTarget,
    tolerated,
    protocolStatuses,
    violations,
    counterexamplePath: details.counterexamplePath ?? undefined,
  };
}

/** The report as lines for a person. */
export function formatReport(r: FuzzReport): string {
  const sorted = (h: Record<string, number>) =>
    Object.entries(h)
      .sort((a, b) => b[1] - a[1])
      .map(([k, v]) => `${k}=${v}`)
      .join(" ");
  const lines = [
    `fuzz: ${r.iterations} cases in ${(r.elapsedMs / 1000).toFixed(1)} s (seed ${r.seed}${r.counterexamplePath === undefined ? "" : `, path ${r.counterexamplePath}`})`,
    `max RSS ${r.maxRssMb.toFixed(0)} MiB over ${r.rssSamples} samples; slowest answer ${Math.round(r.maxLatencyMs)} ms`,
    `statuses: ${sorted(r.histogram)}`,
    `stream item statuses: ${sorted(r.itemHistogram) || "-"}`,
    ...Object.entries(r.byTarget)
      .sort()
      .map(([t, h]) => `  ${t}: ${sorted(h)}`),
    `spec-mandated protocol statuses: ${sorted(r.protocolStatuses) || "none"}`,
    `tolerated open known bugs: ${sorted(r.tolerated) || "none"}`,
    `violations: ${r.violations.length}`,
    ...r.violations.slice(0, 5).map((v) => `  #${v.iteration} ${v.what} [${v.target} ${v.status} ${JSON.stringify(v.message.slice(0, 160))} ${Math.round(v.ms)} ms]\n    input: ${v.input}`),
  ];
  return lines.join("\n");
}
