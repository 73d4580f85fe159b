import { randomBytes } from "node:crypto";
import sharp from "sharp";
import { imageNames, readImage } from "../test/support/fixtures.js";
import { makeVariants } from "../test/support/image-variants.js";
import { recipeImage, stampJpeg, type ImageRecipe } from "./jpeg-stamp.js";

export { stampJpeg };

/**
 * Distinct benchmark images, made before any timed step.
 *
 * makeVariants(n) gives pixel-distinct JPEGs (about 30 ms each to make), so a
 * pool of them is made once. Every image a step sends is a pool image with
 * its own JPEG comment segment (run id, step, index): a new sha256 for every
 * request of the run, so neither the edge cache, single flight nor the core's
 * dedup store can answer it, while the decode work stays that of a real photo.
 * The run id also keeps a persistent Postgres from answering a later run.
 *
 * A second pool holds 12 MP JPEGs (4000x3000) made from the shared photos,
 * for the large-image steps.
 */
export class ImageSource {
  readonly runId = randomBytes(6).toString("hex");

  private constructor(
    readonly pool: readonly Buffer[],
    /** 4000x3000 JPEGs, pixel-distinct (empty when not made). */
    readonly large: readonly Buffer[],
  ) {}

  static async create(poolSize: number, largeSize = 0): Promise<ImageSource> {
    return new ImageSource(await makeVariants(poolSize), await makeLargeVariants(largeSize));
  }

  /** `count` images, each unique to this run and `label`, cycling through the pool. */
  distinct(label: string, count: number): Buffer[] {
    const out: Buffer[] = [];
    for (let i = 0; i < count; i++) out.push(stampJpeg(this.pool[i % this.pool.length]!, `categorize-bench ${this.runId} ${label} ${i}`));
    return out;
  }

  /** `count` 12 MP images, each unique to this run and `label` (materialised: for the in-process limit stage). */
  distinctLarge(label: string, count: number): Buffer[] {
    return Array.from({ length: count }, (_, k) => recipeImage(this.large, `${this.runId} ${label}`, k));
  }

  /** A recipe of `count` distinct images from pool `pool` ("small" or "large", see LoadClient.setPool). */
  recipe(pool: "small" | "large", label: string, count: number): ImageRecipe {
    return { pool, label: `${this.runId} ${label}`, keys: Array.from({ length: count }, (_, k) => k) };
  }

  /**
   * A recipe of `count` sends where every other send repeats an image sent
   * earlier in the sequence (picked at random, seeded: the same sequence for
   * every system), the others are new images.
   */
  repeatedRecipe(label: string, count: number, seed = 1): ImageRecipe {
    let s = seed >>> 0 || 1;
    const rand = () => {
      // xorshift32: deterministic, enough for picking indices.
      s ^= s << 13;
      s >>>= 0;
      s ^= s >>> 17;
      s ^= s << 5;
      s >>>= 0;
      return s / 2 ** 32;
    };
    const keys: number[] = [];
    let fresh = 0;
    for (let i = 0; i < count; i++) keys.push(i % 2 === 1 ? Math.floor(rand() * fresh) : fresh++);
    return { pool: "small", label: `${this.runId} ${label}`, keys };
  }

  /** `count` sends cycling through `set` (for the cache-hit path). */
  static repeat(set: readonly Buffer[], count: number): Buffer[] {
    return Array.from({ length: count }, (_, i) => set[i % set.length]!);
  }

  get meanBytes(): number {
    return meanBytes(this.pool);
  }

  get largeMeanBytes(): number {
    return meanBytes(this.large);
  }
}

const meanBytes = (list: readonly Buffer[]) => list.reduce((n, b) => n + b.byteLength, 0) / Math.max(1, list.length);

/** Width and height of the large images: 12 MP, 4:3 as a phone camera's. */
export const LARGE_SIZE = { width: 4000, height: 3000 } as const;

/**
 * `count` 12 MP JPEGs: each shared photo scaled to cover 4000x3000 (a slightly
 * different crop per variant), with a little seeded grain so the JPEG carries
 * the detail of a camera photo (a plain upscale compresses to a fraction of
 * a real 12 MP file, and entropy decoding is part of the decode work), quality
 * 88-92.
 */
export async function makeLargeVariants(count: number): Promise<Buffer[]> {
  const names = imageNames();
  const out: Buffer[] = [];
  const { width, height } = LARGE_SIZE;
  for (let i = 0; i < count; i++) {
    const src = readImage(names[i % names.length]!);
    const round = Math.floor(i / names.length);
    const meta = await sharp(src).metadata();
    const trim = round + 1;
    const raw = await sharp(src)
      .rotate()
      .extract({ left: trim, top: trim, width: meta.width - 2 * trim, height: meta.height - 2 * trim })
      .resize(width, height, { fit: "cover" })
      .removeAlpha()
      .toColourspace("srgb")
      .raw()
      .toBuffer();
    let s = (i + 1) * 2654435761;
    for (let p = 0; p < raw.length; p++) {
      s = (s * 1103515245 + 12345) >>> 0;
      const v = raw[p]! + ((s >>> 24) % 17) - 8;
      raw[p] = v < 0 ? 0 : v > 255 ? 255 : v;
    }
    out.push(await sharp(raw, { raw: { width, height, channels: 3 } }).jpeg({ quality: 88 + (i % 5) }).toBuffer());
  }
  return out;
}
