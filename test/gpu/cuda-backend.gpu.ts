/**
 * The CUDA backend on a machine with a GPU (run by tools/device/gpu-check.sh;
 * named *.gpu.ts so the default suite, dist/test/**\/*.test.js, skips it):
 * every fixture of test/fixtures/bert on CUDA and on the CPU against
 * transformers in fp32, fp16 (fp16 activations on CUDA) and tf32; CUDA
 * against the CPU on random batches (long sequences, head dims 32/64/128 and
 * an odd one, every activation) and on one selected row with the logits
 * alone (GEMMs of one row); CUDA graphs against eager launches, bit for
 * bit, over batches of different sizes in one bucket; and an allocation
 * failure that must become E_OOM with the process still usable. Prints a
 * table last.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../../src/build/builder';
import type { Precision } from '../../src/build/plan-types';
import { runTiming } from '../../src/engine/run-result';
import { poolEmbeddings } from '../../src/post/embed';
import { randomModelVocabulary } from '../../src/tools/demo-words';
import { writeRandomBertModel } from '../../src/tools/random-model';
import { addon, NativeEngine, NativeLoadOptions, NativeOutput, NativeRunRequest, rejectionCode } from '../support/native-addon';
import { leastRowCosine } from '../support/row-cosine';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'bert');
/** Max |error| against transformers (fp32) per element, per plan precision, on CUDA. */
const TOLERANCE: Record<Exclude<Precision, 'fp8'>, number> = { fp32: 1e-4, fp16: 2e-2, tf32: 1e-2 };
/** The CPU computes every precision in fp32 (fp16 weights widened). */
const CPU_TOLERANCE: Record<Exclude<Precision, 'fp8'>, number> = { fp32: 1e-4, fp16: 2e-2, tf32: 1e-4 };
/** Least cosine similarity per output row (rows of at least COSINE_MIN_COLS columns) for fp16 activations. */
const MIN_COSINE = 0.9999;
/** CUDA against the CPU on the same fp32 plan: different summation orders. */
const AGREEMENT = 1e-4;
/**
 * CUDA fp16 activations against the CPU on the same fp16 plan (random
 * weights, unnormalised logits of a random MLM head): fp16 rounding of every
 * activation, so a looser bound than the fixtures', plus the cosine check.
 */
const HALF_AGREEMENT = 5e-2;
const HALF_RANDOM_MIN_COSINE = 0.999;
/**
 * fp8 plans: CUDA's FP8 GEMMs against the CPU's fp32 emulation of the same
 * plan. Besides fp16's rounding, a value within fp32 noise of the midpoint
 * between two E4M3 neighbours (6% apart) rounds either way on either
 * backend, so single elements may differ by a step and carry it onward;
 * the rows' cosines bound the whole.
 */
const FP8_AGREEMENT_COSINE = 0.99;
/** fp8 plans against transformers' fp32: every GEMM input and weight rounded to 3 mantissa bits. */
const FP8_MIN_COSINE = 0.98;

type GpuPrecision = 'fp32' | 'fp16' | 'fp8';
/** CUDA against the CPU on the same plan, per precision: max |difference| and least row cosine. */
const CPU_AGREEMENT: Record<GpuPrecision, { maxAbs: number; minCosine: number }> = {
  fp32: { maxAbs: AGREEMENT, minCosine: 0 },
  fp16: { maxAbs: HALF_AGREEMENT, minCosine: HALF_RANDOM_MIN_COSINE },
  fp8: { maxAbs: Infinity, minCosine: FP8_AGREEMENT_COSINE },
};

interface Expected {
  inputs: { inputIds: number[]; tokenTypeIds: number[]; cuSeqlens: number[]; selectedRows: number[] };
  outputs: Record<string, { rows: number; cols: number; data: number[] }>;
}

/** Each sequence's mean and first rows of transformers' hidden states: what a plan's `mean` and `cls` outputs hold. */
function pooledHidden(expected: Expected): Record<'mean' | 'cls', Expected['outputs'][string]> {
  const { data, rows, cols } = expected.outputs.hidden;
  const states = { data: Float32Array.from(data), rows, cols };
  const pooled = (pooling: 'mean' | 'cls') => {
    const vectors = poolEmbeddings(states, expected.inputs.cuSeqlens, { pooling });
    return { rows: vectors.length, cols, data: vectors.flatMap((v) => Array.from(v)) };
  };
  return { mean: pooled('mean'), cls: pooled('cls') };
}

/** A fixture's transformers outputs (with mean and cls pooled from its hidden states), their names, and the batch that produced them, asking for all of them. */
function fixtureRun(name: string): { expected: Expected; names: string[]; batch: NativeRunRequest } {
  const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'expected.json'), 'utf8')) as Expected;
  Object.assign(expected.outputs, pooledHidden(expected));
  const names = Object.keys(expected.outputs);
  const batch: NativeRunRequest = {
    inputIds: Int32Array.from(expected.inputs.inputIds),
    tokenTypeIds: Int32Array.from(expected.inputs.tokenTypeIds),
    cuSeqlens: Int32Array.from(expected.inputs.cuSeqlens),
    selectedRows: Int32Array.from(expected.inputs.selectedRows),
    outputs: names,
  };
  return { expected, names, batch };
}

type LoadOptions = NativeLoadOptions & { cudaGraphs?: boolean; maxSelectedRows?: number };

const table: string[][] = [['check', 'backend', 'max |error|', 'limit', 'min cosine', 'result']];
function record(check: string, backend: string, error: number, limit: number, cosine = NaN, minCosine = 0): void {
  const ok = error <= limit && !(cosine < minCosine);
  table.push([check, backend, error.toExponential(2), limit.toExponential(0), Number.isNaN(cosine) ? '-' : cosine.toFixed(6), ok ? 'ok' : 'FAIL']);
}

interface Difference { maxAbs: number; minCosine: number }

/** Max |got - want| over all elements, and the least cosine similarity of a row (rows of >= COSINE_MIN_COLS columns). */
function difference(got: NativeOutput, want: { rows: number; cols: number; data: ArrayLike<number> }): Difference {
  assert.deepEqual([got.rows, got.cols], [want.rows, want.cols], 'output shapes differ');
  assert.equal(got.data.length, want.data.length, 'output sizes differ');
  let maxAbs = 0;
  for (let i = 0; i < want.data.length; i++) {
    const d = Math.abs(got.data[i] - want.data[i]);
    maxAbs = Number.isNaN(d) ? Infinity : Math.max(maxAbs, d);
  }
  return { maxAbs, minCosine: leastRowCosine(got.data, want.data, want.cols) };
}

function worstOf(results: Difference[]): Difference {
  return {
    maxAbs: Math.max(0, ...results.map((r) => r.maxAbs)),
    minCosine: Math.min(1, ...results.map((r) => r.minCosine)),
  };
}

function loadOptions(device: string, extra: Partial<LoadOptions> = {}): LoadOptions {
  return { device, threads: os.availableParallelism(), maxTokens: 4096, maxSequences: 64, ...extra };
}

async function withEngine<T>(plan: string, options: LoadOptions, use: (e: NativeEngine) => Promise<T>): Promise<T> {
  const engine = await addon.loadEngine(plan, options);
  try {
    assert.equal(engine.info().backend, options.device?.startsWith('cuda') ? 'cuda' : 'cpu');
    return await use(engine);
  } finally {
    await engine.dispose();
  }
}

/** Random packed batch: ids in [0, vocab), type ids 0/1, `selected` distinct selected rows (default 3). */
function randomBatch(lengths: number[], vocab: number, outputs: string[], seed: number, selected = 3): NativeRunRequest {
  let state = seed >>> 0;
  const next = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32; };
  const tokens = lengths.reduce((a, b) => a + b, 0);
  const cuSeqlens = Int32Array.from([0, ...lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
  const rows = new Set<number>([0, tokens - 1]);
  while (rows.size < Math.min(selected, tokens)) rows.add(Math.floor(next() * tokens));
  return {
    inputIds: Int32Array.from({ length: tokens }, () => Math.floor(next() * vocab)),
    tokenTypeIds: Int32Array.from({ length: tokens }, () => (next() < 0.3 ? 1 : 0)),
    cuSeqlens,
    selectedRows: Int32Array.from([...rows].slice(0, selected)),
    outputs,
  };
}

function outputNames(engine: NativeEngine): string[] {
  return (JSON.parse(engine.info().headerJson) as { outputs: Array<{ name: string }> }).outputs.map((o) => o.name);
}

function compareOutputs(label: string, got: Record<string, NativeOutput>, want: Record<string, NativeOutput>): Difference {
  const results: Difference[] = [];
  for (const name of Object.keys(want)) {
    assert.ok(got[name], `${label}: no "${name}"`);
    results.push(difference(got[name], want[name]));
  }
  return worstOf(results);
}

async function compareCudaWithCpu(label: string, plan: string, batch: NativeRunRequest, precision: GpuPrecision): Promise<void> {
  const run = (device: string) => withEngine(plan, loadOptions(device), async (e) => e.run({ ...batch, outputs: outputNames(e) }));
  const [gpu, cpu] = [await run('cuda'), await run('cpu')];
  const worst = compareOutputs(label, gpu, cpu);
  const { maxAbs: limit, minCosine } = CPU_AGREEMENT[precision];
  record(label, 'cuda vs cpu', worst.maxAbs, limit, precision === 'fp32' ? NaN : worst.minCosine, minCosine);
  assert.ok(worst.maxAbs <= limit, `${label}: CUDA and CPU differ by ${worst.maxAbs}`);
  assert.ok(worst.minCosine >= minCosine, `${label}: a row's cosine is ${worst.minCosine}`);
}

/** A random BERT (MLM head, so selected rows are exercised) with the given shape, built into a plan. */
async function randomPlan(work: string, name: string, shape: { hidden: number; heads: number; act: string; layers?: number }, precision: Precision): Promise<string> {
  const dir = path.join(work, name);
  if (!fs.existsSync(path.join(dir, 'config.json'))) {
    writeRandomBertModel(dir, {
      architecture: 'BertForMaskedLM', hiddenSize: shape.hidden, numLayers: shape.layers ?? 2, numHeads: shape.heads,
      intermediateSize: 2 * shape.hidden, maxPositions: 640, vocab: randomModelVocabulary().slice(0, 500),
      seed: shape.hidden + shape.heads,
    });
    const configPath = path.join(dir, 'config.json');
    const config = JSON.parse(fs.readFileSync(configPath, 'utf8')) as Record<string, unknown>;
    fs.writeFileSync(configPath, JSON.stringify({ ...config, hidden_act: shape.act }));
  }
  const plan = path.join(dir, `model-${precision}.plan`);
  await buildPlan(dir, plan, { precision });
  return plan;
}

describe('CUDA backend (GPU machine)', function () {
  this.timeout(600_000);
  let work = '';
  before(() => { work = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-gpu-')); });
  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
    const widths = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
    console.log(`\n${table.map((r) => r.map((v, c) => v.padEnd(widths[c])).join('  ')).join('\n')}`);
  });

  it('lists cuda among the backends, and the GPU with its compute capability', () => {
    assert.deepEqual(addon.backends(), ['cuda', 'cpu']);
    const [gpu] = addon.cudaDevices();
    assert.equal(gpu.ordinal, 0);
    assert.ok(Number(gpu.computeCapability) >= 8, gpu.computeCapability);
    assert.equal(gpu.unsupported, '');
    assert.equal(addon.cudaUnavailable(), '');
  });

  const index = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'index.json'), 'utf8')) as { fixtures: Array<{ name: string }> };
  for (const { name } of index.fixtures) {
    for (const precision of ['fp32', 'fp16', 'tf32'] as const) {
      it(`${name} ${precision}: CUDA and CPU match transformers`, async () => {
        const plan = path.join(work, `${name}-${precision}.plan`);
        await buildPlan(path.join(FIXTURES, name), plan, { precision });
        const { expected, names, batch } = fixtureRun(name);
        const failures: string[] = [];
        for (const device of ['cuda', 'cpu']) {
          const result = await withEngine(plan, loadOptions(device), (e) => e.run(batch));
          const worst = worstOf(names.map((out) => difference(result[out], expected.outputs[out])));
          const limit = device === 'cuda' ? TOLERANCE[precision] : CPU_TOLERANCE[precision];
          const minCosine = precision === 'fp16' ? MIN_COSINE : 0;
          record(`${name} ${precision} vs transformers`, device, worst.maxAbs, limit, worst.minCosine, minCosine);
          if (worst.maxAbs > limit) failures.push(`${device}: max |error| ${worst.maxAbs}`);
          if (worst.minCosine < minCosine) failures.push(`${device}: least row cosine ${worst.minCosine}`);
        }
        assert.deepEqual(failures, [], `${name} ${precision}`);
      });
    }
    it(`${name} fp8: CUDA and the CPU agree, and stay near transformers`, async () => {
      const plan = path.join(work, `${name}-fp8.plan`);
      await buildPlan(path.join(FIXTURES, name), plan, { precision: 'fp8' });
      const { expected, names, batch } = fixtureRun(name);
      const results: Record<string, Record<string, NativeOutput>> = {};
      for (const device of ['cuda', 'cpu']) {
        results[device] = await withEngine(plan, loadOptions(device), (e) => e.run(batch));
        const worst = worstOf(names.map((out) => difference(results[device][out], expected.outputs[out])));
        record(`${name} fp8 vs transformers`, device, worst.maxAbs, Infinity, worst.minCosine, FP8_MIN_COSINE);
        assert.ok(worst.minCosine >= FP8_MIN_COSINE, `${name} fp8 on ${device}: least row cosine ${worst.minCosine}`);
      }
      const agreement = compareOutputs(`${name} fp8`, results.cuda, results.cpu);
      record(`${name} fp8`, 'cuda vs cpu', agreement.maxAbs, Infinity, agreement.minCosine, FP8_AGREEMENT_COSINE);
      assert.ok(agreement.minCosine >= FP8_AGREEMENT_COSINE, `${name} fp8: least row cosine, CUDA vs CPU: ${agreement.minCosine}`);
    });
  }

  // hidden / heads: head dims 32, 64, 128 (the tuned paths) and 48 (the generic path).
  const shapes = [
    { hidden: 64, heads: 2, act: 'gelu' }, { hidden: 128, heads: 2, act: 'gelu_new' },
    { hidden: 256, heads: 2, act: 'relu' }, { hidden: 96, heads: 2, act: 'gelu' },
  ];
  for (const shape of shapes) {
    for (const precision of ['fp32', 'fp16', 'fp8'] as const) {
      it(`random batches up to 600 tokens a sequence: head_dim ${shape.hidden / shape.heads}, ${shape.act}, ${precision}`, async () => {
        const plan = await randomPlan(work, `random-${shape.hidden}-${shape.heads}-${shape.act}`, shape, precision);
        const label = `random d=${shape.hidden / shape.heads} ${shape.act} ${precision}`;
        await compareCudaWithCpu(`${label} short`, plan, randomBatch([1, 2, 17, 33, 5], 500, [], 1), precision);
        await compareCudaWithCpu(`${label} long`, plan, randomBatch([600, 513, 1, 64, 127], 500, [], 2), precision);
      });
    }
  }

  // 32 sequences of up to 128 tokens with 12 heads of 64: on an H100 or H200
  // the Hopper attention then takes both query tiles of a sequence in one
  // block (768 one-tile blocks would not fit one wave); lengths of 1-64
  // leave the second tile empty.
  it('many sequences of up to 128 tokens, 12 heads of 64 (fp16)', async () => {
    const plan = await randomPlan(work, 'random-768-12-gelu', { hidden: 768, heads: 12, act: 'gelu', layers: 1 }, 'fp16');
    const lengths = Array.from({ length: 32 }, (_, i) => (i === 0 ? 128 : 1 + ((i * 53) % 128)));
    await compareCudaWithCpu('32 sequences, d=64 fp16', plan, randomBatch(lengths, 500, [], 3, 8), 'fp16');
  });

  // One selected row with the logits alone, as a fill-mask request for one
  // [MASK] runs: what follows the last attention then runs as GEMMs of one
  // row (cuda/gemv.cu where tuning picks it), which the tests above do not
  // reach (more rows, or the full last layer for their other outputs).
  const oneRowShapes = [
    { hidden: 768, heads: 12, act: 'gelu', layers: 1 }, { hidden: 128, heads: 2, act: 'gelu_new' },
    { hidden: 256, heads: 2, act: 'relu' },
  ];
  for (const shape of oneRowShapes) {
    it(`one selected row, logits alone (fp16, hidden ${shape.hidden}, ${shape.act}): CUDA and the CPU agree, graphs on and off`, async () => {
      const plan = await randomPlan(work, `random-${shape.hidden}-${shape.heads}-${shape.act}`, shape, 'fp16');
      const { maxAbs: limit, minCosine } = CPU_AGREEMENT.fp16;
      for (const [i, lengths] of [[7], [128], [5, 40, 77]].entries()) {
        const batch = randomBatch(lengths, 500, ['logits'], 10 + i, 1);
        const cpu = await withEngine(plan, loadOptions('cpu'), (e) => e.run(batch));
        for (const cudaGraphs of [true, false]) {
          // Twice: with graphs on, the second run replays the first's recording.
          const runs = await withEngine(plan, loadOptions('cuda', { cudaGraphs }), async (e) => [await e.run(batch), await e.run(batch)]);
          for (const [n, gpu] of runs.entries()) {
            const label = `one row, hidden ${shape.hidden} ${shape.act}, ${lengths.length} sequences, graphs ${cudaGraphs ? 'on' : 'off'}, run ${n + 1}`;
            const worst = compareOutputs(label, gpu, cpu);
            record(label, 'cuda vs cpu', worst.maxAbs, limit, worst.minCosine, minCosine);
            assert.ok(worst.maxAbs <= limit && worst.minCosine >= minCosine, `${label}: ${worst.maxAbs}, cosine ${worst.minCosine}`);
          }
        }
      }
    });
  }

  for (const precision of ['fp32', 'fp16', 'fp8'] as const) {
    it(`CUDA graphs (${precision}): replays equal eager launches bit for bit, for every size in a bucket`, async () => {
      const plan = await randomPlan(work, 'graphs-128-2-gelu', { hidden: 128, heads: 2, act: 'gelu' }, precision);
      const on = await addon.loadEngine(plan, loadOptions('cuda', { maxTokens: 1024, maxSequences: 16, maxSelectedRows: 64 }));
      const off = await addon.loadEngine(plan, loadOptions('cuda', { maxTokens: 1024, maxSequences: 16, maxSelectedRows: 64, cudaGraphs: false }));
      const cpu = await addon.loadEngine(plan, loadOptions('cpu', { maxTokens: 1024, maxSequences: 16, maxSelectedRows: 64 }));
      try {
        const all = outputNames(on);
        // Buckets: tokens 65..128 share one, sequences 3..4 and selected 3..4 too;
        // others in between, then the first bucket again (replayed after others).
        const batches: Array<[string, NativeRunRequest]> = [
          ['T=70 B=2 S=3', randomBatch([30, 40], 500, all, 11, 3)],
          ['T=65 B=3 S=4', randomBatch([50, 10, 5], 500, all, 12, 4)],
          ['T=128 B=4 S=3', randomBatch([32, 32, 32, 32], 500, all, 13, 3)],
          ['T=128 B=1 S=1', randomBatch([128], 500, all, 14, 1)],
          ['T=300 B=2 S=0', randomBatch([200, 100], 500, all.filter((n) => n !== 'logits'), 15, 0)],
          ['T=1000 B=16 S=64', randomBatch(Array.from({ length: 16 }, (_, i) => 25 + 5 * i), 500, all, 16, 64)],
          ['T=100 B=3 S=4', randomBatch([1, 98, 1], 500, all, 17, 4)],
          ['T=70 B=2 S=3, hidden only', randomBatch([35, 35], 500, ['hidden'], 18, 3)],
          ['T=127 B=4 no type ids', { ...randomBatch([60, 60, 6, 1], 500, all, 19, 2), tokenTypeIds: undefined }],
          ['T=70 B=2 S=3 again', randomBatch([30, 40], 500, all, 11, 3)],
        ];
        let worstVsCpu = 0;
        let worstCosine = 1;
        for (const [label, batch] of batches) {
          const first = await on.run(batch);
          const replay = await on.run(batch);
          const eager = await off.run(batch);
          const reference = await cpu.run(batch);
          for (const [what, other] of [['replay', replay], ['graphs off', eager]] as const) {
            const d = compareOutputs(`${label} ${what}`, other, first);
            assert.equal(d.maxAbs, 0, `${precision} ${label}: ${what} differs from the first run by ${d.maxAbs}`);
          }
          assert.deepEqual(Object.keys(first).sort(), [...batch.outputs].sort(), `${label}: outputs`);
          const d = compareOutputs(`${label} vs cpu`, first, reference);
          worstVsCpu = Math.max(worstVsCpu, d.maxAbs);
          worstCosine = Math.min(worstCosine, d.minCosine);
        }
        const { maxAbs: limit, minCosine } = CPU_AGREEMENT[precision];
        record(`graphs ${precision}: on = off = replay`, 'cuda', 0, 0);
        record(`graphs ${precision}: bucketed runs vs cpu`, 'cuda vs cpu', worstVsCpu, limit,
          precision === 'fp32' ? NaN : worstCosine, minCosine);
        assert.ok(worstVsCpu <= limit, `${precision}: bucketed runs differ from the CPU by ${worstVsCpu}`);
        assert.ok(worstCosine >= minCosine, `${precision}: least row cosine ${worstCosine}`);
      } finally {
        await Promise.all([on.dispose(), off.dispose(), cpu.dispose()]);
      }
    });
  }

  for (const precision of ['fp32', 'fp16'] as const) {
    it(`full outputs land in their results (${precision}): results held by JS stay intact while later runs of the shape replay`, async () => {
      // hidden is 128 wide: 1000 tokens are 500 KB of output, above
      // OutputBuffer::kPooledBytes, so each run's copy engine writes its own
      // page-locked result; every batch is in the 1024-token bucket, so all
      // runs after the first replay one graph whose copy is re-pointed.
      const plan = await randomPlan(work, 'graphs-128-2-gelu', { hidden: 128, heads: 2, act: 'gelu' }, precision);
      const limits = { maxTokens: 1024, maxSequences: 16, maxSelectedRows: 64 };
      const on = await addon.loadEngine(plan, loadOptions('cuda', limits));
      const off = await addon.loadEngine(plan, loadOptions('cuda', { ...limits, cudaGraphs: false }));
      try {
        const batches = [[500, 500], [400, 600], [300, 300, 400], [333, 333, 334], [600, 390, 20]].map(
          (lengths, i) => randomBatch(lengths, 500, ['hidden', 'logits'], 40 + i, 8));
        const held = [];
        for (const batch of batches) held.push(await on.run(batch));
        held.push(await on.run(batches[0]));
        for (const [i, result] of held.entries()) {
          // hidden lands; logits (8 rows x 500, 16 KB) are below OutputBuffer::kPinnedMinBytes and come through staging.
          assert.equal(runTiming(result)?.landedOutputs, 1, `${precision}: run ${i} did not land its hidden states`);
        }
        for (const [i, batch] of batches.entries()) {
          const eager = await off.run(batch);
          const d = compareOutputs(`landed run ${i}`, held[i], eager);
          assert.equal(d.maxAbs, 0, `${precision}: run ${i}, held while later runs replayed, differs from graphs off by ${d.maxAbs}`);
        }
        assert.equal(compareOutputs('landed again', held[batches.length], held[0]).maxAbs, 0, 'a replay of the first batch differs');
        // 40 selected rows: the 64-row launch's logits are 128 KB, above
        // kPinnedMinBytes, so they land too, eagerly and on a replay.
        const wide = randomBatch([500, 500], 500, ['hidden', 'logits'], 60, 40);
        const wideRuns = [await on.run(wide), await on.run(wide)];
        const wideEager = await off.run(wide);
        for (const [i, result] of wideRuns.entries()) {
          assert.equal(runTiming(result)?.landedOutputs, 2, `${precision}: 40-row run ${i} did not land both outputs`);
          assert.equal(compareOutputs(`40 rows, run ${i}`, result, wideEager).maxAbs, 0, `${precision}: 40-row run ${i} differs from graphs off`);
        }
        assert.ok(compareOutputs('landed 0 vs 1', held[1], held[0]).maxAbs > 0, 'two different batches gave one result');
        record(`landed outputs ${precision}: held results = graphs off`, 'cuda', 0, 0);
      } finally {
        await Promise.all([on.dispose(), off.dispose()]);
      }
    });
  }

  it('turns a device allocation failure into E_OOM and keeps working', async () => {
    const plan = path.join(work, `${index.fixtures[0].name}-oom.plan`);
    await buildPlan(path.join(FIXTURES, index.fixtures[0].name), plan, { precision: 'fp32' });
    const before = addon.nativeMemoryBytes();
    const code = await rejectionCode(addon.loadEngine(plan, { device: 'cuda', maxTokens: 2 ** 31 - 1 }));
    record('huge maxTokens', 'cuda', code === 'E_OOM' ? 0 : Infinity, 0);
    assert.equal(code, 'E_OOM');
    assert.equal(addon.nativeMemoryBytes(), before, 'memory of the failed load was not returned');
    assert.equal(await rejectionCode(addon.loadEngine(plan, { device: 'cuda:99' })), 'E_BACKEND');
    const result = await withEngine(plan, loadOptions('cuda'), (e) => e.run({ inputIds: Int32Array.from([1, 2, 3]), cuSeqlens: Int32Array.from([0, 3]), outputs: ['hidden'] }));
    assert.ok(result.hidden.data.every(Number.isFinite));
  });
});
