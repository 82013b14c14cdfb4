/**
 * The CPU backend's thread priority (EngineOptions.cpuPriority): by default
 * its threads, the one that drives a run included, compute below the
 * process's priority, so the event loop gets a core as soon as it wakes;
 * 'normal' leaves every thread as it was. Read from the kernel's own record
 * of each thread's nice value (/proc, Linux only); the timing effect is in
 * bench/RESULTS.md, not here. Then the fusedrt-engine node's CPU priority
 * field in the real Node-RED runtime.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { Engine } from '../src/engine/engine';
import type { CpuPriority, PackedBatch } from '../src/engine/types';
import { FusedRTError } from '../src/errors';
import { collect, helper, loggedBy, type Msg } from './support/red-helper';

const FIXTURE = path.join(__dirname, '..', '..', 'test', 'fixtures', 'bert', 'tiny32-mlm');

/** nice value → how many of this process's threads have it, from /proc/self/task/<tid>/stat (field 19). */
function threadsByNice(): Map<number, number> {
  const counts = new Map<number, number>();
  for (const tid of fs.readdirSync('/proc/self/task')) {
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    } catch {
      continue;  // the thread ended meanwhile
    }
    // Fields after the command name (which may hold spaces) start at field 3.
    const nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
    counts.set(nice, (counts.get(nice) ?? 0) + 1);
  }
  return counts;
}

/** Whether this system lets a thread lower its own priority (a sandbox may not; the engine then leaves it as it is). */
function canLowerPriority(): boolean {
  const child = spawnSync(process.execPath, ['-e', 'const os = require("os"); os.setPriority(os.getPriority() + 1); process.stdout.write(String(os.getPriority()))']);
  return child.status === 0 && Number(String(child.stdout)) === Math.min(19, os.getPriority() + 1);
}

/** Polls until `check` holds (threads start and end on their own schedule), at most 5 s. */
async function eventually(check: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 500 && !check(); i++) await new Promise((resolve) => setTimeout(resolve, 10));
  assert.ok(check(), what);
}

const BATCH: PackedBatch = {
  inputIds: Int32Array.from([2, 7, 13, 49, 3, 4, 11, 0, 1, 5]),
  cuSeqlens: Int32Array.from([0, 4, 10]),
  selectedRows: Int32Array.from([1, 8]),
  outputs: ['hidden', 'logits'],
};

describe('CPU thread priority', function () {
  this.timeout(60000);
  let dir: string;
  let planPath: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-priority-'));
    planPath = path.join(dir, 'tiny.plan');
    await buildPlan(FIXTURE, planPath, { precision: 'fp32' });
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  describe('the engine option', () => {
    const load = (cpuPriority?: CpuPriority) =>
      Engine.load(planPath, { device: 'cpu', threads: 3, ...(cpuPriority ? { cpuPriority } : {}) });

    it('runs every thread of the engine 10 below the process by default, and none when normal', async function () {
      if (process.platform !== 'linux' || !canLowerPriority()) this.skip();
      const processNice = os.getPriority();
      const background = Math.min(19, processNice + 10);
      const before = threadsByNice().get(background) ?? 0;

      const engine = await load();
      assert.strictEqual(engine.info.cpuPriority, 'background');
      await engine.run(BATCH);
      // Two workers and the lead thread that runs the ops.
      await eventually(() => threadsByNice().get(background) === before + 3, `3 threads at nice ${background}`);
      await engine.dispose();
      await eventually(() => (threadsByNice().get(background) ?? 0) === before, 'the threads gone with the engine');

      const normal = await load('normal');
      assert.strictEqual(normal.info.cpuPriority, 'normal');
      await normal.run(BATCH);
      assert.strictEqual(threadsByNice().get(background) ?? 0, before);
      await normal.dispose();
      assert.strictEqual(os.getPriority(), processNice, "the process's own priority is untouched");
  });

  it('gives the same results at either priority', async () => {
    const [background, normal] = await Promise.all([load('background'), load('normal')]);
    try {
      const [a, b] = await Promise.all([background.run(BATCH), normal.run(BATCH)]);
      for (const name of ['hidden', 'logits']) assert.deepStrictEqual(a[name].data, b[name].data, name);
    } finally {
      await Promise.all([background.dispose(), normal.dispose()]);
    }
  });

  it('rejects an unknown priority with E_INPUT', async () => {
    await assert.rejects(load('high' as CpuPriority), (err: unknown) => err instanceof FusedRTError && err.code === 'E_INPUT'
      && /cpuPriority must be "background" or "normal"/.test(err.message));
  });
  });

  describe('the fusedrt-engine node\'s field (Node-RED runtime)', () => {
    const NODES = ['fusedrt-engine', 'fusedrt-infer'].map((name) => require(path.join(__dirname, '..', 'nodes', name, name)));
    afterEach(() => helper.unload());

    function flow(fields: object): object[] {
      return [
        { id: 'tab', type: 'tab' },
        { id: 'engine', type: 'fusedrt-engine', model: planPath, device: 'cpu', threads: '2', ...fields },
        { id: 'infer', z: 'tab', type: 'fusedrt-infer', engine: 'engine', outputs: 'list', outputNames: 'hidden', x: 0, y: 0, wires: [['out']] },
        { id: 'out', z: 'tab', type: 'helper', x: 0, y: 0 },
        { id: 'catch', z: 'tab', type: 'catch', scope: null, uncaught: false, x: 0, y: 0, wires: [['caught']] },
        { id: 'caught', z: 'tab', type: 'helper', x: 0, y: 0 },
      ];
    }

    const engineLog = () => loggedBy('fusedrt-engine');

    for (const [choice, fields, priority] of [
      ['background', { cpuPriority: 'background' }, 'background'], ['normal', { cpuPriority: 'normal' }, 'normal'],
      ['absent (a flow saved before the field)', {}, 'background'],
    ] as const) {
      it(`runs with ${choice}, and the log says the threads' priority`, async () => {
        await helper.load(NODES, flow(fields));
        const out = collect(helper.getNode('out'), 1);
        helper.getNode('infer').receive({ payload: 'one text' });
        await out;
        assert.ok(engineLog().some((line) => line.includes(`2 threads at ${priority} priority`)), JSON.stringify(engineLog()));
      });
    }

    it('an unknown priority fails the engine with E_INPUT, logged and sent to Catch', async () => {
      await helper.load(NODES, flow({ cpuPriority: 'high' }));
      const caught = collect(helper.getNode('caught'), 1);
      helper.getNode('infer').receive({ payload: 'one text' });
      const [error] = await caught as Msg[];
      const message = 'CPU priority must be one of background, normal, got "high"';
      assert.equal(error.error?.code, 'E_INPUT');
      assert.equal(error.error?.message, `FusedRTError: ${message}`);
      assert.ok(engineLog().some((line) => line.includes(message)), JSON.stringify(engineLog()));
    });
  });
});
