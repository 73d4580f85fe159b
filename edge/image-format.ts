import { fileTypeFromBuffer } from "file-type";
import { invalidArgument } from "../common/errors.js";

/** Formats the edge decodes; anything else is refused before decode. */
const ACCEPTED = new Map<string, string>([
  ["image/jpeg", "JPEG"],
  ["image/png", "PNG"],
  ["image/webp", "WebP"],
  ["image/gif", "GIF"],
  ["image/avif", "AVIF"],
  ["image/tiff", "TIFF"],
]);

/**
 * Identifies the image format from its magic bytes, never from a client's
 * claim. SVG (scripts, external entities), HEIC (no decoder here), PDF and
 * every non-image are refused with INVALID_ARGUMENT.
 */
export async function sniffImageFormat(bytes: Uint8Array): Promise<string> {
  if (bytes.byteLength === 0) throw invalidArgument("image is empty");
  const type = await fileTypeFromBuffer(bytes);
  if (type === undefined) {
    const head = Buffer.from(bytes.subarray(0, 256)).toString("latin1").trimStart().toLowerCase();
    if (head.startsWith("<svg") || head.startsWith("<?xml") || head.includes("<svg")) {
      throw invalidArgument("SVG/XML images are not accepted; send JPEG, PNG, WebP, GIF, AVIF or TIFF");
    }
    throw invalidArgument("not a recognised image format; send JPEG, PNG, WebP, GIF, AVIF or TIFF");
  }
  if (!ACCEPTED.has(type.mime)) {
    throw invalidArgument(`${type.mime} is not accepted; send JPEG, PNG, WebP, GIF, AVIF or TIFF`);
  }
  return type.mime;
}
