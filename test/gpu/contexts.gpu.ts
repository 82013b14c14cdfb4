/**
 * Execution contexts and the shared device on a machine with a GPU (run by
 * tools/device/gpu-check.sh; docs/cuda.md, "Execution contexts" and "The
 * shared device"): engines on one GPU share its CudaDevice and info says so;
 * `auto` picks CUDA; runs in flight at once on two contexts (two streams)
 * give bit for bit the results of the same runs one after another, with
 * graphs on and off, fp32 and fp16; replayed runs are issued from the JS
 * thread (Runtime::try_issue), others on a worker; and the wall time of two overlapping
 * runs against one run, printed (no timing assertion: CONTRIBUTING.md).
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../../src/build/builder';
import type { Precision } from '../../src/build/plan-types';
import { Engine } from '../../src/engine/engine';
import { runTiming } from '../../src/engine/run-result';
import type { EngineInfo } from '../../src/engine/types';
import { randomModelVocabulary } from '../../src/tools/demo-words';
import { writeRandomBertModel } from '../../src/tools/random-model';
import { addon, type NativeEngine, type NativeLoadOptions, type NativeOutput, type NativeRunRequest } from '../support/native-addon';

type LoadOptions = NativeLoadOptions & { contexts?: number; cudaGraphs?: boolean; spinWait?: boolean };
type ContextInfo = Pick<EngineInfo, 'contexts' | 'contextsOverlap' | 'device'>;

const VOCAB = 500;
const TIMING_ROUNDS = 30;

function contextInfo(engine: NativeEngine): ContextInfo {
  const { contexts, contextsOverlap, device } = engine.info() as unknown as ContextInfo;
  return { contexts, contextsOverlap, device };
}

function load(plan: string, extra: LoadOptions = {}): Promise<NativeEngine> {
  return addon.loadEngine(plan, { device: 'cuda', maxTokens: 1024, maxSequences: 16, ...extra } as NativeLoadOptions);
}

/** Sequences of the given lengths, ids from a seeded LCG; every output of a BertModel plan. */
function batchOf(lengths: number[], seed: number): NativeRunRequest {
  let state = seed >>> 0;
  const next = () => { state = (Math.imul(state, 1664525) + 1013904223) >>> 0; return state; };
  const ends = lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, b) => a + b, 0));
  return {
    inputIds: Int32Array.from({ length: ends[ends.length - 1] }, () => next() % VOCAB),
    cuSeqlens: Int32Array.from([0, ...ends]),
    outputs: ['hidden', 'pooled'],
  };
}

function assertSame(got: Record<string, NativeOutput>, want: Record<string, NativeOutput>, label: string): void {
  assert.deepEqual(Object.keys(got).sort(), Object.keys(want).sort(), `${label}: outputs`);
  for (const name of Object.keys(want)) assert.deepEqual(got[name], want[name], `${label}: ${name} differs`);
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)];
}

async function wallMs(work: () => Promise<unknown>): Promise<number> {
  const start = process.hrtime.bigint();
  await work();
  return Number(process.hrtime.bigint() - start) / 1e6;
}

describe('execution contexts and the shared device (GPU machine)', function () {
  this.timeout(600_000);
  let work = '';
  const plans: Partial<Record<Precision, string>> = {};
  const table: string[][] = [['plan', 'contexts', 'one run (ms)', 'two overlapping (ms)', 'two / one']];

  before(async () => {
    work = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-contexts-gpu-'));
    const model = path.join(work, 'model');
    writeRandomBertModel(model, {
      architecture: 'BertModel', hiddenSize: 512, numLayers: 4, numHeads: 8, intermediateSize: 2048,
      maxPositions: 512, vocab: randomModelVocabulary().slice(0, VOCAB), seed: 5,
    });
    for (const precision of ['fp32', 'fp16'] as const) {
      plans[precision] = path.join(work, `model-${precision}.plan`);
      await buildPlan(model, plans[precision]!, { precision });
    }
  });

  after(() => {
    if (work) fs.rmSync(work, { recursive: true, force: true });
    const widths = table[0].map((_, c) => Math.max(...table.map((r) => r[c].length)));
    console.log(`\n${table.map((r) => r.map((v, c) => v.padEnd(widths[c])).join('  ')).join('\n')}`);
  });

  it('shares one device between the engines on a GPU, and counts them', async () => {
    const a = await load(plans.fp16!);
    const b = await load(plans.fp32!, { device: 'cuda:0' });
    try {
      const [ia, ib] = [contextInfo(a), contextInfo(b)];
      assert.equal(ia.contexts, 2, 'default contexts on CUDA');
      assert.equal(ia.contextsOverlap, true);
      assert.ok(ia.device && ib.device, 'no device in info');
      assert.equal(ia.device.engines, 2);
      assert.deepEqual(ib.device, ia.device);
      assert.equal(ia.device.ordinal, 0);
      assert.ok(ia.device.name.length > 0 && ia.device.multiprocessors > 0 && ia.device.memoryBytes > 0, JSON.stringify(ia.device));
      console.log(`    device: ${JSON.stringify(ia.device)}`);
    } finally {
      await b.dispose();
    }
    try {
      assert.equal(contextInfo(a).device?.engines, 1, 'after the other engine went');
    } finally {
      await a.dispose();
    }
    // The last engine took the device with it; a new one starts a new device.
    const c = await load(plans.fp16!, { contexts: 1 });
    assert.equal(contextInfo(c).device?.engines, 1);
    assert.equal(contextInfo(c).contexts, 1);
    await c.dispose();
  });

  it('picks CUDA for device auto and reports the GPU', async () => {
    const engine = await Engine.load(plans.fp16!, { device: 'auto', maxTokens: 256 });
    try {
      assert.equal(engine.info.backend, 'cuda');
      assert.equal(engine.info.contexts, 2);
      assert.equal(engine.info.device?.ordinal, 0);
      assert.equal(engine.info.passedOver, undefined);
    } finally {
      await engine.dispose();
    }
  });

  for (const precision of ['fp32', 'fp16'] as const) {
    for (const cudaGraphs of [true, false]) {
      it(`gives two runs in flight on two contexts the results of sequential runs (${precision}, graphs ${cudaGraphs ? 'on' : 'off'})`, async () => {
        const engine = await load(plans[precision]!, { contexts: 2, cudaGraphs });
        try {
          // Different launch shapes, and the same shape twice.
          const batches = [batchOf([128], 1), batchOf([40, 300, 7], 2), batchOf([128], 3), batchOf([1, 2, 3, 4, 5], 4)];
          const sequential: Record<string, NativeOutput>[] = [];
          for (const batch of batches) sequential.push(await engine.run(batch));
          // Round 0 records each context's graphs, later rounds replay them.
          for (let round = 0; round < 3; round++) {
            for (const [i, j] of [[0, 1], [0, 2], [3, 1], [2, 2]]) {
              const [x, y] = await Promise.all([engine.run(batches[i]), engine.run(batches[j])]);
              assertSame(x, sequential[i], `round ${round}: batch ${i} next to ${j}`);
              assertSame(y, sequential[j], `round ${round}: batch ${j} next to ${i}`);
            }
          }
        } finally {
          await engine.dispose();
        }
      });
    }
  }

  it('issues replayed runs from the JS thread, and goes through a worker otherwise, with the same results', async () => {
    const issuedOnJsThread = (result: object) => (runTiming(result) as { issuedOnJsThread?: boolean } | undefined)?.issuedOnJsThread;
    const batch = batchOf([100, 28], 21);
    for (const cudaGraphs of [true, false]) {
      const engine = await load(plans.fp16!, { contexts: 2, cudaGraphs });
      try {
        const first = await engine.run(batch);
        assert.equal(issuedOnJsThread(first), false, 'a first run records its graph on a worker');
        // Both contexts have recorded the shape once a pair of runs at once is
        // issued on the JS thread. Which context a pair's second run waits for
        // on a worker is up to timing (the first may be free again by then),
        // so pairs go until one is.
        let pair: unknown[] = [];
        for (let tries = 0; tries < (cudaGraphs ? 10 : 1) && !(pair[0] && pair[1]); tries++) {
          pair = (await Promise.all([engine.run(batch), engine.run(batch)])).map(issuedOnJsThread);
        }
        if (cudaGraphs) assert.deepEqual(pair, [true, true], 'both contexts replay the shape');
        const again = await engine.run(batch);
        assertSame(again, first, `graphs ${cudaGraphs}: a later run`);
        assert.equal(issuedOnJsThread(again), cudaGraphs, `graphs ${cudaGraphs}: issued on the JS thread`);
        // Three at once on two contexts: the third finds none free and waits on a worker.
        const three = await Promise.all([engine.run(batch), engine.run(batch), engine.run(batch)]);
        three.forEach((result, i) => assertSame(result, first, `graphs ${cudaGraphs}: run ${i} of three`));
        if (cudaGraphs) assert.deepEqual(three.map(issuedOnJsThread), [true, true, false]);
      } finally {
        await engine.dispose();
      }
    }
  });

  it('settles replayed runs by polling from the JS thread (spinWait), keeping the event loop turning', async () => {
    const timingOf = (result: object) => runTiming(result) as { spinWait: boolean; queueUs: number; deliverUs: number };
    const batch = batchOf([100, 28], 22);
    const reference = await load(plans.fp16!, { contexts: 1, spinWait: false });
    const engine = await load(plans.fp16!, { contexts: 1 });
    try {
      const want = await reference.run(batch);
      await reference.run(batch);
      assert.equal(timingOf(await reference.run(batch)).spinWait, false, 'spinWait false: a worker waits');
      const first = await engine.run(batch);
      assert.equal(timingOf(first).spinWait, false, 'a first run records its graph on a worker');
      let turns = 0;
      let ticking = true;
      const tick = () => { turns++; if (ticking) setImmediate(tick); };
      setImmediate(tick);
      const polled = await engine.run(batch);
      ticking = false;
      assertSame(polled, want, 'a polled run');
      const timing = timingOf(polled);
      assert.equal(timing.spinWait, true, 'a replayed run is polled');
      assert.equal(timing.queueUs, 0, 'no worker queue');
      assert.ok(turns > 0, 'other setImmediate callbacks ran while the run was polled');
      // Runs in flight at once on one context: the second waits on a worker.
      const pair = await Promise.all([engine.run(batch), engine.run(batch)]);
      pair.forEach((result, i) => assertSame(result, want, `run ${i} of two`));
      assert.deepEqual(pair.map((r) => timingOf(r).spinWait), [true, false]);
      // dispose() waits for a polled run.
      const pending = engine.run(batch);
      await engine.dispose();
      assertSame(await pending, want, 'a run polled across dispose()');
    } finally {
      await reference.dispose();
      await engine.dispose();
    }
  });

  it('overlaps two runs on two contexts (times printed, not asserted)', async () => {
    const [a, b] = [batchOf([128], 11), batchOf([128], 12)];
    for (const contexts of [1, 2]) {
      const engine = await load(plans.fp16!, { contexts });
      try {
        // Warm-up: both contexts record their graphs for this shape.
        for (let i = 0; i < 5; i++) await Promise.all([engine.run(a), engine.run(b)]);
        const want = [await engine.run(a), await engine.run(b)];
        const one: number[] = [];
        const two: number[] = [];
        for (let i = 0; i < TIMING_ROUNDS; i++) {
          one.push(await wallMs(() => engine.run(a)));
          let results: Record<string, NativeOutput>[] = [];
          two.push(await wallMs(async () => { results = await Promise.all([engine.run(a), engine.run(b)]); }));
          assertSame(results[0], want[0], `contexts ${contexts}, round ${i}, a`);
          assertSame(results[1], want[1], `contexts ${contexts}, round ${i}, b`);
        }
        const [m1, m2] = [median(one), median(two)];
        table.push(['fp16 512x4, 1 x 128', String(contexts), m1.toFixed(3), m2.toFixed(3), (m2 / m1).toFixed(2)]);
      } finally {
        await engine.dispose();
      }
    }
  });
});
