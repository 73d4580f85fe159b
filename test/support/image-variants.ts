import sharp from "sharp";
import { imageNames, readImage } from "./fixtures.js";

/**
 * Deterministic distinct images made from the shared photos: each variant is
 * a slightly different crop, scale and JPEG quality, so every one has its own
 * sha256 while staying a real photo. Variant i is the same on every run.
 */
export async function makeVariants(count: number, options: { width?: number } = {}): Promise<Buffer[]> {
  const names = imageNames();
  const sources = names.map((n) => readImage(n));
  const metas = await Promise.all(sources.map((b) => sharp(b).metadata()));
  const out: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const k = i % sources.length;
    const round = Math.floor(i / sources.length);
    const meta = metas[k]!;
    const w = meta.width;
    const h = meta.height;
    const trim = (round % 7) + 1;
    const width = options.width ?? 480 + ((round * 37) % 160);
    out.push(
      await sharp(sources[k])
        .extract({ left: trim, top: trim, width: w - 2 * trim, height: h - 2 * trim })
        .resize({ width })
        .jpeg({ quality: 80 + (round % 15) })
        .toBuffer(),
    );
  }
  return out;
}
