/**
 * Hugging Face BERT directories with seeded random weights: test models for
 * every head and the benchmark model (the bundled demo models are trained
 * instead: tools/train/). Weights come from src/tools/prng.ts, so
 * bench/make_bench_onnx.py rebuilds the same model bit for bit in numpy.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { float32ToHalf, writeSafetensors } from '../build/safetensors';
import type { BertArchitecture } from '../models/bert';
import { tokenizerJsonFromVocab } from '../tokenize/vocab';
import { uniformFloat32 } from './prng';

// The architectures the builder supports are the ones worth generating.
export { BERT_ARCHITECTURES, type BertArchitecture } from '../models/bert';

export interface RandomBertOptions {
  /** Which HF class the directory loads as (config.architectures[0]). */
  architecture: BertArchitecture;
  hiddenSize: number;
  numLayers: number;
  /** Attention heads; must divide hiddenSize. */
  numHeads: number;
  intermediateSize: number;
  /** max_position_embeddings. */
  maxPositions: number;
  /** Tokens in id order (vocab.txt lines); its length is vocab_size. Must contain [PAD] at id 0. */
  vocab: string[];
  /** Selects the weights: same options and seed, same bytes. */
  seed: number;
  /** id2label of the classifier heads. Default: ['LABEL_0', 'LABEL_1'] (ignored by other heads). */
  labels?: string[];
  /** Whether the tokenizer lower-cases text. Default: true. */
  doLowerCase?: boolean;
  /** Storage type of every tensor in model.safetensors (F16 rounds the generated values). Default: 'F32'. */
  dtype?: 'F32' | 'F16';
}

/** One weight tensor in HF naming, row-major float32. */
export interface NamedTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** Classifier heads: the ones that carry id2label. */
function hasLabels(architecture: BertArchitecture): boolean {
  return architecture === 'BertForSequenceClassification' || architecture === 'BertForTokenClassification';
}

function labelsOf(options: RandomBertOptions): string[] {
  return options.labels ?? ['LABEL_0', 'LABEL_1'];
}

/** HF creates a pooler for BertModel and the sequence classifier only. */
function hasPooler(architecture: BertArchitecture): boolean {
  return architecture === 'BertModel' || architecture === 'BertForSequenceClassification';
}

function validate(options: RandomBertOptions): void {
  const dims: Array<[string, number]> = [
    ['hiddenSize', options.hiddenSize], ['numLayers', options.numLayers], ['numHeads', options.numHeads],
    ['intermediateSize', options.intermediateSize], ['maxPositions', options.maxPositions],
  ];
  for (const [name, value] of dims) {
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be a positive integer, got ${value}`);
  }
  if (options.hiddenSize % options.numHeads !== 0) {
    throw new RangeError(`numHeads (${options.numHeads}) must divide hiddenSize (${options.hiddenSize})`);
  }
  if (options.vocab.length < 1 || options.vocab[0] !== '[PAD]') throw new RangeError('vocab[0] must be [PAD] (pad_token_id 0)');
  if (new Set(options.vocab).size !== options.vocab.length) throw new RangeError('vocab has duplicate tokens');
  if (!Number.isInteger(options.seed) || options.seed < 0 || options.seed > 0xffffffff) {
    throw new RangeError(`seed must be an unsigned 32-bit integer, got ${options.seed}`);
  }
  if (hasLabels(options.architecture) && labelsOf(options).length < 1) throw new RangeError('labels must not be empty');
}

/** Names and shapes of every weight, in HF naming, in the order HF declares them. */
export function bertTensorShapes(options: RandomBertOptions): Array<{ name: string; shape: number[] }> {
  const h = options.hiddenSize;
  const inter = options.intermediateSize;
  const prefix = options.architecture === 'BertModel' ? '' : 'bert.';
  const shapes: Array<{ name: string; shape: number[] }> = [];
  const add = (name: string, shape: number[]): void => { shapes.push({ name, shape }); };
  const linear = (name: string, outFeatures: number, inFeatures: number): void => {
    add(`${name}.weight`, [outFeatures, inFeatures]);
    add(`${name}.bias`, [outFeatures]);
  };
  const layerNorm = (name: string): void => {
    add(`${name}.weight`, [h]);
    add(`${name}.bias`, [h]);
  };

  add(`${prefix}embeddings.word_embeddings.weight`, [options.vocab.length, h]);
  add(`${prefix}embeddings.position_embeddings.weight`, [options.maxPositions, h]);
  add(`${prefix}embeddings.token_type_embeddings.weight`, [2, h]);
  layerNorm(`${prefix}embeddings.LayerNorm`);
  for (let layer = 0; layer < options.numLayers; layer++) {
    const at = `${prefix}encoder.layer.${layer}`;
    linear(`${at}.attention.self.query`, h, h);
    linear(`${at}.attention.self.key`, h, h);
    linear(`${at}.attention.self.value`, h, h);
    linear(`${at}.attention.output.dense`, h, h);
    layerNorm(`${at}.attention.output.LayerNorm`);
    linear(`${at}.intermediate.dense`, inter, h);
    linear(`${at}.output.dense`, h, inter);
    layerNorm(`${at}.output.LayerNorm`);
  }
  if (hasPooler(options.architecture)) linear(`${prefix}pooler.dense`, h, h);

  switch (options.architecture) {
    case 'BertForMaskedLM':
      // The decoder weight is tied to the word embeddings, so HF does not store it.
      linear('cls.predictions.transform.dense', h, h);
      layerNorm('cls.predictions.transform.LayerNorm');
      add('cls.predictions.bias', [options.vocab.length]);
      break;
    case 'BertForSequenceClassification':
    case 'BertForTokenClassification':
      linear('classifier', labelsOf(options).length, h);
      break;
    case 'BertForQuestionAnswering':
      linear('qa_outputs', 2, h);
      break;
    case 'BertModel':
      break;
  }
  return shapes;
}

/**
 * Centre and half-width of a tensor's uniform distribution, from its name.
 * LayerNorm gains sit near 1 and every bias is non-zero, so a kernel that
 * drops a gain, a bias or a beta produces visibly wrong numbers.
 */
export function initOf(name: string): { center: number; amplitude: number } {
  if (name.endsWith('LayerNorm.weight')) return { center: 1, amplitude: 0.1 };
  if (name.endsWith('LayerNorm.bias')) return { center: 0, amplitude: 0.05 };
  if (name.endsWith('bias')) return { center: 0, amplitude: 0.02 };
  return { center: 0, amplitude: 0.05 };
}

/** Every weight of the model, generated from the seed. */
export function randomBertTensors(options: RandomBertOptions): NamedTensor[] {
  validate(options);
  return bertTensorShapes(options).map(({ name, shape }) => {
    const { center, amplitude } = initOf(name);
    const count = shape.reduce((a, b) => a * b, 1);
    return { name, shape, data: uniformFloat32(name, options.seed, count, center, amplitude) };
  });
}

/** The HF config.json object of the model. */
export function bertConfigJson(options: RandomBertOptions): Record<string, unknown> {
  const config: Record<string, unknown> = {
    architectures: [options.architecture],
    model_type: 'bert',
    attention_probs_dropout_prob: 0.1,
    hidden_act: 'gelu',
    hidden_dropout_prob: 0.1,
    hidden_size: options.hiddenSize,
    initializer_range: 0.02,
    intermediate_size: options.intermediateSize,
    layer_norm_eps: 1e-12,
    max_position_embeddings: options.maxPositions,
    num_attention_heads: options.numHeads,
    num_hidden_layers: options.numLayers,
    pad_token_id: 0,
    position_embedding_type: 'absolute',
    type_vocab_size: 2,
    vocab_size: options.vocab.length,
  };
  if (hasLabels(options.architecture)) {
    const labels = labelsOf(options);
    config.id2label = Object.fromEntries(labels.map((label, id) => [String(id), label]));
    config.label2id = Object.fromEntries(labels.map((label, id) => [label, id]));
  }
  return config;
}

/**
 * Proof that two machines hold the same weights: sha256 over every tensor in
 * name order (UTF-8 name, '\n', shape joined by ',', '\n', float32
 * little-endian bytes), and the float64 sum of all elements for a readable
 * sanity number. bench/make_bench_onnx.py computes the same.
 */
export function weightChecksum(tensors: Array<{ name: string; shape: number[]; data: Float32Array }>): {
  sha256: string; sum: number;
} {
  const hash = createHash('sha256');
  let sum = 0;
  const sorted = [...tensors].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const tensor of sorted) {
    hash.update(`${tensor.name}\n${tensor.shape.join(',')}\n`, 'utf8');
    // Float32Array bytes are little-endian on every platform Node supports.
    hash.update(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength));
    for (const value of tensor.data) sum += value;
  }
  return { sha256: hash.digest('hex'), sum };
}

/**
 * Writes config.json, model.safetensors, vocab.txt, tokenizer.json and
 * tokenizer_config.json of a BERT with seeded random weights into `dir`
 * (created when missing).
 */
export function writeRandomBertModel(dir: string, options: RandomBertOptions): void {
  const tensors = randomBertTensors(options);
  const doLowerCase = options.doLowerCase ?? true;
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'config.json'), `${JSON.stringify(bertConfigJson(options), null, 2)}\n`);
  const dtype = options.dtype ?? 'F32';
  writeSafetensors(
    path.join(dir, 'model.safetensors'),
    tensors.map(({ name, shape, data }) => ({ name, dtype, shape, data: dtype === 'F16' ? float32ToHalf(data) : data })),
    { format: 'pt', generator: `fusedrt random-model seed=${options.seed}` },
  );
  const vocabText = `${options.vocab.join('\n')}\n`;
  fs.writeFileSync(path.join(dir, 'vocab.txt'), vocabText);
  const tokenizerJson = tokenizerJsonFromVocab(vocabText, { doLowerCase });
  fs.writeFileSync(path.join(dir, 'tokenizer.json'), `${JSON.stringify(tokenizerJson, null, 2)}\n`);
  const tokenizerConfig = {
    tokenizer_class: 'BertTokenizer',
    do_lower_case: doLowerCase,
    model_max_length: options.maxPositions,
  };
  fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), `${JSON.stringify(tokenizerConfig, null, 2)}\n`);
}
