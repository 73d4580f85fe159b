import fc from "fast-check";
import sharp from "sharp";
import { imageNames, readImage } from "../../support/fixtures.js";
import { dimensionFields, fixPngCrcs, formatOf, gifBlocks, jpegSegments, pngChunks, riffChunks, writeDimension } from "./formats.js";

/**
 * Image mutations as plain data, so a failing case prints as something a
 * person can read and fast-check can shrink: byte flips (biased toward the
 * header), truncation, splicing chunks of other images in, corrupting the
 * declared width/height of PNG IHDR / JPEG SOF / GIF LSD / WebP VP8(X/L) /
 * TIFF IFD / AVIF ispe, dropping or repeating container chunks, and appended
 * garbage. Positions are plain integers taken modulo the current length.
 */
export type Mutation =
  | { readonly kind: "flip"; readonly at: number; readonly xor: number; readonly inHeader: boolean }
  | { readonly kind: "truncate"; readonly keepPermille: number }
  | { readonly kind: "splice"; readonly donor: number; readonly from: number; readonly length: number; readonly to: number; readonly overwrite: boolean }
  | { readonly kind: "field"; readonly field: number; readonly value: number; readonly fixCrc: boolean }
  | { readonly kind: "append"; readonly bytes: Uint8Array; readonly repeat: number }
  | { readonly kind: "delete"; readonly from: number; readonly length: number }
  | { readonly kind: "duplicate"; readonly from: number; readonly length: number }
  | { readonly kind: "chunk"; readonly op: "drop" | "repeat" | "swap"; readonly index: number; readonly other: number };

/** The images every mutation starts from: the shared photos and the eagle/chelsea re-encoded in every accepted format. */
export interface Corpus {
  readonly names: readonly string[];
  readonly images: readonly Buffer[];
}

export async function buildCorpus(): Promise<Corpus> {
  const names: string[] = [];
  const images: Buffer[] = [];
  for (const n of imageNames()) {
    names.push(n);
    images.push(readImage(n));
  }
  const eagle = sharp(readImage("bald_eagle.jpeg")).resize(320);
  const chelsea = sharp(readImage("chelsea.png")).resize(240);
  const derived: [string, Promise<Buffer>][] = [
    ["eagle.webp (VP8)", eagle.clone().webp({ quality: 70 }).toBuffer()],
    ["eagle.webp (VP8L)", eagle.clone().webp({ lossless: true }).toBuffer()],
    ["eagle.webp (VP8X+alpha)", eagle.clone().ensureAlpha(0.6).webp().toBuffer()],
    ["eagle.gif", eagle.clone().gif().toBuffer()],
    ["eagle.tiff (jpeg)", eagle.clone().tiff({ compression: "jpeg" }).toBuffer()],
    ["chelsea.tiff (deflate)", chelsea.clone().tiff({ compression: "deflate" }).toBuffer()],
    ["eagle.avif", eagle.clone().avif({ quality: 40, effort: 0 }).toBuffer()],
    ["eagle progressive.jpeg", eagle.clone().jpeg({ progressive: true }).toBuffer()],
    ["chelsea palette.png", chelsea.clone().png({ palette: true }).toBuffer()],
    ["chelsea interlaced.png", chelsea.clone().png({ progressive: true }).toBuffer()],
    ["eagle exif-rotated.jpeg", eagle.clone().withExif({ IFD0: { Orientation: "6" } }).jpeg().toBuffer()],
  ];
  for (const [n, p] of derived) {
    names.push(n);
    images.push(await p);
  }
  return { names, images };
}

/** Container pieces of an image (PNG chunks, JPEG segments, GIF blocks, RIFF chunks) as [start, end) ranges. */
function piecesOf(b: Buffer): [number, number][] {
  switch (formatOf(b)) {
    case "png":
      return pngChunks(b).map((c) => [c.start, c.end]);
    case "jpeg":
      return jpegSegments(b).map((s) => [s.start, s.end]);
    case "gif":
      return gifBlocks(b).map((x) => [x.start, x.end]);
    case "webp":
      return riffChunks(b).map((c) => [c.start, Math.min(b.length, c.data + c.size + (c.size & 1))]);
    default:
      return [];
  }
}

export function applyMutation(src: Buffer, m: Mutation, corpus: Corpus): Buffer {
  const n = src.length;
  if (n === 0) return m.kind === "append" ? Buffer.from(m.bytes) : src;
  switch (m.kind) {
    case "flip": {
      const b = Buffer.from(src);
      const at = m.inHeader ? m.at % Math.min(n, 512) : m.at % n;
      b[at] = b[at]! ^ (m.xor || 1);
      return b;
    }
    case "truncate":
      return src.subarray(0, Math.floor((n * m.keepPermille) / 1000));
    case "splice": {
      const donor = corpus.images[m.donor % corpus.images.length]!;
      const from = m.from % donor.length;
      const piece = donor.subarray(from, from + m.length);
      const to = m.to % n;
      return m.overwrite
        ? Buffer.concat([src.subarray(0, to), piece, src.subarray(Math.min(n, to + piece.length))])
        : Buffer.concat([src.subarray(0, to), piece, src.subarray(to)]);
    }
    case "field": {
      const fields = dimensionFields(src);
      if (fields.length === 0) return src;
      const b = writeDimension(src, fields[m.field % fields.length]!, m.value);
      return m.fixCrc && formatOf(b) === "png" ? fixPngCrcs(b) : b;
    }
    case "append": {
      const parts = [src];
      for (let i = 0; i < m.repeat; i++) parts.push(Buffer.from(m.bytes));
      return Buffer.concat(parts);
    }
    case "delete": {
      const from = m.from % n;
      return Buffer.concat([src.subarray(0, from), src.subarray(from + m.length)]);
    }
    case "duplicate": {
      const from = m.from % n;
      const piece = src.subarray(from, from + m.length);
      return Buffer.concat([src.subarray(0, from + piece.length), piece, src.subarray(from + piece.length)]);
    }
    case "chunk": {
      const pieces = piecesOf(src);
      if (pieces.length === 0) return src;
      const [s, e] = pieces[m.index % pieces.length]!;
      if (m.op === "drop") return Buffer.concat([src.subarray(0, s), src.subarray(e)]);
      if (m.op === "repeat") return Buffer.concat([src.subarray(0, e), src.subarray(s, e), src.subarray(e)]);
      const [s2, e2] = pieces[m.other % pieces.length]!;
      if (s2 === s) return src;
      const [a, b] = s < s2 ? [[s, e], [s2, e2]] : [[s2, e2], [s, e]];
      if (a[1]! > b[0]!) return src;
      return Buffer.concat([src.subarray(0, a[0]), src.subarray(b[0], b[1]), src.subarray(a[1], b[0]), src.subarray(a[0], a[1]), src.subarray(b[1])]);
    }
  }
}

export function applyMutations(src: Buffer, ms: readonly Mutation[], corpus: Corpus): Buffer {
  return ms.reduce((b, m) => applyMutation(b, m, corpus), src);
}

/** Widths and heights that find off-by-one and overflow bugs. */
const interestingSizes = [0, 1, 2, 3, 7, 8, 223, 224, 225, 255, 256, 4096, 8000, 16383, 16384, 16385, 32767, 32768, 65535, 65536, 2 ** 24 - 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1];

const pos = fc.integer({ min: 0, max: 2 ** 30 });

export function mutationArb(corpus: Corpus): fc.Arbitrary<Mutation> {
  return fc.oneof(
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("flip" as const), at: pos, xor: fc.integer({ min: 1, max: 255 }), inHeader: fc.boolean() }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("truncate" as const), keepPermille: fc.integer({ min: 0, max: 999 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("splice" as const),
        donor: fc.nat({ max: corpus.images.length - 1 }),
        from: pos,
        length: fc.integer({ min: 1, max: 4096 }),
        to: pos,
        overwrite: fc.boolean(),
      }),
    },
    {
      weight: 4,
      arbitrary: fc.record({
        kind: fc.constant("field" as const),
        field: fc.nat({ max: 7 }),
        value: fc.oneof(fc.constantFrom(...interestingSizes), fc.integer({ min: 0, max: 2 ** 32 - 1 })),
        fixCrc: fc.boolean(),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("append" as const),
        bytes: fc.oneof(
          fc.uint8Array({ minLength: 1, maxLength: 2048 }),
          fc.constantFrom(
            Buffer.from("<html><script>alert(1)</script></html>"),
            Buffer.from("PK\x03\x04\x14\x00\x00\x00\x00\x00", "latin1"),
            Buffer.from([0xff, 0xd9]),
            Buffer.from("IEND\xaeB`\x82", "latin1"),
          ),
        ),
        repeat: fc.integer({ min: 1, max: 64 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("delete" as const), from: pos, length: fc.integer({ min: 1, max: 4096 }) }) },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("duplicate" as const), from: pos, length: fc.integer({ min: 1, max: 65536 }) }) },
    {
      weight: 2,
      arbitrary: fc.record({ kind: fc.constant("chunk" as const), op: fc.constantFrom("drop" as const, "repeat" as const, "swap" as const), index: fc.nat({ max: 64 }), other: fc.nat({ max: 64 }) }),
    },
  );
}

/** A short readable form of a mutation list, for reports. */
export function describeMutations(ms: readonly Mutation[]): string {
  return ms
    .map((m) => {
      switch (m.kind) {
        case "append":
          return `append(${m.bytes.length}B x${m.repeat})`;
        default:
          return `${m.kind}(${Object.entries(m)
            .filter(([k]) => k !== "kind")
            .map(([k, v]) => `${k}=${String(v)}`)
            .join(",")})`;
      }
    })
    .join(" ");
}
