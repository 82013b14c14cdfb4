/**
 * The CUDA backend on a machine with a GPU (run by tools/device/gpu-check.sh;
 * named *.gpu.ts so the default suite, dist/test/**\/*.test.js, skips it):
 * every fixture of test/fixtures/bert on CUDA and on the CPU against
 * transformers, CUDA against the CPU on random batches (long sequences, head
 * dims 32/64/128 and an odd one, every activation), and an allocation failure
 * that must become E_OOM with the process still usable. Prints a table last.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../../src/build/builder';
import type { Precision } from '../../src/build/plan-types';
import { randomModelVocabulary } from '../../src/tools/demo-words';
import { writeRandomBertModel } from '../../src/tools/random-model';
import { addon, NativeEngine, NativeOutput, NativeRunRequest, rejectionCode } from '../support/native-addon';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures', 'bert');
const TOLERANCE: Record<Precision, number> = { fp32: 1e-4, fp16: 2e-2 };
/** CUDA against the CPU on the same plan: both fp32, different summation orders. */
const AGREEMENT = 1e-4;

interface Expected {
  inputs: { inputIds: number[]; tokenTypeIds: number[]; cuSeqlens: number[]; selectedRows: number[] };
  outputs: Record<string, { rows: number; cols: number; data: number[] }>;
}

const table: string[][] = [['check', 'backend', 'max |error|', 'limit', 'result']];
function record(check: string, backend: string, error: number, limit: number): void {
  table.push([check, backend, error.toExponential(2), limit.toExponential(0), error <= limit ? 'ok' : 'FAIL']);
}

function maxAbsDifference(got: ArrayLike<number>, want: ArrayLike<number>): number {
  assert.equal(got.length, want.length, 'output sizes differ');
  let worst = 0;
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    worst = Number.isNaN(d) ? Infinity : Math.max(worst, d);
  }
  return worst;
}

async function withEngine<T>(plan: string, device: string, use: (e: NativeEngine) => Promise<T>, maxTokens = 4096): Promise<T> {
  const engine = await addon.loadEngine(plan, { device, threads: os.availableParallelism(), maxTokens, maxSequences: 64 });
  try {
    assert.equal(engine.info().backend, device.startsWith('cuda') ? 'cuda' : 'cpu');
    return await use(engine);
  } finally {
    await engine.dispose();
  }
}

/** Random packed batch: lengths in [1, maxLength], ids in [0, vocab), type ids 0/1, a few selected rows. */
function randomBatch(lengths: number[], vocab: number, outputs: string[], seed: number): NativeRunRequest {
  let state = seed >>> 0;
  const next = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state / 2 ** 32; };
  const tokens = lengths.reduce((a, b) => a + b, 0);
  const cuSeqlens = Int32Array.from([0, ...lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, b) => a + b, 0))]);
  return {
    inputIds: Int32Array.from({ length: tokens }, () => Math.floor(next() * vocab)),
    tokenTypeIds: Int32Array.from({ length: tokens }, () => (next() < 0.3 ? 1 : 0)),
    cuSeqlens,
    selectedRows: Int32Array.from([0, Math.floor(tokens / 2), tokens - 1]),
    outputs,
  };
}

function outputNames(engine: NativeEngine): string[] {
  return (JSON.parse(engine.info().headerJson) as { outputs: Array<{ name: string }> }).outputs.map((o) => o.name);
}

async function compareCudaWithCpu(label: string, plan: string, batch: NativeRunRequest): Promise<void> {
  const run = (device: string) => withEngine(plan, device, async (e) => e.run({ ...batch, outputs: outputNames(e) }));
  const [gpu, cpu]: Array<Record<string, NativeOutput>> = [await run('cuda'), await run('cpu')];
  let worst = 0;
  for (const name of Object.keys(cpu)) {
    assert.ok(gpu[name], `${label}: CUDA returned no "${name}"`);
    assert.deepEqual([gpu[name].rows, gpu[name].cols], [cpu[name].rows, cpu[name].cols], `${label}: shape of "${name}"`);
    worst = Math.max(worst, maxAbsDifference(gpu[name].data, cpu[name].data));
  }
  record(label, 'cuda vs cpu', worst, AGREEMENT);
  assert.ok(worst <= AGREEMENT, `${label}: CUDA and CPU differ by ${worst}`);
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

  it('lists cuda among the backends', () => {
    assert.deepEqual(addon.backends(), ['cuda', 'cpu']);
  });

  const index = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'index.json'), 'utf8')) as { fixtures: Array<{ name: string }> };
  for (const { name } of index.fixtures) {
    for (const precision of ['fp32', 'fp16'] as const) {
      it(`${name} ${precision}: CUDA and CPU match transformers`, async () => {
        const plan = path.join(work, `${name}-${precision}.plan`);
        await buildPlan(path.join(FIXTURES, name), plan, { precision });
        const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'expected.json'), 'utf8')) as Expected;
        const names = Object.keys(expected.outputs);
        const batch: NativeRunRequest = {
          inputIds: Int32Array.from(expected.inputs.inputIds),
          tokenTypeIds: Int32Array.from(expected.inputs.tokenTypeIds),
          cuSeqlens: Int32Array.from(expected.inputs.cuSeqlens),
          selectedRows: Int32Array.from(expected.inputs.selectedRows),
          outputs: names,
        };
        for (const device of ['cuda', 'cpu']) {
          const result = await withEngine(plan, device, (e) => e.run(batch));
          let worst = 0;
          for (const out of names) worst = Math.max(worst, maxAbsDifference(result[out].data, expected.outputs[out].data));
          record(`${name} ${precision} vs transformers`, device, worst, TOLERANCE[precision]);
          assert.ok(worst <= TOLERANCE[precision], `${name} ${precision} on ${device}: max |error| ${worst}`);
        }
      });
    }
  }

  // hidden / heads: head dims 32, 64, 128 (the tuned paths) and 48 (the generic path).
  const shapes = [
    { hidden: 64, heads: 2, act: 'gelu' }, { hidden: 128, heads: 2, act: 'gelu_new' },
    { hidden: 256, heads: 2, act: 'relu' }, { hidden: 96, heads: 2, act: 'gelu' },
  ];
  for (const { hidden, heads, act } of shapes) {
    it(`random batches up to 600 tokens a sequence: head_dim ${hidden / heads}, ${act}`, async () => {
      const dir = path.join(work, `random-${hidden}-${heads}-${act}`);
      writeRandomBertModel(dir, {
        architecture: 'BertForMaskedLM', hiddenSize: hidden, numLayers: 2, numHeads: heads, intermediateSize: 2 * hidden,
        maxPositions: 640, vocab: randomModelVocabulary().slice(0, 500), seed: hidden + heads,
      });
      const configPath = path.join(dir, 'config.json');
      const config = JSON.parse(fs.readFileSync(configPath, 'utf8')) as Record<string, unknown>;
      fs.writeFileSync(configPath, JSON.stringify({ ...config, hidden_act: act }));
      const plan = path.join(dir, 'model.plan');
      await buildPlan(dir, plan, { precision: 'fp32' });
      const label = `random d=${hidden / heads} ${act}`;
      await compareCudaWithCpu(`${label} short`, plan, randomBatch([1, 2, 17, 33, 5], 500, [], 1));
      await compareCudaWithCpu(`${label} long`, plan, randomBatch([600, 513, 1, 64, 127], 500, [], 2));
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
    const result = await withEngine(plan, 'cuda', (e) => e.run({ inputIds: Int32Array.from([1, 2, 3]), cuSeqlens: Int32Array.from([0, 3]), outputs: ['hidden'] }));
    assert.ok(result.hidden.data.every(Number.isFinite));
  });
});
