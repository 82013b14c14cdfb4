/**
 * BERT (Hugging Face `transformers` BertModel and its task heads) as a plan:
 * config.json → ModelConfig, checkpoint tensor names → plan tensors, and the
 * op graph over packed tokens. docs/models-bert.md describes the graph and
 * the weight mapping.
 */
import { FusedRTError } from '../errors';
import type { Activation, BufferDecl, ModelConfig, PlanOp, RowSelect, RowsKind, Task } from '../build/plan-types';
import type { GraphOptions, ModelGraph, TensorSpec, WeightLookup } from './index';

export const BERT_ARCHITECTURES = [
  'BertModel',
  'BertForMaskedLM',
  'BertForSequenceClassification',
  'BertForTokenClassification',
  'BertForQuestionAnswering',
] as const;
export type BertArchitecture = (typeof BERT_ARCHITECTURES)[number];

const TASKS: Record<BertArchitecture, Task> = {
  BertModel: 'embedding',
  BertForMaskedLM: 'fill-mask',
  BertForSequenceClassification: 'classification',
  BertForTokenClassification: 'token-classification',
  BertForQuestionAnswering: 'question-answering',
};

/** HF activation names (transformers ACT2FN) → plan activations; gelu_new and gelu_pytorch_tanh are the same tanh approximation. */
const ACTIVATIONS: Record<string, Activation> = {
  gelu: 'gelu',
  gelu_new: 'gelu_tanh',
  gelu_pytorch_tanh: 'gelu_tanh',
  relu: 'relu',
};

/** transformers' BertConfig defaults, used for keys a config.json leaves out (as transformers does). */
const DEFAULTS = {
  vocab_size: 30522,
  hidden_size: 768,
  num_hidden_layers: 12,
  num_attention_heads: 12,
  intermediate_size: 3072,
  hidden_act: 'gelu',
  max_position_embeddings: 512,
  type_vocab_size: 2,
  layer_norm_eps: 1e-12,
  position_embedding_type: 'absolute',
};

function configError(message: string): FusedRTError {
  return new FusedRTError('E_MODEL', `config.json: ${message}`);
}

function positiveInteger(config: Record<string, unknown>, key: keyof typeof DEFAULTS): number {
  const value = config[key] ?? DEFAULTS[key];
  if (!Number.isSafeInteger(value) || (value as number) < 1) throw configError(`${key} must be a positive integer, got ${JSON.stringify(value)}`);
  return value as number;
}

export function parseBertConfig(config: Record<string, unknown>): ModelConfig {
  const hiddenAct = config.hidden_act ?? DEFAULTS.hidden_act;
  if (typeof hiddenAct !== 'string' || !(hiddenAct in ACTIVATIONS)) {
    throw configError(`hidden_act ${JSON.stringify(hiddenAct)} is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
  }
  const positionType = config.position_embedding_type ?? DEFAULTS.position_embedding_type;
  if (positionType !== 'absolute') {
    throw configError(`position_embedding_type ${JSON.stringify(positionType)} is not supported (only "absolute" is)`);
  }
  if (config.is_decoder === true || config.add_cross_attention === true) {
    throw configError('decoder BERT models (is_decoder / add_cross_attention) are not supported; only encoders are');
  }
  const eps = config.layer_norm_eps ?? DEFAULTS.layer_norm_eps;
  if (typeof eps !== 'number' || !(eps > 0) || !Number.isFinite(eps)) throw configError(`layer_norm_eps must be a positive number, got ${JSON.stringify(eps)}`);
  const hiddenSize = positiveInteger(config, 'hidden_size');
  const numHeads = positiveInteger(config, 'num_attention_heads');
  if (hiddenSize % numHeads !== 0) throw configError(`hidden_size ${hiddenSize} is not a multiple of num_attention_heads ${numHeads}`);
  const maxPositions = positiveInteger(config, 'max_position_embeddings');
  return {
    hiddenSize,
    numLayers: positiveInteger(config, 'num_hidden_layers'),
    numHeads,
    intermediateSize: positiveInteger(config, 'intermediate_size'),
    vocabSize: positiveInteger(config, 'vocab_size'),
    maxPositions,
    typeVocabSize: positiveInteger(config, 'type_vocab_size'),
    layerNormEps: eps,
    hiddenAct: ACTIVATIONS[hiddenAct],
    maxSeq: maxPositions,
  };
}

/** id2label in id order; ids must be exactly 0..n-1. Null when absent. */
function parseLabels(config: Record<string, unknown>): string[] | null {
  const id2label = config.id2label;
  if (id2label === undefined || id2label === null) return null;
  if (typeof id2label !== 'object' || Array.isArray(id2label)) throw configError('id2label is not an object');
  const entries = Object.entries(id2label as Record<string, unknown>);
  const labels: string[] = new Array(entries.length);
  for (const [id, label] of entries) {
    const index = Number(id);
    if (!Number.isInteger(index) || index < 0 || index >= entries.length || labels[index] !== undefined || typeof label !== 'string') {
      throw configError(`id2label must map ids 0..${entries.length - 1} to strings (bad entry ${JSON.stringify(id)}: ${JSON.stringify(label)})`);
    }
    labels[index] = label;
  }
  return labels;
}

/**
 * Resolves checkpoint names for plan tensors, collecting every missing or
 * mis-shaped tensor so that one error can list them all.
 */
class WeightBinder {
  readonly tensors: TensorSpec[] = [];
  private readonly missing: string[] = [];
  private readonly mismatched: string[] = [];

  constructor(private readonly weights: WeightLookup) {}

  has(name: string): boolean {
    return this.weights.entry(name) !== undefined;
  }

  /** Adds plan tensor `name` from the first candidate the checkpoint holds (sources concatenate along dim 0). */
  add(name: string, candidatesPerSource: string[][], shape: number[], kind: TensorSpec['kind']): string {
    const sources: string[] = [];
    const rowsPerSource = shape[0] / candidatesPerSource.length;
    for (const candidates of candidatesPerSource) {
      const found = candidates.find((c) => this.has(c));
      if (found === undefined) {
        this.missing.push(candidates.length > 1 ? `${candidates[0]} (or ${candidates.slice(1).join(', ')})` : candidates[0]);
        continue;
      }
      const entry = this.weights.entry(found)!;
      const expected = [rowsPerSource, ...shape.slice(1)];
      if (entry.shape.length !== expected.length || entry.shape.some((d, i) => d !== expected[i])) {
        this.mismatched.push(`${found} has shape [${entry.shape}], config.json implies [${expected}]`);
      } else if (entry.dtype !== 'F32' && entry.dtype !== 'F16' && entry.dtype !== 'BF16') {
        this.mismatched.push(`${found} has dtype ${entry.dtype} (F32, F16 or BF16 expected)`);
      }
      sources.push(found);
    }
    this.tensors.push({ name, sources, shape, kind });
    return name;
  }

  linear(planName: string, checkpointName: string, outFeatures: number, inFeatures: number,
    weightKind: TensorSpec['kind'] = 'matrix'): { weight: string; bias: string } {
    return {
      weight: this.add(`${planName}.weight`, [[`${checkpointName}.weight`]], [outFeatures, inFeatures], weightKind),
      bias: this.add(`${planName}.bias`, [[`${checkpointName}.bias`]], [outFeatures], 'vector'),
    };
  }

  /** LayerNorm parameters under their current (`weight`/`bias`) or legacy TF-converted (`gamma`/`beta`) names. */
  layerNorm(planName: string, checkpointName: string, size: number): { gamma: string; beta: string } {
    return {
      gamma: this.add(`${planName}.weight`, [[`${checkpointName}.weight`, `${checkpointName}.gamma`]], [size], 'vector'),
      beta: this.add(`${planName}.bias`, [[`${checkpointName}.bias`, `${checkpointName}.beta`]], [size], 'vector'),
    };
  }

  /** Throws one E_MODEL naming every missing and mis-shaped tensor. */
  check(): void {
    const problems: string[] = [];
    if (this.missing.length) problems.push(`missing ${this.missing.length} tensor(s): ${this.missing.join(', ')}`);
    if (this.mismatched.length) problems.push(`wrong tensor(s): ${this.mismatched.join('; ')}`);
    if (problems.length) throw new FusedRTError('E_MODEL', `checkpoint does not match config.json: ${problems.join('. ')}`);
  }
}

/** Rows a head reads, and the buffers the last layer computes them in (prefix, prefix_ctx, ...). */
interface HeadRows {
  select: RowSelect;
  rows: RowsKind;
  prefix: string;
}
const SELECTED_ROWS: HeadRows = { select: 'selected', rows: 'selected', prefix: 'sel' };
const FIRST_ROWS: HeadRows = { select: 'first', rows: 'sequences', prefix: 'first' };

/** BertModel checkpoints name the encoder without the `bert.` prefix, task models with it; either loads into either. */
function encoderPrefix(architecture: BertArchitecture, weights: WeightLookup): string {
  const probe = 'embeddings.word_embeddings.weight';
  if (weights.entry(`bert.${probe}`)) return 'bert.';
  if (weights.entry(probe)) return '';
  return architecture === 'BertModel' ? '' : 'bert.';
}

/**
 * With `options.fp8`, the four GEMMs of every layer take E4M3 weights and
 * inputs (docs/plan-format.md, "FP8"): the LayerNorm before QKV and FFN1
 * writes an E4M3 copy of its output beside it, and attention's output and
 * the intermediate activations, which only GEMMs read, are E4M3 throughout.
 */
export function buildBertGraph(rawConfig: Record<string, unknown>, weights: WeightLookup, options: GraphOptions = {}): ModelGraph {
  const architecture = (rawConfig.architectures as string[])[0] as BertArchitecture;
  const config = parseBertConfig(rawConfig);
  const { hiddenSize: H, intermediateSize: I, numHeads, layerNormEps: eps } = config;
  const headDim = H / numHeads;
  // ModelConfig keeps hiddenAct a string (the header's JSON); parseBertConfig only yields plan activations.
  const act = config.hiddenAct as Activation;
  const p = encoderPrefix(architecture, weights);
  const w = new WeightBinder(weights);
  const fp8 = options.fp8 === true;
  const gemmKind: TensorSpec['kind'] = fp8 ? 'e4m3' : 'matrix';
  // The E4M3 form of buffer x that the fp8 GEMMs read is x + "8" (x itself without fp8):
  // a copy beside `hidden` and the head rows, and in place of attention's output and the intermediate, which only GEMMs read.
  const e4m3 = (x: string) => (fp8 ? `${x}8` : x);
  const e4m3Buffer = (x: string, rows: RowsKind, cols: number): BufferDecl =>
    (fp8 ? { name: e4m3(x), rows, cols, dtype: 'f8e4m3' } : { name: x, rows, cols });
  const e4m3Copy = (x: string, rows: RowsKind, cols: number): BufferDecl[] => (fp8 ? [e4m3Buffer(x, rows, cols)] : []);
  const out8 = (x: string) => (fp8 ? { out8: e4m3(x) } : {});
  const buffers: BufferDecl[] = [
    { name: 'hidden', rows: 'tokens', cols: H },
    ...e4m3Copy('hidden', 'tokens', H),
    { name: 'qkv', rows: 'tokens', cols: 3 * H },
    e4m3Buffer('ctx', 'tokens', H),
    { name: 'proj', rows: 'tokens', cols: H },
    e4m3Buffer('inter', 'tokens', I),
  ];
  const ops: PlanOp[] = [];

  const word = w.add('embeddings.word_embeddings.weight', [[`${p}embeddings.word_embeddings.weight`]], [config.vocabSize, H], 'matrix');
  const position = w.add('embeddings.position_embeddings.weight', [[`${p}embeddings.position_embeddings.weight`]], [config.maxPositions, H], 'matrix');
  const tokenType = w.add('embeddings.token_type_embeddings.weight', [[`${p}embeddings.token_type_embeddings.weight`]], [config.typeVocabSize, H], 'matrix');
  const embedNorm = w.layerNorm('embeddings.LayerNorm', `${p}embeddings.LayerNorm`, H);
  ops.push({ type: 'embed_layernorm', word, position, tokenType, ...embedNorm, eps, out: 'hidden', ...out8('hidden') });

  const hasPooler = architecture === 'BertForSequenceClassification'
    || (architecture === 'BertModel' && (w.has(`${p}pooler.dense.weight`) || w.has(`${p}pooler.dense.bias`)));
  // BertModel always gets the first rows' last layer: its `cls` output (the
  // [CLS] states, for sentence embeddings) is those rows.
  const headRows = architecture === 'BertForMaskedLM' ? SELECTED_ROWS
    : hasPooler || architecture === 'BertModel' ? FIRST_ROWS : null;
  for (let i = 0; i < config.numLayers; i++) {
    const src = `${p}encoder.layer.${i}`;
    const dst = `encoder.layer.${i}`;
    const qkvSources = (suffix: string) => ['query', 'key', 'value'].map((m) => [`${src}.attention.self.${m}.${suffix}`]);
    const qkvWeight = w.add(`${dst}.attention.self.qkv.weight`, qkvSources('weight'), [3 * H, H], gemmKind);
    const qkvBias = w.add(`${dst}.attention.self.qkv.bias`, qkvSources('bias'), [3 * H], 'vector');
    const attnOut = w.linear(`${dst}.attention.output.dense`, `${src}.attention.output.dense`, H, H, gemmKind);
    const attnNorm = w.layerNorm(`${dst}.attention.output.LayerNorm`, `${src}.attention.output.LayerNorm`, H);
    const up = w.linear(`${dst}.intermediate.dense`, `${src}.intermediate.dense`, I, H, gemmKind);
    const down = w.linear(`${dst}.output.dense`, `${src}.output.dense`, H, I, gemmKind);
    const outNorm = w.layerNorm(`${dst}.output.LayerNorm`, `${src}.output.LayerNorm`, H);
    const attention = { type: 'attention', in: 'qkv', heads: numHeads, headDim, scale: 1 / Math.sqrt(headDim) } as const;
    const last = i === config.numLayers - 1;
    // Everything after attention, on the rows of `x` (updated in place).
    // The projections' biases ride in the following add_layernorm, saving one pass over the rows.
    // The last layer's output has no E4M3 copy: no GEMM of this graph reads it.
    const afterAttention = (x: string, ctx: string, proj: string, inter: string): PlanOp[] => [
      { type: 'gemm', in: e4m3(ctx), weight: attnOut.weight, activation: 'none', out: proj },
      { type: 'add_layernorm', in: proj, residual: x, bias: attnOut.bias, ...attnNorm, eps, out: x, ...out8(x) },
      { type: 'gemm', in: e4m3(x), weight: up.weight, bias: up.bias, activation: act, out: e4m3(inter) },
      { type: 'gemm', in: e4m3(inter), weight: down.weight, activation: 'none', out: proj },
      { type: 'add_layernorm', in: proj, residual: x, bias: down.bias, ...outNorm, eps, out: x, ...(last ? {} : out8(x)) },
    ];
    ops.push({ type: 'gemm', in: e4m3('hidden'), weight: qkvWeight, bias: qkvBias, activation: 'none', out: 'qkv' });
    if (last && headRows) {
      // The head reads only some rows, so the last layer is also computed
      // for those rows alone (their queries against every key). The
      // runtime runs whichever version the requested outputs need.
      const { select, rows, prefix } = headRows;
      const names = { x: prefix, ctx: `${prefix}_ctx`, proj: `${prefix}_proj`, inter: `${prefix}_inter` };
      buffers.push(
        { name: names.x, rows, cols: H }, ...e4m3Copy(names.x, rows, H), e4m3Buffer(names.ctx, rows, H),
        { name: names.proj, rows, cols: H }, e4m3Buffer(names.inter, rows, I),
      );
      ops.push(
        { type: 'gather_rows', in: 'hidden', out: names.x, select },
        { ...attention, out: e4m3(names.ctx), select },
        ...afterAttention(names.x, names.ctx, names.proj, names.inter),
      );
    }
    ops.push({ ...attention, out: e4m3('ctx') }, ...afterAttention('hidden', 'ctx', 'proj', 'inter'));
  }

  const outputs: ModelGraph['outputs'] = [{ name: 'hidden', buffer: 'hidden' }];
  let labels: string[] | null = null;
  // The pooler reads the first rows as the last layer left them (FIRST_ROWS).
  const addPooler = () => {
    const pooler = w.linear('pooler.dense', `${p}pooler.dense`, H, H);
    buffers.push({ name: 'pooled', rows: 'sequences', cols: H });
    ops.push({ type: 'gemm', in: FIRST_ROWS.prefix, weight: pooler.weight, bias: pooler.bias, activation: 'tanh', out: 'pooled' });
    outputs.push({ name: 'pooled', buffer: 'pooled' });
  };

  switch (architecture) {
    case 'BertModel':
      if (hasPooler) addPooler();
      break;
    case 'BertForMaskedLM':
      addMaskedLmHead(w, rawConfig, config, word, buffers, ops, outputs);
      break;
    case 'BertForSequenceClassification': {
      labels = classifierLabels(rawConfig, weights, 'classifier.weight');
      addPooler();
      const classifier = w.linear('classifier', 'classifier', labels.length, H);
      buffers.push({ name: 'cls_logits', rows: 'sequences', cols: labels.length });
      ops.push({ type: 'gemm', in: 'pooled', weight: classifier.weight, bias: classifier.bias, activation: 'none', out: 'cls_logits' });
      outputs.unshift({ name: 'logits', buffer: 'cls_logits' });
      break;
    }
    case 'BertForTokenClassification': {
      labels = classifierLabels(rawConfig, weights, 'classifier.weight');
      const classifier = w.linear('classifier', 'classifier', labels.length, H);
      buffers.push({ name: 'token_logits', rows: 'tokens', cols: labels.length });
      ops.push({ type: 'gemm', in: 'hidden', weight: classifier.weight, bias: classifier.bias, activation: 'none', out: 'token_logits' });
      outputs.unshift({ name: 'logits', buffer: 'token_logits' });
      break;
    }
    case 'BertForQuestionAnswering': {
      const qa = w.linear('qa_outputs', 'qa_outputs', 2, H);
      buffers.push({ name: 'span_logits', rows: 'tokens', cols: 2 });
      ops.push({ type: 'gemm', in: 'hidden', weight: qa.weight, bias: qa.bias, activation: 'none', out: 'span_logits' });
      outputs.unshift({ name: 'span_logits', buffer: 'span_logits' });
      break;
    }
  }
  // Sentence embeddings from any of these models, pooled where the states
  // are, so that one row per sequence crosses to the host instead of every
  // token's: `mean` (each sequence's mean state) and `cls` (its first).
  buffers.push({ name: 'mean', rows: 'sequences', cols: H });
  ops.push({ type: 'mean_rows', in: 'hidden', out: 'mean' });
  let cls = FIRST_ROWS.prefix;
  if (headRows !== FIRST_ROWS) {
    cls = 'cls';
    buffers.push({ name: cls, rows: 'sequences', cols: H });
    ops.push({ type: 'gather_rows', in: 'hidden', out: cls, select: 'first' });
  }
  outputs.push({ name: 'mean', buffer: 'mean' }, { name: 'cls', buffer: cls });
  w.check();
  const problemType = typeof rawConfig.problem_type === 'string' ? rawConfig.problem_type : null;
  return { family: 'bert', architecture, task: TASKS[architecture], config, labels, problemType, tensors: w.tensors, buffers, ops, outputs };
}

/**
 * The MLM head runs on the selected rows only ([MASK] positions), which the
 * last layer computed alone (SELECTED_ROWS). With tied
 * embeddings (transformers' default) the decoder is the word-embedding table,
 * whatever the checkpoint stores under the decoder's name, as transformers
 * re-ties it on load; the plan references the one tensor twice.
 */
function addMaskedLmHead(w: WeightBinder, rawConfig: Record<string, unknown>, config: ModelConfig, wordEmbeddings: string,
  buffers: BufferDecl[], ops: PlanOp[], outputs: ModelGraph['outputs']): void {
  const H = config.hiddenSize;
  const transform = w.linear('cls.predictions.transform.dense', 'cls.predictions.transform.dense', H, H);
  const norm = w.layerNorm('cls.predictions.transform.LayerNorm', 'cls.predictions.transform.LayerNorm', H);
  const decoder = rawConfig.tie_word_embeddings === false
    ? w.add('cls.predictions.decoder.weight', [['cls.predictions.decoder.weight']], [config.vocabSize, H], 'matrix')
    : wordEmbeddings;
  const bias = w.add('cls.predictions.bias', [['cls.predictions.bias', 'cls.predictions.decoder.bias']], [config.vocabSize], 'vector');
  buffers.push(
    { name: 'sel_t', rows: 'selected', cols: H },
    { name: 'mlm_logits', rows: 'selected', cols: config.vocabSize },
  );
  ops.push(
    { type: 'gemm', in: SELECTED_ROWS.prefix, weight: transform.weight, bias: transform.bias, activation: config.hiddenAct as Activation, out: 'sel_t' },
    { type: 'add_layernorm', in: 'sel_t', ...norm, eps: config.layerNormEps, out: 'sel_t' },
    { type: 'gemm', in: 'sel_t', weight: decoder, bias, activation: 'none', out: 'mlm_logits' },
  );
  outputs.unshift({ name: 'logits', buffer: 'mlm_logits' });
}

/**
 * Class names in id order. transformers sizes the classifier from id2label
 * (num_labels); without id2label the checkpoint's classifier decides and the
 * names are transformers' LABEL_<i>.
 */
function classifierLabels(rawConfig: Record<string, unknown>, weights: WeightLookup, classifierWeight: string): string[] {
  const labels = parseLabels(rawConfig);
  if (labels && labels.length > 0) return labels;
  const count = weights.entry(classifierWeight)?.shape[0] ?? (Number.isSafeInteger(rawConfig.num_labels) ? rawConfig.num_labels as number : 2);
  if (!(count >= 1)) throw configError(`cannot tell the number of labels (num_labels ${JSON.stringify(rawConfig.num_labels)})`);
  return Array.from({ length: count }, (_, i) => `LABEL_${i}`);
}
