import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as http from "node:http";
import * as http2 from "node:http2";
import * as net from "node:net";
import { after, before, describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { gzipSync } from "node:zlib";
import sharp from "sharp";
import { CategorizeService, ClassifyRequestSchema, ClassifyResponseSchema, ClassifyUploadRequestSchema } from "../../gen/categorize/v1/categorize_pb.js";
import { DataType, InferRequestSchema, InferResponseSchema, TensorLayout, TensorSchema } from "../../gen/categorize/v1/inference_pb.js";
import { ImageInfoSchema } from "../../gen/categorize/v1/types_pb.js";
import { INTERNAL_SECRET_HEADER } from "../../common/server/access-control.js";
import { readImage } from "../support/fixtures.js";
import { spawnNode, type NodeProcess } from "../support/nodes.js";
import type { Credentials } from "./support/fuzz-run.js";
import { hostileStrings } from "./support/fuzz-run.js";
import { decodeExact, grpcFrame, RawGrpcClient } from "./support/grpc-raw.js";
import * as H from "./support/hostile-images.js";
import { isOpen, todoWhileOpen } from "./support/known-bugs.js";
import { alive, healthz, isolatedEnv, memoryOf, RssSampler } from "./support/proc.js";
import { spawnSecuredNode } from "./support/secured-node.js";
import { openSlowClients, splitHttp1Request, type SlowClients } from "./support/slow-clients.js";

/**
 * Named hostile inputs against an embedded node (edge + core) running as a
 * child process with production-like access control. Every case asserts the
 * exact status (and where it matters time and the node's RSS from /proc),
 * then that the node still classifies bald_eagle.jpeg. Cases that expose an
 * open product bug run as `todo` (see support/known-bugs.ts).
 */

const MiB = 1024 * 1024;
const EAGLE_CLASS = 22;
const CLASSIFY = "/categorize.v1.CategorizeService/Classify";
const UPLOAD = "/categorize.v1.CategorizeService/ClassifyUpload";
const INFER = "/categorize.v1.InferenceService/Infer";
/** How long the node may keep slow clients before cutting them: headersTimeout (30 s) + Node's check interval (30 s) + margin. */
const SLOW_CLIENT_CUT_MS = 65_000;
/** RSS a single hostile image may add to the node (the largest allowed decode is 64 Mpx). */
const PER_CASE_RSS_MB = 350;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function failure(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  assert.fail("expected the call to fail");
}

describe("hostile input against an edge + core node in a child process", { timeout: 300_000 }, () => {
  let node: NodeProcess;
  let creds: Credentials;
  let raw: RawGrpcClient;
  let auth: { authorization: string };
  let client: ReturnType<typeof clientFor>;
  let slow: { h1: SlowClients; h2: SlowClients; silent: SlowClients; openedAt: number } | undefined;
  const eagle = readImage("bald_eagle.jpeg");
  const eagleSha = createHash("sha256").update(eagle).digest("hex");
  /** Request ids and hashes sent by these tests: none may turn up as a metric label. */
  const sentIdentifiers = new Set<string>([eagleSha]);

  const classify = (image: Uint8Array, extra: { topK?: number; requestId?: string } = {}, timeoutMs = 30_000) => client.classify({ image, ...extra }, { headers: auth, timeoutMs });

  /** The node is alive, healthy, and still classifies the eagle correctly. */
  async function assertServes(context: string): Promise<void> {
    assert.ok(alive(node), `${context}: the node process exited:\n${node.output().slice(-2000)}`);
    const res = await classify(eagle, { topK: 1 });
    assert.equal(res.labels[0]?.index, EAGLE_CLASS, `${context}: the eagle is still an eagle`);
  }

  /** Classify with the node's RSS sampled; the status (OK or a code name), the answer, time and RSS growth. */
  async function measured(image: Uint8Array, timeoutMs = 30_000) {
    const sampler = new RssSampler(node.child.pid!, 20).start();
    const base = memoryOf(node.child.pid!)?.rssMb ?? 0;
    const started = performance.now();
    try {
      const res = await classify(image, { topK: 1 }, timeoutMs);
      return { code: "OK" as const, res, message: "", ms: performance.now() - started, growthMb: sampler.stop() - base };
    } catch (err) {
      const e = ConnectError.from(err);
      return { code: Code[e.code], res: undefined, message: e.rawMessage, ms: performance.now() - started, growthMb: sampler.stop() - base };
    }
  }

  before(async () => {
    ({ node, credentials: creds } = await spawnSecuredNode({ REQUEST_TIMEOUT_MS: "4000" }));
    auth = { authorization: `Bearer ${creds.apiKey}` };
    raw = new RawGrpcClient(node.url);
    client = clientFor(node.url);
    await assertServes("before any hostile input");
    // Slow clients stay open during every other case: the node must keep serving meanwhile.
    const openedAt = Date.now();
    slow = {
      h1: await openSlowClients(node.url, "http1-trickle", 100, { intervalMs: 500, maxMs: SLOW_CLIENT_CUT_MS + 30_000 }),
      h2: await openSlowClients(node.url, "http2-no-settings", 100),
      silent: await openSlowClients(node.url, "silent", 50),
      openedAt,
    };
  });

  after(async () => {
    slow?.h1.stop();
    slow?.h2.stop();
    slow?.silent.stop();
    raw?.close();
    await node?.kill();
  });

  describe("decompression bombs: real images whose headers declare a huge size", () => {
    const cases: [string, () => Buffer | Promise<Buffer>, RegExp][] = [
      ["PNG IHDR 100000x100000", () => H.pngBomb(100_000, 100_000), /100000x100000; the largest side allowed is 16384/],
      ["PNG IHDR 16000x16000 (256 Mpx)", () => H.pngBomb(16_000, 16_000), /256000000 pixels\); at most 64000000/],
      ["JPEG SOF 65500x65500", () => H.jpegBomb(65_500, 65_500), /65500x65500; the largest side/],
      ["JPEG SOF 16000x16000", () => H.jpegBomb(16_000, 16_000), /256000000 pixels/],
      ["WebP VP8 frame 16383x16383", () => H.webpBomb("lossy", 16_383, 16_383), /268402689 pixels/],
      ["WebP VP8L header 16383x16383", () => H.webpBomb("lossless", 16_383, 16_383), /268402689 pixels/],
      ["WebP VP8X canvas 16383x16383", () => H.webpBomb("extended", 16_383, 16_383), /268402689 pixels/],
      ["WebP VP8X canvas 16000000x16000000", () => H.webpBomb("extended", 16_000_000, 16_000_000), /header/],
      ["GIF logical screen 65535x65535", () => H.gifBomb(65_535, 65_535), /65535x65535; the largest side/],
      ["TIFF IFD 65535x65535", () => H.tiffBomb(1_000_000, 1_000_000), /65535x65535; the largest side/],
      ["PNG that really inflates to 9000x9000 (77 KB -> 81 Mpx)", () => H.realPngBomb(9_000), /81000000 pixels/],
    ];
    for (const [name, make, message] of cases) {
      it(`${name} -> INVALID_ARGUMENT from the header, before any decode`, async () => {
        const r = await measured(await make());
        assert.equal(r.code, "InvalidArgument", `${name}: ${r.message}`);
        assert.match(r.message, message);
        assert.ok(r.ms < 3_000, `${name}: refused in ${Math.round(r.ms)} ms`);
        assert.ok(r.growthMb < 100, `${name}: RSS grew ${r.growthMb.toFixed(0)} MiB`);
        await assertServes(name);
      });
    }

    it("a PNG that really inflates to 8000x8000 (exactly the 64 Mpx limit) decodes in bounded time and memory -> OK", async () => {
      const bomb = H.realPngBomb(8_000);
      assert.ok(bomb.length < 100_000, `${bomb.length} bytes`);
      const r = await measured(bomb);
      assert.equal(r.code, "OK", r.message);
      assert.equal(r.res?.image?.width, 8_000);
      assert.ok(r.ms < 8_000, `decoded in ${Math.round(r.ms)} ms`);
      assert.ok(r.growthMb < PER_CASE_RSS_MB, `RSS grew ${r.growthMb.toFixed(0)} MiB`);
      await assertServes("64 Mpx PNG");
    });
  });

  describe("many large frames or pages: only the first is decoded", () => {
    it("a 2000-frame GIF of 1500x1500 frames (4.5 Gpx in all, ~6 MB) -> OK from frame 0 in < 5 s, RSS bounded", async () => {
      const gif = await H.multiFrameGif(2_000, 1_500);
      assert.ok(gif.length < MiB * 8, `${gif.length} bytes`);
      const r = await measured(gif);
      assert.equal(r.code, "OK", r.message);
      assert.equal(r.res?.image?.mime, "image/gif");
      assert.equal(r.res?.image?.height, 1_500, "the height of one frame, not of all frames");
      assert.equal(r.res?.labels[0]?.index, EAGLE_CLASS, "frame 0 is the eagle");
      assert.ok(r.ms < 5_000, `${Math.round(r.ms)} ms`);
      assert.ok(r.growthMb < PER_CASE_RSS_MB, `RSS grew ${r.growthMb.toFixed(0)} MiB (all frames would be ~18 GB)`);
      await assertServes("multi-frame GIF");
    });

    it("a 2000-page TIFF of 4000x4000 pages (32 Gpx in all, < 1 MB) -> OK from page 0 in < 5 s, RSS bounded", async () => {
      const tiff = await H.multiPageTiff(2_000, 4_000);
      assert.ok(tiff.length < MiB, `${tiff.length} bytes`);
      const r = await measured(tiff);
      assert.equal(r.code, "OK", r.message);
      assert.equal(r.res?.image?.mime, "image/tiff");
      assert.equal(r.res?.image?.height, 4_000);
      assert.equal(r.res?.labels[0]?.index, EAGLE_CLASS);
      assert.ok(r.ms < 5_000, `${Math.round(r.ms)} ms`);
      assert.ok(r.growthMb < PER_CASE_RSS_MB, `RSS grew ${r.growthMb.toFixed(0)} MiB`);
      await assertServes("multi-page TIFF");
    });

    it("a TIFF whose IFD chain loops back to its first page -> OK from page 0, no endless walk", async () => {
      const r = await measured(await H.multiPageTiff(3, 800, { loop: true }));
      assert.equal(r.code, "OK", r.message);
      assert.ok(r.ms < 5_000, `${Math.round(r.ms)} ms`);
      await assertServes("looping TIFF");
    });
  });

  describe("SVG and XML with external entities are refused before any parsing", () => {
    let hits: string[];
    let server: http.Server;
    let url: string;
    before(async () => {
      hits = [];
      server = http.createServer((req, res) => {
        hits.push(req.url ?? "");
        res.end("<!ENTITY x 'resolved'>");
      });
      await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
      url = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`;
    });
    after(() => new Promise<void>((r) => server.close(() => r())));

    it("every SVG/XML variant -> INVALID_ARGUMENT as a format refusal; nothing fetched; no decode attempted", async () => {
      const decodeRejections = await metric(opsUrl(node), "categorize_preprocess_rejections_total", { reason: "decode" });
      for (const [name, doc] of H.xxeDocuments(url)) {
        const e = await failure(classify(doc));
        assert.equal(e.code, Code.InvalidArgument, `${name}: ${e.message}`);
        assert.match(e.rawMessage, /SVG\/XML images are not accepted|application\/xml is not accepted|not a recognised image format|application\/gzip is not accepted/, name);
      }
      await sleep(300);
      assert.deepEqual(hits, [], "no entity, image or stylesheet URL was fetched");
      assert.equal(await metric(opsUrl(node), "categorize_preprocess_rejections_total", { reason: "decode" }), decodeRejections, "none reached the decoder");
      await assertServes("SVG/XML");
    });
  });

  describe("polyglots: what the sniffer says is what is decoded", () => {
    for (const [name, bytes, mime] of H.polyglots()) {
      it(`${name} -> ${mime === undefined ? "INVALID_ARGUMENT (not an image at offset 0)" : `OK as ${mime}`}`, async () => {
        const r = await measured(bytes);
        if (mime === undefined) {
          assert.equal(r.code, "InvalidArgument", r.message);
          assert.match(r.message, /not accepted|not a recognised image format/);
        } else {
          assert.equal(r.code, "OK", r.message);
          assert.equal(r.res?.image?.mime, mime);
          if (mime === "image/jpeg") assert.equal(r.res?.labels[0]?.index, EAGLE_CLASS, "the image part is what was classified");
        }
        await assertServes(name);
      });
    }

    it("a GIF that is also JavaScript (width bytes '/*', trailer '*/=alert()') -> OK as image/gif", async () => {
      const r = await measured(await H.gifJsPolyglot());
      assert.equal(r.code, "OK", r.message);
      assert.equal(r.res?.image?.mime, "image/gif");
      assert.equal(r.res?.labels[0]?.index, EAGLE_CLASS);
      await assertServes("GIF/JS polyglot");
    });
  });

  describe("archive bombs sent as images", () => {
    it("a ZIP whose [Content_Types].xml (and 3 more entries) inflate to 64 MiB each -> INVALID_ARGUMENT fast, RSS bounded", async () => {
      const r = await measured(H.zipBomb(64));
      assert.equal(r.code, "InvalidArgument", r.message);
      assert.match(r.message, /application\/zip is not accepted/);
      assert.ok(r.ms < 3_000, `${Math.round(r.ms)} ms`);
      assert.ok(r.growthMb < 100, `RSS grew ${r.growthMb.toFixed(0)} MiB`);
      await assertServes("zip bomb");
    });

    it("a gzip stream of 256 MiB of zeros -> INVALID_ARGUMENT fast, RSS bounded", async () => {
      const r = await measured(H.gzipBomb(256));
      assert.equal(r.code, "InvalidArgument", r.message);
      assert.match(r.message, /application\/gzip is not accepted/);
      assert.ok(r.ms < 3_000, `${Math.round(r.ms)} ms`);
      assert.ok(r.growthMb < 100, `RSS grew ${r.growthMb.toFixed(0)} MiB`);
      await assertServes("gzip bomb");
    });

    it("a gRPC message gzip-compressed from 200 MiB (grpc-encoding: gzip) -> RESOURCE_EXHAUSTED after 20 MiB inflated, RSS bounded", async () => {
      const sampler = new RssSampler(node.child.pid!, 20).start();
      const base = memoryOf(node.child.pid!)?.rssMb ?? 0;
      const bomb = gzipSync(toBinary(ClassifyRequestSchema, create(ClassifyRequestSchema, { image: Buffer.alloc(200 * MiB) })), { level: 9 });
      const r = await raw.call(CLASSIFY, { body: [grpcFrame(bomb, { compressed: true })], headers: { ...auth, "grpc-encoding": "gzip" }, waitMs: 10_000 });
      const growth = sampler.stop() - base;
      assert.equal(r.status, "RESOURCE_EXHAUSTED", r.message);
      assert.match(r.message, /larger than configured readMaxBytes .* after decompression/);
      assert.ok(growth < 150, `RSS grew ${growth.toFixed(0)} MiB`);
      await assertServes("gRPC gzip bomb");
    });
  });

  describe("enormous EXIF and ICC blocks, up to the size limit", () => {
    const cases: [string, () => Promise<Buffer> | Buffer][] = [
      ["JPEG with real EXIF then 19 MiB of APP1 Exif segments", () => H.jpegWithHugeExif(19 * MiB)],
      ["JPEG with a 15 MB ICC profile over 229 APP2 segments", () => H.jpegWithHugeIcc(15_000_000)],
      ["JPEG with a 1 MB ICC profile of random bytes", () => H.jpegWithHugeIcc(1_000_000, { garbage: true })],
      ["PNG with a 15 MB zTXt chunk", () => H.pngWithHugeChunk("zTXt", 15_000_000)],
      ["PNG with a 15 MB eXIf chunk", () => H.pngWithHugeChunk("eXIf", 15_000_000)],
      ["PNG with a 15 MB private ancillary chunk", () => H.pngWithHugeChunk("prIv", 15_000_000)],
      ["PNG with an iCCP chunk inflating to 100 MB", () => H.pngWithHugeChunk("iCCP", 100_000_000)],
    ];
    for (const [name, make] of cases) {
      it(`${name} -> OK (metadata ignored), in bounded time and memory`, async () => {
        const bytes = await make();
        assert.ok(bytes.length <= 20 * MiB, `${bytes.length} bytes is within MAX_IMAGE_BYTES`);
        const r = await measured(bytes);
        assert.equal(r.code, "OK", r.message);
        assert.ok(r.ms < 8_000, `${Math.round(r.ms)} ms`);
        assert.ok(r.growthMb < PER_CASE_RSS_MB, `RSS grew ${r.growthMb.toFixed(0)} MiB`);
        await assertServes(name);
      });
    }

    it("the same EXIF padding one MiB past the size limit -> RESOURCE_EXHAUSTED without decoding", async () => {
      const r = await measured(await H.jpegWithHugeExif(21 * MiB));
      assert.equal(r.code, "ResourceExhausted", r.message);
      await assertServes("over the size limit");
    });
  });

  describe("streaming uploads", () => {
    async function upload1GiB(declared: bigint) {
      const chunk = Buffer.alloc(MiB, 0xab);
      let sent = 0;
      async function* gigabyte() {
        for (let i = 0; i < 1024; i++) {
          sent += chunk.length;
          yield create(ClassifyUploadRequestSchema, { chunk, requestId: "gigabyte", totalSize: i === 0 ? declared : 0n });
        }
      }
      const sampler = new RssSampler(node.child.pid!, 20).start();
      const base = memoryOf(node.child.pid!)?.rssMb ?? 0;
      const started = performance.now();
      const e = await failure(client.classifyUpload(gigabyte(), { headers: auth, timeoutMs: 60_000 }));
      return { e, sentMb: sent / MiB, ms: performance.now() - started, growthMb: sampler.stop() - base };
    }

    it("a 1 GiB upload (no declared size) -> RESOURCE_EXHAUSTED once 20 MiB arrived; the client stops sending; RSS stays low", async () => {
      const r = await upload1GiB(0n);
      assert.equal(r.e.code, Code.ResourceExhausted, r.e.message);
      assert.match(r.e.rawMessage, /upload exceeds the limit of 20971520 bytes/);
      assert.ok(r.sentMb < 64, `refused after ${r.sentMb} MiB sent`);
      assert.ok(r.growthMb < 150, `RSS grew ${r.growthMb.toFixed(0)} MiB`);
      await assertServes("1 GiB upload");
    });

    it("a 1 GiB upload declaring total_size = 1 GiB -> RESOURCE_EXHAUSTED at the first message", async () => {
      const r = await upload1GiB(1n << 30n);
      assert.equal(r.e.code, Code.ResourceExhausted, r.e.message);
      assert.match(r.e.rawMessage, /declared size 1073741824 bytes exceeds the limit/);
      assert.ok(r.sentMb < 16, `refused after ${r.sentMb} MiB sent`);
      await assertServes("declared 1 GiB upload");
    });

    // The first chunk is a complete valid image: with bug B1 open, an invalid first chunk would crash the node when the stream ends after its deadline.
    const holdUpload = (headers: Record<string, string>, waitMs: number) =>
      raw.call(UPLOAD, { body: [grpcFrame(toBinary(ClassifyUploadRequestSchema, create(ClassifyUploadRequestSchema, { chunk: eagle, requestId: "held" })))], headers: { ...auth, ...headers }, endStream: false, waitMs });

    it("a ClassifyUpload that never sends its last chunk -> DEADLINE_EXCEEDED at its grpc-timeout", { todo: todoWhileOpen("B4") }, async () => {
      const r = await holdUpload({ "grpc-timeout": "1500m" }, 4_500);
      assert.equal(r.status, "DEADLINE_EXCEEDED", `after ${Math.round(r.ms)} ms: ${r.status} ${r.message}`);
      assert.ok(r.ms < 3_500, `${Math.round(r.ms)} ms`);
    });

    it("a ClassifyUpload without grpc-timeout that never sends its last chunk -> DEADLINE_EXCEEDED at REQUEST_TIMEOUT_MS (4 s here)", { todo: todoWhileOpen("B4") }, async () => {
      const r = await holdUpload({}, 7_000);
      assert.equal(r.status, "DEADLINE_EXCEEDED", `after ${Math.round(r.ms)} ms: ${r.status} ${r.message}`);
    });

    it("when the client of a held upload gives up (RST_STREAM CANCEL), the call is freed and the node serves", async () => {
      const r = await holdUpload({}, 1_000);
      assert.equal(r.status, "NO_ANSWER", "nothing answers an upload that is still open");
      // The client cancelled; nothing stays in flight.
      let inFlight = Number.NaN;
      for (let i = 0; i < 40 && inFlight !== 0; i++) {
        await sleep(100);
        inFlight = await metric(opsUrl(node), "categorize_rpc_in_flight", { method: "ClassifyUpload" });
      }
      assert.equal(inFlight, 0, "ClassifyUpload calls in flight");
      await assertServes("abandoned upload");
    });

    it("an abandoned upload is counted as CANCELED, not INTERNAL", { todo: todoWhileOpen("B5") }, async () => {
      const internal = () => metric(opsUrl(node), "categorize_rpc_requests_total", { method: "ClassifyUpload", code: "INTERNAL" });
      const before = await internal();
      // The client goes away for good: its connection closes with the upload open.
      const once = new RawGrpcClient(node.url);
      const pending = once.call(UPLOAD, { body: [grpcFrame(toBinary(ClassifyUploadRequestSchema, create(ClassifyUploadRequestSchema, { chunk: eagle })))], headers: auth, endStream: false, waitMs: 5_000 });
      await sleep(300);
      once.close();
      await pending;
      await sleep(500);
      assert.equal(await internal(), before, "INTERNAL ClassifyUpload count did not grow");
    });
  });

  describe("malformed gRPC frames and wrong content types", () => {
    const emptyRequest = () => grpcFrame(toBinary(ClassifyRequestSchema, create(ClassifyRequestSchema, {})));
    const frameCases: [string, () => Buffer[], Record<string, string>, string, RegExp][] = [
      ["length prefix 4 GiB", () => [grpcFrame(Buffer.alloc(0), { declaredLength: 0xffff_ffff })], {}, "RESOURCE_EXHAUSTED", /larger than configured readMaxBytes/],
      ["length prefix 1000, 10 bytes sent", () => [grpcFrame(Buffer.alloc(10), { declaredLength: 1000 })], {}, "INVALID_ARGUMENT", /incomplete envelope/],
      ["truncated frame header (3 bytes)", () => [Buffer.from([0, 0, 0])], {}, "INVALID_ARGUMENT", /incomplete envelope/],
      ["gzip flag with undecodable bytes", () => [grpcFrame(Buffer.from("not gzip"), { compressed: true })], { "grpc-encoding": "gzip" }, "INVALID_ARGUMENT", /decompression failed/],
      ["unknown grpc-encoding (gRPC spec: UNIMPLEMENTED)", () => [grpcFrame(Buffer.from("x"), { compressed: true })], { "grpc-encoding": "snappy" }, "UNIMPLEMENTED", /unknown compression "snappy"/],
      ["grpc-timeout that is not a timeout", () => [emptyRequest()], { "grpc-timeout": "abc" }, "INVALID_ARGUMENT", /invalid grpc timeout value/],
    ];
    for (const [name, body, headers, status, message] of frameCases) {
      it(`${name} -> ${status}`, async () => {
        const r = await raw.call(CLASSIFY, { body: body(), headers: { ...auth, ...headers }, waitMs: 10_000 });
        assert.equal(r.status, status, `${name}: ${r.message}`);
        assert.match(r.message, message);
        await assertServes(name);
      });
    }

    // The gRPC specification prescribes these codes for protocol violations (grpc/doc/statuscodes.md and
    // compression.md); grpc-go and grpc-java answer the same. What matters here: a clear message, and the node serves on.
    it("compressed flag without grpc-encoding -> INTERNAL naming the flag, as the gRPC compression spec requires", async () => {
      const r = await raw.call(CLASSIFY, { body: [grpcFrame(toBinary(ClassifyRequestSchema, create(ClassifyRequestSchema, { image: eagle })), { compressed: true })], headers: auth, waitMs: 10_000 });
      assert.equal(r.status, "INTERNAL", `observed ${r.status}: ${r.message}`);
      assert.match(r.message, /compressed envelope/);
      await assertServes("compressed flag without encoding");
    });

    it("bytes that are not protobuf as a ClassifyRequest -> INTERNAL 'parse binary', as gRPC prescribes for an unparsable request", async () => {
      const r = await raw.call(CLASSIFY, { body: [grpcFrame(Buffer.from([0xff, 0xff, 0xff, 0x01, 0x02]))], headers: auth, waitMs: 10_000 });
      assert.equal(r.status, "INTERNAL", `observed ${r.status}: ${r.message}`);
      assert.match(r.message, /^parse binary: /);
      await assertServes("unparsable request");
    });

    it("two messages on a unary method, or none -> UNIMPLEMENTED (gRPC's request cardinality violation)", async () => {
      const two = await raw.call(CLASSIFY, { body: [emptyRequest(), emptyRequest()], headers: auth, waitMs: 10_000 });
      const none = await raw.call(CLASSIFY, { body: [], headers: auth, waitMs: 10_000 });
      assert.deepEqual([two.status, none.status], ["UNIMPLEMENTED", "UNIMPLEMENTED"], `observed ${two.message} / ${none.message}`);
      assert.match(two.message, /received extra input message for unary method/);
      assert.match(none.message, /missing input message for unary method/);
      await assertServes("unary cardinality");
    });

    it("malformed frames on the core's Infer stream -> INVALID_ARGUMENT or RESOURCE_EXHAUSTED, never a crash", async () => {
      const core = { [INTERNAL_SECRET_HEADER]: creds.coreSecret };
      const a = await raw.call(INFER, { body: [grpcFrame(Buffer.alloc(10), { declaredLength: 500 })], headers: core, waitMs: 10_000 });
      const b = await raw.call(INFER, { body: [grpcFrame(Buffer.alloc(0), { declaredLength: 0x7fff_ffff })], headers: core, waitMs: 10_000 });
      assert.deepEqual([a.status, b.status], ["INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"], `${a.message} / ${b.message}`);
      await assertServes("malformed Infer frames");
    });

    const contentTypes: [string, "h1" | "h2", Record<string, string>, string, number, RegExp | undefined][] = [
      ["application/json to a gRPC path over HTTP/2 (a Connect call)", "h2", { "content-type": "application/json" }, "{}", 400, /"code":"invalid_argument"/],
      ["application/json to a gRPC path over HTTP/1.1 (a Connect call)", "h1", { "content-type": "application/json" }, "{}", 400, /"code":"invalid_argument"/],
      ["broken JSON over HTTP/1.1", "h1", { "content-type": "application/json" }, "{", 400, /"code":"invalid_argument"/],
      ["text/plain over HTTP/2", "h2", { "content-type": "text/plain" }, "hello", 415, undefined],
      ["text/plain over HTTP/1.1", "h1", { "content-type": "text/plain" }, "hello", 415, undefined],
      ["no content type over HTTP/1.1", "h1", {}, "hello", 415, undefined],
    ];
    for (const [name, version, headers, body, status, bodyPattern] of contentTypes) {
      it(`${name} -> HTTP ${status}`, async () => {
        let got: { status: number; text: string };
        if (version === "h1") {
          // Bytes, so fetch adds no content type of its own.
          const res = await fetch(`${node.url}${CLASSIFY}`, { method: "POST", headers: { ...auth, ...headers }, body: new TextEncoder().encode(body) });
          got = { status: res.status, text: await res.text() };
        } else {
          const r = await raw.call(CLASSIFY, { body: [Buffer.from(body)], headers: { ...auth, ...headers }, waitMs: 10_000 });
          got = { status: r.httpStatus ?? 0, text: Buffer.concat(r.messages.map((m) => Buffer.from(m))).toString() };
        }
        assert.equal(got.status, status, got.text);
        if (bodyPattern !== undefined) assert.match(got.text, bodyPattern);
        await assertServes(name);
      });
    }
  });

  describe("huge metadata headers", () => {
    const big = (n: number) => Buffer.from(H.pseudoRandomBytes(n, 11).map((b) => 97 + (b % 26))).toString("latin1");

    it("one 100 KB header value over HTTP/2 -> the connection is refused (GOAWAY COMPRESSION_ERROR: over the 64 KB per-field HPACK limit); the node serves others", async () => {
      const once = new RawGrpcClient(node.url);
      const r = await once.call(CLASSIFY, { body: [grpcFrame(Buffer.alloc(0))], headers: { ...auth, "x-big": big(100 * 1024) }, waitMs: 10_000 });
      once.close();
      assert.equal(r.rstCode, http2.constants.NGHTTP2_COMPRESSION_ERROR, `${r.status} ${r.message}`);
      await assertServes("100 KB header value");
    });

    it("1000 headers totalling 100 KB over HTTP/2 -> RST_STREAM ENHANCE_YOUR_CALM (RESOURCE_EXHAUSTED)", async () => {
      const headers = Object.fromEntries(Array.from({ length: 1000 }, (_, i) => [`x-h${i}`, big(100)]));
      const r = await raw.call(CLASSIFY, { body: [grpcFrame(Buffer.alloc(0))], headers: { ...auth, ...headers }, waitMs: 10_000 });
      assert.equal(r.status, "RESOURCE_EXHAUSTED", r.message);
      assert.equal(r.rstCode, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
      await assertServes("many headers");
    });

    it("a 100 KB header over HTTP/1.1 -> 431 Request Header Fields Too Large and the connection closed", async () => {
      const { port } = new URL(node.url);
      const reply = await new Promise<string>((resolve) => {
        const s = net.connect(Number(port), "127.0.0.1");
        let text = "";
        const timer = setTimeout(() => s.destroy(), 5_000);
        s.on("data", (d: Buffer) => (text += d.toString("latin1")));
        s.on("error", () => undefined);
        s.on("close", () => {
          clearTimeout(timer);
          resolve(text);
        });
        s.write(`POST ${CLASSIFY} HTTP/1.1\r\nHost: x\r\nContent-Type: application/grpc-web+proto\r\nX-Big: ${big(100 * 1024)}\r\nContent-Length: 5\r\n\r\n\0\0\0\0\0`);
      });
      assert.match(reply, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
      assert.match(reply, /Connection: close/i);
      await assertServes("100 KB HTTP/1.1 header");
    });

    it("a 100 KB x-request-id over HTTP/2 -> refused like any oversized header, nothing logged from it", async () => {
      const once = new RawGrpcClient(node.url);
      const marker = `rid-${big(100 * 1024)}`;
      const r = await once.call(CLASSIFY, { body: [grpcFrame(Buffer.alloc(0))], headers: { ...auth, "x-request-id": marker }, waitMs: 10_000 });
      once.close();
      assert.notEqual(r.status, "OK");
      assert.ok(!node.output().includes(marker.slice(0, 2000)), "the oversized value was not logged");
      await assertServes("100 KB x-request-id");
    });
  });

  describe("unicode, control characters, SQL and traversal in every text field", () => {
    // Free text from clients (request_id, feedback source) is bounded and has no C0/C1 control characters;
    // anything else (SQL, traversal, templates, bidi, emoji, noncharacters) is kept verbatim.
    const CONTROL = /[\u0000-\u001f\u007f-\u009f]/;
    // An empty request_id is replaced by a generated one; a leading U+FEFF has its own test below.
    const verbatim = hostileStrings.filter((s) => s !== "" && !CONTROL.test(s) && s.length <= 128 && !s.startsWith("\ufeff"));
    const refused = [...hostileStrings.filter((s) => CONTROL.test(s)), "x".repeat(129), "🦅".repeat(65)];
    let variant = 0;
    /** A new image each time (distinct bytes after the JPEG end), so the answer is computed and stored, not cached. */
    const freshEagle = () => Buffer.concat([eagle, Buffer.from(`#fresh-${process.pid}-${++variant}`)]);
    const viaEveryMethod = async (image: Buffer, id: string) => {
      const a = await classify(image, { requestId: id, topK: 1 }).then((r) => r.requestId, (err: unknown) => ConnectError.from(err));
      const b = await client
        .classifyUpload(
          (async function* () {
            yield { chunk: image.subarray(0, 1000), requestId: id, totalSize: BigInt(image.length) };
            yield { chunk: image.subarray(1000) };
          })(),
          { headers: auth },
        )
        .then((r) => r.requestId, (err: unknown) => ConnectError.from(err));
      const items = [];
      for await (const r of client.classifyStream(
        (async function* () {
          yield create(ClassifyRequestSchema, { image, requestId: id });
        })(),
        { headers: auth },
      ))
        items.push(r);
      const c = await client.classifyAsync({ image: freshEagle(), requestId: id }, { headers: auth }).then((r) => r.requestId, (err: unknown) => ConnectError.from(err));
      return { classify: a, upload: b, stream: items[0], async: c };
    };

    it("request_id with SQL, traversal, template, bidi, emoji and noncharacter strings comes back verbatim from Classify, ClassifyUpload, ClassifyStream and ClassifyAsync", async () => {
      assert.ok(verbatim.length >= 10, `${verbatim.length} strings`);
      for (const id of verbatim) {
        sentIdentifiers.add(id);
        const r = await viaEveryMethod(freshEagle(), id);
        assert.equal(r.classify, id, "Classify");
        assert.equal(r.upload, id, "ClassifyUpload");
        assert.equal(r.stream?.requestId, id, "ClassifyStream");
        assert.equal(r.stream?.outcome.case, "result", "ClassifyStream");
        assert.equal(r.async, id, "ClassifyAsync");
      }
      await assertServes("hostile request ids");
    });

    it("request_id with a control character (NUL, CR/LF, ESC, BEL...) or over 128 characters -> INVALID_ARGUMENT from every method, on new and stored images", async () => {
      for (const id of refused) {
        for (const image of [freshEagle(), eagle]) {
          const r = await viaEveryMethod(image, id);
          for (const [method, got] of [["Classify", r.classify], ["ClassifyUpload", r.upload], ["ClassifyAsync", r.async]] as const) {
            assert.ok(got instanceof ConnectError, `${method} accepted ${JSON.stringify(id.slice(0, 40))}`);
            assert.equal(got.code, Code.InvalidArgument, `${method}: ${got.message}`);
            assert.match(got.rawMessage, /request_id (must not contain control characters|is at most 128 characters)/);
          }
          assert.equal(r.stream?.outcome.case, "error", "ClassifyStream answers the item with an error");
          assert.equal(r.stream?.outcome.case === "error" ? r.stream.outcome.value.code : 0, Code.InvalidArgument, "ClassifyStream item");
        }
      }
      await assertServes("refused request ids");
    });

    it("a request_id that starts with U+FEFF comes back verbatim", { todo: todoWhileOpen("B9") }, async () => {
      const id = "\ufeff\ufffe\uffffid";
      const r = await raw.call(CLASSIFY, { body: [grpcFrame(toBinary(ClassifyRequestSchema, create(ClassifyRequestSchema, { image: eagle, requestId: id })))], headers: auth, waitMs: 10_000 });
      assert.equal(r.status, "OK", r.message);
      assert.equal(decodeExact(ClassifyResponseSchema, r.messages[0]!).requestId, id);
    });

    it("GetResult with every hostile string (traversal included) as sha256 -> INVALID_ARGUMENT; upper-case hex too", async () => {
      for (const s of [...hostileStrings, "../../etc/passwd", "..%2f..%2fetc%2fpasswd", eagleSha.toUpperCase(), `${eagleSha}/../../x`, `${eagleSha}\u0000`]) {
        sentIdentifiers.add(s);
        const e = await failure(client.getResult({ sha256: s }, { headers: auth }));
        assert.equal(e.code, Code.InvalidArgument, `${JSON.stringify(s)}: ${e.message}`);
      }
      const ok = await client.getResult({ sha256: eagleSha, topK: 1 }, { headers: auth });
      assert.equal(ok.labels[0]?.index, EAGLE_CLASS);
      assert.equal((await failure(client.getResult({ sha256: "0".repeat(64) }, { headers: auth }))).code, Code.NotFound);
    });

    it("SubmitFeedback with every hostile source string -> OK; with a control character or over 200 characters -> INVALID_ARGUMENT", async () => {
      for (const source of hostileStrings.filter((x) => !CONTROL.test(x) && x.length <= 200)) {
        const res = await client.submitFeedback({ sha256: eagleSha, trueClass: EAGLE_CLASS, source }, { headers: auth });
        assert.equal(res.top1Correct, true, JSON.stringify(source));
      }
      for (const source of [...hostileStrings.filter((x) => CONTROL.test(x)), "x".repeat(201)]) {
        const e = await failure(client.submitFeedback({ sha256: eagleSha, trueClass: EAGLE_CLASS, source }, { headers: auth }));
        assert.equal(e.code, Code.InvalidArgument, `${JSON.stringify(source.slice(0, 40))}: ${e.message}`);
        assert.match(e.rawMessage, /source (must not contain control characters|is at most 200 characters)/);
      }
      await assertServes("hostile feedback sources");
    });

    it("hostile x-request-id headers (traversal, SQL, CRLF-free) are accepted and do not break the call", async () => {
      for (const id of ["../../etc/passwd", "'; DROP TABLE classifications; --", "${jndi:ldap://127.0.0.1:1/a}", "<script>alert(1)</script>"]) {
        sentIdentifiers.add(id);
        const res = await client.classify({ image: eagle, topK: 1 }, { headers: { ...auth, "x-request-id": id } });
        assert.equal(res.labels[0]?.index, EAGLE_CLASS);
      }
    });

    it("an InferRequest straight at core with a traversal object_key -> INVALID_ARGUMENT for that item (no file outside the store is touched)", async () => {
      const item = create(InferRequestSchema, {
        id: "1",
        sha256: "ab".repeat(32),
        tensor: create(TensorSchema, { dtype: DataType.UINT8, layout: TensorLayout.HWC, shape: [224, 224, 3], data: Buffer.alloc(224 * 224 * 3, 100) }),
        image: create(ImageInfoSchema, { mime: "image/jpeg", sizeBytes: 10n, width: 1, height: 1, objectKey: "../../../../etc/passwd" }),
        requestId: "../../etc/passwd",
      });
      sentIdentifiers.add(item.sha256);
      const r = await raw.call(INFER, { body: [grpcFrame(toBinary(InferRequestSchema, item))], headers: { [INTERNAL_SECRET_HEADER]: creds.coreSecret }, waitMs: 15_000 });
      assert.equal(r.status, "OK", r.message);
      const answer = fromBinary(InferResponseSchema, r.messages[0]!);
      assert.equal(answer.outcome.case, "error");
      assert.equal(answer.outcome.value?.code, Code.InvalidArgument, answer.outcome.value?.message);
      assert.match(answer.outcome.value?.message ?? "", /object_key is not an originals key/);
    });

    it("an InferRequest straight at core with image width 2^32-1 -> INVALID_ARGUMENT for that item", { todo: todoWhileOpen("B6") }, async () => {
      const item = create(InferRequestSchema, {
        id: "2",
        sha256: "cd".repeat(32),
        tensor: create(TensorSchema, { dtype: DataType.UINT8, layout: TensorLayout.HWC, shape: [224, 224, 3], data: Buffer.alloc(224 * 224 * 3, 90) }),
        image: create(ImageInfoSchema, { mime: "image/jpeg", sizeBytes: 2n ** 64n - 1n, width: 2 ** 32 - 1, height: 2 ** 32 - 1 }),
      });
      const r = await raw.call(INFER, { body: [grpcFrame(toBinary(InferRequestSchema, item))], headers: { [INTERNAL_SECRET_HEADER]: creds.coreSecret }, waitMs: 15_000 });
      const answer = fromBinary(InferResponseSchema, r.messages[0]!);
      assert.equal(answer.outcome.case === "error" ? answer.outcome.value.code : 0, Code.InvalidArgument, answer.outcome.case === "error" ? answer.outcome.value.message : "answered");
    });

    it("the eagle's answer, read back through GetResult, is byte-for-byte a ClassifyResponse (no injected fields)", async () => {
      const r = await raw.call("/categorize.v1.CategorizeService/GetResult", {
        body: [grpcFrame(Buffer.concat([Buffer.from([0x0a, 64]), Buffer.from(eagleSha, "latin1")]))],
        headers: auth,
        waitMs: 10_000,
      });
      assert.equal(r.status, "OK", r.message);
      const res = fromBinary(ClassifyResponseSchema, r.messages[0]!);
      assert.equal(res.sha256, eagleSha);
      assert.equal(res.$unknown, undefined);
    });
  });

  describe("request ids that are very long", () => {
    it("60 new images with 4 MiB request ids do not grow the node's RSS by more than 150 MiB (not pinned in the answer cache)", { todo: todoWhileOpen("B8") }, async () => {
      const small = await sharp(eagle).resize(64).jpeg().toBuffer();
      const id = "r".repeat(4 * MiB);
      const before = memoryOf(node.child.pid!)?.rssMb ?? 0;
      for (let i = 0; i < 60; i++) {
        try {
          await classify(Buffer.concat([small, Buffer.from(`#long-id-${process.pid}-${i}`)]), { requestId: `${id}${i}`, topK: 1 });
        } catch (err) {
          // Refusing such an id is a fix too.
          assert.equal(ConnectError.from(err).code, Code.InvalidArgument, ConnectError.from(err).message);
        }
      }
      await sleep(3_000);
      const growth = (memoryOf(node.child.pid!)?.rssMb ?? 0) - before;
      assert.ok(growth < 150, `RSS grew ${growth.toFixed(0)} MiB and stays so`);
      await assertServes("long request ids");
    });
  });

  describe("slow clients (slowloris)", () => {
    it("with 100 byte-by-byte HTTP/1.1 clients, 100 HTTP/2 connections without SETTINGS and 50 silent ones open, normal requests are served promptly", async () => {
      assert.ok(slow !== undefined);
      assert.ok(slow.h1.open() + slow.h2.open() + slow.silent.open() >= 200, `${slow.h1.open()} + ${slow.h2.open()} + ${slow.silent.open()} slow connections open`);
      const started = performance.now();
      for (let i = 0; i < 5; i++) await assertServes("during slowloris");
      assert.equal(await healthz(node.url), 200);
      const ok = await fetch(`${opsUrl(node)}/readyz`);
      assert.equal(ok.status, 200);
      assert.ok(performance.now() - started < 10_000, `${Math.round(performance.now() - started)} ms`);
    });

    it("an HTTP/1.1 request whose first TCP segment is a single byte is still answered as HTTP/1.1", { todo: todoWhileOpen("B7") }, async () => {
      const body = "{}";
      const request = `POST ${CLASSIFY} HTTP/1.1\r\nHost: x\r\nAuthorization: ${auth.authorization}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
      assert.equal(await splitHttp1Request(node.url, request, 4), "HTTP/1.1 400 Bad Request", "split after 4 bytes (control)");
      assert.equal(await splitHttp1Request(node.url, request, 1), "HTTP/1.1 400 Bad Request", "split after 1 byte");
    });

    it("byte-by-byte HTTP/1.1 clients are cut by the header timeout (30 s + Node's 30 s check) with 408", { todo: todoWhileOpen("B3") }, async () => {
      assert.ok(slow !== undefined);
      const left = SLOW_CLIENT_CUT_MS - (Date.now() - slow.openedAt);
      const closed = await slow.h1.allClosed(Math.max(0, left));
      const times = slow.h1.closedAfterMs();
      assert.ok(closed, `${slow.h1.open()} of 100 still open after ${Math.round((Date.now() - slow.openedAt) / 1000)} s; closed after ${times.length === 0 ? "-" : `${Math.min(...times)}..${Math.max(...times)}`} ms`);
      assert.match(slow.h1.replies()[0] ?? "", /^HTTP\/1\.1 408/);
    });
  });

  describe("a deadline that passes before the edge races the call", () => {
    it(
      "Classify with grpc-timeout 1 ms and an invalid image, and a ClassifyUpload that ends after its deadline -> DEADLINE_EXCEEDED, the node stays up",
      { todo: todoWhileOpen("B1") },
      async () => {
        // While B1 is open this crashes the node: then it gets a node of its own.
        const target = isOpen("B1") ? await spawnNode("all", isolatedEnv()) : node;
        const headers = isOpen("B1") ? {} : auth;
        const once = new RawGrpcClient(target.url);
        try {
          const msg = grpcFrame(toBinary(ClassifyRequestSchema, create(ClassifyRequestSchema, { image: Buffer.from("not an image") })));
          const r = await once.call(CLASSIFY, { body: [msg.subarray(0, 8), msg.subarray(8)], headers, writeGapMs: 20, timeoutMs: 1, waitMs: 5_000 });
          await sleep(1_000);
          assert.ok(alive(target), `the node exited after a 1 ms deadline (${r.status}):\n${target.output().split("\n").slice(-12).join("\n")}`);
          assert.equal(r.status, "DEADLINE_EXCEEDED", r.message);
          const up = grpcFrame(toBinary(ClassifyUploadRequestSchema, create(ClassifyUploadRequestSchema, { chunk: Buffer.from("not an image") })));
          const u = await once.call(UPLOAD, { body: [up, Buffer.alloc(0)], headers, writeGapMs: 700, timeoutMs: 300, waitMs: 5_000 });
          await sleep(1_000);
          assert.ok(alive(target), `the node exited after an upload that ended past its deadline (${u.status})`);
          assert.equal(u.status, "DEADLINE_EXCEEDED", u.message);
        } finally {
          once.close();
          if (target !== node) await target.kill();
        }
        await assertServes("deadline before the call is raced");
      },
    );
  });

  describe("metrics and logs", () => {
    it("/metrics has no label value carrying user input (request ids, image hashes, sha256 strings sent)", async () => {
      const text = await (await fetch(`${opsUrl(node)}/metrics`)).text();
      const values = new Set<string>();
      for (const m of text.matchAll(/[a-zA-Z_][a-zA-Z0-9_]*="((?:[^"\\]|\\.)*)"/g)) values.add(m[1]!);
      const leaked = [...sentIdentifiers].filter((id) => id.length >= 3 && [...values].some((v) => v.includes(id)));
      assert.deepEqual(leaked, [], "label values that contain user input");
      assert.ok(values.size > 10, "labels were parsed");
      await assertServes("end of hostile input");
    });

    it("the node logged no unhandled rejection (its process guard would hide a crash)", () => {
      const lines = node.output().split("\n").filter((l) => l.includes('"msg":"unhandled rejection"'));
      assert.deepEqual(lines, []);
    });
  });
});

/**
 * A gRPC client like test/support's, with room for oversized requests: with Node's default client
 * session memory (10 MB) the client itself refuses every later stream on its connection
 * (ENHANCE_YOUR_CALM) once the server answers an oversized unary request early.
 */
function clientFor(url: string) {
  return createClient(CategorizeService, createGrpcTransport({ baseUrl: url, readMaxBytes: 64 * MiB, nodeOptions: { maxSessionMemory: 1024 } }));
}

/** Where the node serves /readyz and /metrics: its admin port. */
function opsUrl(node: NodeProcess): string {
  assert.ok(node.adminUrl !== undefined, "the secured node has an admin port");
  return node.adminUrl;
}

/** Sum of a metric's samples whose labels include `labels`, from the node's /metrics. */
async function metric(url: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labelText = /\{(.*)\}/.exec(line)?.[1] ?? "";
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}
