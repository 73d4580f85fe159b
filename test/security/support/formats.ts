import { crc32 } from "node:zlib";

/**
 * Byte-level knowledge of image containers: where each format keeps the
 * width and height it declares, so tests can edit real encoded images into
 * decompression bombs or corrupt exactly the fields a decoder trusts.
 */

export type Format = "png" | "jpeg" | "gif" | "webp" | "tiff" | "avif" | "unknown";

export function formatOf(b: Uint8Array): Format {
  const s = (o: number, t: string) => Buffer.from(b.subarray(o, o + t.length)).toString("latin1") === t;
  if (b[0] === 0x89 && s(1, "PNG")) return "png";
  if (b[0] === 0xff && b[1] === 0xd8) return "jpeg";
  if (s(0, "GIF8")) return "gif";
  if (s(0, "RIFF") && s(8, "WEBP")) return "webp";
  if (s(0, "II*\0") || s(0, "MM\0*")) return "tiff";
  if (s(4, "ftyp")) return "avif";
  return "unknown";
}

/** One width or height field inside an encoded image. */
export interface DimensionField {
  readonly what: "width" | "height";
  readonly offset: number;
  readonly bytes: 2 | 3 | 4;
  readonly littleEndian: boolean;
  /** Values are stored minus one (WebP VP8X, VP8L). */
  readonly minusOne: boolean;
  /** Usable bits (VP8 and VP8L keep 14). */
  readonly bits: number;
  /** VP8L packs both sides in one 32-bit word: bit offset inside it. */
  readonly packedShift?: number;
  /** Where the field lives, for messages. */
  readonly where: string;
}

/** Every width/height field the format declares, header first. */
export function dimensionFields(b: Uint8Array): DimensionField[] {
  switch (formatOf(b)) {
    case "png":
      return [
        { what: "width", offset: 16, bytes: 4, littleEndian: false, minusOne: false, bits: 32, where: "PNG IHDR" },
        { what: "height", offset: 20, bytes: 4, littleEndian: false, minusOne: false, bits: 32, where: "PNG IHDR" },
      ];
    case "jpeg":
      return jpegSofOffsets(b).flatMap((o) => [
        { what: "height" as const, offset: o + 5, bytes: 2 as const, littleEndian: false, minusOne: false, bits: 16, where: "JPEG SOF" },
        { what: "width" as const, offset: o + 7, bytes: 2 as const, littleEndian: false, minusOne: false, bits: 16, where: "JPEG SOF" },
      ]);
    case "gif": {
      const out: DimensionField[] = [
        { what: "width", offset: 6, bytes: 2, littleEndian: true, minusOne: false, bits: 16, where: "GIF LSD" },
        { what: "height", offset: 8, bytes: 2, littleEndian: true, minusOne: false, bits: 16, where: "GIF LSD" },
      ];
      const first = gifBlocks(b).find((x) => x.kind === "image");
      if (first !== undefined) {
        out.push({ what: "width", offset: first.start + 5, bytes: 2, littleEndian: true, minusOne: false, bits: 16, where: "GIF image descriptor" });
        out.push({ what: "height", offset: first.start + 7, bytes: 2, littleEndian: true, minusOne: false, bits: 16, where: "GIF image descriptor" });
      }
      return out;
    }
    case "webp": {
      const out: DimensionField[] = [];
      for (const c of riffChunks(b)) {
        if (c.type === "VP8X") {
          out.push({ what: "width", offset: c.data + 4, bytes: 3, littleEndian: true, minusOne: true, bits: 24, where: "WebP VP8X canvas" });
          out.push({ what: "height", offset: c.data + 7, bytes: 3, littleEndian: true, minusOne: true, bits: 24, where: "WebP VP8X canvas" });
        } else if (c.type === "VP8 ") {
          out.push({ what: "width", offset: c.data + 6, bytes: 2, littleEndian: true, minusOne: false, bits: 14, where: "WebP VP8 frame" });
          out.push({ what: "height", offset: c.data + 8, bytes: 2, littleEndian: true, minusOne: false, bits: 14, where: "WebP VP8 frame" });
        } else if (c.type === "VP8L") {
          out.push({ what: "width", offset: c.data + 1, bytes: 4, littleEndian: true, minusOne: true, bits: 14, packedShift: 0, where: "WebP VP8L header" });
          out.push({ what: "height", offset: c.data + 1, bytes: 4, littleEndian: true, minusOne: true, bits: 14, packedShift: 14, where: "WebP VP8L header" });
        }
      }
      return out;
    }
    case "tiff":
      return tiffDimensionFields(b);
    case "avif": {
      const i = Buffer.from(b).indexOf("ispe", 0, "latin1");
      if (i < 0) return [];
      return [
        { what: "width", offset: i + 8, bytes: 4, littleEndian: false, minusOne: false, bits: 32, where: "AVIF ispe" },
        { what: "height", offset: i + 12, bytes: 4, littleEndian: false, minusOne: false, bits: 32, where: "AVIF ispe" },
      ];
    }
    default:
      return [];
  }
}

/** Writes `value` into a dimension field (clamped to what the field can hold); returns the new bytes. */
export function writeDimension(src: Uint8Array, f: DimensionField, value: number): Buffer {
  const b = Buffer.from(src);
  if (f.offset + f.bytes > b.length) return b;
  const max = f.bits >= 32 ? 0xffffffff : 2 ** f.bits - 1;
  let v = Math.min(Math.max(0, Math.floor(value) - (f.minusOne ? 1 : 0)), max);
  if (f.packedShift !== undefined) {
    const word = b.readUInt32LE(f.offset);
    const mask = ((2 ** 14 - 1) << f.packedShift) >>> 0;
    b.writeUInt32LE(((word & ~mask) | (v << f.packedShift)) >>> 0, f.offset);
    return b;
  }
  if (f.bits === 14) {
    // VP8 keeps a 2-bit scale above the 14-bit size.
    const old = b.readUInt16LE(f.offset);
    v = (old & 0xc000) | (v & 0x3fff);
  }
  for (let i = 0; i < f.bytes; i++) {
    const byte = Math.floor(v / 2 ** (8 * i)) & 0xff;
    b[f.littleEndian ? f.offset + i : f.offset + f.bytes - 1 - i] = byte;
  }
  return b;
}

/** Sets every declared width and height (PNG CRCs fixed, so only the size is wrong). */
export function declareDimensions(src: Uint8Array, width: number, height: number): Buffer {
  let b: Buffer = Buffer.from(src);
  for (const f of dimensionFields(b)) b = writeDimension(b, f, f.what === "width" ? width : height);
  return formatOf(b) === "png" ? fixPngCrcs(b) : b;
}

// --- PNG -------------------------------------------------------------------

export interface PngChunk {
  readonly type: string;
  /** Offset of the length field. */
  readonly start: number;
  /** Offset just past the CRC. */
  readonly end: number;
  readonly dataLength: number;
}

export function pngChunks(b: Uint8Array): PngChunk[] {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out: PngChunk[] = [];
  let o = 8;
  while (o + 12 <= buf.length) {
    const len = buf.readUInt32BE(o);
    const end = o + 12 + len;
    if (end > buf.length) break;
    out.push({ type: buf.toString("latin1", o + 4, o + 8), start: o, end, dataLength: len });
    o = end;
  }
  return out;
}

/** Recomputes every chunk CRC, so an edited PNG fails on its content, not its checksum. */
export function fixPngCrcs(src: Uint8Array): Buffer {
  const b = Buffer.from(src);
  for (const c of pngChunks(b)) b.writeUInt32BE(crc32(b.subarray(c.start + 4, c.end - 4)), c.end - 4);
  return b;
}

/** Inserts chunks right after IHDR. */
export function pngInsertAfterIhdr(src: Uint8Array, chunks: readonly Buffer[]): Buffer {
  const ihdr = pngChunks(src)[0];
  if (ihdr === undefined) throw new Error("not a PNG");
  return Buffer.concat([src.subarray(0, ihdr.end), ...chunks, src.subarray(ihdr.end)]);
}

// --- JPEG ------------------------------------------------------------------

export interface JpegSegment {
  readonly marker: number;
  /** Offset of the 0xFF of the marker. */
  readonly start: number;
  /** Offset just past the segment (for SOS: past its header only). */
  readonly end: number;
}

/** Marker segments up to and including the first SOS. */
export function jpegSegments(b: Uint8Array): JpegSegment[] {
  const out: JpegSegment[] = [];
  let o = 2;
  while (o + 4 <= b.length && b[o] === 0xff) {
    const marker = b[o + 1]!;
    if (marker === 0xff) {
      o++;
      continue;
    }
    if (marker === 0xd8 || (marker >= 0xd0 && marker <= 0xd7) || marker === 0x01) {
      o += 2;
      continue;
    }
    const len = (b[o + 2]! << 8) | b[o + 3]!;
    out.push({ marker, start: o, end: o + 2 + len });
    if (marker === 0xda || marker === 0xd9) break;
    o += 2 + len;
  }
  return out;
}

function jpegSofOffsets(b: Uint8Array): number[] {
  return jpegSegments(b)
    .filter((s) => s.marker >= 0xc0 && s.marker <= 0xcf && s.marker !== 0xc4 && s.marker !== 0xc8 && s.marker !== 0xcc)
    .map((s) => s.start);
}

/** A marker segment (APPn, COM, ...) with its length; payload at most 65533 bytes. */
export function jpegSegment(marker: number, payload: Uint8Array): Buffer {
  if (payload.length > 65533) throw new Error("JPEG segment payload is at most 65533 bytes");
  const head = Buffer.from([0xff, marker, 0, 0]);
  head.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([head, payload]);
}

/** Inserts segments right after SOI. */
export function jpegInsertAfterSoi(src: Uint8Array, segments: readonly Buffer[]): Buffer {
  return Buffer.concat([src.subarray(0, 2), ...segments, src.subarray(2)]);
}

// --- GIF -------------------------------------------------------------------

export interface GifBlock {
  readonly kind: "image" | "extension";
  readonly start: number;
  readonly end: number;
}

/** The blocks after the header, logical screen descriptor and global colour table; stops at the trailer or a malformed block. */
export function gifBlocks(b: Uint8Array): GifBlock[] {
  const out: GifBlock[] = [];
  if (b.length < 13) return out;
  const flags = b[10]!;
  let o = 13 + (flags & 0x80 ? 3 * 2 ** ((flags & 7) + 1) : 0);
  const skipSubBlocks = (p: number) => {
    while (p < b.length && b[p] !== 0) p += b[p]! + 1;
    return p + 1;
  };
  while (o < b.length) {
    const intro = b[o];
    if (intro === 0x2c) {
      const lflags = b[o + 9] ?? 0;
      let p = o + 10 + (lflags & 0x80 ? 3 * 2 ** ((lflags & 7) + 1) : 0);
      p = skipSubBlocks(p + 1); // LZW minimum code size, then data sub-blocks
      if (p > b.length) break;
      out.push({ kind: "image", start: o, end: p });
      o = p;
    } else if (intro === 0x21) {
      const p = skipSubBlocks(o + 2);
      if (p > b.length) break;
      out.push({ kind: "extension", start: o, end: p });
      o = p;
    } else {
      break;
    }
  }
  return out;
}

// --- WebP (RIFF) -----------------------------------------------------------

export interface RiffChunk {
  readonly type: string;
  readonly start: number;
  readonly data: number;
  readonly size: number;
}

export function riffChunks(b: Uint8Array): RiffChunk[] {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const out: RiffChunk[] = [];
  let o = 12;
  while (o + 8 <= buf.length) {
    const size = buf.readUInt32LE(o + 4);
    out.push({ type: buf.toString("latin1", o, o + 4), start: o, data: o + 8, size });
    o += 8 + size + (size & 1);
  }
  return out;
}

// --- TIFF ------------------------------------------------------------------

interface TiffIfd {
  readonly offset: number;
  readonly count: number;
  readonly nextPointer: number;
}

function tiffReader(b: Uint8Array) {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  const le = buf[0] === 0x49;
  return {
    buf,
    le,
    u16: (o: number) => (le ? buf.readUInt16LE(o) : buf.readUInt16BE(o)),
    u32: (o: number) => (le ? buf.readUInt32LE(o) : buf.readUInt32BE(o)),
  };
}

function tiffFirstIfd(b: Uint8Array): TiffIfd | undefined {
  const r = tiffReader(b);
  if (b.length < 8) return undefined;
  const offset = r.u32(4);
  if (offset + 2 > b.length) return undefined;
  const count = r.u16(offset);
  const nextPointer = offset + 2 + 12 * count;
  if (nextPointer + 4 > b.length) return undefined;
  return { offset, count, nextPointer };
}

function tiffDimensionFields(b: Uint8Array): DimensionField[] {
  const ifd = tiffFirstIfd(b);
  if (ifd === undefined) return [];
  const r = tiffReader(b);
  const out: DimensionField[] = [];
  for (let i = 0; i < ifd.count; i++) {
    const e = ifd.offset + 2 + 12 * i;
    const tag = r.u16(e);
    if (tag !== 256 && tag !== 257) continue;
    const type = r.u16(e + 2);
    const bytes = type === 3 ? 2 : 4;
    out.push({ what: tag === 256 ? "width" : "height", offset: e + 8, bytes, littleEndian: r.le, minusOne: false, bits: bytes * 8, where: "TIFF IFD0" });
  }
  return out;
}

/**
 * A multi-page TIFF from a single-page one: `pages` copies of IFD0 appended
 * and chained, all pointing at the same strips (so the file stays small while
 * declaring `pages` full-size pages). `loop` makes the last IFD point back to
 * the first, a cycle a reader must detect.
 */
export function tiffWithPages(src: Uint8Array, pages: number, options: { loop?: boolean } = {}): Buffer {
  const ifd = tiffFirstIfd(src);
  if (ifd === undefined) throw new Error("not a TIFF");
  const r = tiffReader(src);
  const ifdBytes = Buffer.from(src.subarray(ifd.offset, ifd.nextPointer + 4));
  let base = src.length + (src.length & 1);
  const parts: Buffer[] = [Buffer.from(src), Buffer.alloc(base - src.length)];
  const write32 = (buf: Buffer, o: number, v: number) => (r.le ? buf.writeUInt32LE(v, o) : buf.writeUInt32BE(v, o));
  // IFD0's next pointer goes to the first copy.
  const head = parts[0]!;
  write32(head, ifd.nextPointer, pages > 1 ? base : options.loop === true ? ifd.offset : 0);
  for (let p = 1; p < pages; p++) {
    const copy = Buffer.from(ifdBytes);
    const next = p === pages - 1 ? (options.loop === true ? ifd.offset : 0) : base + copy.length;
    write32(copy, copy.length - 4, next);
    parts.push(copy);
    base += copy.length;
  }
  return Buffer.concat(parts);
}

/** Number of pages a TIFF declares by its IFD chain (stops at a cycle). */
export function tiffPageCount(b: Uint8Array): number {
  const r = tiffReader(b);
  const seen = new Set<number>();
  let o = r.u32(4);
  while (o !== 0 && o + 2 <= b.length && !seen.has(o)) {
    seen.add(o);
    const count = r.u16(o);
    o = r.u32(o + 2 + 12 * count);
  }
  return seen.size;
}
