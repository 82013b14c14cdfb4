/**
 * `fusedrt build`: a Hugging Face model directory (config.json, safetensors
 * weights, tokenizer) → one plan file. The model family (src/models/) decides
 * the op graph and which checkpoint tensors feed which plan tensors; this
 * module reads, converts and writes them.
 */
import * as fs from 'fs';
import * as path from 'path';
import { FusedRTError } from '../errors';
import { buildModelGraph, type TensorSpec } from '../models';
import { e4m3Scale, float32ToE4M3 } from './e4m3';
import { writePlan, type HeaderWithoutLayout, type TensorData } from './plan-file';
import type { PlanHeader, Precision } from './plan-types';
import { float32ToHalf, SafetensorsCheckpoint } from './safetensors';
import { hashSourceFiles } from './source-hash';
import { loadTokenizerSource } from './tokenizer-source';

export interface BuildOptions {
  /**
   * Weight precision: fp16 stores matrices and embedding tables as half floats (biases and LayerNorm stay f32);
   * tf32 stores fp32 weights and marks the plan for TF32 GEMMs on CUDA; fp8 is fp16 except that the encoder's
   * GEMMs (QKV, attention output, feed-forward) take FP8 (E4M3) weights, each with its own scale, and E4M3 inputs.
   * Default: 'fp32'.
   */
  precision?: Precision;
  /** Longest sequence (tokens) the plan accepts; capped at the model's max_position_embeddings. Default: max_position_embeddings. */
  maxSeq?: number;
  /** Called as the build advances; `fraction` runs from 0 to 1. Default: none. */
  onProgress?: (message: string, fraction: number) => void;
}

/** Share of the progress bar per phase, roughly by the bytes each one touches. */
const PHASES = { hash: [0, 0.3], read: [0.3, 0.7], write: [0.7, 1] } as const;

export function builderVersion(): string {
  // Walk up from the compiled file: the package root is two or three levels up depending on dist/ vs src/.
  for (let dir = __dirname; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const file = path.join(dir, 'package.json');
    if (fs.existsSync(file)) {
      const pkg = JSON.parse(fs.readFileSync(file, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === '@fusedrt/node-red-fusedrt' && pkg.version) return pkg.version;
    }
  }
  return '0.0.0';
}

function readConfig(dir: string): Record<string, unknown> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new FusedRTError('E_MODEL', `${dir} is not a directory`);
  const file = path.join(dir, 'config.json');
  if (!fs.existsSync(file)) throw new FusedRTError('E_MODEL', `${dir} has no config.json (expected a Hugging Face model directory)`);
  let config: unknown;
  try {
    config = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new FusedRTError('E_MODEL', `config.json is not valid JSON (${(e as Error).message})`);
  }
  if (typeof config !== 'object' || config === null || Array.isArray(config)) throw new FusedRTError('E_MODEL', 'config.json is not a JSON object');
  return config as Record<string, unknown>;
}

function resolveOptions(options: BuildOptions): { precision: Precision; maxSeq?: number } {
  const precision = options.precision ?? 'fp32';
  if (precision !== 'fp32' && precision !== 'fp16' && precision !== 'tf32' && precision !== 'fp8') {
    throw new FusedRTError('E_INPUT', `precision must be fp32, fp16, tf32 or fp8, got ${JSON.stringify(precision)}`);
  }
  const maxSeq = options.maxSeq;
  if (maxSeq !== undefined && (!Number.isInteger(maxSeq) || maxSeq < 2)) {
    throw new FusedRTError('E_INPUT', `maxSeq must be an integer of at least 2 ([CLS] and [SEP]), got ${maxSeq}`);
  }
  return { precision, maxSeq };
}

/** Reads a plan tensor's sources, concatenates them and stores it in the plan's precision. */
function convertTensor(checkpoint: SafetensorsCheckpoint, spec: TensorSpec, precision: Precision): TensorData {
  const parts = spec.sources.map((name) => checkpoint.readFloat32(name));
  let values = parts[0];
  if (parts.length > 1) {
    values = new Float32Array(parts.reduce((n, part) => n + part.length, 0));
    let at = 0;
    for (const part of parts) {
      values.set(part, at);
      at += part.length;
    }
  }
  if (spec.kind === 'e4m3') {
    const scale = e4m3Scale(values);
    return { name: spec.name, dtype: 'f8e4m3', shape: spec.shape, data: float32ToE4M3(values, scale), scale };
  }
  const half = (precision === 'fp16' || precision === 'fp8') && spec.kind === 'matrix';
  const data = half ? float32ToHalf(values) : values;
  return { name: spec.name, dtype: half ? 'f16' : 'f32', shape: spec.shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/**
 * Builds a plan from a Hugging Face BERT directory and writes it to
 * `outPath` (through a temporary file, so a failed build leaves no partial
 * plan behind). Returns the header as written.
 */
export async function buildPlan(hfDir: string, outPath: string, options: BuildOptions = {}): Promise<PlanHeader> {
  const { precision, maxSeq } = resolveOptions(options);
  const report = (message: string, phase: readonly [number, number], within: number) =>
    options.onProgress?.(message, phase[0] + (phase[1] - phase[0]) * Math.min(1, within));

  const rawConfig = readConfig(hfDir);
  const checkpoint = SafetensorsCheckpoint.openDirectory(hfDir);
  const graph = buildModelGraph(rawConfig, checkpoint, { fp8: precision === 'fp8' });
  const tokenizer = loadTokenizerSource(hfDir);
  if (tokenizer.idCount > graph.config.vocabSize) {
    throw new FusedRTError('E_MODEL', `the tokenizer (${tokenizer.file}) has ids up to ${tokenizer.idCount - 1}, beyond the model's vocab_size ${graph.config.vocabSize}`);
  }
  if (graph.task === 'fill-mask' && !tokenizer.hasMaskToken) {
    throw new FusedRTError('E_MODEL', `the tokenizer (${tokenizer.file}) has no mask token "${tokenizer.maskToken}", which fill-mask needs`);
  }

  const sourceFiles = ['config.json', ...(checkpoint.indexFile ? [checkpoint.indexFile] : []), ...checkpoint.files].map((f) => path.basename(f));
  const totalSourceBytes = sourceFiles.reduce((n, f) => n + fs.statSync(path.join(hfDir, f)).size, 0);
  report('hashing source files', PHASES.hash, 0);
  const sha256 = await hashSourceFiles(hfDir, sourceFiles, (done) => report('hashing source files', PHASES.hash, done / totalSourceBytes));

  const tensors: TensorData[] = [];
  const sourceBytes = (spec: TensorSpec) => spec.sources.reduce((n, s) => n + checkpoint.entry(s)!.byteLength, 0);
  const totalReadBytes = graph.tensors.reduce((n, spec) => n + sourceBytes(spec), 0);
  let readBytes = 0;
  for (const spec of graph.tensors) {
    report('reading and converting tensors', PHASES.read, readBytes / totalReadBytes);
    tensors.push(convertTensor(checkpoint, spec, precision));
    readBytes += sourceBytes(spec);
  }
  tensors.push({ name: 'tokenizer.json', dtype: 'u8', shape: [tokenizer.bytes.byteLength], data: tokenizer.bytes });

  const header: HeaderWithoutLayout = {
    format: 'fusedrt-plan',
    formatVersion: 1,
    builder: { name: 'fusedrt', version: builderVersion() },
    createdAt: new Date().toISOString(),
    source: { architecture: graph.architecture, sha256, files: sourceFiles },
    family: graph.family,
    task: graph.task,
    precision,
    config: { ...graph.config, maxSeq: Math.min(graph.config.maxPositions, maxSeq ?? graph.config.maxPositions) },
    labels: graph.labels,
    problemType: graph.problemType,
    tokenizer: { tensor: 'tokenizer.json', maskToken: tokenizer.maskToken, doLowerCase: tokenizer.doLowerCase },
    buffers: graph.buffers,
    ops: graph.ops,
    outputs: graph.outputs,
  };

  const partial = `${outPath}.partial`;
  try {
    const written = writePlan(partial, header, tensors, (index, total) => report('writing plan', PHASES.write, index / total));
    fs.renameSync(partial, outPath);
    report('done', PHASES.write, 1);
    return written;
  } catch (e) {
    fs.rmSync(partial, { force: true });
    if (e instanceof FusedRTError) throw e;
    throw new FusedRTError('E_BUILD', `cannot write ${outPath} (${(e as Error).message})`);
  }
}
