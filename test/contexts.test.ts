/**
 * Execution contexts on the CPU (docs/runtime.md, "Concurrency"): the
 * `contexts` option through the raw addon, the Engine and the fusedrt-engine
 * node; what info reports; memory per context; and concurrent runs on
 * several contexts giving exactly the results of sequential ones. The GPU
 * side is test/gpu/contexts.gpu.ts.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { Engine, MAX_CONTEXTS } from '../src/engine/engine';
import { packEncodings } from '../src/engine/pack';
import type { EngineInfo } from '../src/engine/types';
import { addon, rejectionCode, type NativeEngine, type NativeLoadOptions, type NativeOutput, type NativeRunRequest } from './support/native-addon';
import { helper, loggedBy } from './support/red-helper';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'bert', 'tiny32-mlm');
/** transformers' fp32 outputs against ours, as in test/numerics.test.ts. */
const TOLERANCE = 1e-4;

type LoadOptions = NativeLoadOptions & { contexts?: unknown };
/** What info() adds for contexts; the rest is typed in support/native-addon.ts. */
type ContextInfo = Pick<EngineInfo, 'contexts' | 'contextsOverlap' | 'device'>;

const LOAD: LoadOptions = { device: 'cpu', threads: 2, maxTokens: 256, maxSequences: 16 };

function contextInfo(engine: NativeEngine): ContextInfo {
  const { contexts, contextsOverlap, device } = engine.info() as unknown as ContextInfo;
  return { contexts, contextsOverlap, device };
}

interface Expected {
  inputs: { inputIds: number[]; tokenTypeIds: number[]; cuSeqlens: number[]; selectedRows: number[] };
  outputs: Record<string, { rows: number; cols: number; data: number[] }>;
}

/** A batch of sequences of the given lengths, ids from a seeded LCG, the last token of each sequence selected. */
function batchOf(lengths: number[], seed: number, vocab: number): NativeRunRequest {
  let state = seed >>> 0;
  const next = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state; };
  const ends = lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, b) => a + b, 0));
  const tokens = ends[ends.length - 1];
  return {
    inputIds: Int32Array.from({ length: tokens }, () => next() % vocab),
    cuSeqlens: Int32Array.from([0, ...ends]),
    selectedRows: Int32Array.from(ends.map((end) => end - 1)),
    outputs: ['hidden', 'logits'],
  };
}

describe('execution contexts (CPU)', function () {
  this.timeout(120000);
  let dir: string;
  let plan: string;
  let expected: Expected;
  let vocab: number;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-contexts-'));
    plan = path.join(dir, 'tiny32-mlm.plan');
    const header = await buildPlan(FIXTURE, plan, { precision: 'fp32' });
    vocab = header.config.vocabSize;
    expected = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'expected.json'), 'utf8')) as Expected;
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('rejects sizes outside 1..2^24 with E_INPUT naming the range', async () => {
    for (const [option, bad] of [['maxTokens', 2 ** 31 - 1], ['maxTokens', 0], ['maxSequences', 1.5], ['maxSelectedRows', 2 ** 24 + 1]] as const) {
      await assert.rejects(Engine.load(plan, { device: 'cpu', [option]: bad }), (e: Error & { code?: string }) =>
        e.code === 'E_INPUT' && e.message === `${option} must be an integer from 1 to 16777216, got ${bad}`);
    }
  });

  it('reports its contexts; each has its own workspace, all of it freed on dispose', async () => {
    const start = addon.nativeMemoryBytes();
    const one = await addon.loadEngine(plan, LOAD);
    const three = await addon.loadEngine(plan, { ...LOAD, contexts: 3 } as LoadOptions);
    try {
      assert.deepEqual(contextInfo(one), { contexts: 1, contextsOverlap: false, device: undefined });
      assert.deepEqual(contextInfo(three), { contexts: 3, contextsOverlap: false, device: undefined });
      assert.equal(three.info().workspaceBytes, 3 * one.info().workspaceBytes);
      assert.equal(three.info().weightBytes, one.info().weightBytes);
      const total = [one, three].reduce((n, e) => n + e.info().weightBytes + e.info().workspaceBytes, 0);
      assert.equal(addon.nativeMemoryBytes(), start + total);
    } finally {
      await Promise.all([one.dispose(), three.dispose()]);
    }
    assert.equal(addon.nativeMemoryBytes(), start);
  });

  it('accepts contexts from 1 to 16 and rejects anything else with E_INPUT', async () => {
    for (const bad of [0, MAX_CONTEXTS + 1, -1, 1.5, NaN, '2', null]) {
      assert.equal(await rejectionCode(addon.loadEngine(plan, { ...LOAD, contexts: bad } as LoadOptions)), 'E_INPUT', `contexts ${String(bad)}`);
    }
    const most = await addon.loadEngine(plan, { ...LOAD, contexts: MAX_CONTEXTS } as LoadOptions);
    assert.equal(contextInfo(most).contexts, MAX_CONTEXTS);
    await most.dispose();
    for (const bad of [0, MAX_CONTEXTS + 1, 2.5]) {
      await assert.rejects(Engine.load(plan, { device: 'cpu', contexts: bad }), (e: Error & { code?: string }) => e.code === 'E_INPUT' && /contexts/.test(e.message));
    }
  });

  it('gives concurrent runs on 3 contexts exactly the results of sequential runs', async () => {
    const fixture: NativeRunRequest = {
      inputIds: Int32Array.from(expected.inputs.inputIds),
      tokenTypeIds: Int32Array.from(expected.inputs.tokenTypeIds),
      cuSeqlens: Int32Array.from(expected.inputs.cuSeqlens),
      selectedRows: Int32Array.from(expected.inputs.selectedRows),
      outputs: ['hidden', 'logits'],
    };
    // Different shapes, so a run reading another context's buffers could not go unnoticed.
    const batches = [fixture, ...[[3, 7], [16], [1, 1, 1], [5, 9, 2, 4], [12, 12, 12], [2], [8, 8, 8, 8, 8], [1, 15], [30, 2], [4, 4]]
      .map((lengths, i) => batchOf(lengths, i + 1, vocab))];
    const engine = await addon.loadEngine(plan, { ...LOAD, contexts: 3 } as LoadOptions);
    try {
      const sequential: Record<string, NativeOutput>[] = [];
      for (const b of batches) sequential.push(await engine.run(b));
      for (let round = 0; round < 3; round++) {
        const concurrent = await Promise.all(batches.map((b) => engine.run(b)));
        concurrent.forEach((result, i) => assert.deepEqual(result, sequential[i], `round ${round}, batch ${i}`));
      }
      for (const [name, want] of Object.entries(expected.outputs)) {
        const got = sequential[0][name];
        assert.deepEqual([got.rows, got.cols], [want.rows, want.cols], name);
        const worst = want.data.reduce((w, v, i) => Math.max(w, Math.abs(got.data[i] - v)), 0);
        assert.ok(worst <= TOLERANCE, `${name}: max |error| ${worst} against transformers`);
      }
    } finally {
      await engine.dispose();
    }
  });

  it('passes contexts through the Engine, which leaves the default to the backend', async () => {
    const engine = await Engine.load(plan, { device: 'cpu', threads: 2, contexts: 2 });
    const plain = await Engine.load(plan, { device: 'cpu', threads: 2 });
    try {
      assert.equal(engine.info.contexts, 2);
      assert.equal(engine.info.contextsOverlap, false);
      assert.equal(plain.info.contexts, 1);
      const texts = ['the first text', 'a second, longer text than the first one'];
      const { batch } = packEncodings(engine.tokenizer.encodeBatch(texts));
      const [a, b] = await Promise.all([engine.run({ ...batch, outputs: ['hidden'] }), plain.run({ ...batch, outputs: ['hidden'] })]);
      assert.deepEqual(a.hidden, b.hidden);
    } finally {
      await Promise.all([engine.dispose(), plain.dispose()]);
    }
  });
});

describe('fusedrt-engine contexts field (Node-RED runtime)', function () {
  this.timeout(120000);
  const NODES = ['fusedrt-engine', 'fusedrt-infer'].map((name) => require(path.join(__dirname, '..', 'nodes', name, name)));
  let dir: string;
  let plan: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-contexts-node-'));
    plan = path.join(dir, 'tiny32-mlm.plan');
    await buildPlan(FIXTURE, plan, { precision: 'fp32' });
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  afterEach(() => helper.unload());

  it('loads the engine with the contexts asked for and logs the backend that auto chose', async () => {
    await helper.load(NODES, [
      { id: 'tab', type: 'tab' },
      { id: 'engine', type: 'fusedrt-engine', model: plan, device: 'auto', threads: '2', contexts: '3', truncation: 'truncate' },
      { id: 'infer', z: 'tab', type: 'fusedrt-infer', engine: 'engine', outputs: 'list', outputNames: 'hidden', x: 0, y: 0, wires: [['out']] },
      { id: 'out', z: 'tab', type: 'helper', x: 0, y: 0 },
    ]);
    const received = new Promise<{ fusedrt: unknown }>((resolve, reject) => {
      helper.getNode('out').on('input', resolve as (msg: never) => void);
      helper.getNode('infer').on('call:error', ((call: { args: unknown[] }) => reject(call.args[0])) as (msg: never) => void);
    });
    helper.getNode('infer').receive({ payload: ['one text', 'and another'] });
    assert.ok((await received).fusedrt, 'the infer node sent no result');
    const logged = loggedBy('fusedrt-engine');
    const where = addon.backends().includes('cuda') ? /device auto runs on cuda:0 \(.+\), 3 execution context/ : /device auto runs on the CPU \(2 threads at background priority, GEMM \w+\), 3 execution context/;
    assert.ok(logged.some((line) => where.test(line)), `log lines: ${JSON.stringify(logged)}`);
  });
});
