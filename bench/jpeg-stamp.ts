/** Inserts a COM (comment) segment right after the JPEG SOI marker: same pixels, different bytes. */
export function stampJpeg(jpeg: Buffer, text: string): Buffer {
  if (jpeg.length < 4 || jpeg[0] !== 0xff || jpeg[1] !== 0xd8) throw new Error("stampJpeg: not a JPEG");
  const payload = Buffer.from(text, "latin1");
  if (payload.length > 0xfffd) throw new Error("stampJpeg: comment too long");
  const header = Buffer.from([0xff, 0xfe, 0, 0]);
  header.writeUInt16BE(payload.length + 2, 2);
  return Buffer.concat([jpeg.subarray(0, 2), header, payload, jpeg.subarray(2)]);
}

/**
 * Images described instead of sent: the load client holds the pools (sent to
 * it once) and makes image `key` of a step as pool[key % pool size] stamped
 * with `label` and the key, when it sends it. Same key, same bytes: a key
 * that comes back is a repeated image. Keeps 12 MP sets out of the messages.
 */
export interface ImageRecipe {
  readonly pool: string;
  readonly label: string;
  readonly keys: readonly number[];
}

/** The bytes of image `key` of a recipe. */
export function recipeImage(pool: readonly Buffer[], label: string, key: number): Buffer {
  return stampJpeg(pool[key % pool.length]!, `categorize-bench ${label} ${key}`);
}
