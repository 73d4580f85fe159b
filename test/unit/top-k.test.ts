import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { softmax, topK } from "../../core/top-k.js";

describe("softmax and top-k", () => {
  it("softmax sums to one and is stable for large logits", () => {
    const p = softmax(new Float32Array([1000, 1001, 1002]), 0, 3);
    assert.ok(Math.abs(p.reduce((a, b) => a + b, 0) - 1) < 1e-12);
    assert.ok(p[2]! > p[1]! && p[1]! > p[0]!);
  });

  it("orders by score, ties broken by class index", () => {
    assert.deepEqual(topK([0.1, 0.3, 0.3, 0.05, 0.3, 0.2], 4).map((s) => s.index), [1, 2, 4, 5]);
    assert.deepEqual(topK([0.5, 0.5, 0.5], 2).map((s) => s.index), [0, 1]);
    assert.equal(topK([0.2, 0.8], 10).length, 2);
    assert.equal(topK([0.2, 0.8], 0).length, 0);
  });
});
