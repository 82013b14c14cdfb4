/** Rows narrower than this (class or span logits) say little by their cosine and are left out of it. */
export const COSINE_MIN_COLS = 16;

/**
 * The least cosine similarity between matching rows of two row-major
 * [rows, cols] arrays, over rows of at least COSINE_MIN_COLS columns whose
 * `want` row is not all zeros (1 when there are none). A `got` row of zeros
 * counts 0, a NaN -1.
 */
export function leastRowCosine(got: ArrayLike<number>, want: ArrayLike<number>, cols: number): number {
  let least = 1;
  if (cols < COSINE_MIN_COLS) return least;
  for (let start = 0; start < want.length; start += cols) {
    let dot = 0;
    let gotNorm = 0;
    let wantNorm = 0;
    for (let i = start; i < start + cols; i++) {
      dot += got[i] * want[i];
      gotNorm += got[i] * got[i];
      wantNorm += want[i] * want[i];
    }
    if (wantNorm === 0) continue;
    const cosine = gotNorm > 0 ? dot / Math.sqrt(gotNorm * wantNorm) : 0;
    least = Number.isNaN(cosine) ? -1 : Math.min(least, cosine);
  }
  return least;
}
