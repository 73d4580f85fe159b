import { imageSize } from "image-size";
import sharp, { type SharpOptions } from "sharp";
import { invalidArgument } from "../common/errors.js";

// Repeated images are answered from the edge's LRU before they reach libvips,
// so libvips' own operation cache would only hold memory (tens of MB).
sharp.cache(false);

/** libvips worker threads per image (see common/thread-budget.ts). */
export function setLibvipsThreads(threads: number): void {
  if (threads > 0) sharp.concurrency(threads);
}

/** What the model's manifest asks of the image (from core's GetModelInfo). */
export interface PreprocessSpec {
  readonly resizeShorter: number;
  readonly cropHeight: number;
  readonly cropWidth: number;
}

export interface PreprocessLimits {
  readonly maxPixels: number;
  readonly maxDimension: number;
  readonly decodeTimeoutMs: number;
}

/** The compact wire tensor: uint8 RGB, interleaved (HWC), crop size. */
export interface Preprocessed {
  readonly hwc: Uint8Array;
  /** Dimensions after EXIF orientation. */
  readonly width: number;
  readonly height: number;
}

/**
 * Decode, EXIF-orient, resize the shorter side, center-crop, drop alpha and
 * make sRGB, in one libvips pipeline (JPEG and WebP shrink on load). The
 * resize is antialiased bilinear, torchvision's default and PROVENANCE.md's
 * convention; sharp's default lanczos3 cost 0.35 ms more per web photo
 * (2.97 vs 2.6 ms of CPU, 640 px JPEGs one at a time) for no better answers. No
 * per-pixel JavaScript: the output is the uint8 HWC crop; normalization and
 * the planar layout happen in core. Header checks run before any decode.
 *
 * An embedded ICC profile is not applied (`ignoreIcc`): the model was trained
 * on decoded pixel values as PIL gives them, without colour management (the
 * torchvision convention of PROVENANCE.md), and applying the profile cost
 * more than the decode itself: 15-18 ms instead of 6-7 ms of CPU per shared
 * photo with a profile (5 of the 7 carry one). CMYK and greyscale images are
 * still converted to sRGB.
 */
export async function preprocessImage(bytes: Uint8Array, spec: PreprocessSpec, limits: PreprocessLimits): Promise<Preprocessed> {
  const options: SharpOptions = { limitInputPixels: limits.maxPixels, failOn: "error", pages: 1, page: 0, sequentialRead: true, ignoreIcc: true };
  const meta = await readHeader(bytes, options);
  const w = meta.width;
  const h = meta.height;
  if (w === undefined || h === undefined || w <= 0 || h <= 0) throw invalidArgument("image has no dimensions");
  if (w > limits.maxDimension || h > limits.maxDimension) {
    throw invalidArgument(`image is ${w}x${h}; the largest side allowed is ${limits.maxDimension} px`);
  }
  if (w * h > limits.maxPixels) throw invalidArgument(`image is ${w}x${h} (${w * h} pixels); at most ${limits.maxPixels} pixels are allowed`);
  const swap = (meta.orientation ?? 1) >= 5;
  const width = swap ? h : w;
  const height = swap ? w : h;
  const side = spec.resizeShorter;
  try {
    const { data, info } = await sharp(bytes, options)
      .timeout({ seconds: Math.max(1, Math.ceil(limits.decodeTimeoutMs / 1000)) })
      .rotate()
      // Cover side x side then a centered crop equals "shorter side to N, center crop".
      .resize(side, side, { fit: "cover", position: "centre", kernel: "linear" })
      .extract({ left: Math.floor((side - spec.cropWidth) / 2), top: Math.floor((side - spec.cropHeight) / 2), width: spec.cropWidth, height: spec.cropHeight })
      .removeAlpha()
      .toColourspace("srgb")
      .raw({ depth: "uchar" })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3 || data.byteLength !== spec.cropWidth * spec.cropHeight * 3) {
      throw invalidArgument(`decoded image has ${info.channels} channels; expected RGB`);
    }
    return { hwc: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width, height };
  } catch (err) {
    if (err instanceof Error && err.name === "CategorizeError") throw err;
    throw invalidArgument(`cannot decode image: ${cleanMessage(err)}`, err);
  }
}

const HEADER_PREFIX_BYTES = 256 << 10;

interface Header {
  readonly width?: number | undefined;
  readonly height?: number | undefined;
  readonly orientation?: number | undefined;
}

/**
 * Width, height and EXIF orientation from the header, before any decode.
 * JPEG and GIF headers are read in JavaScript (image-size: microseconds, no
 * libvips call): sharp's metadata() costs ~0.8 ms of the event loop and
 * ~0.45 ms of a libuv thread per image, a sixth of the node's main-thread
 * time per request. Other formats (PNG and WebP may carry EXIF orientation,
 * TIFF and AVIF have many layouts) ask libvips. Either way the pipeline's
 * own limitInputPixels still checks the header libjpeg reads, so a header
 * that misleads the JavaScript reader cannot get a larger image decoded.
 */
async function readHeader(bytes: Uint8Array, options: SharpOptions): Promise<Header> {
  const jpeg = bytes.length > 3 && bytes[0] === 0xff && bytes[1] === 0xd8 && bytes[2] === 0xff;
  const gif = bytes.length > 6 && bytes[0] === 0x47 && bytes[1] === 0x49 && bytes[2] === 0x46 && bytes[3] === 0x38;
  if (jpeg || gif) {
    try {
      // A prefix: image-size copies what it is given, and 4 MB per 12 MP photo cost 5 ms of the
      // event loop. A header beyond it (huge EXIF or ICC segments) is read by libvips below.
      const size = imageSize(bytes.subarray(0, HEADER_PREFIX_BYTES));
      if (size.width > 0 && size.height > 0) return { width: size.width, height: size.height, orientation: size.orientation };
    } catch {
      // Not readable here: libvips reads it (and names the problem) below.
    }
  }
  try {
    // Header only: the pixel limit is checked by the caller with a clearer message.
    return await sharp(bytes, { ...options, limitInputPixels: false }).metadata();
  } catch (err) {
    throw invalidArgument(`cannot read image header: ${cleanMessage(err)}`, err);
  }
}

function cleanMessage(err: unknown): string {
  const text = err instanceof Error ? err.message : String(err);
  // libvips messages can span lines and name internal buffers; keep the first line.
  return (text.split("\n")[0] ?? text).replace(/^Input buffer /, "").slice(0, 200);
}
