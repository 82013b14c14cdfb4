/** Sequence classification post-processing: scores per label for each row of logits. */
import { FusedRTError } from '../errors';
import type { OutputTensor } from '../engine/types';
import { sigmoid, softmaxRow } from './softmax';

export type ClassifyActivation = 'softmax' | 'sigmoid' | 'none';

export interface ClassifyOptions {
  /**
   * How logits become scores: 'softmax' (one label per text), 'sigmoid'
   * (independent labels, for multi-label models) or 'none' (raw logits).
   * Default: 'softmax'.
   */
  activation?: ClassifyActivation;
  /** Labels kept in `scores`, best first (0: all). Default: 0. */
  topK?: number;
}

export interface LabelScore {
  label: string;
  score: number;
}

export interface ClassifyResult {
  /** The best label and its score. */
  label: string;
  score: number;
  /** Labels sorted by score, best first (ties keep label order). */
  scores: LabelScore[];
}

/** The activation a model asks for: sigmoid for HF `multi_label_classification`, else softmax. */
export function defaultActivation(problemType: string | null | undefined): ClassifyActivation {
  return problemType === 'multi_label_classification' ? 'sigmoid' : 'softmax';
}

/** Label names for `count` classes: the plan's labels, or `LABEL_i` (HF's default) when it has none. */
export function labelNames(labels: string[] | null | undefined, count: number): string[] {
  if (labels && labels.length > 0) {
    if (labels.length !== count) throw new FusedRTError('E_SHAPE', `the model has ${count} classes but ${labels.length} labels`);
    return labels;
  }
  return Array.from({ length: count }, (_, i) => `LABEL_${i}`);
}

/** Classifies each row of `logits` (`[B, classes]`). */
export function classify(logits: OutputTensor, labels: string[] | null | undefined, options: ClassifyOptions = {}): ClassifyResult[] {
  const activation = options.activation ?? 'softmax';
  const topK = options.topK ?? 0;
  if (!['softmax', 'sigmoid', 'none'].includes(activation)) throw new FusedRTError('E_INPUT', `unknown activation "${activation}" (softmax, sigmoid or none)`);
  if (!Number.isInteger(topK) || topK < 0) throw new FusedRTError('E_INPUT', `topK must be an integer ≥ 0, got ${topK}`);
  const names = labelNames(labels, logits.cols);
  const results: ClassifyResult[] = [];
  for (let r = 0; r < logits.rows; r++) {
    const start = r * logits.cols;
    const scores = activate(logits.data, start, logits.cols, activation);
    const ranked = names.map((label, i) => ({ label, score: scores[i] }))
      .sort((a, b) => b.score - a.score);
    const kept = topK > 0 ? ranked.slice(0, topK) : ranked;
    results.push({ label: ranked[0].label, score: ranked[0].score, scores: kept });
  }
  return results;
}

function activate(data: Float32Array, start: number, length: number, activation: ClassifyActivation): ArrayLike<number> {
  if (activation === 'softmax') return softmaxRow(data, start, length);
  const out = new Float64Array(length);
  for (let i = 0; i < length; i++) out[i] = activation === 'sigmoid' ? sigmoid(data[start + i]) : data[start + i];
  return out;
}
