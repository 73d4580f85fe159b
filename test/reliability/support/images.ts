import { createHash, randomBytes } from "node:crypto";
import { makeVariants } from "../../support/image-variants.js";

export const sha256Hex = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

/**
 * An endless source of distinct JPEGs, cheap to make: a few real photo
 * variants (makeVariants), each copy given a JPEG comment segment (COM,
 * 0xFFFE) right after the start-of-image marker that carries a run tag and
 * the request index. Pixels stay those of a real photo; the bytes, and so the
 * sha256 the service dedups by, differ for every index and every run, so
 * events of this run never mix with those of other tests on the shared topic.
 */
export class UniqueImages {
  readonly runTag: string;
  private constructor(private readonly bases: readonly Buffer[]) {
    this.runTag = randomBytes(6).toString("hex");
  }

  static async create(baseCount = 16, width = 384): Promise<UniqueImages> {
    return new UniqueImages(await makeVariants(baseCount, { width }));
  }

  /** Image number i of this run (the same bytes every time it is asked for). */
  image(i: number): Buffer {
    const base = this.bases[i % this.bases.length]!;
    if (base[0] !== 0xff || base[1] !== 0xd8) throw new Error("base image is not a JPEG");
    const text = Buffer.from(`categorize-reliability ${this.runTag} ${i}`, "ascii");
    const segment = Buffer.alloc(4 + text.length);
    segment.writeUInt16BE(0xfffe, 0);
    segment.writeUInt16BE(text.length + 2, 2);
    text.copy(segment, 4);
    return Buffer.concat([base.subarray(0, 2), segment, base.subarray(2)]);
  }
}
