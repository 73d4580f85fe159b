import { create, toBinary } from "@bufbuild/protobuf";
import { ClassifyRequestSchema } from "../gen/categorize/v1/categorize_pb.js";

/**
 * The ClassifyRequest's bytes as parts: field 1 (image) framed by hand
 * around the image itself, then the rest as protobuf-es encodes it. The
 * same bytes as toBinary of the whole message (for a non-empty image), without copying a 12 MP photo
 * into a new body per request: on a 2-core machine the client's copies are
 * CPU the system under test does not get (the baseline's body is the image).
 */
export function classifyRequestParts(image: Uint8Array, topK: number): Uint8Array[] {
  const head = [0x0a];
  for (let n = image.byteLength; ; n = Math.floor(n / 128)) {
    if (n < 128) {
      head.push(n);
      break;
    }
    head.push((n % 128) | 0x80);
  }
  return [Uint8Array.from(head), image, toBinary(ClassifyRequestSchema, create(ClassifyRequestSchema, { topK }))];
}
