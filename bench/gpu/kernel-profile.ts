/**
 * The run that tools/device/kernel-profile.sh puts under Nsight Compute: a
 * BERT-base-shaped MLM (random weights, fp16 plan, or fp32, tf32 or fp8 with --precision) on the CUDA backend with
 * CUDA graphs off, so every kernel of a run is launched (and profiled) on
 * its own. One [MASK] row per sequence, top-5 on the device, as fill-mask
 * runs it.
 *
 *   node dist/bench/gpu/kernel-profile.js --work DIR --batch 1 --seq 128 --warmup 2 --runs 1 [--graphs] [--varlen]
 *     [--precision fp16|fp32|tf32|fp8]
 *
 * With --graphs (not under ncu) it times the same runs with CUDA graphs on
 * and prints the median GPU time (CUDA events), to set against the sum of
 * the profiled kernel durations: the difference is launch gaps. With
 * --varlen the sequences' lengths are uniform in [seq/8, seq] (fixed seed),
 * as the benchmark's variable-length cases are.
 */
import * as fs from 'fs';
import * as path from 'path';
import { buildPlan } from '../../src/build/builder';
import type { Precision } from '../../src/build/plan-types';
import { Engine } from '../../src/engine/engine';
import { runGpuMs } from '../../src/engine/run-result';
import { randomModelVocabulary } from '../../src/tools/demo-words';
import { writeRandomBertModel } from '../../src/tools/random-model';
import { option } from '../args';

const VOCAB_SIZE = 30522;
const PRECISIONS: readonly Precision[] = ['fp16', 'fp32', 'tf32', 'fp8'];

async function main(): Promise<void> {
  const work = option('--work', '/tmp/fusedrt-profile');
  const batch = Number(option('--batch', '1'));
  const seq = Number(option('--seq', '128'));
  const warmup = Number(option('--warmup', '20'));
  const runs = Number(option('--runs', '2'));
  const precision = PRECISIONS.find((p) => p === option('--precision', 'fp16'));
  if (precision === undefined) throw new Error(`--precision must be one of ${PRECISIONS.join(', ')}`);
  const plan = path.join(work, `bert-base-mlm-${precision}.plan`);
  if (!fs.existsSync(path.join(work, 'model', 'config.json'))) {
    const words = randomModelVocabulary();
    const vocab = [...words, ...Array.from({ length: VOCAB_SIZE - words.length }, (_, i) => `[unused${i}]`)];
    writeRandomBertModel(path.join(work, 'model'), {
      architecture: 'BertForMaskedLM', hiddenSize: 768, numLayers: 12, numHeads: 12, intermediateSize: 3072,
      maxPositions: 512, vocab, seed: 4, dtype: 'F16',
    });
  }
  if (!fs.existsSync(plan)) await buildPlan(path.join(work, 'model'), plan, { precision });
  const graphs = process.argv.includes('--graphs');
  const engine = await Engine.load(plan, { device: 'cuda', maxTokens: 4096, maxSequences: 64, cudaGraphs: graphs });
  let state = 7;
  const next = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32; };
  const shortest = Math.max(1, Math.floor(seq / 8));
  const lengths = Array.from({ length: batch },
    () => (process.argv.includes('--varlen') ? shortest + Math.floor(next() * (seq - shortest + 1)) : seq));
  const starts = lengths.map((_, b) => lengths.slice(0, b).reduce((a, n) => a + n, 0));
  const tokens = lengths.reduce((a, n) => a + n, 0);
  const request = {
    inputIds: Int32Array.from({ length: tokens }, () => 1000 + Math.floor(next() * (VOCAB_SIZE - 1000))),
    cuSeqlens: Int32Array.from([...starts, tokens]),
    selectedRows: Int32Array.from(lengths, (n, b) => starts[b] + Math.min(5, n - 1)),
    outputs: ['logits'],
    topK: 5,
  };
  const gpuMs: number[] = [];
  try {
    for (let i = 0; i < warmup + runs; i++) {
      const result = await engine.run(request);
      if (i >= warmup) gpuMs.push(runGpuMs(result) ?? NaN);
    }
  } finally {
    await engine.dispose();
  }
  gpuMs.sort((a, b) => a - b);
  console.log(`${precision} ${batch}x${seq}${tokens < batch * seq ? ` (${tokens} tokens)` : ''} graphs ${graphs ? 'on' : 'off'}: ${warmup} warm-up runs, ${runs} runs, `
    + `median GPU time ${gpuMs[gpuMs.length >> 1].toFixed(4)} ms`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
