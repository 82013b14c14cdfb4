/**
 * The CUDA softmax top-k on the GPU machine: against the TS reference over
 * the same engine's full logits (exact ids, scores 1e-6), in fp32 and fp16,
 * graphs on and off, k = 1, 5, 8, 64, on a 30522-token vocabulary, from 1 to
 * 342 selected rows; against the CPU backend's top-k on the same plan; gpuMs;
 * and fp16 plans' logits in fp32. Where tuning gives the decoder the gemv (fp16, up to 4
 * rows), k <= 8 runs in the gemv's own launch (cuda/gemv.cu), else in
 * cuda/topk.cu: tools/device/gpu-check.sh runs this file again with only
 * the project's GEMM kernels, so that the gemv is chosen at those rows.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../../src/build/builder';
import { float32ToHalfBits, halfToFloat32 } from '../../src/build/safetensors';
import type { Precision } from '../../src/build/plan-types';
import { Engine } from '../../src/engine/engine';
import { isTopK, runGpuMs } from '../../src/engine/run-result';
import type { OutputTensor, PackedBatch, TopKTensor } from '../../src/engine/types';
import { softmaxRow } from '../../src/post/softmax';
import { randomModelVocabulary } from '../../src/tools/demo-words';
import { writeRandomBertModel } from '../../src/tools/random-model';

const VOCAB_SIZE = 30522;

function vocabulary(): string[] {
  const words = randomModelVocabulary();
  return [...words, ...Array.from({ length: VOCAB_SIZE - words.length }, (_, i) => `[unused${i}]`)];
}

/** sequences x length random tokens, every third token selected. */
function batchOf(sequences: number, length: number, seed: number): PackedBatch {
  let state = seed;
  const next = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32; };
  const tokens = sequences * length;
  return {
    inputIds: Int32Array.from({ length: tokens }, () => 1000 + Math.floor(next() * (VOCAB_SIZE - 1000))),
    cuSeqlens: Int32Array.from({ length: sequences + 1 }, (_, b) => b * length),
    selectedRows: Int32Array.from({ length: Math.ceil(tokens / 3) }, (_, i) => i * 3),
    outputs: ['logits'],
  };
}

/** Per row of logits: its columns best first (larger logit, then lower column), the first `most`, and their probabilities. */
interface ReferenceRow { order: number[]; p: number[] }

function referenceTop(logits: OutputTensor, most: number): ReferenceRow[] {
  return Array.from({ length: logits.rows }, (_, r) => {
    const start = r * logits.cols;
    const p = softmaxRow(logits.data, start, logits.cols);
    const order = Array.from({ length: logits.cols }, (_, c) => c)
      .sort((a, b) => logits.data[start + b] - logits.data[start + a] || a - b).slice(0, most);
    return { order, p: order.map((c) => p[c]) };
  });
}

function checkAgainstLogits(top: TopKTensor, reference: ReferenceRow[], k: number, label: string): void {
  assert.equal(top.rows, reference.length, label);
  reference.forEach(({ order, p }, r) => {
    assert.deepEqual(Array.from(top.topIds.subarray(r * k, (r + 1) * k)), order.slice(0, k), `${label} row ${r}: ids`);
    for (let i = 0; i < k; i++) {
      const got = top.topScores[r * k + i];
      assert.ok(Math.abs(got - p[i]) <= 1e-6 * Math.max(1, p[i]) + 1e-9, `${label} row ${r} #${i}: ${got} vs ${p[i]}`);
    }
  });
}

describe('CUDA softmax top-k', function () {
  this.timeout(600000);
  let dir: string;
  const plans = new Map<Precision, string>();

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-topk-gpu-'));
    const model = path.join(dir, 'mlm');
    writeRandomBertModel(model, {
      architecture: 'BertForMaskedLM', hiddenSize: 128, numLayers: 2, numHeads: 2, intermediateSize: 256,
      maxPositions: 256, vocab: vocabulary(), seed: 5,
    });
    for (const precision of ['fp32', 'fp16'] as Precision[]) {
      const plan = path.join(dir, `mlm-${precision}.plan`);
      await buildPlan(model, plan, { precision });
      plans.set(precision, plan);
    }
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  for (const precision of ['fp32', 'fp16'] as Precision[]) {
    for (const cudaGraphs of [true, false]) {
      it(`${precision}, graphs ${cudaGraphs ? 'on' : 'off'}: the reference over the same run's logits`, async () => {
        const engine = await Engine.load(plans.get(precision)!, { device: 'cuda', cudaGraphs });
        try {
          for (const [sequences, length] of [[1, 3], [1, 7], [3, 40], [8, 128]]) {
            const batch = batchOf(sequences, length, 17 * sequences + length);
            const full = await engine.run(batch);
            const ms = runGpuMs(full);
            assert.ok(ms !== undefined && ms > 0, `gpuMs ${ms}`);
            const ks = [1, 5, 8, 64];
            const reference = referenceTop(full.logits, Math.max(...ks));
            for (const k of ks) {
              // Twice: the second replays the graph recorded by the first.
              for (let replay = 0; replay < 2; replay++) {
                const result = await engine.run({ ...batch, topK: k });
                assert.ok(isTopK(result.logits));
                checkAgainstLogits(result.logits, reference, k, `${precision} ${sequences}x${length} k=${k}`);
              }
            }
          }
        } finally {
          await engine.dispose();
        }
      });
    }
  }

  it('fp16: the logits come out in fp32, not rounded to fp16 (docs/cuda.md, "fp32 logits")', async () => {
    for (const cudaGraphs of [true, false]) {
      const engine = await Engine.load(plans.get('fp16')!, { device: 'cuda', cudaGraphs });
      try {
        const { logits } = await engine.run(batchOf(2, 32, 7));
        assert.ok(!isTopK(logits));
        let halves = 0;
        for (const v of logits.data) if (halfToFloat32(Uint16Array.of(float32ToHalfBits(v)))[0] === v) halves++;
        // fp32 values of this size are fp16 values about once in 8192.
        assert.ok(halves < 0.01 * logits.data.length, `${halves} of ${logits.data.length} logits are fp16 values`);
      } finally {
        await engine.dispose();
      }
    }
  });

  it('fp32: CUDA and the CPU agree (ids where the logits are not near ties, scores 1e-4)', async () => {
    const [gpu, cpu] = await Promise.all([
      Engine.load(plans.get('fp32')!, { device: 'cuda' }), Engine.load(plans.get('fp32')!, { device: 'cpu' })]);
    try {
      const batch = batchOf(4, 64, 99);
      const k = 5;
      const [a, b, logits] = await Promise.all([
        gpu.run({ ...batch, topK: k }), cpu.run({ ...batch, topK: k }), cpu.run(batch)]);
      const [ga, cb] = [a.logits as TopKTensor, b.logits as TopKTensor];
      for (let i = 0; i < ga.topIds.length; i++) {
        assert.ok(Math.abs(ga.topScores[i] - cb.topScores[i]) <= 1e-4, `score ${i}`);
        const row = Math.floor(i / k);
        const next = cb.topIds[i + 1 < (row + 1) * k ? i + 1 : i];
        const gap = logits.logits.data[row * logits.logits.cols + cb.topIds[i]] - logits.logits.data[row * logits.logits.cols + next];
        if (gap > 1e-3) assert.equal(ga.topIds[i], cb.topIds[i], `id ${i}`);
      }
    } finally {
      await Promise.all([gpu.dispose(), cpu.dispose()]);
    }
  });
});
