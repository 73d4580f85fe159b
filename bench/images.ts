import { randomBytes } from "node:crypto";
import { makeVariants } from "../test/support/image-variants.js";

/**
 * Distinct benchmark images, made before any timed step.
 *
 * makeVariants(n) gives pixel-distinct JPEGs (about 30 ms each to make), so a
 * pool of them is made once. Every image a step sends is a pool image with
 * its own JPEG comment segment (run id, step, index): a new sha256 for every
 * request of the run, so neither the edge cache, single flight nor the core's
 * dedup store can answer it, while the decode work stays that of a real photo.
 * The run id also keeps a persistent Postgres from answering a later run.
 */
export class ImageSource {
  readonly runId = randomBytes(6).toString("hex");

  private constructor(readonly pool: readonly Buffer[]) {}

  static async create(poolSize: number): Promise<ImageSource> {
    return new ImageSource(await makeVariants(poolSize));
  }

  /** `count` images, each unique to this run and `label`, cycling through the pool. */
  distinct(label: string, count: number): Buffer[] {
    const out: Buffer[] = [];
    for (let i = 0; i < count; i++) out.push(stampJpeg(this.pool[i % this.pool.length]!, `categorize-bench ${this.runId} ${label} ${i}`));
    return out;
  }

  /** `count` sends cycling through `set` (for the cache-hit path). */
  static repeat(set: readonly Buffer[], count: number): Buffer[] {
    return Array.from({ length: count }, (_, i) => set[i % set.length]!);
  }

  get meanBytes(): number {
    return this.pool.reduce((n, b) => n + b.byteLength, 0) / Math.max(1, this.pool.length);
  }
}

/** Inserts a COM (comment) segment right after the JPEG SOI marker: same pixels, different bytes. */
export function stampJpeg(jpeg: Buffer, text: string): Buffer {
  if (jpeg.length < 4 || jpeg[0] !== 0xff || jpeg[1] !== 0xd8) throw new Error("stampJpeg: not a JPEG");
  const payload = Buffer.from(text, "latin1");
  if (payload.length > 0xfffd) throw new Error("stampJpeg: comment too long");
  const header = Buffer.from([0xff, 0xfe, 0, 0]);
  header.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([jpeg.subarray(0, 2), header, payload, jpeg.subarray(2)]);
}
