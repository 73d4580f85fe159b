/** One scored class. */
export interface Scored {
  readonly index: number;
  readonly score: number;
}

/** Softmax of one row of logits, computed stably (max subtracted first). */
export function softmax(logits: Float32Array, offset: number, length: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, logits[offset + i]!);
  const out = new Float64Array(length);
  let sum = 0;
  for (let i = 0; i < length; i++) {
    const e = Math.exp(logits[offset + i]! - max);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < length; i++) out[i]! /= sum;
  return out;
}

/**
 * The k highest scores, highest first; equal scores are ordered by class index
 * so answers are identical run to run (the int8 model's logits tie often).
 */
export function topK(scores: ArrayLike<number>, k: number): Scored[] {
  const n = Math.min(k, scores.length);
  const best: Scored[] = [];
  const before = (a: Scored, b: Scored) => a.score > b.score || (a.score === b.score && a.index < b.index);
  for (let i = 0; i < scores.length; i++) {
    const item = { index: i, score: scores[i]! };
    if (best.length < n) {
      best.push(item);
      best.sort((a, b) => (before(a, b) ? -1 : 1));
    } else if (n > 0 && before(item, best[n - 1]!)) {
      best[n - 1] = item;
      for (let j = n - 1; j > 0 && before(best[j]!, best[j - 1]!); j--) [best[j - 1], best[j]] = [best[j]!, best[j - 1]!];
    }
  }
  return best;
}
