/** Sentence embeddings from the token states of a packed batch. */
import { FusedRTError } from '../errors';
import type { OutputTensor } from '../engine/types';

export type Pooling = 'cls' | 'mean';

export interface PoolingOptions {
  /**
   * 'mean': the average of all the sequence's token states, [CLS] and [SEP]
   * included (what sentence-transformers computes with its attention mask);
   * 'cls': the state of the first token. Default: 'mean'.
   */
  pooling?: Pooling;
  /** Scale each embedding to unit L2 length, so a dot product is the cosine similarity. Default: false. */
  normalize?: boolean;
}

/**
 * Pools `hidden` (`[T, H]`, packed tokens) into one vector per sequence;
 * `cuSeqlens` (`[B + 1]`) gives each sequence's rows.
 */
export function poolEmbeddings(hidden: OutputTensor, cuSeqlens: ArrayLike<number>, options: PoolingOptions = {}): Float32Array[] {
  const pooling = options.pooling ?? 'mean';
  if (pooling !== 'cls' && pooling !== 'mean') throw new FusedRTError('E_INPUT', `unknown pooling "${pooling}" (cls or mean)`);
  const sequences = cuSeqlens.length - 1;
  if (sequences < 0 || cuSeqlens[0] !== 0 || cuSeqlens[sequences] !== hidden.rows) {
    throw new FusedRTError('E_SHAPE', `cu_seqlens [${Array.from(cuSeqlens)}] do not cover the ${hidden.rows} token rows`);
  }
  const width = hidden.cols;
  const embeddings: Float32Array[] = [];
  for (let b = 0; b < sequences; b++) {
    const first = cuSeqlens[b];
    const end = cuSeqlens[b + 1];
    if (end <= first) throw new FusedRTError('E_SHAPE', `sequence ${b} is empty (cu_seqlens ${first}..${end})`);
    const rows = pooling === 'cls' ? 1 : end - first;
    // Accumulate in float64: long sequences summed in float32 drift by ~1e-5.
    const sum = new Float64Array(width);
    for (let t = first; t < first + rows; t++) {
      const base = t * width;
      for (let j = 0; j < width; j++) sum[j] += hidden.data[base + j];
    }
    embeddings.push(scaled(sum, 1 / rows, options.normalize === true));
  }
  return embeddings;
}

/**
 * One vector per sequence from an output the engine pooled already (`[B, H]`:
 * a BERT plan's `mean` or `cls`, docs/models-bert.md), so only B rows
 * crossed from the device; with `normalize` each scaled to unit L2 length.
 */
export function embeddingsOfRows(pooled: OutputTensor, normalize = false): Float32Array[] {
  return Array.from({ length: pooled.rows }, (_, b) => scaled(pooled.data.subarray(b * pooled.cols, (b + 1) * pooled.cols), 1, normalize));
}

/** values times scale, then to unit length with normalize (a zero vector stays zero). */
function scaled(values: ArrayLike<number>, scale: number, normalize: boolean): Float32Array {
  let factor = scale;
  if (normalize) {
    let norm = 0;
    for (let j = 0; j < values.length; j++) norm += (values[j] * scale) ** 2;
    norm = Math.sqrt(norm);
    if (norm > 0) factor /= norm;
  }
  const vector = new Float32Array(values.length);
  for (let j = 0; j < values.length; j++) vector[j] = values[j] * factor;
  return vector;
}
