/** One feedback record joined to the model's answer. */
export interface LabelledPrediction {
  readonly truth: number;
  readonly predicted: number;
}

/** Model quality over a window of feedback. */
export interface Quality {
  readonly samples: number;
  readonly accuracy: number;
  readonly macroPrecision: number;
  readonly macroRecall: number;
  readonly macroF1: number;
}

/**
 * Top-1 accuracy and macro-averaged precision, recall and F1 over the classes
 * that occur as truth or prediction (a class never seen in either would only
 * add an undefined 0/0). Precision of a class never predicted is 0, as is
 * recall of a class never true; F1 of a class is 0 when P + R = 0.
 */
export function computeQuality(pairs: readonly LabelledPrediction[]): Quality {
  if (pairs.length === 0) return { samples: 0, accuracy: 0, macroPrecision: 0, macroRecall: 0, macroF1: 0 };
  const tp = new Map<number, number>();
  const predicted = new Map<number, number>();
  const actual = new Map<number, number>();
  let correct = 0;
  for (const { truth, predicted: p } of pairs) {
    actual.set(truth, (actual.get(truth) ?? 0) + 1);
    predicted.set(p, (predicted.get(p) ?? 0) + 1);
    if (truth === p) {
      correct++;
      tp.set(truth, (tp.get(truth) ?? 0) + 1);
    }
  }
  const classes = new Set([...actual.keys(), ...predicted.keys()]);
  let sp = 0;
  let sr = 0;
  let sf = 0;
  for (const c of classes) {
    const t = tp.get(c) ?? 0;
    const precision = (predicted.get(c) ?? 0) === 0 ? 0 : t / predicted.get(c)!;
    const recall = (actual.get(c) ?? 0) === 0 ? 0 : t / actual.get(c)!;
    sp += precision;
    sr += recall;
    sf += precision + recall === 0 ? 0 : (2 * precision * recall) / (precision + recall);
  }
  const n = classes.size;
  return { samples: pairs.length, accuracy: correct / pairs.length, macroPrecision: sp / n, macroRecall: sr / n, macroF1: sf / n };
}

/**
 * The same figures with top-level categories as classes: truth and prediction
 * are each replaced by their class's top-level category (`classTop`), so
 * "tabby cat" predicted for "tiger cat" counts as correct for "animal".
 */
export function computeCategoryQuality(pairs: readonly LabelledPrediction[], classTop: ArrayLike<number>): Quality {
  return computeQuality(pairs.map(({ truth, predicted }) => ({ truth: classTop[truth] ?? -1, predicted: classTop[predicted] ?? -1 })));
}

/** A true class and how many of its reviewed images the model answered with another class. */
export interface WrongCount {
  readonly index: number;
  readonly count: number;
}

/** The true classes most often answered wrongly, most first; ties by class index so the order is stable. */
export function mostOftenWrong(pairs: readonly LabelledPrediction[], limit: number): WrongCount[] {
  const wrong = new Map<number, number>();
  for (const { truth, predicted } of pairs) if (truth !== predicted) wrong.set(truth, (wrong.get(truth) ?? 0) + 1);
  return [...wrong]
    .map(([index, count]) => ({ index, count }))
    .sort((a, b) => b.count - a.count || a.index - b.index)
    .slice(0, limit);
}
