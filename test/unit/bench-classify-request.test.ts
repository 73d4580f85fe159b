import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { classifyRequestParts } from "../../bench/classify-request.js";
import { ClassifyRequestSchema } from "../../gen/categorize/v1/categorize_pb.js";

const join = (parts: readonly Uint8Array[]) => Buffer.concat(parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength)));

describe("bench ClassifyRequest parts", () => {
  it("are the bytes protobuf-es writes for the whole message, for images on both sides of each varint length step", () => {
    for (const size of [1, 127, 128, 16_383, 16_384, 2_097_151, 2_097_152, 4_000_000]) {
      const image = new Uint8Array(size).map((_, i) => i % 251);
      for (const topK of [0, 5]) {
        const parts = classifyRequestParts(image, topK);
        assert.ok(parts[1] === image, "the image itself is a part, not a copy");
        assert.deepEqual(join(parts), Buffer.from(toBinary(ClassifyRequestSchema, create(ClassifyRequestSchema, { image, topK }))), `size ${size}, topK ${topK}`);
      }
    }
  });

  it("decode to the image and top_k sent", () => {
    const image = Uint8Array.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3]);
    const msg = fromBinary(ClassifyRequestSchema, join(classifyRequestParts(image, 3)));
    assert.deepEqual(Array.from(msg.image), Array.from(image));
    assert.equal(msg.topK, 3);
  });
});
