/**
 * Useful floating-point operations of one BERT MLM forward over packed
 * sequences (bench/gpu/README.md, "FLOP count"): the GEMMs of every layer,
 * the two attention products, and the MLM head on the masked rows only.
 * Embeddings, LayerNorms, softmax and GELU are left out (memory-bound, a few
 * percent of the time at these sizes). Padding is not useful work: a padded
 * engine does more operations for the same count.
 */

export interface BertShape {
  num_hidden_layers: number;
  hidden_size: number;
  intermediate_size: number;
  vocab_size: number;
}

/** Operations for sequences of `lengths` tokens with `maskedRows` rows through the MLM head. */
export function bertMlmFlops(shape: BertShape, lengths: number[], maskedRows: number): number {
  const H = shape.hidden_size;
  const I = shape.intermediate_size;
  const tokens = lengths.reduce((a, b) => a + b, 0);
  // Q, K, V and output projections (4 H^2) and the two FFN matrices (2 H I), 2 operations per multiply-add.
  const perTokenLayer = 2 * (4 * H * H + 2 * H * I);
  // Q K^T and P V: 2 S H each per token, S = its own sequence's length.
  const attentionLayer = lengths.reduce((sum, s) => sum + 4 * s * s * H, 0);
  // Head transform (H x H) and decoder (H x V) on each masked row.
  const head = maskedRows * 2 * (H * H + H * shape.vocab_size);
  return shape.num_hidden_layers * (tokens * perTokenLayer + attentionLayer) + head;
}

/** Milliseconds `flops` take at `tflops` TFLOP/s: the floor no engine beats at that rate. */
export function floorMs(flops: number, tflops: number): number {
  return flops / (tflops * 1e12) * 1e3;
}

/** Achieved TFLOP/s of `flops` done in `ms`. */
export function effectiveTflops(flops: number, ms: number): number {
  return flops / (ms * 1e-3) / 1e12;
}
