import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { Code } from "../../common/errors.js";
import { sniffImageFormat } from "../../edge/image-format.js";
import { preprocessImage } from "../../edge/preprocess.js";
import { imageNames, readImage } from "../support/fixtures.js";
import { solidImage } from "../support/images.js";

const spec = { resizeShorter: 256, cropHeight: 224, cropWidth: 224 };
const limits = { maxPixels: 64_000_000, maxDimension: 16_384, decodeTimeoutMs: 5_000 };

describe("format sniffing and preprocessing", () => {
  for (const format of ["png", "jpeg", "webp", "gif", "tiff", "avif"] as const) {
    it(`accepts ${format} by its magic bytes and yields a 224x224 RGB crop`, async () => {
      const bytes = await solidImage(format, 300, 4);
      assert.match(await sniffImageFormat(bytes), /^image\//);
      const out = await preprocessImage(bytes, spec, limits);
      assert.equal(out.hwc.byteLength, 224 * 224 * 3);
    });
  }

  it("turns greyscale into three equal channels", async () => {
    const out = await preprocessImage(await solidImage("png", 300, 1), spec, limits);
    assert.equal(out.hwc[0], out.hwc[1]);
    assert.equal(out.hwc[1], out.hwc[2]);
  });

  it("refuses SVG, PDF and text with INVALID_ARGUMENT", async () => {
    for (const bytes of [Buffer.from("<?xml version='1.0'?><svg/>"), Buffer.from("%PDF-1.7\n%abc\n1 0 obj\n<<>>\nendobj\n"), Buffer.from("hello world, plain text")]) {
      await assert.rejects(sniffImageFormat(bytes), (e: { code: Code }) => e.code === Code.InvalidArgument);
    }
  });

  it("applies EXIF orientation before the crop", async () => {
    const eagle = readImage("bald_eagle.jpeg");
    const sharp = (await import("sharp")).default;
    // Rotated pixels tagged orientation 6 (rotate 90 clockwise to display) must give the upright crop.
    const rotated = await sharp(eagle).rotate(-90).withMetadata({ orientation: 6 }).jpeg({ quality: 95 }).toBuffer();
    const a = await preprocessImage(eagle, spec, limits);
    const b = await preprocessImage(rotated, spec, limits);
    assert.equal(b.width, a.width);
    assert.equal(b.height, a.height);
    let diff = 0;
    for (let i = 0; i < a.hwc.length; i++) diff += Math.abs(a.hwc[i]! - b.hwc[i]!);
    assert.ok(diff / a.hwc.length < 8, `mean abs difference ${diff / a.hwc.length}`);
  });

  it("reports the same upright size as libvips for every shared photo and EXIF orientation (JPEG headers are read without libvips)", async () => {
    const sharp = (await import("sharp")).default;
    const eagle = readImage("bald_eagle.jpeg");
    const tagged = await Promise.all([1, 3, 5, 6, 8].map((o) => sharp(eagle).withMetadata({ orientation: o }).jpeg().toBuffer()));
    for (const bytes of [...imageNames().map((n) => readImage(n)), ...tagged]) {
      const meta = await sharp(bytes).metadata();
      const out = await preprocessImage(bytes, spec, limits);
      assert.deepEqual([out.width, out.height], [meta.autoOrient.width, meta.autoOrient.height], `orientation ${meta.orientation ?? 1}`);
    }
  });

  it("refuses a JPEG whose header is readable but whose data is not, with INVALID_ARGUMENT", async () => {
    const eagle = readImage("bald_eagle.jpeg");
    // The SOF header survives; the entropy-coded data after it is cut away.
    const cut = eagle.subarray(0, 800);
    await assert.rejects(preprocessImage(cut, spec, limits), (e: { code: Code; message: string }) => e.code === Code.InvalidArgument && /cannot (decode|read)/.test(e.message));
  });
});
