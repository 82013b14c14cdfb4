/** Types of the plan header; docs/plan-format.md is the normative description. */

/** f8e4m3: OCP FP8 E4M3, one byte per element, times the tensor's `scale`. */
export type DType = 'f32' | 'f16' | 'u8' | 'f8e4m3';
/**
 * fp32: fp32 weights and compute. fp16: half-float matrices and embedding
 * tables (fp16 activations on CUDA). tf32: fp32 weights, GEMMs with TF32
 * tensor cores on CUDA (plain fp32 on the CPU). fp8: as fp16, except that the
 * encoder's GEMMs (QKV, attention output, feed-forward) take E4M3 weights and inputs.
 */
export type Precision = 'fp32' | 'fp16' | 'tf32' | 'fp8';
export type Task = 'fill-mask' | 'classification' | 'token-classification' | 'question-answering' | 'embedding';
export type RowsKind = 'tokens' | 'sequences' | 'selected';
export type Activation = 'none' | 'gelu' | 'gelu_tanh' | 'relu' | 'tanh';

export interface TensorEntry {
  name: string;
  dtype: DType;
  shape: number[];
  /** Byte offset relative to the start of the data section; a multiple of 64. */
  offset: number;
  size: number;
  /** f8e4m3 only (and required there): an element's value is its decoded byte times this. */
  scale?: number;
}

export interface BufferDecl {
  name: string;
  rows: RowsKind;
  cols: number;
  /** Absent: a float buffer. f8e4m3: holds values rounded to E4M3, read only as the input of GEMMs with f8e4m3 weights. */
  dtype?: 'f8e4m3';
}

export interface EmbedLayerNormOp {
  type: 'embed_layernorm';
  word: string;
  position: string;
  tokenType: string;
  gamma: string;
  beta: string;
  eps: number;
  out: string;
  /** An f8e4m3 buffer shaped as `out` that also receives the output, rounded to E4M3. */
  out8?: string;
}

export interface GemmOp {
  type: 'gemm';
  in: string;
  weight: string;
  bias?: string;
  activation: Activation;
  out: string;
}

/** Rows an op produces when not all tokens: each sequence's first token, or the caller's selected rows. */
export type RowSelect = 'first' | 'selected';

export interface AttentionOp {
  type: 'attention';
  in: string;
  out: string;
  heads: number;
  headDim: number;
  scale: number;
  /** Only these rows are queries (against all keys of their sequence); out is then a `sequences` or `selected` buffer. */
  select?: RowSelect;
}

export interface AddLayerNormOp {
  type: 'add_layernorm';
  in: string;
  residual?: string;
  bias?: string;
  gamma: string;
  beta: string;
  eps: number;
  out: string;
  /** An f8e4m3 buffer shaped as `out` that also receives the output, rounded to E4M3. */
  out8?: string;
}

export interface GatherRowsOp {
  type: 'gather_rows';
  in: string;
  out: string;
  select: RowSelect;
}

/** Each sequence's mean row: out[b] = the mean of in's rows cu_seqlens[b] .. cu_seqlens[b + 1] - 1 (0 for an empty sequence). */
export interface MeanRowsOp {
  type: 'mean_rows';
  /** A `tokens` buffer. */
  in: string;
  /** A `sequences` buffer of as many columns. */
  out: string;
}

export type PlanOp = EmbedLayerNormOp | GemmOp | AttentionOp | AddLayerNormOp | GatherRowsOp | MeanRowsOp;

export interface ModelConfig {
  hiddenSize: number;
  numLayers: number;
  numHeads: number;
  intermediateSize: number;
  vocabSize: number;
  maxPositions: number;
  typeVocabSize: number;
  layerNormEps: number;
  hiddenAct: string;
  /** Longest sequence the plan accepts: min(maxPositions, --max-seq). */
  maxSeq: number;
}

export interface PlanHeader {
  format: 'fusedrt-plan';
  formatVersion: 1;
  builder: { name: string; version: string };
  createdAt: string;
  source: { architecture: string; sha256: string; files: string[] };
  family: 'bert';
  task: Task;
  precision: Precision;
  config: ModelConfig;
  labels: string[] | null;
  problemType: string | null;
  tokenizer: { tensor: string; maskToken: string; doLowerCase: boolean };
  tensors: TensorEntry[];
  dataSize: number;
  buffers: BufferDecl[];
  ops: PlanOp[];
  outputs: { name: string; buffer: string }[];
}
