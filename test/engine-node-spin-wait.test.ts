/**
 * The fusedrt-engine node's GPU wait field (engine option spinWait,
 * docs/runtime.md, "Spin wait") in the real Node-RED runtime: every choice,
 * and a flow saved without the field, loads an engine that runs; on CUDA a
 * replayed run is settled by polling only with `spin` (the CPU always
 * finishes on a worker); any other value fails the engine with E_INPUT that
 * reaches the log and a Catch node, as a bad precision does.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { packEncodings } from '../src/engine/pack';
import { runTiming } from '../src/engine/run-result';
import type { OutputTensor } from '../src/engine/types';
import type { EngineConfigNode } from '../nodes/shared/engine-client';
import { addon } from './support/native-addon';
import { collect, helper, loggedBy, type Msg } from './support/red-helper';

const ROOT = path.resolve(__dirname, '..', '..');
const FIXTURE = path.join(ROOT, 'test', 'fixtures', 'bert', 'tiny32-mlm');
const NODES = ['fusedrt-engine', 'fusedrt-infer'].map((name) => require(path.join(__dirname, '..', 'nodes', name, name)));
const TEXTS = ['one text', 'and another, a little longer'];
/** Engines may tune different GEMM kernels on a GPU, so results of two engines agree to rounding only. */
const TOLERANCE = 1e-4;

/** An engine with the given fields, an infer node using it, and a catch node on the same tab. */
function flow(plan: string, fields: object): object[] {
  return [
    { id: 'tab', type: 'tab' },
    { id: 'engine', type: 'fusedrt-engine', model: plan, precision: 'fp32', device: 'auto', threads: '2', contexts: '1', truncation: 'truncate', ...fields },
    { id: 'infer', z: 'tab', type: 'fusedrt-infer', engine: 'engine', outputs: 'list', outputNames: 'hidden', x: 0, y: 0, wires: [['out']] },
    { id: 'out', z: 'tab', type: 'helper', x: 0, y: 0 },
    { id: 'catch', z: 'tab', type: 'catch', scope: null, uncaught: false, x: 0, y: 0, wires: [['caught']] },
    { id: 'caught', z: 'tab', type: 'helper', x: 0, y: 0 },
  ];
}

const engineLog = () => loggedBy('fusedrt-engine');

describe('fusedrt-engine GPU wait field (Node-RED runtime)', function () {
  this.timeout(120000);
  const cuda = addon.backends().includes('cuda');
  let dir: string;
  let plan: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-spin-wait-node-'));
    plan = path.join(dir, 'tiny32-mlm.plan');
    await buildPlan(FIXTURE, plan, { precision: 'fp32' });
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  afterEach(() => helper.unload());

  it('loads and runs with spin, block, blank or no field; on CUDA only block keeps replayed runs on a worker', async () => {
    let reference: OutputTensor | undefined;
    for (const [choice, fields] of [['spin', { gpuWait: 'spin' }], ['block', { gpuWait: 'block' }], ['blank', { gpuWait: '' }], ['absent', {}]] as const) {
      await helper.load(NODES, flow(plan, fields));
      const received = new Promise<Msg & { fusedrt: { outputs: { hidden: OutputTensor } } }>((resolve, reject) => {
        helper.getNode('out').on('input', resolve as (msg: never) => void);
        helper.getNode('caught').on('input', ((m: Msg) => reject(new Error(`${choice}: ${m.error?.code} ${m.error?.message}`))) as (msg: never) => void);
      });
      helper.getNode('infer').receive({ payload: TEXTS });
      const hidden = (await received).fusedrt.outputs.hidden;
      reference ??= hidden;
      assert.deepEqual([hidden.rows, hidden.cols], [reference.rows, reference.cols], choice);
      const worst = reference.data.reduce((w, v, i) => Math.max(w, Math.abs(hidden.data[i] - v)), 0);
      assert.ok(worst <= TOLERANCE, `${choice}: max |difference| ${worst} from spin`);

      // The node's own engine: a first run of a shape records its graph on a worker, the next replays it.
      const engine = await (helper.getNode('engine') as unknown as EngineConfigNode).host.engine();
      const { batch } = packEncodings(engine.tokenizer.encodeBatch(TEXTS));
      await engine.run({ ...batch, outputs: ['hidden'] });
      const timing = runTiming(await engine.run({ ...batch, outputs: ['hidden'] }));
      assert.ok(timing, `${choice}: the run has a timing`);
      assert.equal(timing.spinWait, cuda && choice !== 'block', `${choice}: spinWait of a replayed run on ${cuda ? 'CUDA' : 'the CPU'}`);
      await helper.unload();
    }
  });

  for (const [field, fields, message] of [
    ['GPU wait', { gpuWait: 'sometimes' }, 'GPU wait must be one of spin, block, got "sometimes"'],
    ['precision', { precision: 'int8' }, 'precision must be one of fp32, fp16, fp8, got "int8"'],
  ] as const) {
    it(`a ${field} the node does not know fails the engine with E_INPUT, logged and sent to Catch`, async () => {
      await helper.load(NODES, flow(plan, fields));
      const caught = collect(helper.getNode('caught'), 1);
      helper.getNode('infer').receive({ payload: TEXTS });
      const [error] = await caught;
      assert.equal(error.error?.code, 'E_INPUT');
      assert.equal(error.error?.message, `FusedRTError: ${message}`);
      assert.equal(error.error?.source?.id, 'infer');
      assert.ok(engineLog().some((line) => line.includes(message)), `engine log: ${JSON.stringify(engineLog())}`);
    });
  }
});
