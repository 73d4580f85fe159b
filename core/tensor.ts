import type { ModelManifest } from "./model-manifest.js";

/**
 * Turns the compact wire tensor (uint8, HWC, channels in the model's order)
 * into the model's input: float32, planar (CHW), scaled and normalized.
 * A 256-entry table per channel replaces the per-pixel arithmetic.
 */
export interface InputEncoder {
  /** Bytes one wire image must have. */
  readonly wireBytes: number;
  /** Floats one model input needs. */
  readonly inputFloats: number;
  /** Writes the normalized CHW image for `hwc` at item `index` of `batch`. */
  encode(hwc: Uint8Array, batch: Float32Array, index: number): void;
}

export function createInputEncoder(manifest: ModelManifest): InputEncoder {
  const p = manifest.preprocessing;
  const h = p.cropHeight;
  const w = p.cropWidth;
  const plane = h * w;
  const tables = [0, 1, 2].map((c) => {
    const t = new Float32Array(256);
    const mean = p.mean[c] ?? 0;
    const std = p.std[c] ?? 1;
    for (let v = 0; v < 256; v++) t[v] = (v / p.scale - mean) / std;
    return t;
  }) as [Float32Array, Float32Array, Float32Array];
  return {
    wireBytes: plane * 3,
    inputFloats: plane * 3,
    encode(hwc, batch, index) {
      const base = index * plane * 3;
      const [t0, t1, t2] = tables;
      for (let i = 0, j = 0; i < plane; i++, j += 3) {
        batch[base + i] = t0[hwc[j]!]!;
        batch[base + plane + i] = t1[hwc[j + 1]!]!;
        batch[base + 2 * plane + i] = t2[hwc[j + 2]!]!;
      }
    },
  };
}
