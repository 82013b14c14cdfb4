/**
 * Quick timing of the CUDA backend on a BERT-base-shaped model with random
 * weights (12 layers, hidden 768, 12 heads, vocab 30522), run by
 * tools/device/gpu-check.sh as `node dist/test/gpu/cuda-timing.js`: mean and
 * percentiles of engine.run() wall time (hrtime, 200 runs after 20 warm-up
 * runs, one run in flight) for batch 1 x 128 and 32 x 128, fp16 / tf32 /
 * fp32 plans, CUDA graphs on and off. This is end-to-end time seen from JS:
 * input copy on the JS thread, a libuv worker hop, the GPU work, the output
 * copy back and the promise; issue 3's targets are for the GPU part.
 * Then the fill-mask path through the Engine API (batcher included): a
 * BertForMaskedLM fp16 plan, one [MASK] per sequence, topK 5, wall time next
 * to the run's GPU time (CUDA events, result gpuMs) and their difference per
 * run: the host overhead issue 3 bounds at 50 us for batch 1; with spinWait
 * on and off, with the most time a run held the JS thread in the addon, each
 * followed by the event loop's longest stalls while 32 x 128 top-5 runs go
 * back to back (and idle, for the host's own), split into those a garbage
 * collection overlapped and the others. Last, the same probe in fresh
 * processes (`fusedrt bench`) that only load the plan, as Node-RED does,
 * with V8's default scavenger and with --no-parallel-scavenge (README,
 * "Keeping the event loop under 1 ms").
 * Not a test: it prints a table and fails only when a run fails.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../../src/build/builder';
import { Engine } from '../../src/engine/engine';
import { runGpuMs, runTiming, type RunTiming } from '../../src/engine/run-result';
import { describeGc, measureLoopStalls, type LoopStalls } from '../../src/tools/loop-stalls';
import type { Precision } from '../../src/build/plan-types';
import { randomModelVocabulary } from '../../src/tools/demo-words';
import { writeRandomBertModel } from '../../src/tools/random-model';
import { addon, NativeLoadOptions, NativeRunRequest } from '../support/native-addon';

const VOCAB_SIZE = 30522;
const WARMUP = 20;
const RUNS = 200;
const LOOP_PROBE_MS = 3000;

function bertBaseVocabulary(): string[] {
  const words = randomModelVocabulary();
  const padding = Array.from({ length: VOCAB_SIZE - words.length }, (_, i) => `[unused${i}]`);
  return [...words, ...padding];
}

function batchOf(sequences: number, length: number, outputs: string[]): NativeRunRequest {
  let state = 12345;
  const next = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32; };
  const tokens = sequences * length;
  return {
    inputIds: Int32Array.from({ length: tokens }, () => 1000 + Math.floor(next() * (VOCAB_SIZE - 1000))),
    cuSeqlens: Int32Array.from({ length: sequences + 1 }, (_, b) => b * length),
    outputs,
  };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

async function time(plan: string, graphs: boolean, batch: NativeRunRequest): Promise<number[]> {
  const options: NativeLoadOptions & { cudaGraphs: boolean } = { device: 'cuda', maxTokens: 4096, maxSequences: 64, cudaGraphs: graphs };
  const engine = await addon.loadEngine(plan, options);
  try {
    for (let i = 0; i < WARMUP; i++) await engine.run(batch);
    const ms: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const start = process.hrtime.bigint();
      await engine.run(batch);
      ms.push(Number(process.hrtime.bigint() - start) / 1e6);
    }
    return ms.sort((a, b) => a - b);
  } finally {
    await engine.dispose();
  }
}

async function main(): Promise<void> {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-timing-'));
  try {
    const model = path.join(work, 'bert-base-random');
    let started = Date.now();
    writeRandomBertModel(model, {
      architecture: 'BertModel', hiddenSize: 768, numLayers: 12, numHeads: 12, intermediateSize: 3072,
      maxPositions: 512, vocab: bertBaseVocabulary(), seed: 3, dtype: 'F16',
    });
    console.log(`random BERT-base written in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    const rows: string[][] = [['precision', 'batch', 'output', 'graphs', 'mean ms', 'p50 ms', 'p90 ms', 'min ms']];
    for (const precision of ['fp16', 'tf32', 'fp32'] as Precision[]) {
      const plan = path.join(work, `bert-base-${precision}.plan`);
      started = Date.now();
      await buildPlan(model, plan, { precision });
      console.log(`${precision} plan built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
      const cases: Array<[number, string, boolean]> = precision === 'fp16'
        ? [[1, 'pooled', true], [1, 'pooled', false], [32, 'pooled', true], [32, 'pooled', false], [32, 'hidden', true]]
        : [[1, 'pooled', true], [32, 'pooled', true]];
      for (const [sequences, output, graphs] of cases) {
        const ms = await time(plan, graphs, batchOf(sequences, 128, [output]));
        const mean = ms.reduce((a, b) => a + b, 0) / ms.length;
        rows.push([precision, `${sequences}x128`, output, graphs ? 'on' : 'off', mean.toFixed(3),
          percentile(ms, 0.5).toFixed(3), percentile(ms, 0.9).toFixed(3), ms[0].toFixed(3)]);
        console.log(rows[rows.length - 1].join('  '));
      }
    }
    const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
    console.log(`\n${rows.map((r) => r.map((v, c) => v.padEnd(widths[c])).join('  ')).join('\n')}`);
    await timeFillMask(work);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Engine.run wall time vs gpuMs for fp16 MLM logits with topK 5 (one mask per sequence). */
async function timeFillMask(work: string): Promise<void> {
  const model = path.join(work, 'bert-base-mlm');
  writeRandomBertModel(model, {
    architecture: 'BertForMaskedLM', hiddenSize: 768, numLayers: 12, numHeads: 12, intermediateSize: 3072,
    maxPositions: 512, vocab: bertBaseVocabulary(), seed: 4, dtype: 'F16',
  });
  const plan = path.join(work, 'bert-base-mlm-fp16.plan');
  await buildPlan(model, plan, { precision: 'fp16' });
  const rows: string[][] = [['fp16 MLM', 'spinWait', 'batch', 'topK', 'wall p50 ms', 'gpu p50 ms', 'wall-gpu p50 us', 'wall-gpu p90 us', 'wall mean ms', 'gpu mean ms']];
  const stalls: string[] = [];
  const idle = await measureLoopStalls(undefined, LOOP_PROBE_MS);
  stalls.push(`idle: longest stall ${idle.maxMs.toFixed(3)} ms in ${idle.turns} turns, ${describeGc(idle)}`);
  for (const spinWait of [true, false]) {
    await timeFillMaskWith(await Engine.load(plan, { device: 'cuda', maxTokens: 4096, maxSequences: 64, spinWait }), spinWait, rows, stalls);
  }
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  console.log(`\n${rows.map((r) => r.map((v, c) => v.padEnd(widths[c])).join('  ')).join('\n')}`);
  for (const v8Flags of [[], ['--no-parallel-scavenge']]) stalls.push(probeInFreshProcess(plan, v8Flags));
  console.log(`event loop while 32x128 top-5 runs back to back (src/tools/loop-stalls.ts, ${LOOP_PROBE_MS / 1000} s each):`);
  for (const line of stalls) console.log(`  ${line}`);
}

/**
 * The loop probe in a process that only loads the plan and runs it (spin
 * wait on): this one has written and built BERT-base models, whose garbage
 * a collection may still meet.
 */
function probeInFreshProcess(plan: string, v8Flags: string[]): string {
  const cli = path.join(__dirname, '..', '..', 'src', 'cli.js');
  const output = execFileSync(process.execPath, [...v8Flags, cli, 'bench', plan, '--device', 'cuda', '--batch', '32',
    '--seq', '128', '--top-k', '5', '--runs', '20', '--loop-seconds', String(LOOP_PROBE_MS / 1000), '--json'], { encoding: 'utf8' });
  const { eventLoop } = JSON.parse(output) as { eventLoop: LoopStalls };
  return `fresh process${v8Flags.length > 0 ? `, ${v8Flags.join(' ')}` : ''}: ${eventLoop.requests} runs, longest stall `
    + `${eventLoop.maxMs.toFixed(3)} ms, p99 ${eventLoop.p99Ms.toFixed(3)} ms in ${eventLoop.turns} turns, ${describeGc(eventLoop)}`;
}

async function timeFillMaskWith(engine: Engine, spinWait: boolean, rows: string[][], stalls: string[]): Promise<void> {
  try {
    for (const [sequences, topK] of [[1, 5], [32, 5], [32, 0]]) {
      const base = batchOf(sequences, 128, ['logits']);
      const batch = { ...base, selectedRows: Int32Array.from({ length: sequences }, (_, b) => b * 128 + 5) };
      const request = topK > 0 ? { ...batch, topK } : batch;
      for (let i = 0; i < WARMUP; i++) await engine.run(request);
      const wall: number[] = [];
      const gpu: number[] = [];
      const overhead: number[] = [];
      const phases: RunTiming[] = [];
      for (let i = 0; i < RUNS; i++) {
        const start = process.hrtime.bigint();
        const result = await engine.run(request);
        const ms = Number(process.hrtime.bigint() - start) / 1e6;
        const g = runGpuMs(result) ?? NaN;
        wall.push(ms);
        gpu.push(g);
        overhead.push((ms - g) * 1000);
        const timing = runTiming(result);
        if (timing) phases.push(timing);
      }
      type Phase = Exclude<keyof RunTiming, 'issuedOnJsThread' | 'spinWait'>;
      const phaseNames = (Object.keys(phases[0] ?? {}) as Array<keyof RunTiming>)
        .filter((name): name is Phase => name !== 'issuedOnJsThread' && name !== 'spinWait');
      const onJsThread = phases.filter((p) => p.issuedOnJsThread).length;
      const polled = phases.filter((p) => p.spinWait).length;
      console.log(`${sequences}x128 topK ${topK}: ${onJsThread}/${phases.length} issued on the JS thread, ${polled} settled by spin wait; host phases p50 us: ${phaseNames.map((name) =>
        `${name.replace(/Us$/, '')} ${percentile(phases.map((p) => p[name]).sort((a, b) => a - b), 0.5).toFixed(1)}`).join(', ')}; `
        + `jsThread max ${phases.reduce((max, p) => Math.max(max, p.jsThreadUs), 0).toFixed(1)} us`);
      const mean = (v: number[]) => v.reduce((a, b) => a + b, 0) / v.length;
      const sorted = (v: number[]) => [...v].sort((a, b) => a - b);
      rows.push(['', String(spinWait), `${sequences}x128`, topK > 0 ? String(topK) : 'full', percentile(sorted(wall), 0.5).toFixed(3),
        percentile(sorted(gpu), 0.5).toFixed(3), percentile(sorted(overhead), 0.5).toFixed(0),
        percentile(sorted(overhead), 0.9).toFixed(0), mean(wall).toFixed(3), mean(gpu).toFixed(3)]);
      console.log(rows[rows.length - 1].join('  '));
    }
    const base = batchOf(32, 128, ['logits']);
    const topK5 = { ...base, selectedRows: Int32Array.from({ length: 32 }, (_, b) => b * 128 + 5), topK: 5 };
    const p = await measureLoopStalls(() => engine.run(topK5), LOOP_PROBE_MS);
    stalls.push(`spinWait ${spinWait}: ${p.requests} runs, longest stall ${p.maxMs.toFixed(3)} ms, p99 ${p.p99Ms.toFixed(3)} ms `
      + `in ${p.turns} turns, ${describeGc(p)}`);
  } finally {
    await engine.dispose();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
