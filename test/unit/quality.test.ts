import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { computeQuality, mostOftenWrong } from "../../core/quality.js";

const close = (a: number, b: number) => assert.ok(Math.abs(a - b) < 1e-9, `${a} != ${b}`);

describe("model quality figures", () => {
  it("match a hand computation", () => {
    // truth/predicted: (1,1) (1,2) (2,2) (3,1)
    // class 1: P = 1/2, R = 1/2, F1 = 1/2; class 2: P = 1/2, R = 1, F1 = 2/3; class 3: P = 0, R = 0, F1 = 0
    const q = computeQuality([
      { truth: 1, predicted: 1 },
      { truth: 1, predicted: 2 },
      { truth: 2, predicted: 2 },
      { truth: 3, predicted: 1 },
    ]);
    assert.equal(q.samples, 4);
    close(q.accuracy, 0.5);
    close(q.macroPrecision, 1 / 3);
    close(q.macroRecall, 1 / 2);
    close(q.macroF1, (1 / 2 + 2 / 3) / 3);
  });

  it("is all ones when every prediction is right, and zero without samples", () => {
    const q = computeQuality([{ truth: 5, predicted: 5 }, { truth: 7, predicted: 7 }]);
    close(q.accuracy, 1);
    close(q.macroF1, 1);
    assert.deepEqual(computeQuality([]), { samples: 0, accuracy: 0, macroPrecision: 0, macroRecall: 0, macroF1: 0 });
  });

  it("lists the true classes most often answered wrongly, most first, ties by index", () => {
    const pairs = [
      { truth: 9, predicted: 1 },
      { truth: 4, predicted: 1 },
      { truth: 4, predicted: 2 },
      { truth: 3, predicted: 3 },
      { truth: 2, predicted: 5 },
    ];
    assert.deepEqual(mostOftenWrong(pairs, 5), [{ index: 4, count: 2 }, { index: 2, count: 1 }, { index: 9, count: 1 }]);
    assert.deepEqual(mostOftenWrong(pairs, 1), [{ index: 4, count: 2 }]);
  });
});
