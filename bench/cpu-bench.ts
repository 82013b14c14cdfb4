/**
 * CPU benchmark: FusedRT against onnxruntime-node on the same BERT (MiniLM-L6-H384
 * shape, random weights), the same inputs and the same thread count.
 * bench/README.md explains how the ONNX twin of the model is made.
 *
 *   npm run bench:cpu -- [--threads N] [--runs N]
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { buildPlan } from '../src/build/builder';
import { SafetensorsCheckpoint } from '../src/build/safetensors';
import { Engine } from '../src/engine/engine';
import type { PackedBatch } from '../src/engine/types';
import { randomModelVocabulary } from '../src/tools/demo-words';
import { randomUint32, streamSeed } from '../src/tools/prng';
import { RandomBertOptions, weightChecksum, writeRandomBertModel } from '../src/tools/random-model';

const VOCAB_SIZE = 8192;

/** Mirrored by BENCH in bench/make_bench_onnx.py: change both or neither. */
export const BENCH_MODEL: RandomBertOptions = {
  architecture: 'BertModel',
  hiddenSize: 384,
  numLayers: 6,
  numHeads: 12,
  intermediateSize: 1536,
  maxPositions: 512,
  vocab: benchVocabulary(),
  seed: 1234,
};

const SEQ_LEN = 128;
const BATCH_SIZES = [1, 8];
const WARMUP_RUNS = 5;
/** FusedRT and onnxruntime must agree this closely on fp32 (float summation order differs). */
const AGREEMENT_TOLERANCE = 1e-4;

const REPO_ROOT = path.resolve(__dirname, '..', '..');
const MODELS_DIR = path.join(REPO_ROOT, 'bench', 'models');
const HF_DIR = path.join(MODELS_DIR, 'bench-minilm');
const PLAN_PATH = path.join(MODELS_DIR, 'bench-minilm.plan');
const ONNX_PREFIX = path.join(MODELS_DIR, 'bench-minilm.onnx');
const WEIGHTS_INFO = path.join(MODELS_DIR, 'bench-minilm.weights.json');
const DEVICE_COMMAND = 'python3 bench/make_bench_onnx.py --out "$OUT"';

/** The demo vocabulary padded with [unusedN] tokens: the ids are random anyway, only the size matters. */
function benchVocabulary(): string[] {
  const vocab = randomModelVocabulary();
  for (let i = 0; vocab.length < VOCAB_SIZE; i++) vocab.push(`[unused${i}]`);
  return vocab;
}

function parseArgs(argv: string[]): { threads: number; runs: number } {
  const options = { threads: os.availableParallelism(), runs: 30 };
  for (let i = 0; i < argv.length; i += 2) {
    const value = Number(argv[i + 1]);
    if (!Number.isInteger(value) || value < 1) throw new Error(`${argv[i]} needs a positive integer, got ${argv[i + 1]}`);
    if (argv[i] === '--threads') options.threads = value;
    else if (argv[i] === '--runs') options.runs = Math.max(20, value);
    else throw new Error(`unknown option ${argv[i]} (use --threads N, --runs N)`);
  }
  return options;
}

function ensureHfModel(): void {
  if (fs.existsSync(path.join(HF_DIR, 'model.safetensors'))) return;
  console.log(`generating the bench model into ${HF_DIR}`);
  writeRandomBertModel(HF_DIR, BENCH_MODEL);
}

/** Proves the local safetensors holds the weights the ONNX export was made from. */
function checkWeights(): void {
  const checkpoint = SafetensorsCheckpoint.openDirectory(HF_DIR);
  const local = weightChecksum(checkpoint.names().map((name) => ({
    name, shape: checkpoint.entry(name)!.shape, data: checkpoint.readFloat32(name),
  })));
  const remote = (JSON.parse(fs.readFileSync(WEIGHTS_INFO, 'utf8')) as { weights: { sha256: string; sum: number } }).weights;
  console.log(`weights: local sha256 ${local.sha256} sum ${local.sum.toFixed(6)}`);
  console.log(`         onnx  sha256 ${remote.sha256} sum ${remote.sum.toFixed(6)}`);
  if (local.sha256 !== remote.sha256) {
    throw new Error(`the ONNX model was made from other weights than ${HF_DIR}; regenerate both (bench/README.md)`);
  }
}

/** Rejoins bench-minilm.onnx.part0..N and checks them against the .sha256 the export wrote. */
function loadOnnxBytes(): Uint8Array {
  const parts: Buffer[] = [];
  for (let i = 0; fs.existsSync(`${ONNX_PREFIX}.part${i}`); i++) parts.push(fs.readFileSync(`${ONNX_PREFIX}.part${i}`));
  if (parts.length === 0 || !fs.existsSync(`${ONNX_PREFIX}.sha256`) || !fs.existsSync(WEIGHTS_INFO)) {
    throw new Error(`the ONNX parts are missing in ${MODELS_DIR}. Make them on the GPU machine with\n  ${DEVICE_COMMAND}\n`
      + 'and copy bench-minilm.onnx.part*, bench-minilm.onnx.sha256 and bench-minilm.weights.json into bench/models/.');
  }
  const bytes = Buffer.concat(parts);
  const expected = fs.readFileSync(`${ONNX_PREFIX}.sha256`, 'utf8').split(/\s+/)[0];
  const actual = createHash('sha256').update(bytes).digest('hex');
  if (actual !== expected) throw new Error(`the rejoined ONNX has sha256 ${actual}, expected ${expected}: a part is missing or damaged`);
  return bytes;
}

/** Deterministic inputs: ids avoid the five special tokens, type ids mix 0 and 1. */
function makeBatch(lengths: number[], salt: string): PackedBatch {
  const total = lengths.reduce((a, b) => a + b, 0);
  const idKey = streamSeed(`${salt}/ids`, BENCH_MODEL.seed);
  const typeKey = streamSeed(`${salt}/types`, BENCH_MODEL.seed);
  const inputIds = new Int32Array(total);
  const tokenTypeIds = new Int32Array(total);
  for (let t = 0; t < total; t++) {
    inputIds[t] = 5 + (randomUint32(idKey, t) % (VOCAB_SIZE - 5));
    tokenTypeIds[t] = randomUint32(typeKey, t) & 1;
  }
  const cuSeqlens = new Int32Array(lengths.length + 1);
  lengths.forEach((length, b) => { cuSeqlens[b + 1] = cuSeqlens[b] + length; });
  return { inputIds, tokenTypeIds, cuSeqlens, outputs: ['hidden'] };
}

/** The same batch as onnxruntime feeds: padded to the longest sequence, with an attention mask. */
function ortFeeds(batch: PackedBatch): Record<string, ort.Tensor> {
  const count = batch.cuSeqlens.length - 1;
  const lengths = Array.from({ length: count }, (_, b) => batch.cuSeqlens[b + 1] - batch.cuSeqlens[b]);
  const width = Math.max(...lengths);
  const ids = new BigInt64Array(count * width);
  const mask = new BigInt64Array(count * width);
  const types = new BigInt64Array(count * width);
  for (let b = 0; b < count; b++) {
    for (let s = 0; s < lengths[b]; s++) {
      const t = batch.cuSeqlens[b] + s;
      ids[b * width + s] = BigInt(batch.inputIds[t]);
      types[b * width + s] = BigInt(batch.tokenTypeIds![t]);
      mask[b * width + s] = 1n;
    }
  }
  const dims = [count, width];
  return {
    input_ids: new ort.Tensor('int64', ids, dims),
    attention_mask: new ort.Tensor('int64', mask, dims),
    token_type_ids: new ort.Tensor('int64', types, dims),
  };
}

/** Largest |FusedRT - onnxruntime| over the real (unpadded) tokens of `batch`. */
async function maxAbsDiff(engine: Engine, session: ort.InferenceSession, batch: PackedBatch): Promise<number> {
  const hidden = BENCH_MODEL.hiddenSize;
  const ours = (await engine.run(batch)).hidden.data;
  const theirs = (await session.run(ortFeeds(batch))).last_hidden_state;
  const width = theirs.dims[1];
  const data = theirs.data as Float32Array;
  let worst = 0;
  for (let b = 0; b + 1 < batch.cuSeqlens.length; b++) {
    for (let t = batch.cuSeqlens[b]; t < batch.cuSeqlens[b + 1]; t++) {
      const row = (b * width + t - batch.cuSeqlens[b]) * hidden;
      for (let h = 0; h < hidden; h++) worst = Math.max(worst, Math.abs(ours[t * hidden + h] - data[row + h]));
    }
  }
  return worst;
}

async function timeRuns(runs: number, once: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < WARMUP_RUNS; i++) await once();
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = process.hrtime.bigint();
    await once();
    times.push(Number(process.hrtime.bigint() - start) / 1e6);
  }
  return times.sort((a, b) => a - b);
}

function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(fraction * sorted.length) - 1)];
}

async function main(): Promise<void> {
  const { threads, runs } = parseArgs(process.argv.slice(2));
  ensureHfModel();
  const onnxBytes = loadOnnxBytes();
  checkWeights();
  // Rebuilt every run, so the plan always comes from the current builder.
  await buildPlan(HF_DIR, PLAN_PATH, { precision: 'fp32' });
  const maxBatch = Math.max(...BATCH_SIZES);
  const engine = await Engine.load(PLAN_PATH, {
    device: 'cpu', threads, maxTokens: maxBatch * SEQ_LEN, maxSequences: maxBatch, batchWindowMs: 0,
  });
  const session = await ort.InferenceSession.create(onnxBytes, {
    executionProviders: ['cpu'], intraOpNumThreads: threads, interOpNumThreads: 1,
    executionMode: 'sequential', graphOptimizationLevel: 'all',
  });
  try {
    for (const lengths of [[SEQ_LEN, 77, 13], new Array(maxBatch).fill(SEQ_LEN)]) {
      const diff = await maxAbsDiff(engine, session, makeBatch(lengths, `check-${lengths.length}`));
      console.log(`agreement, lengths [${lengths}]: max |FusedRT - onnxruntime| = ${diff.toExponential(2)}`);
      if (!(diff <= AGREEMENT_TOLERANCE)) throw new Error(`outputs differ by ${diff} (> ${AGREEMENT_TOLERANCE})`);
    }

    console.log(`\nCPU: ${os.cpus()[0]?.model ?? 'unknown'}, ${threads} threads, GEMM ${engine.info.blas}, `
      + `onnxruntime-node ${ort.env.versions.common}, seq ${SEQ_LEN}, ${runs} runs after ${WARMUP_RUNS} warm-up\n`);
    console.log('| engine | batch | median ms | p90 ms | sequences/s | tokens/s |');
    console.log('| --- | ---: | ---: | ---: | ---: | ---: |');
    for (const batchSize of BATCH_SIZES) {
      const batch = makeBatch(new Array(batchSize).fill(SEQ_LEN), `timing-${batchSize}`);
      const feeds = ortFeeds(batch);
      const contenders: Array<[string, () => Promise<unknown>]> = [
        ['FusedRT', () => engine.run(batch)],
        ['onnxruntime-node', () => session.run(feeds)],
      ];
      for (const [name, once] of contenders) {
        const times = await timeRuns(runs, once);
        const median = percentile(times, 0.5);
        const perSecond = (1000 / median) * batchSize;
        console.log(`| ${name} | ${batchSize} | ${median.toFixed(2)} | ${percentile(times, 0.9).toFixed(2)} | `
          + `${perSecond.toFixed(1)} | ${(perSecond * SEQ_LEN).toFixed(0)} |`);
      }
    }
  } finally {
    await engine.dispose();
    await session.release();
  }
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exitCode = 1;
  });
}
