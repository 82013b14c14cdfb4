/**
 * Numerically careful activations over one row of logits. The log-sum-exp is
 * taken around the row's maximum and accumulated in float64, so rows with
 * large or very different logits neither overflow nor lose the small scores.
 */

/** log(Σ exp(row[i])) for row[start, start + length). */
export function logSumExp(data: ArrayLike<number>, start: number, length: number): number {
  let max = -Infinity;
  for (let i = 0; i < length; i++) {
    const v = data[start + i];
    if (v > max) max = v;
  }
  // An infinite maximum is the answer itself (exp(∞ - ∞) would make it NaN).
  if (!Number.isFinite(max)) return max;
  let sum = 0;
  for (let i = 0; i < length; i++) sum += Math.exp(data[start + i] - max);
  return max + Math.log(sum);
}

/**
 * Softmax probabilities of one row, in float64. Divides by the sum rather
 * than subtracting the log-sum-exp: adding log(sum) to a large maximum would
 * round away its low bits.
 */
export function softmaxRow(data: ArrayLike<number>, start: number, length: number): Float64Array {
  let max = -Infinity;
  for (let i = 0; i < length; i++) max = Math.max(max, data[start + i]);
  const out = new Float64Array(length);
  let sum = 0;
  for (let i = 0; i < length; i++) sum += (out[i] = Math.exp(data[start + i] - max));
  for (let i = 0; i < length; i++) out[i] /= sum;
  return out;
}

/** The logistic function, in the form whose exp() never overflows. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/**
 * Indices of the k largest values of row[start, start + length), largest
 * first; ties keep the lower index first. O(length · k), which beats a full
 * sort for the small k used in practice.
 */
export function topKIndices(data: ArrayLike<number>, start: number, length: number, k: number): number[] {
  const count = Math.min(k, length);
  const best: number[] = [];
  for (let i = 0; i < length; i++) {
    const v = data[start + i];
    if (best.length === count && !(v > data[start + best[count - 1]])) continue;
    let at = best.length === count ? count - 1 : best.length;
    while (at > 0 && v > data[start + best[at - 1]]) at--;
    if (best.length === count) best.pop();
    best.splice(at, 0, i);
  }
  return best;
}
