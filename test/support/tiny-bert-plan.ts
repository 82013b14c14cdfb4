/**
 * A tiny BERT-like plan with seeded random weights, written through the real
 * plan writer, and a straightforward float64 reference of the same ops. Used
 * by the native engine tests and the plan fuzz test.
 */
import * as zlib from 'zlib';
import { writePlan, type HeaderWithoutLayout, type TensorData } from '../../src/build/plan-file';
import type { Activation, BufferDecl, PlanHeader, PlanOp } from '../../src/build/plan-types';
import { mulberry32 } from './mulberry32';

export interface TinyBertOptions {
  /** Weight precision in the plan. Default: 'fp32'. */
  precision?: 'fp32' | 'fp16';
  /** PRNG seed of the weights. Default: 1. */
  seed?: number;
  /** Encoder layers. Default: 2. */
  layers?: number;
}

export const TINY = { hidden: 16, heads: 2, headDim: 8, intermediate: 32, vocab: 50, typeVocab: 2, maxPositions: 24, maxSeq: 16, eps: 1e-12 };

/** The plan's outputs: all token states, the MLM logits of selected rows, a pooled vector per sequence. */
export const OUTPUTS = ['hidden', 'logits', 'pooled', 'mean'] as const;

export interface TinyBertModel {
  header: HeaderWithoutLayout;
  tensors: TensorData[];
  /** Each weight as the runtime sees it (fp16 plans: after rounding to half). */
  weights: Map<string, Float64Array>;
}

/** IEEE half from a float, round to nearest even (values here stay in the normal range or round to zero). */
export function floatToHalf(value: number): number {
  const f32 = new Float32Array([value]);
  const bits = new Uint32Array(f32.buffer)[0];
  const sign = (bits >>> 16) & 0x8000;
  const exponent = ((bits >>> 23) & 0xff) - 127 + 15;
  let mantissa = bits & 0x7fffff;
  if (exponent <= 0) return sign;
  if (exponent >= 31) return sign | 0x7c00;
  let half = sign | (exponent << 10) | (mantissa >>> 13);
  mantissa &= 0x1fff;
  if (mantissa > 0x1000 || (mantissa === 0x1000 && (half & 1) === 1)) half += 1;
  return half;
}

export function halfToFloat(half: number): number {
  const sign = half & 0x8000 ? -1 : 1;
  const exponent = (half >>> 10) & 0x1f;
  const mantissa = half & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 31) return mantissa ? NaN : sign * Infinity;
  return sign * (1 + mantissa / 1024) * 2 ** (exponent - 15);
}

export function makeTinyBert(options: TinyBertOptions = {}): TinyBertModel {
  const precision = options.precision ?? 'fp32';
  const layers = options.layers ?? 2;
  const random = mulberry32(options.seed ?? 1);
  const { hidden: H, intermediate: I, vocab: V, typeVocab, maxPositions, heads, headDim, eps } = TINY;
  const tensors: TensorData[] = [];
  const weights = new Map<string, Float64Array>();

  const add = (name: string, shape: number[], scale: number, offset = 0) => {
    const count = shape.reduce((a, b) => a * b, 1);
    const values = new Float64Array(count);
    for (let i = 0; i < count; i++) values[i] = offset + (random() * 2 - 1) * scale;
    if (precision === 'fp16') {
      const halves = new Uint16Array(count);
      for (let i = 0; i < count; i++) {
        halves[i] = floatToHalf(values[i]);
        values[i] = halfToFloat(halves[i]);
      }
      tensors.push({ name, dtype: 'f16', shape, data: new Uint8Array(halves.buffer) });
    } else {
      const floats = Float32Array.from(values);
      for (let i = 0; i < count; i++) values[i] = floats[i];
      tensors.push({ name, dtype: 'f32', shape, data: new Uint8Array(floats.buffer) });
    }
    weights.set(name, values);
    return name;
  };

  const buffers: BufferDecl[] = [
    { name: 'hidden', rows: 'tokens', cols: H },
    { name: 'qkv', rows: 'tokens', cols: 3 * H },
    { name: 'context', rows: 'tokens', cols: H },
    { name: 'attention_out', rows: 'tokens', cols: H },
    { name: 'intermediate', rows: 'tokens', cols: I },
    { name: 'ffn_out', rows: 'tokens', cols: H },
    { name: 'selected', rows: 'selected', cols: H },
    { name: 'mlm_logits', rows: 'selected', cols: V },
    { name: 'first', rows: 'sequences', cols: H },
    { name: 'pooled', rows: 'sequences', cols: H },
    { name: 'mean', rows: 'sequences', cols: H },
  ];
  const ops: PlanOp[] = [{
    type: 'embed_layernorm',
    word: add('embeddings.word', [V, H], 0.5),
    position: add('embeddings.position', [maxPositions, H], 0.5),
    tokenType: add('embeddings.token_type', [typeVocab, H], 0.5),
    gamma: add('embeddings.ln.gamma', [H], 0.2, 1),
    beta: add('embeddings.ln.beta', [H], 0.1),
    eps,
    out: 'hidden',
  }];
  for (let l = 0; l < layers; l++) {
    const p = `layer.${l}`;
    ops.push(
      { type: 'gemm', in: 'hidden', weight: add(`${p}.qkv.weight`, [3 * H, H], 0.3), bias: add(`${p}.qkv.bias`, [3 * H], 0.1), activation: 'none', out: 'qkv' },
      { type: 'attention', in: 'qkv', out: 'context', heads, headDim, scale: 1 / Math.sqrt(headDim) },
      // The attention output bias is applied by add_layernorm to exercise its bias path.
      { type: 'gemm', in: 'context', weight: add(`${p}.attn_out.weight`, [H, H], 0.3), activation: 'none', out: 'attention_out' },
      { type: 'add_layernorm', in: 'attention_out', residual: 'hidden', bias: add(`${p}.attn_out.bias`, [H], 0.1),
        gamma: add(`${p}.ln1.gamma`, [H], 0.2, 1), beta: add(`${p}.ln1.beta`, [H], 0.1), eps, out: 'hidden' },
      { type: 'gemm', in: 'hidden', weight: add(`${p}.ffn_in.weight`, [I, H], 0.3), bias: add(`${p}.ffn_in.bias`, [I], 0.1), activation: 'gelu', out: 'intermediate' },
      { type: 'gemm', in: 'intermediate', weight: add(`${p}.ffn_out.weight`, [H, I], 0.2), bias: add(`${p}.ffn_out.bias`, [H], 0.1), activation: 'none', out: 'ffn_out' },
      { type: 'add_layernorm', in: 'ffn_out', residual: 'hidden', gamma: add(`${p}.ln2.gamma`, [H], 0.2, 1), beta: add(`${p}.ln2.beta`, [H], 0.1), eps, out: 'hidden' },
    );
  }
  ops.push(
    { type: 'mean_rows', in: 'hidden', out: 'mean' },
    { type: 'gather_rows', in: 'hidden', out: 'selected', select: 'selected' },
    // The decoder shares the word embedding table, as BERT's MLM head does.
    { type: 'gemm', in: 'selected', weight: 'embeddings.word', bias: add('mlm.bias', [V], 0.1), activation: 'none', out: 'mlm_logits' },
    { type: 'gather_rows', in: 'hidden', out: 'first', select: 'first' },
    { type: 'gemm', in: 'first', weight: add('pooler.weight', [H, H], 0.3), bias: add('pooler.bias', [H], 0.1), activation: 'tanh', out: 'pooled' },
  );
  const tokenizerJson = Buffer.from(JSON.stringify({ model: { type: 'WordPiece', vocab: { '[PAD]': 0 } } }), 'utf8');
  tensors.push({ name: 'tokenizer.json', dtype: 'u8', shape: [tokenizerJson.length], data: new Uint8Array(tokenizerJson) });

  const header: HeaderWithoutLayout = {
    format: 'fusedrt-plan',
    formatVersion: 1,
    builder: { name: 'fusedrt-test', version: '0.0.0' },
    createdAt: '2026-01-01T00:00:00.000Z',
    source: { architecture: 'BertForMaskedLM', sha256: '0'.repeat(64), files: [] },
    family: 'bert',
    task: 'fill-mask',
    precision,
    config: {
      hiddenSize: H, numLayers: layers, numHeads: heads, intermediateSize: I, vocabSize: V,
      maxPositions, typeVocabSize: typeVocab, layerNormEps: eps, hiddenAct: 'gelu', maxSeq: TINY.maxSeq,
    },
    labels: null,
    problemType: null,
    tokenizer: { tensor: 'tokenizer.json', maskToken: '[MASK]', doLowerCase: true },
    buffers,
    ops,
    outputs: [{ name: 'hidden', buffer: 'hidden' }, { name: 'logits', buffer: 'mlm_logits' }, { name: 'pooled', buffer: 'pooled' },
      { name: 'mean', buffer: 'mean' }],
  };
  return { header, tensors, weights };
}

export function writeTinyBertPlan(path: string, model: TinyBertModel): PlanHeader {
  return writePlan(path, model.header, model.tensors);
}

// --- the plan container, for tests that edit headers -----------------------

const PREAMBLE_BYTES = 16;

/** Splits plan bytes into the header text and the data section (no checks: the input is a valid plan). */
export function splitPlan(bytes: Buffer): { headerText: string; data: Buffer } {
  const headerLength = bytes.readUInt32LE(12);
  const dataStart = Math.ceil((PREAMBLE_BYTES + headerLength) / 64) * 64;
  return {
    headerText: bytes.subarray(PREAMBLE_BYTES, PREAMBLE_BYTES + headerLength).toString('utf8'),
    data: bytes.subarray(dataStart, bytes.length - 8),
  };
}

/** Builds plan bytes from raw header bytes and a data section, with a correct CRC. */
export function assemblePlan(header: Buffer, data: Buffer, version = 1): Buffer {
  const dataStart = Math.ceil((PREAMBLE_BYTES + header.length) / 64) * 64;
  const out = Buffer.alloc(dataStart + data.length + 8);
  out.write('FRTPLAN\0', 0, 'latin1');
  out.writeUInt32LE(version, 8);
  out.writeUInt32LE(header.length, 12);
  header.copy(out, PREAMBLE_BYTES);
  data.copy(out, dataStart);
  return withRecomputedCrc(out);
}

/** Rewrites the footer (CRC of everything before it, then FEND). */
export function withRecomputedCrc(bytes: Buffer): Buffer {
  const out = Buffer.from(bytes);
  if (out.length < 8) return out;
  const footerAt = out.length - 8;
  out.writeUInt32LE(zlib.crc32(out.subarray(0, footerAt)) >>> 0, footerAt);
  out.write('FEND', footerAt + 4, 'latin1');
  return out;
}

// --- float64 reference -------------------------------------------------------

export interface ReferenceBatch {
  inputIds: number[];
  tokenTypeIds?: number[];
  cuSeqlens: number[];
  selectedRows: number[];
}

export interface Matrix {
  data: Float64Array;
  rows: number;
  cols: number;
}

function erf(x: number): number {
  // Maclaurin series: accurate to ~1e-12 for |x| <= 4; beyond, erf is ±1 within 2e-8.
  if (Math.abs(x) > 4) return Math.sign(x);
  let term = x;
  let sum = x;
  for (let n = 1; n < 100; n++) {
    term *= (-x * x) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

function activate(x: number, activation: Activation): number {
  switch (activation) {
    case 'none': return x;
    case 'gelu': return 0.5 * x * (1 + erf(x / Math.SQRT2));
    case 'gelu_tanh': return 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
    case 'relu': return Math.max(0, x);
    case 'tanh': return Math.tanh(x);
  }
}

function layerNormRow(x: Float64Array, gamma: Float64Array, beta: Float64Array, eps: number): Float64Array {
  const n = x.length;
  const mean = x.reduce((a, b) => a + b, 0) / n;
  const variance = x.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  const inv = 1 / Math.sqrt(variance + eps);
  return x.map((v, i) => (v - mean) * inv * gamma[i] + beta[i]);
}

/** Runs the plan's op list in float64, exactly as docs/plan-format.md describes the ops. */
export function referenceRun(model: TinyBertModel, batch: ReferenceBatch): Record<string, Matrix> {
  const { header, weights } = model;
  const w = (name: string) => weights.get(name)!;
  const T = batch.inputIds.length;
  const B = batch.cuSeqlens.length - 1;
  const R = batch.selectedRows.length;
  const cols = new Map(header.buffers.map((b) => [b.name, b.cols]));
  const rowsOf = new Map(header.buffers.map((b) => [b.name, b.rows === 'tokens' ? T : b.rows === 'sequences' ? B : R]));
  const buffers = new Map<string, Float64Array>();
  const get = (name: string) => buffers.get(name)!;

  for (const op of header.ops) {
    const outCols = cols.get(op.out)!;
    const outRows = rowsOf.get(op.out)!;
    const out = new Float64Array(outRows * outCols);
    if (op.type === 'embed_layernorm') {
      for (let b = 0; b < B; b++) {
        for (let t = batch.cuSeqlens[b]; t < batch.cuSeqlens[b + 1]; t++) {
          const type = batch.tokenTypeIds?.[t] ?? 0;
          const x = new Float64Array(outCols);
          for (let c = 0; c < outCols; c++) {
            x[c] = w(op.word)[batch.inputIds[t] * outCols + c] + w(op.position)[(t - batch.cuSeqlens[b]) * outCols + c] +
              w(op.tokenType)[type * outCols + c];
          }
          out.set(layerNormRow(x, w(op.gamma), w(op.beta), op.eps), t * outCols);
        }
      }
    } else if (op.type === 'gemm') {
      const input = get(op.in);
      const K = cols.get(op.in)!;
      const weight = w(op.weight);
      for (let r = 0; r < outRows; r++) {
        for (let n = 0; n < outCols; n++) {
          let sum = op.bias ? w(op.bias)[n] : 0;
          for (let k = 0; k < K; k++) sum += input[r * K + k] * weight[n * K + k];
          out[r * outCols + n] = activate(sum, op.activation);
        }
      }
    } else if (op.type === 'attention') {
      const qkv = get(op.in);
      const width = 3 * op.heads * op.headDim;
      for (let b = 0; b < B; b++) {
        const begin = batch.cuSeqlens[b];
        const end = batch.cuSeqlens[b + 1];
        for (let h = 0; h < op.heads; h++) {
          const qAt = h * op.headDim;
          const kAt = op.heads * op.headDim + qAt;
          const vAt = 2 * op.heads * op.headDim + qAt;
          for (let i = begin; i < end; i++) {
            const scores: number[] = [];
            for (let j = begin; j < end; j++) {
              let dot = 0;
              for (let d = 0; d < op.headDim; d++) dot += qkv[i * width + qAt + d] * qkv[j * width + kAt + d];
              scores.push(op.scale * dot);
            }
            const max = Math.max(...scores);
            const exps = scores.map((s) => Math.exp(s - max));
            const total = exps.reduce((a, v) => a + v, 0);
            for (let d = 0; d < op.headDim; d++) {
              let acc = 0;
              for (let j = begin; j < end; j++) acc += (exps[j - begin] / total) * qkv[j * width + vAt + d];
              out[i * outCols + qAt + d] = acc;
            }
          }
        }
      }
    } else if (op.type === 'add_layernorm') {
      const input = get(op.in);
      const residual = op.residual ? get(op.residual) : undefined;
      for (let r = 0; r < outRows; r++) {
        const x = new Float64Array(outCols);
        for (let c = 0; c < outCols; c++) {
          x[c] = input[r * outCols + c] + (op.bias ? w(op.bias)[c] : 0) + (residual ? residual[r * outCols + c] : 0);
        }
        out.set(layerNormRow(x, w(op.gamma), w(op.beta), op.eps), r * outCols);
      }
    } else if (op.type === 'mean_rows') {
      const input = get(op.in);
      for (let b = 0; b < B; b++) {
        const begin = batch.cuSeqlens[b];
        const end = batch.cuSeqlens[b + 1];
        for (let c = 0; c < outCols; c++) {
          let sum = 0;
          for (let t = begin; t < end; t++) sum += input[t * outCols + c];
          out[b * outCols + c] = end > begin ? sum / (end - begin) : 0;
        }
      }
    } else {
      const input = get(op.in);
      const rows = op.select === 'first' ? batch.cuSeqlens.slice(0, B) : batch.selectedRows;
      rows.forEach((row, i) => out.set(input.subarray(row * outCols, (row + 1) * outCols), i * outCols));
    }
    buffers.set(op.out, out);
  }
  const result: Record<string, Matrix> = {};
  for (const output of header.outputs) {
    result[output.name] = { data: get(output.buffer), rows: rowsOf.get(output.buffer)!, cols: cols.get(output.buffer)! };
  }
  return result;
}
