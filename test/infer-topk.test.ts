/**
 * fusedrt-infer's Top k (the engine's top-k of each [MASK] row) feeding
 * fusedrt-fill-mask, in the real Node-RED runtime with the real addon on
 * plans built from the test/fixtures/bert models: the same predictions as
 * from full logits, what msg.fusedrt carries, a top k shorter than the
 * fill-mask node's, out-of-range values, and a model of another task.
 */
import * as assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { collect, helper, type Msg } from './support/red-helper';

interface InferMsg extends Msg {
  fusedrt?: { outputs: Record<string, Record<string, unknown>> };
}
interface Prediction {
  token: string;
  tokenId: number;
  score: number;
  sequence: string;
}
interface Filled {
  sequence: string;
  masks: Array<{ position: number; predictions: Prediction[] }>;
}


const NODES = ['fusedrt-engine', 'fusedrt-tokenize', 'fusedrt-infer', 'fusedrt-fill-mask', 'fusedrt-classify']
  .map((name) => require(path.join(__dirname, '..', 'nodes', name, name)));
const FIXTURES = path.resolve(__dirname, '..', '..', 'test', 'fixtures', 'bert');
const TEXTS = ['ba [MASK] ce.', 'di [MASK] fo [MASK] ga!', 'he hi [MASK] ju ka'];

/** The flow's nodes on one tab, with a catch node for all of them. */
function flowOf(plan: string, nodes: object[]): object[] {
  return [
    { id: 'tab', type: 'tab' },
    { id: 'engine', type: 'fusedrt-engine', model: plan, precision: 'fp32', device: 'cpu', threads: '2', batchWindowMs: '1', truncation: 'truncate' },
    ...nodes.map((n) => ({ x: 0, y: 0, z: 'tab', ...n })),
    { id: 'catch', x: 0, y: 0, z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['caught']] },
    { id: 'caught', x: 0, y: 0, z: 'tab', type: 'helper' },
  ];
}

/** infer (Top k `inferK`) → fill-mask (Top k `fillK`) → `out`, fed by the ids given. */
function inferToFill(suffix: string, inferK: number | string, fillK: number): object[] {
  return [
    { id: `infer${suffix}`, type: 'fusedrt-infer', engine: 'engine', tokens: 'tokens', outputs: 'task', topK: inferK, wires: [[`fill${suffix}`]] },
    { id: `fill${suffix}`, type: 'fusedrt-fill-mask', engine: '', topK: fillK, wires: [[`out${suffix}`]] },
    { id: `out${suffix}`, type: 'helper' },
  ];
}

/** Same tokens and texts; scores within 1e-5. */
function assertSamePredictions(actual: Filled[], expected: Filled[]): void {
  assert.strictEqual(actual.length, expected.length);
  actual.forEach((a, s) => {
    assert.strictEqual(a.sequence, expected[s].sequence);
    assert.strictEqual(a.masks.length, expected[s].masks.length);
    a.masks.forEach((m, i) => {
      const e = expected[s].masks[i];
      assert.strictEqual(m.position, e.position);
      assert.deepStrictEqual(m.predictions.map((p) => [p.token, p.tokenId, p.sequence]), e.predictions.map((p) => [p.token, p.tokenId, p.sequence]));
      m.predictions.forEach((p, j) => assert.ok(Math.abs(p.score - e.predictions[j].score) <= 1e-5, `text ${s} mask ${i} #${j}: ${p.score} vs ${e.predictions[j].score}`));
    });
  });
}

describe('fusedrt-infer Top k → fusedrt-fill-mask (Node-RED runtime)', function () {
  this.timeout(120000);
  let dir: string;
  let mlm: string;
  let seqcls: string;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-infer-topk-'));
    mlm = path.join(dir, 'mlm.plan');
    seqcls = path.join(dir, 'seqcls.plan');
    await buildPlan(path.join(FIXTURES, 'tiny32-mlm'), mlm);
    await buildPlan(path.join(FIXTURES, 'tiny32-seqcls'), seqcls);
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  afterEach(() => helper.unload());

  it('Top k 5 (or 8) gives the predictions of full logits, and msg.fusedrt carries only the top k', async () => {
    await helper.load(NODES, flowOf(mlm, [
      { id: 'tokenize', type: 'fusedrt-tokenize', engine: 'engine', property: 'payload', output: 'tokens', truncation: 'engine', addSpecialTokens: true, wires: [['inferFull', 'inferTop', 'inferWide']] },
      ...inferToFill('Full', 0, 5), ...inferToFill('Top', 5, 5), ...inferToFill('Wide', 8, 5),
    ]));
    const full = collect<InferMsg>(helper.getNode('outFull'), 1);
    const top = collect<InferMsg>(helper.getNode('outTop'), 1);
    const wide = collect<InferMsg>(helper.getNode('outWide'), 1);
    helper.getNode('tokenize').receive({ payload: TEXTS });
    const [[fullMsg], [topMsg], [wideMsg]] = await Promise.all([full, top, wide]);

    assertSamePredictions(topMsg.payload as Filled[], fullMsg.payload as Filled[]);
    assertSamePredictions(wideMsg.payload as Filled[], fullMsg.payload as Filled[]);
    for (const r of topMsg.payload as Filled[]) for (const m of r.masks) assert.strictEqual(m.predictions.length, 5);

    const masks = 4;
    const fullLogits = fullMsg.fusedrt!.outputs.logits;
    assert.ok(fullLogits.data instanceof Float32Array);
    assert.deepStrictEqual([fullLogits.rows, fullLogits.cols], [masks, 120]);
    const logits = topMsg.fusedrt!.outputs.logits;
    assert.deepStrictEqual(Object.keys(logits).sort(), ['k', 'rows', 'rowsKind', 'topIds', 'topScores']);
    assert.ok(logits.topIds instanceof Int32Array && logits.topScores instanceof Float32Array);
    assert.deepStrictEqual([logits.rows, logits.k, logits.rowsKind], [masks, 5, 'selected']);
    assert.strictEqual((logits.topIds as Int32Array).length, masks * 5);
    assert.strictEqual(wideMsg.fusedrt!.outputs.logits.k, 8);
  });

  it('a top k shorter than the fill-mask node\'s fails the message with E_INPUT naming both', async () => {
    await helper.load(NODES, flowOf(mlm, inferToFill('', 3, 5)));
    const caught = collect(helper.getNode('caught'), 1);
    helper.getNode('infer').receive({ payload: TEXTS[0] });
    const [msg] = await caught;
    assert.strictEqual(msg.error?.source?.id, 'fill');
    assert.strictEqual(msg.error?.code, 'E_INPUT');
    assert.match(msg.error!.message, /top 3 tokens per \[MASK\] but this node keeps the top 5/);
    assert.match(msg.error!.message, /Top k to 5 to 64, or 0 for full logits; or set this node's Top k to 3/);
  });

  it('an out-of-range Top k fails every message to a Catch node with E_INPUT', async () => {
    const bad: Array<number | string> = [65, -1, 2.5, 'five'];
    await helper.load(NODES, flowOf(mlm, bad.flatMap((k, i) => inferToFill(String(i), k, 5))));
    const caught = collect(helper.getNode('caught'), bad.length);
    bad.forEach((_k, i) => helper.getNode(`infer${i}`).receive({ payload: TEXTS[0] }));
    const errors = await caught;
    const bySource = new Map(errors.map((m) => [m.error?.source?.id, m.error!]));
    bad.forEach((k, i) => {
      const error = bySource.get(`infer${i}`);
      assert.strictEqual(error?.code, 'E_INPUT', String(k));
      assert.ok(error.message.includes(`Top k must be an integer from 0 to 64, got "${k}"`), error.message);
    });
  });

  it('on a classification model Top k is ignored: full logits, and one warning', async () => {
    await helper.load(NODES, flowOf(seqcls, [
      { id: 'infer', type: 'fusedrt-infer', engine: 'engine', tokens: 'tokens', outputs: 'task', topK: 5, wires: [['classify']] },
      { id: 'classify', type: 'fusedrt-classify', engine: '', activation: 'auto', topK: 0, wires: [['out']] },
      { id: 'out', type: 'helper' },
    ]));
    const warnings: string[] = [];
    helper.getNode('infer').on('call:warn', ((call: { args: unknown[] }) => warnings.push(String(call.args[0]))) as (arg: never) => void);
    const outputs = collect<InferMsg>(helper.getNode('out'), 3);
    for (const text of ['ba be', 'ca ce ci', 'da de']) helper.getNode('infer').receive({ payload: text });
    const got = await outputs;
    for (const msg of got) {
      const logits = msg.fusedrt!.outputs.logits;
      assert.ok(logits.data instanceof Float32Array && logits.rows === 1 && logits.topIds === undefined);
      assert.ok(typeof (msg.payload as { label: unknown }).label === 'string');
    }
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepStrictEqual(warnings, ['Top k 5 applies to fill-mask models only; this classification model\'s outputs are sent in full']);
  });
});
