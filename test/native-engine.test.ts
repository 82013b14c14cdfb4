/**
 * The native engine through the raw addon: numerics against a float64
 * reference, input validation, concurrency, disposal and memory accounting.
 */
import * as assert from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runTiming } from '../src/engine/run-result';
import { addon, rejectionCode, type NativeEngine, type NativeRunRequest } from './support/native-addon';
import { OUTPUTS, TINY, makeTinyBert, referenceRun, writeTinyBertPlan, type ReferenceBatch, type TinyBertModel } from './support/tiny-bert-plan';

const MAX_TOKENS = 64;
const MAX_SEQUENCES = 8;
const LOAD_OPTIONS = { device: 'cpu', threads: 2, maxTokens: MAX_TOKENS, maxSequences: MAX_SEQUENCES };

// Sequences of 5, 1, 9 and 3 tokens: uneven, including a single-token one.
const UNEVEN: ReferenceBatch = {
  inputIds: [2, 7, 13, 49, 3, 4, 11, 0, 1, 5, 8, 21, 34, 44, 45, 17, 9, 30],
  tokenTypeIds: [0, 0, 1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 1, 1, 0],
  cuSeqlens: [0, 5, 6, 15, 18],
  selectedRows: [2, 5, 14, 17, 2],
};

function toRequest(batch: ReferenceBatch, outputs: string[] = [...OUTPUTS]): NativeRunRequest {
  return {
    inputIds: Int32Array.from(batch.inputIds),
    tokenTypeIds: batch.tokenTypeIds ? Int32Array.from(batch.tokenTypeIds) : undefined,
    cuSeqlens: Int32Array.from(batch.cuSeqlens),
    selectedRows: Int32Array.from(batch.selectedRows),
    outputs,
  };
}

function assertMatchesReference(model: TinyBertModel, batch: ReferenceBatch, actual: Awaited<ReturnType<NativeEngine['run']>>) {
  const expected = referenceRun(model, batch);
  for (const name of OUTPUTS) {
    const a = actual[name];
    const e = expected[name];
    assert.ok(a, `output ${name} is missing`);
    assert.strictEqual(a.rows, e.rows, `${name} rows`);
    assert.strictEqual(a.cols, e.cols, `${name} cols`);
    assert.ok(a.data instanceof Float32Array);
    assert.strictEqual(a.data.length, e.data.length);
    let worst = 0;
    for (let i = 0; i < e.data.length; i++) worst = Math.max(worst, Math.abs(a.data[i] - e.data[i]));
    assert.ok(worst < 1e-4, `${name}: max abs error ${worst}`);
  }
}

function batchOf(lengths: number[], seed: number): ReferenceBatch {
  const inputIds: number[] = [];
  const tokenTypeIds: number[] = [];
  const cuSeqlens = [0];
  for (const length of lengths) {
    for (let i = 0; i < length; i++) {
      inputIds.push((seed * 7 + inputIds.length * 13) % TINY.vocab);
      tokenTypeIds.push(i >= length / 2 ? 1 : 0);
    }
    cuSeqlens.push(inputIds.length);
  }
  return { inputIds, tokenTypeIds, cuSeqlens, selectedRows: [0, inputIds.length - 1] };
}

describe('native engine', function () {
  this.timeout(60000);
  let dir: string;
  let model: TinyBertModel;
  let planPath: string;
  let engine: NativeEngine;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-native-'));
    model = makeTinyBert({ seed: 7 });
    planPath = path.join(dir, 'tiny.plan');
    writeTinyBertPlan(planPath, model);
    engine = await addon.loadEngine(planPath, LOAD_OPTIONS);
  });

  after(async () => {
    await engine?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reports its backends and GEMM implementation', () => {
    // CUDA is listed first when the addon was built with it and a GPU it runs on is present.
    const backends = addon.backends();
    assert.deepStrictEqual(backends, backends.includes('cuda') ? ['cuda', 'cpu'] : ['cpu']);
    assert.ok(['openblas', 'builtin'].includes(addon.gemmImplementation()));
  });

  it('lists the CUDA devices it sees, and CUDA as a backend only with one its kernels run on', () => {
    const devices = addon.cudaDevices();
    devices.forEach((device, i) => {
      assert.equal(device.ordinal, i);
      assert.ok(device.name.length > 0);
      assert.match(device.computeCapability, /^\d+\.\d$/);
      const [major, minor] = device.computeCapability.split('.').map(Number);
      if (major * 10 + minor >= 80) {
        assert.equal(device.unsupported, '');
      } else {
        assert.match(device.unsupported, new RegExp(`^cuda:${i} \\(.+\\) has compute capability ${major}\\.${minor}; .*8\\.0 or newer`));
      }
    });
    assert.equal(addon.backends().includes('cuda'), devices.some((device) => device.unsupported === ''));
    // With a device listed, CUDA started.
    if (devices.length > 0) assert.equal(addon.cudaUnavailable(), '');
  });

  it('describes the loaded engine', () => {
    const info = engine.info();
    assert.strictEqual(info.backend, 'cpu');
    assert.strictEqual(info.threads, 2);
    assert.strictEqual(info.maxTokens, MAX_TOKENS);
    assert.strictEqual(info.maxSequences, MAX_SEQUENCES);
    const usedFloats = [...model.weights.values()].reduce((a, w) => a + w.length, 0);
    assert.ok(info.weightBytes >= usedFloats * 4 && info.weightBytes < usedFloats * 4 + 64 * model.weights.size);
    assert.ok(info.workspaceBytes >= MAX_TOKENS * (TINY.hidden * 7 + TINY.intermediate + TINY.vocab) * 4);
    assert.strictEqual(JSON.parse(info.headerJson).ops.length, model.header.ops.length);
  });

  it('matches a float64 reference on uneven sequences', async () => {
    assertMatchesReference(model, UNEVEN, await engine.run(toRequest(UNEVEN)));
  });

  it('says where a run spent its host time, phase by phase, within its wall time', async () => {
    const start = process.hrtime.bigint();
    const result = await engine.run(toRequest(UNEVEN));
    const wallUs = Number(process.hrtime.bigint() - start) / 1e3;
    const timing = runTiming(result);
    assert.ok(timing, 'the result has a timing');
    assert.deepStrictEqual(Object.keys(result).sort(), [...OUTPUTS].sort(), 'timing is not an output');
    const phases = ['queueUs', 'validateUs', 'contextWaitUs', 'stageUs', 'launchUs', 'deviceWaitUs', 'collectUs', 'deliverUs'] as const;
    for (const phase of phases) assert.ok(Number.isFinite(timing[phase]) && timing[phase] >= 0, `${phase} = ${timing[phase]}`);
    const sum = phases.reduce((n, phase) => n + timing[phase], 0);
    assert.ok(sum <= wallUs, `phases add up to ${sum} us, more than the ${wallUs} us the run took`);
    // The CPU computes while the run is issued, on a worker: that phase holds the work.
    assert.ok(timing.launchUs > 0, 'the CPU backend computes in launch');
    assert.strictEqual(timing.issuedOnJsThread, false);
    assert.strictEqual(timing.spinWait, false, 'the CPU backend always finishes on a worker');
    assert.ok(timing.jsThreadUs > 0 && timing.jsThreadUs < wallUs, `JS thread ${timing.jsThreadUs} us of ${wallUs}`);
    assert.strictEqual(timing.landedOutputs, 0, 'only a GPU lands outputs in their results');
  });

  it('treats missing token type ids as zeros and returns only the outputs asked for', async () => {
    const batch = { ...UNEVEN, tokenTypeIds: undefined };
    const pooled = await engine.run(toRequest(batch, ['pooled']));
    assert.deepStrictEqual(Object.keys(pooled), ['pooled']);
    const zeros = { ...UNEVEN, tokenTypeIds: UNEVEN.inputIds.map(() => 0) };
    const expected = referenceRun(model, zeros).pooled;
    for (let i = 0; i < expected.data.length; i++) assert.ok(Math.abs(pooled.pooled.data[i] - expected.data[i]) < 1e-4);
  });

  it('returns zero rows for selected outputs when no rows are selected', async () => {
    const result = await engine.run({ ...toRequest(UNEVEN, ['logits', 'pooled']), selectedRows: undefined });
    assert.strictEqual(result.logits.rows, 0);
    assert.strictEqual(result.logits.data.length, 0);
    assert.strictEqual(result.pooled.rows, 4);
  });

  it('rejects each wrong run input with the right code', async () => {
    const good = toRequest(UNEVEN);
    const T = UNEVEN.inputIds.length;
    const cases: [string, unknown, string][] = [
      ['ids as Float32Array', { ...good, inputIds: Float32Array.from(UNEVEN.inputIds) }, 'E_INPUT'],
      ['ids missing', { ...good, inputIds: undefined }, 'E_INPUT'],
      ['no batch object', undefined, 'E_INPUT'],
      ['empty ids', { ...good, inputIds: new Int32Array(0), cuSeqlens: Int32Array.from([0]) }, 'E_INPUT'],
      ['id = vocab', { ...good, inputIds: good.inputIds.map((v, i) => (i === 3 ? TINY.vocab : v)) }, 'E_INPUT'],
      ['id < 0', { ...good, inputIds: good.inputIds.map((v, i) => (i === 0 ? -1 : v)) }, 'E_INPUT'],
      ['type id = typeVocab', { ...good, tokenTypeIds: good.tokenTypeIds!.map((v, i) => (i === 1 ? 2 : v)) }, 'E_INPUT'],
      ['type ids too short', { ...good, tokenTypeIds: good.tokenTypeIds!.subarray(1) }, 'E_INPUT'],
      ['cu_seqlens as a plain array', { ...good, cuSeqlens: [0, 5, 6, 15, 18] }, 'E_INPUT'],
      ['cu_seqlens of one entry', { ...good, cuSeqlens: Int32Array.from([0]) }, 'E_INPUT'],
      ['cu_seqlens not starting at 0', { ...good, cuSeqlens: Int32Array.from([1, 5, 6, 15, 18]) }, 'E_INPUT'],
      ['cu_seqlens not increasing', { ...good, cuSeqlens: Int32Array.from([0, 5, 5, 15, 18]) }, 'E_INPUT'],
      ['cu_seqlens decreasing', { ...good, cuSeqlens: Int32Array.from([0, 6, 5, 15, 18]) }, 'E_INPUT'],
      ['cu_seqlens not ending at T', { ...good, cuSeqlens: Int32Array.from([0, 5, 6, 15, 17]) }, 'E_INPUT'],
      ['cu_seqlens beyond T', { ...good, cuSeqlens: Int32Array.from([0, 5, 6, 19, 18]) }, 'E_INPUT'],
      ['sequence longer than maxSeq', { ...toRequest(batchOf([TINY.maxSeq + 1], 1)) }, 'E_SHAPE'],
      ['more tokens than maxTokens', { ...toRequest(batchOf([16, 16, 16, 16, 1], 1)) }, 'E_SHAPE'],
      ['more sequences than maxSequences', { ...toRequest(batchOf(new Array(MAX_SEQUENCES + 1).fill(2), 1)) }, 'E_SHAPE'],
      ['selected row = T', { ...good, selectedRows: Int32Array.from([0, T]) }, 'E_INPUT'],
      ['selected row < 0', { ...good, selectedRows: Int32Array.from([-1]) }, 'E_INPUT'],
      ['more selected rows than maxTokens', { ...good, selectedRows: new Int32Array(MAX_TOKENS + 1) }, 'E_SHAPE'],
      ['unknown output', { ...good, outputs: ['hidden', 'nope'] }, 'E_INPUT'],
      ['output twice', { ...good, outputs: ['hidden', 'hidden'] }, 'E_INPUT'],
      ['no outputs', { ...good, outputs: [] }, 'E_INPUT'],
      ['outputs not an array', { ...good, outputs: 'hidden' }, 'E_INPUT'],
      ['output name not a string', { ...good, outputs: [3] }, 'E_INPUT'],
    ];
    for (const [what, request, code] of cases) {
      assert.strictEqual(await rejectionCode(engine.run(request as NativeRunRequest)), code, what);
    }
    // The engine is unharmed by all of that.
    assertMatchesReference(model, UNEVEN, await engine.run(toRequest(UNEVEN)));
  });

  it('gives concurrent runs the results of sequential ones', async () => {
    const batches = [[3, 7], [16], [1, 1, 1], [5, 9, 2, 4], [12, 12, 12], [2], [8, 8, 8, 8, 8], [1, 15]]
      .map((lengths, i) => batchOf(lengths, i));
    const sequential: Awaited<ReturnType<NativeEngine['run']>>[] = [];
    for (const b of batches) sequential.push(await engine.run(toRequest(b)));
    const concurrent = await Promise.all(batches.map((b) => engine.run(toRequest(b))));
    concurrent.forEach((result, i) => {
      for (const name of OUTPUTS) assert.deepStrictEqual(result[name], sequential[i][name], `batch ${i} ${name}`);
    });
    assertMatchesReference(model, batches[3], concurrent[3]);
  });

  it('waits for runs in flight when disposed, then rejects later runs', async () => {
    const start = addon.nativeMemoryBytes();
    const local = await addon.loadEngine(planPath, LOAD_OPTIONS);
    const info = local.info();
    assert.strictEqual(addon.nativeMemoryBytes(), start + info.weightBytes + info.workspaceBytes);
    const settled: string[] = [];
    const runs = [0, 1, 2, 3].map((i) => local.run(toRequest(UNEVEN)).then((r) => {
      settled.push(`run${i}`);
      return r;
    }));
    const disposed = local.dispose().then(() => settled.push('dispose'));
    assert.strictEqual(await rejectionCode(local.run(toRequest(UNEVEN))), 'E_DISPOSED');
    const results = await Promise.all(runs);
    await disposed;
    assert.strictEqual(settled[settled.length - 1], 'dispose');
    for (const r of results) assertMatchesReference(model, UNEVEN, r);
    assert.strictEqual(addon.nativeMemoryBytes(), start);
  });

  it('can be disposed twice; run and info fail afterwards with E_DISPOSED', async () => {
    const local = await addon.loadEngine(planPath, LOAD_OPTIONS);
    await Promise.all([local.dispose(), local.dispose()]);
    await local.dispose();
    assert.strictEqual(await rejectionCode(local.run(toRequest(UNEVEN))), 'E_DISPOSED');
    assert.throws(() => local.info(), (e: Error & { code?: string }) => e.code === 'E_DISPOSED');
  });

  it('rejects with E_DISPOSED, without crashing, a run whose batch getters dispose the engine', async () => {
    const local = await addon.loadEngine(planPath, LOAD_OPTIONS);
    const request = toRequest(UNEVEN);
    const disposing = {
      ...request,
      get outputs() {
        void local.dispose();
        return request.outputs;
      },
    };
    assert.strictEqual(await rejectionCode(local.run(disposing)), 'E_DISPOSED');
  });

  it('widens fp16 weights to fp32 correctly', async () => {
    const halfModel = makeTinyBert({ seed: 11, precision: 'fp16' });
    const halfPath = path.join(dir, 'tiny-fp16.plan');
    writeTinyBertPlan(halfPath, halfModel);
    const half = await addon.loadEngine(halfPath, LOAD_OPTIONS);
    try {
      const floats = [...halfModel.weights.values()].reduce((a, w) => a + w.length, 0);
      assert.ok(half.info().weightBytes >= floats * 4);
      assertMatchesReference(halfModel, UNEVEN, await half.run(toRequest(UNEVEN)));
    } finally {
      await half.dispose();
    }
  });

  it('returns native memory to its start value after 50 load/dispose cycles', async () => {
    const start = addon.nativeMemoryBytes();
    for (let i = 0; i < 50; i++) {
      const local = await addon.loadEngine(planPath, { ...LOAD_OPTIONS, threads: 1 });
      assert.ok(addon.nativeMemoryBytes() > start);
      if (i % 10 === 0) await local.run(toRequest(UNEVEN));
      await local.dispose();
    }
    assert.strictEqual(addon.nativeMemoryBytes(), start);
  });

  it('loads a plan given as bytes exactly like the same plan given as a path', async () => {
    const fromBytes = await addon.loadEngine(new Uint8Array(fs.readFileSync(planPath)), LOAD_OPTIONS);
    try {
      assert.deepStrictEqual(fromBytes.info(), engine.info());
      const a = await fromBytes.run(toRequest(UNEVEN));
      const b = await engine.run(toRequest(UNEVEN));
      for (const name of OUTPUTS) assert.deepStrictEqual(a[name], b[name]);
    } finally {
      await fromBytes.dispose();
    }
  });

  it('loads the addon build FUSEDRT_ADDON names (a sanitizer build), and names it when it cannot', () => {
    const native = path.join(__dirname, '..', 'src', 'engine', 'native.js');
    const load = (file: string) => spawnSync(process.execPath,
      ['-e', `console.log(require(${JSON.stringify(native)}).loadAddon().backends().join(','))`],
      { env: { ...process.env, FUSEDRT_ADDON: file }, encoding: 'utf8' });
    const built = path.join(__dirname, '..', '..', 'build', 'Release', 'fusedrt.node');
    const copy = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-addon-')), 'other.node');
    fs.copyFileSync(built, copy);
    const loaded = load(copy);
    assert.strictEqual(loaded.status, 0, loaded.stderr);
    assert.match(loaded.stdout, /cpu/);
    const missing = load('/nonexistent/fusedrt.node');
    assert.notStrictEqual(missing.status, 0);
    assert.match(missing.stderr, /E_NATIVE[\s\S]*\/nonexistent\/fusedrt\.node/);
  });

  it('rejects bad load arguments with stable codes', async () => {
    const missingDevice = addon.backends().includes('cuda') ? 'cuda:99' : 'cuda';
    assert.strictEqual(await rejectionCode(addon.loadEngine(planPath, { ...LOAD_OPTIONS, device: missingDevice })), 'E_BACKEND');
    assert.strictEqual(await rejectionCode(addon.loadEngine(planPath, { ...LOAD_OPTIONS, device: 'gpu' })), 'E_INPUT');
    assert.strictEqual(await rejectionCode(addon.loadEngine(path.join(dir, 'missing.plan'), LOAD_OPTIONS)), 'E_PLAN_IO');
    assert.strictEqual(await rejectionCode(addon.loadEngine(dir, LOAD_OPTIONS)), 'E_PLAN_IO');
    assert.strictEqual(await rejectionCode(addon.loadEngine(42 as unknown as string, LOAD_OPTIONS)), 'E_INPUT');
    assert.strictEqual(await rejectionCode(addon.loadEngine(planPath, { ...LOAD_OPTIONS, maxTokens: 0 })), 'E_INPUT');
    assert.strictEqual(await rejectionCode(addon.loadEngine(planPath, { ...LOAD_OPTIONS, threads: 1.5 })), 'E_INPUT');
    assert.strictEqual(await rejectionCode(addon.loadEngine(planPath, { ...LOAD_OPTIONS, cpuPriority: 'high' })), 'E_INPUT');
    // A workspace far larger than any machine: refused, not overcommitted.
    assert.strictEqual(await rejectionCode(addon.loadEngine(planPath, { ...LOAD_OPTIONS, maxTokens: 2 ** 31 - 1 })), 'E_OOM');
  });
});
