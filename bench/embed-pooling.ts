/**
 * Sentence embeddings two ways, on one engine and the same texts: every
 * token's state brought to JavaScript and mean-pooled there (`hidden`, what
 * the embed node did before plans had `mean`), against the engine pooling
 * on its own device (`mean`: one row per text crosses). For each: the wall
 * time of a request (engine.run plus pooling and normalising), the part of
 * it spent on the JS thread after the run resolved, the bytes the result
 * brought, and the event loop's longest stall while such requests run back
 * to back. Random BERT weights, fp16 plan; CPU or GPU.
 *
 *   node --expose-gc dist/bench/embed-pooling.js [--device auto|cpu|cuda] [--shape base|minilm] [--batch 32] [--seq 128]
 *     [--runs 100] [--loop-seconds 2] [--work DIR] [--save-vectors FILE]
 *
 * --save-vectors writes the engine-pooled, normalised vectors (float32,
 * batch x hidden) for bench/gpu/embed_torch.py, which times PyTorch on the
 * same model (WORK/SHAPE-model) and token ids and compares its vectors.
 *
 * With --expose-gc the garbage of what ran before (the other case's
 * results) is collected before each event-loop probe instead of during it.
 *
 * --shape base is BERT-base (768 wide, 12 layers), minilm is MiniLM-L6's
 * shape (384 wide, 6 layers), small enough for a CPU.
 */
import * as fs from 'fs';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { Engine } from '../src/engine/engine';
import type { DeviceOption, OutputTensor, PackedBatch } from '../src/engine/types';
import { embeddingsOfRows, poolEmbeddings } from '../src/post/embed';
import { randomModelVocabulary } from '../src/tools/demo-words';
import { describeGc, measureLoopStalls, type LoopStalls } from '../src/tools/loop-stalls';
import { writeRandomBertModel } from '../src/tools/random-model';
import { option } from './args';

const VOCAB_SIZE = 30522;
const SHAPES = {
  base: { hiddenSize: 768, numLayers: 12, numHeads: 12, intermediateSize: 3072 },
  minilm: { hiddenSize: 384, numLayers: 6, numHeads: 12, intermediateSize: 1536 },
};

interface Case {
  name: string;
  output: string;
  pool: (result: Record<string, OutputTensor>, cuSeqlens: Int32Array) => Float32Array[];
}

const CASES: Case[] = [
  {
    name: 'hidden, pooled in JS',
    output: 'hidden',
    pool: (r, cu) => poolEmbeddings(r.hidden, cu, { pooling: 'mean', normalize: true }),
  },
  { name: 'mean, pooled by the engine', output: 'mean', pool: (r) => embeddingsOfRows(r.mean, true) },
];

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[sorted.length >> 1];
}

async function main(): Promise<void> {
  const device = option('--device', 'auto') as DeviceOption;
  const shapeName = option('--shape', 'base');
  const shape = SHAPES[shapeName as keyof typeof SHAPES];
  if (!shape) throw new Error(`--shape must be base or minilm, got ${shapeName}`);
  const batch = Number(option('--batch', '32'));
  const seq = Number(option('--seq', '128'));
  const runs = Number(option('--runs', '100'));
  const loopSeconds = Number(option('--loop-seconds', '2'));
  const work = option('--work', '/tmp/fusedrt-embed-bench');

  const modelDir = path.join(work, `${shapeName}-model`);
  const plan = path.join(work, `${shapeName}-fp16.plan`);
  if (!fs.existsSync(path.join(modelDir, 'config.json'))) {
    const words = randomModelVocabulary();
    const vocab = [...words, ...Array.from({ length: VOCAB_SIZE - words.length }, (_, i) => `[unused${i}]`)];
    console.log(`writing a random ${shapeName} BertModel to ${modelDir}`);
    writeRandomBertModel(modelDir, { architecture: 'BertModel', ...shape, maxPositions: 512, vocab, seed: 5, dtype: 'F16' });
  }
  if (!fs.existsSync(plan)) {
    console.log(`building ${plan}`);
    await buildPlan(modelDir, plan, { precision: 'fp16' });
  }
  const engine = await Engine.load(plan, { device, maxTokens: batch * seq, maxSequences: batch });
  let state = 11;
  const next = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32; };
  const inputIds = Int32Array.from({ length: batch * seq }, () => 1000 + Math.floor(next() * (VOCAB_SIZE - 1000)));
  const cuSeqlens = Int32Array.from({ length: batch + 1 }, (_, b) => b * seq);
  const request = (output: string): PackedBatch => ({ inputIds, cuSeqlens, outputs: [output] });
  try {
    console.log(`${engine.info.backend}${engine.info.device ? ` (${engine.info.device.name})` : ''}, ${shapeName}, `
      + `${batch} x ${seq} tokens, fp16 plan`);
    const vectors: Float32Array[][] = [];
    for (const c of CASES) vectors.push(c.pool(await engine.run(request(c.output)), cuSeqlens));
    let difference = 0;
    vectors[0].forEach((v, b) => v.forEach((x, j) => { difference = Math.max(difference, Math.abs(x - vectors[1][b][j])); }));
    console.log(`the two ways agree to ${difference.toExponential(2)} (max |difference| of a unit vector's component)`);
    const saveTo = option('--save-vectors', '');
    if (saveTo) {
      const flat = new Float32Array(vectors[1].length * shape.hiddenSize);
      vectors[1].forEach((v, b) => flat.set(v, b * shape.hiddenSize));
      fs.writeFileSync(saveTo, Buffer.from(flat.buffer));
    }

    const wall = CASES.map(() => [] as number[]);
    const post = CASES.map(() => [] as number[]);
    const bytes = CASES.map(() => 0);
    // Each case in a block of its own, as a flow sends one kind of request:
    // interleaved with `hidden` requests (12.6 MB to JS and pooled there),
    // BERT-base `mean` requests took 2.0-2.2 ms instead of 1.9 (bench/RESULTS.md).
    const warmup = Math.min(10, runs);
    for (const [k, c] of CASES.entries()) {
      (globalThis as { gc?: () => void }).gc?.();
      for (let i = 0; i < warmup + runs; i++) {
        const t0 = performance.now();
        const result = await engine.run(request(c.output));
        const t1 = performance.now();
        c.pool(result, cuSeqlens);
        const t2 = performance.now();
        if (i >= warmup) {
          wall[k].push(t2 - t0);
          post[k].push(t2 - t1);
        }
        bytes[k] = result[c.output].data.byteLength;
      }
    }
    const stalls: LoopStalls[] = [];
    for (const c of CASES) {
      (globalThis as { gc?: () => void }).gc?.();
      stalls.push(await measureLoopStalls(async () => c.pool(await engine.run(request(c.output)), cuSeqlens), loopSeconds * 1000));
    }
    console.log(`\n${runs} runs per case (after ${warmup} warm-up), one case after the other; event loop probed for ${loopSeconds} s per case\n`);
    console.log('| outputs | wall ms (median) | on the JS thread after the run, ms (median / max) | bytes to JS | event loop: longest stall ms, requests |');
    console.log('| --- | ---: | ---: | ---: | ---: |');
    CASES.forEach((c, k) => {
      console.log(`| ${c.name} | ${median(wall[k]).toFixed(3)} | ${median(post[k]).toFixed(3)} / ${Math.max(...post[k]).toFixed(3)} `
        + `| ${bytes[k]} | ${stalls[k].maxMs.toFixed(2)}, ${stalls[k].requests} |`);
    });
    console.log('');
    CASES.forEach((c, k) => console.log(`${c.name}, event loop: ${describeGc(stalls[k])}`));
  } finally {
    await engine.dispose();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
