/**
 * Tiny Hugging Face BERT directories for the builder and CLI tests, with the
 * checkpoint variations real uploads show: `bert.` prefix or not, legacy
 * gamma/beta LayerNorm names, F32/F16/BF16, sharded checkpoints, tied or
 * stored MLM decoders, tokenizer.json or only vocab.txt.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { float32ToHalf, writeSafetensors, type SafetensorsTensor } from '../../src/build/safetensors';
import { mulberry32 } from './mulberry32';

export const SHARED_TOKENIZER_DIR = path.resolve(__dirname, '../../../../shared/data/bert-base-uncased');
/** bert-base-uncased's vocabulary size: the shared tokenizer's ids must fit the embedding table. */
export const SHARED_VOCAB_SIZE = 30522;

export interface TinyBertOptions {
  architecture: string;
  hidden?: number;
  layers?: number;
  heads?: number;
  intermediate?: number;
  vocabSize?: number;
  maxPositions?: number;
  labels?: string[];
  /** Whether encoder tensors carry `bert.`; default: as transformers saves (not for BertModel). */
  prefixed?: boolean;
  legacyLayerNormNames?: boolean;
  dtype?: 'F32' | 'F16' | 'BF16';
  /** Split the checkpoint over this many shards with a model.safetensors.index.json. */
  shards?: number;
  /** Store cls.predictions.decoder.weight (as a separate random matrix). */
  storeDecoder?: boolean;
  /** Also write a BertModel pooler. Default: true. */
  pooler?: boolean;
  tokenizer?: 'json' | 'vocab' | 'none';
  /** Merged into config.json last (undefined values delete keys). */
  config?: Record<string, unknown>;
  /** Checkpoint tensors to leave out. */
  omit?: string[];
  seed?: number;
}

/** The values the checkpoint holds after storage rounding, by checkpoint name. */
export type TinyBertWeights = Map<string, { shape: number[]; values: Float32Array }>;

function bfloat16Bits(values: Float32Array): Uint16Array {
  const words = new Uint32Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
  // Round to nearest even on the dropped 16 bits (test values are finite).
  return Uint16Array.from(words, (w) => (w + 0x7fff + ((w >>> 16) & 1)) >>> 16);
}

function stored(values: Float32Array, dtype: 'F32' | 'F16' | 'BF16'): { data: Float32Array | Uint16Array; values: Float32Array } {
  if (dtype === 'F32') return { data: values, values };
  const bits = dtype === 'F16' ? float32ToHalf(values) : bfloat16Bits(values);
  const back = dtype === 'F16'
    ? Float32Array.from(bits, (h) => {
      const e = (h >> 10) & 0x1f;
      const m = h & 0x3ff;
      const s = h & 0x8000 ? -1 : 1;
      return e === 0 ? s * m * 2 ** -24 : s * (1024 + m) * 2 ** (e - 25);
    })
    : new Float32Array(Uint32Array.from(bits, (b) => b << 16).buffer);
  return { data: bits, values: back };
}

function checkpointNames(o: Required<Pick<TinyBertOptions, 'architecture' | 'hidden' | 'layers' | 'intermediate' | 'vocabSize' | 'maxPositions'>> & TinyBertOptions): Array<[string, number[]]> {
  const H = o.hidden;
  const p = (o.prefixed ?? o.architecture !== 'BertModel') ? 'bert.' : '';
  const [w, b] = o.legacyLayerNormNames ? ['gamma', 'beta'] : ['weight', 'bias'];
  const names: Array<[string, number[]]> = [
    [`${p}embeddings.word_embeddings.weight`, [o.vocabSize, H]],
    [`${p}embeddings.position_embeddings.weight`, [o.maxPositions, H]],
    [`${p}embeddings.token_type_embeddings.weight`, [2, H]],
    [`${p}embeddings.LayerNorm.${w}`, [H]],
    [`${p}embeddings.LayerNorm.${b}`, [H]],
  ];
  for (let i = 0; i < o.layers; i++) {
    const l = `${p}encoder.layer.${i}`;
    for (const m of ['query', 'key', 'value']) names.push([`${l}.attention.self.${m}.weight`, [H, H]], [`${l}.attention.self.${m}.bias`, [H]]);
    names.push(
      [`${l}.attention.output.dense.weight`, [H, H]], [`${l}.attention.output.dense.bias`, [H]],
      [`${l}.attention.output.LayerNorm.${w}`, [H]], [`${l}.attention.output.LayerNorm.${b}`, [H]],
      [`${l}.intermediate.dense.weight`, [o.intermediate, H]], [`${l}.intermediate.dense.bias`, [o.intermediate]],
      [`${l}.output.dense.weight`, [H, o.intermediate]], [`${l}.output.dense.bias`, [H]],
      [`${l}.output.LayerNorm.${w}`, [H]], [`${l}.output.LayerNorm.${b}`, [H]],
    );
  }
  const labels = o.labels?.length ?? 2;
  switch (o.architecture) {
    case 'BertModel':
      if (o.pooler !== false) names.push([`${p}pooler.dense.weight`, [H, H]], [`${p}pooler.dense.bias`, [H]]);
      break;
    case 'BertForMaskedLM':
      names.push(
        ['cls.predictions.transform.dense.weight', [H, H]], ['cls.predictions.transform.dense.bias', [H]],
        [`cls.predictions.transform.LayerNorm.${w}`, [H]], [`cls.predictions.transform.LayerNorm.${b}`, [H]],
        ['cls.predictions.bias', [o.vocabSize]],
      );
      if (o.storeDecoder) names.push(['cls.predictions.decoder.weight', [o.vocabSize, H]]);
      break;
    case 'BertForSequenceClassification':
      names.push([`${p}pooler.dense.weight`, [H, H]], [`${p}pooler.dense.bias`, [H]], ['classifier.weight', [labels, H]], ['classifier.bias', [labels]]);
      break;
    case 'BertForTokenClassification':
      names.push(['classifier.weight', [labels, H]], ['classifier.bias', [labels]]);
      break;
    case 'BertForQuestionAnswering':
      names.push(['qa_outputs.weight', [2, H]], ['qa_outputs.bias', [2]]);
      break;
  }
  return names;
}

/** Writes config.json, the checkpoint and the tokenizer into `dir`; returns the stored weights. */
export function writeTinyBert(dir: string, options: TinyBertOptions): TinyBertWeights {
  const o = {
    hidden: 16, layers: 2, heads: 2, intermediate: 32, vocabSize: SHARED_VOCAB_SIZE, maxPositions: 64, ...options,
  };
  fs.mkdirSync(dir, { recursive: true });
  const config: Record<string, unknown> = {
    architectures: [o.architecture], model_type: 'bert', hidden_size: o.hidden, num_hidden_layers: o.layers,
    num_attention_heads: o.heads, intermediate_size: o.intermediate, vocab_size: o.vocabSize,
    max_position_embeddings: o.maxPositions, type_vocab_size: 2, layer_norm_eps: 1e-12, hidden_act: 'gelu',
    position_embedding_type: 'absolute',
  };
  if (o.labels) config.id2label = Object.fromEntries(o.labels.map((l, i) => [String(i), l]));
  for (const [k, v] of Object.entries(o.config ?? {})) {
    if (v === undefined) delete config[k];
    else config[k] = v;
  }
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config, null, 2));

  const next = mulberry32(o.seed ?? 1);
  const weights: TinyBertWeights = new Map();
  const tensors: SafetensorsTensor[] = [];
  for (const [name, shape] of checkpointNames(o)) {
    if (o.omit?.includes(name)) continue;
    const values = Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => (next() - 0.5) * 0.2);
    const s = stored(values, o.dtype ?? 'F32');
    weights.set(name, { shape, values: s.values });
    tensors.push({ name, dtype: o.dtype ?? 'F32', shape, data: s.data });
  }
  const shards = o.shards ?? 1;
  if (shards === 1) {
    writeSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' });
  } else {
    const weightMap: Record<string, string> = {};
    for (let s = 0; s < shards; s++) {
      const file = `model-${String(s + 1).padStart(5, '0')}-of-${String(shards).padStart(5, '0')}.safetensors`;
      const part = tensors.filter((_, i) => i % shards === s);
      for (const t of part) weightMap[t.name] = file;
      writeSafetensors(path.join(dir, file), part, { format: 'pt' });
    }
    fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  }
  const tokenizer = o.tokenizer ?? 'json';
  if (tokenizer !== 'none') {
    const file = tokenizer === 'json' ? 'tokenizer.json' : 'vocab.txt';
    fs.copyFileSync(path.join(SHARED_TOKENIZER_DIR, file), path.join(dir, file));
  }
  return weights;
}

export function makeTempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `fusedrt-${prefix}-`));
}
