import sharp from "sharp";
import { crc32, deflateSync } from "node:zlib";

/** One PNG chunk: length, type, data and its CRC. */
export function pngChunk(type: string, data: Uint8Array): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, "latin1"), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

/** A valid PNG signature and IHDR that declare width x height, followed by a tiny IDAT: a decompression-bomb header. */
export function pngDeclaring(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk("IHDR", ihdr),
    pngChunk("IDAT", deflateSync(Buffer.alloc(1024))),
    pngChunk("IEND", Buffer.alloc(0)),
  ]);
}

/** A small solid-colour image in the given format. */
export function solidImage(format: "png" | "jpeg" | "webp" | "gif" | "tiff" | "avif", size = 64, channels: 1 | 3 | 4 = 3): Promise<Buffer> {
  const background = channels === 1 ? { r: 128, g: 128, b: 128 } : { r: 200, g: 60, b: 30, alpha: 0.5 };
  let img = sharp({ create: { width: size, height: size, channels: channels === 1 ? 3 : channels, background } });
  if (channels === 1) img = img.greyscale();
  return img.toFormat(format).toBuffer();
}
