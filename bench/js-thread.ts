/**
 * The JS thread's share of a run (runTiming(result).jsThreadUs: reading the
 * batch in engine.run(), and building the result object) on the CPU
 * backend, where the run itself happens on a worker. A tiny fixture plan
 * keeps the compute out of the way; the same code reads batches and builds
 * results on a GPU, where this share is most of a batch-1 run's host time.
 *
 *   node dist/bench/js-thread.js [--fixture tiny32-mlm] [--runs 2500] [--top-k 5] [--cpu-priority background|normal]
 *
 * (the priority's hand-over to the pool's lead thread shows in the wall time
 * of such tiny runs: docs/decisions/0016)
 * Prints the medians of wall time and JS-thread time after 500 warm-up runs.
 */
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { Engine } from '../src/engine/engine';
import { runTiming } from '../src/engine/run-result';
import type { CpuPriority } from '../src/engine/types';
import { option } from './args';

const median = (values: number[]) => [...values].sort((a, b) => a - b)[values.length >> 1];

async function main(): Promise<void> {
  const fixture = option('--fixture', 'tiny32-mlm');
  const runs = Number(option('--runs', '2500'));
  const topK = Number(option('--top-k', '5'));
  const cpuPriority = option('--cpu-priority', 'background') as CpuPriority;
  const plan = path.join(os.tmpdir(), `fusedrt-js-thread-${fixture}.plan`);
  await buildPlan(path.join(__dirname, '..', '..', 'test', 'fixtures', 'bert', fixture), plan, { precision: 'fp32' });
  const engine = await Engine.load(plan, { device: 'cpu', batchWindowMs: 0, cpuPriority });
  const batch = {
    inputIds: Int32Array.from({ length: 16 }, (_, i) => 5 + i),
    cuSeqlens: Int32Array.from([0, 16]),
    selectedRows: Int32Array.from([3]),
    outputs: ['logits'],
    ...(topK > 0 ? { topK } : {}),
  };
  const wallUs: number[] = [];
  const jsThreadUs: number[] = [];
  try {
    for (let i = 0; i < 500 + runs; i++) {
      const start = process.hrtime.bigint();
      const result = await engine.run(batch);
      const us = Number(process.hrtime.bigint() - start) / 1e3;
      if (i < 500) continue;
      wallUs.push(us);
      jsThreadUs.push(runTiming(result)?.jsThreadUs ?? NaN);
    }
  } finally {
    await engine.dispose();
  }
  console.log(`${fixture}, 16 tokens, logits ${topK > 0 ? `top-${topK}` : 'in full'}, CPU at ${cpuPriority} priority: ` +
    `${runs} runs, median wall ` +
    `${median(wallUs).toFixed(1)} us, median JS thread ${median(jsThreadUs).toFixed(1)} us`);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
