/**
 * The six nodes in the real Node-RED runtime (node-red-node-test-helper)
 * with real plans built from random BERT models, and the `npm start` demo.
 */
import * as assert from 'assert';
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as net from 'net';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { parsePlan } from '../src/build/plan-file';
import { assertClose } from './support/assert-close';
import { collect, helper, type Msg, type TestNode } from './support/red-helper';
import { Engine, nativeMemoryBytes } from '../src/engine/engine';
import { packEncodings } from '../src/engine/pack';
import { classify, fillMask, poolEmbeddings } from '../src/post';
import { randomModelVocabulary } from '../src/tools/demo-words';
import { writeRandomBertModel, type BertArchitecture } from '../src/tools/random-model';

/**
 * Records what a node sends. The helper's own spies are removed by unload()
 * before the nodes close, so sends made while closing are watched on the
 * instance instead.
 */
function watchSends(node: TestNode): object[] {
  const calls: object[] = [];
  const original = node.send.bind(node);
  node.send = (msg: object) => {
    calls.push(msg);
    original(msg);
  };
  return calls;
}


const NODES = ['fusedrt-engine', 'fusedrt-tokenize', 'fusedrt-infer', 'fusedrt-fill-mask', 'fusedrt-classify', 'fusedrt-embed']
    .map((name) => require(path.join(__dirname, '..', 'nodes', name, name)));

const REPO = path.resolve(__dirname, '..', '..');
const LABELS = ['negative', 'neutral', 'positive'];

/**
 * Gives every flow node a position: the runtime takes a node without x/y
 * for a config node.
 */
function placed(flow: object[]): object[] {
  const nodes = flow.map((n) => ((n as { type: string }).type === 'fusedrt-engine' || (n as { type: string }).type === 'tab' ? n : { x: 0, y: 0, z: 'tab', ...n }));
  return nodes.some((n) => (n as { id: string }).id === 'tab') ? nodes : [{ id: 'tab', type: 'tab' }, ...nodes];
}

function load(flow: object[]): Promise<void> {
  return helper.load(NODES, placed(flow));
}

/** Fails if anything reaches `node` within `ms`. */
function expectNothing(node: TestNode, ms = 300): Promise<void> {
  return new Promise((resolve, reject) => {
    node.on('input', ((msg: Msg) => reject(new Error(`unexpected message: ${JSON.stringify(msg.payload)}`))) as (arg: never) => void);
    setTimeout(resolve, ms);
  });
}

interface StatusEvent {
  fill?: string;
  shape?: string;
  text?: string;
}

const runtimeEvents: NodeJS.EventEmitter = require('@node-red/util').events;

/**
 * Records every status node `id` shows, as the editor gets them: Status
 * nodes miss those set while the flow starts, the runtime event does not.
 */
function recordStatuses(id: string): { seen: StatusEvent[]; stop(): void } {
  const seen: StatusEvent[] = [];
  const listener = (event: { id: string; status: StatusEvent }) => {
    if (event.id === id) seen.push(event.status);
  };
  runtimeEvents.on('node-status', listener);
  return { seen, stop: () => runtimeEvents.off('node-status', listener) };
}

function engineNode(id: string, model: string, extra: object = {}): object {
  return { id, type: 'fusedrt-engine', model, precision: 'fp32', device: 'cpu', threads: '2', maxTokens: '', maxSequences: '', batchWindowMs: '1', truncation: 'truncate', ...extra };
}

/** tokenize → infer → fill-mask → out, and a catch node on the same tab. */
function fillMaskFlow(plan: string, extra: object = {}): object[] {
  return [
    { id: 'tab', type: 'tab' },
    engineNode('engine', plan, extra),
    { id: 'tokenize', z: 'tab', type: 'fusedrt-tokenize', engine: 'engine', property: 'payload', output: 'tokens', truncation: 'engine', addSpecialTokens: true, wires: [['infer']] },
    { id: 'infer', z: 'tab', type: 'fusedrt-infer', engine: 'engine', tokens: 'tokens', outputs: 'task', wires: [['fill']] },
    { id: 'fill', z: 'tab', type: 'fusedrt-fill-mask', engine: '', topK: 5, wires: [['out']] },
    { id: 'out', z: 'tab', type: 'helper' },
    { id: 'catch', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['caught']] },
    { id: 'caught', z: 'tab', type: 'helper' },
  ];
}

describe('nodes (Node-RED runtime)', function () {
  this.timeout(120000);
  let dir: string;
  const plans: Record<string, string> = {};

  async function makePlan(name: string, architecture: BertArchitecture, maxPositions = 64): Promise<string> {
    const modelDir = path.join(dir, name);
    writeRandomBertModel(modelDir, {
      architecture, hiddenSize: 32, numLayers: 2, numHeads: 2, intermediateSize: 64, maxPositions,
      vocab: randomModelVocabulary(), seed: 7, labels: LABELS,
    });
    const plan = path.join(dir, `${name}.plan`);
    await buildPlan(modelDir, plan);
    return plan;
  }

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-nodes-'));
    plans.mlm = await makePlan('mlm', 'BertForMaskedLM');
    plans.cls = await makePlan('cls', 'BertForSequenceClassification');
    plans.base = await makePlan('base', 'BertModel');
  });

  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  afterEach(() => helper.unload());

  /** What the nodes should compute, straight from the library. */
  async function direct<T>(plan: string, texts: string[], post: (engine: Engine, out: Record<string, { data: Float32Array; rows: number; cols: number }>, cu: Int32Array) => T): Promise<T> {
    const engine = await Engine.load(plan, { device: 'cpu', threads: 2 });
    try {
      const encodings = engine.tokenizer.encodeBatch(texts);
      const { batch } = packEncodings(encodings, { selectTokenId: engine.tokenizer.maskTokenId });
      return post(engine, await engine.run(batch), batch.cuSeqlens);
    } finally {
      await engine.dispose();
    }
  }

  it('tokenize → infer → fill-mask gives the library\'s predictions, through a fan-out clone', async () => {
    const flow = fillMaskFlow(plans.mlm);
    // A second infer node on the same tokens: the runtime clones the msg for one of them.
    (flow[2] as { wires: string[][] }).wires = [['infer', 'infer2']];
    flow.push({ id: 'infer2', z: 'tab', type: 'fusedrt-infer', engine: 'engine', tokens: 'tokens', outputs: 'task', wires: [['fill']] });
    await load(flow);
    const outputs = collect(helper.getNode('out'), 2);
    const text = 'The capital of France, [MASK], is a big city.';
    helper.getNode('tokenize').receive({ payload: text });
    const [a, b] = await outputs;
    const expected = await direct(plans.mlm, [text], (engine, out) =>
      fillMask(out.logits as never, engine.tokenizer.encodeBatch([text]), engine.tokenizer, { topK: 5, texts: [text] }));
    assertClose(a.payload, expected[0]);
    assertClose(b.payload, expected[0]);
    const payload = a.payload as { sequence: string; masks: Array<{ predictions: Array<{ score: number }> }> };
    assert.strictEqual(payload.masks.length, 1);
    assert.strictEqual(payload.masks[0].predictions.length, 5);
    assert.ok(payload.sequence.startsWith('The capital of France, ') && !payload.sequence.includes('[MASK]'));
    const tokens = a.tokens as { encodings: Array<{ ids: unknown }>; batch: boolean };
    assert.ok(tokens.encodings[0].ids instanceof Int32Array);
    assert.strictEqual(tokens.batch, false);
  });

  it('an array payload is one batch and gives an array, in order', async () => {
    await load(fillMaskFlow(plans.mlm));
    const texts = ['the [MASK] is red.', 'a dog and a [MASK] play in the [MASK].', 'we [MASK] home.'];
    const outputs = collect(helper.getNode('out'), 1);
    helper.getNode('tokenize').receive({ payload: texts });
    const [msg] = await outputs;
    const expected = await direct(plans.mlm, texts, (engine, out) =>
      fillMask(out.logits as never, engine.tokenizer.encodeBatch(texts), engine.tokenizer, { topK: 5, texts }));
    assert.ok(Array.isArray(msg.payload));
    assertClose(msg.payload, expected);
    assert.deepStrictEqual((msg.payload as Array<{ masks: unknown[] }>).map((r) => r.masks.length), [1, 2, 1]);
  });

  it('fill-mask with its own engine runs text directly', async () => {
    await load([
      engineNode('engine', plans.mlm),
      { id: 'fill', type: 'fusedrt-fill-mask', engine: 'engine', topK: 3, wires: [['out']] },
      { id: 'out', type: 'helper' },
    ]);
    const outputs = collect(helper.getNode('out'), 1);
    helper.getNode('fill').receive({ payload: 'hello [MASK] world' });
    const [msg] = await outputs;
    const payload = msg.payload as { masks: Array<{ predictions: unknown[] }> };
    assert.strictEqual(payload.masks[0].predictions.length, 3);
  });

  it('20 messages in flight give 20 outputs, each with its own msg', async () => {
    await load(fillMaskFlow(plans.mlm));
    const outputs = collect(helper.getNode('out'), 20);
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      const msg = { _msgid: `m${i}`, payload: `message ${i} has a [MASK] inside`, index: i };
      ids.push(msg._msgid);
      helper.getNode('tokenize').receive(msg);
    }
    const got = await outputs;
    assert.deepStrictEqual(got.map((m) => m._msgid).sort(), ids.sort());
    for (const m of got) {
      assert.strictEqual(m._msgid, `m${m.index}`);
      assert.match((m.payload as { sequence: string }).sequence, new RegExp(`^message ${m.index} has a \\S+ inside$`));
    }
  });

  it('tokenises a large message in slices without letting a small one sent after it overtake it', async () => {
    await load([
      engineNode('engine', plans.mlm),
      { id: 'tokenize', type: 'fusedrt-tokenize', engine: 'engine', wires: [['out']] },
      { id: 'out', type: 'helper' },
    ]);
    const outputs = collect(helper.getNode('out'), 2);
    const large = Array.from({ length: 400 }, (_, i) => `text ${i} of a long batch, tokenised a slice at a time`);
    helper.getNode('tokenize').receive({ _msgid: 'large', payload: large });
    helper.getNode('tokenize').receive({ _msgid: 'small', payload: 'a short text' });
    const got = await outputs;
    assert.deepStrictEqual(got.map((m) => m._msgid), ['large', 'small']);
    assert.strictEqual((got[0].tokens as { encodings: unknown[] }).encodings.length, 400);
  });

  it('classify: labels from the plan, softmax scores', async () => {
    await load([
      engineNode('engine', plans.cls),
      { id: 'infer', type: 'fusedrt-infer', engine: 'engine', tokens: 'tokens', outputs: 'task', wires: [['classify']] },
      { id: 'classify', type: 'fusedrt-classify', engine: '', activation: 'auto', topK: 0, wires: [['out']] },
      { id: 'out', type: 'helper' },
    ]);
    const texts = ['i love this', 'this is terrible'];
    const outputs = collect(helper.getNode('out'), 1);
    helper.getNode('infer').receive({ payload: texts });
    const [msg] = await outputs;
    const expected = await direct(plans.cls, texts, (_e, out) => classify(out.logits, LABELS));
    assertClose(msg.payload, expected);
    for (const r of msg.payload as Array<{ scores: Array<{ label: string; score: number }> }>) {
      assert.deepStrictEqual(r.scores.map((s) => s.label).sort(), [...LABELS].sort());
      assert.ok(Math.abs(r.scores.reduce((n, s) => n + s.score, 0) - 1) < 1e-9);
    }
  });

  it('embed: mean pooling, unit length, from a base model (whose task outputs are the pooled mean and cls, not every token)', async () => {
    await load([
      engineNode('engine', plans.base),
      { id: 'infer', type: 'fusedrt-infer', engine: 'engine', tokens: 'tokens', outputs: 'task', wires: [['embed']] },
      { id: 'embed', type: 'fusedrt-embed', engine: '', pooling: 'mean', normalize: true, wires: [['out']] },
      { id: 'out', type: 'helper' },
    ]);
    const outputs = collect(helper.getNode('out'), 2);
    helper.getNode('infer').receive({ payload: 'a small red car' });
    helper.getNode('infer').receive({ payload: ['a small red car', 'the blue sea'] });
    const got = await outputs;
    const single = got.find((m) => !Array.isArray((m.payload as unknown[])[0]))!;
    const batch = got.find((m) => Array.isArray((m.payload as unknown[])[0]))!;
    const expected = await direct(plans.base, ['a small red car', 'the blue sea'], (_e, out, cu) =>
      poolEmbeddings(out.hidden, cu, { pooling: 'mean', normalize: true }).map((v) => Array.from(v)));
    assertClose(single.payload, expected[0]);
    assertClose(batch.payload, expected);
    assert.deepStrictEqual(Object.keys((single.fusedrt as { outputs: object }).outputs).sort(), ['cls', 'mean']);
    const v = single.payload as number[];
    assert.strictEqual(v.length, 32);
    assert.ok(Math.abs(Math.hypot(...v) - 1) < 1e-5);
  });

  it('embed with an engine of its own: the engine\'s pooled rows (mean, cls), equal to pooling every token state', async () => {
    const texts = ['a small red car', 'the blue sea was calm'];
    await load([
      { id: 'tab', type: 'tab' },
      engineNode('engine', plans.mlm),
      { id: 'mean', z: 'tab', type: 'fusedrt-embed', engine: 'engine', pooling: 'mean', normalize: true, wires: [['out']] },
      { id: 'cls', z: 'tab', type: 'fusedrt-embed', engine: 'engine', pooling: 'cls', normalize: false, wires: [['out']] },
      { id: 'out', z: 'tab', type: 'helper' },
    ]);
    const outputs = collect(helper.getNode('out'), 2);
    helper.getNode('mean').receive({ _msgid: 'mean', payload: texts });
    helper.getNode('cls').receive({ _msgid: 'cls', payload: texts });
    const got = new Map((await outputs).map((m) => [m._msgid, m.payload]));
    const expected = await direct(plans.mlm, texts, (_e, out, cu) => ({
      mean: poolEmbeddings(out.hidden, cu, { pooling: 'mean', normalize: true }).map((v) => Array.from(v)),
      cls: poolEmbeddings(out.hidden, cu, { pooling: 'cls' }).map((v) => Array.from(v)),
    }));
    assertClose(got.get('mean'), expected.mean, 'mean');
    assertClose(got.get('cls'), expected.cls, 'cls');
  });

  it('embed after an infer node that computed only mean, and a Catch-able error when neither it nor hidden is there', async () => {
    await load([
      { id: 'tab', type: 'tab' },
      engineNode('engine', plans.mlm),
      { id: 'infer', z: 'tab', type: 'fusedrt-infer', engine: 'engine', tokens: 'tokens', outputs: 'list', outputNames: 'mean', wires: [['embed', 'cls']] },
      { id: 'embed', z: 'tab', type: 'fusedrt-embed', engine: '', pooling: 'mean', normalize: false, wires: [['out']] },
      { id: 'cls', z: 'tab', type: 'fusedrt-embed', engine: '', pooling: 'cls', normalize: false, wires: [['out']] },
      { id: 'out', z: 'tab', type: 'helper' },
      { id: 'catch', z: 'tab', type: 'catch', scope: null, uncaught: false, wires: [['caught']] },
      { id: 'caught', z: 'tab', type: 'helper' },
    ]);
    const outputs = collect(helper.getNode('out'), 1);
    const caught = collect(helper.getNode('caught'), 1);
    helper.getNode('infer').receive({ payload: 'the blue sea' });
    const [vector] = await outputs;
    const expected = await direct(plans.mlm, ['the blue sea'], (_e, out, cu) =>
      Array.from(poolEmbeddings(out.hidden, cu, { pooling: 'mean' })[0]));
    assertClose(vector.payload, expected);
    const [error] = await caught;
    assert.strictEqual(error.error?.code, 'E_INPUT');
    assert.match(error.error!.message, /outputs to cls \(or hidden\)/);
  });

  it('empty and non-string payloads fail to a Catch node with E_INPUT', async () => {
    await load(fillMaskFlow(plans.mlm));
    const caught = collect(helper.getNode('caught'), 5);
    const nothing = expectNothing(helper.getNode('out'), 1500);
    const bad = ['', '   ', 42, { nope: 1 }, []];
    bad.forEach((payload, i) => helper.getNode('tokenize').receive({ _msgid: `bad${i}`, payload }));
    const errors = await caught;
    await nothing;
    assert.deepStrictEqual(errors.map((m) => m._msgid).sort(), bad.map((_p, i) => `bad${i}`).sort());
    for (const m of errors) {
      assert.strictEqual(m.error?.code, 'E_INPUT');
      assert.match(m.error!.message, /msg\.payload/);
    }
  });

  it('a text without [MASK] fails at infer; a result of another task fails at fill-mask', async () => {
    const flow = fillMaskFlow(plans.mlm);
    flow.push(engineNode('engine2', plans.cls),
      { id: 'infer2', z: 'tab', type: 'fusedrt-infer', engine: 'engine2', tokens: 'tokens', outputs: 'task', wires: [['fill']] });
    await load(flow);
    const caught = collect(helper.getNode('caught'), 2);
    helper.getNode('tokenize').receive({ payload: 'no mask here' });
    helper.getNode('infer2').receive({ payload: 'classified, not filled' });
    const errors = await caught;
    const byNode = new Map(errors.map((m) => [(m.error as unknown as { source: { id: string } }).source.id, m.error!]));
    assert.strictEqual(byNode.get('infer')?.code, 'E_INPUT');
    assert.match(byNode.get('infer')!.message, /\[MASK\]/);
    assert.strictEqual(byNode.get('fill')?.code, 'E_INPUT');
    assert.match(byNode.get('fill')!.message, /classification/);
  });

  it('over-long texts are truncated or rejected, as configured', async () => {
    const long = `${'word '.repeat(100)}[MASK]`;
    const flow = fillMaskFlow(plans.mlm);
    await load(flow);
    const outputs = collect(helper.getNode('out'), 1);
    const caught = collect(helper.getNode('caught'), 1);
    // The mask is cut off with the tail, so this fails in infer; truncation itself worked.
    helper.getNode('tokenize').receive({ payload: long });
    const [error] = await caught;
    assert.strictEqual(error.error?.code, 'E_INPUT');
    helper.getNode('tokenize').receive({ payload: `[MASK] ${'word '.repeat(100)}` });
    const [msg] = await outputs;
    assert.strictEqual((msg.tokens as { encodings: Array<{ truncated: boolean; ids: Int32Array }> }).encodings[0].truncated, true);
    assert.strictEqual((msg.tokens as { encodings: Array<{ ids: Int32Array }> }).encodings[0].ids.length, 64);
    await helper.unload();

    await load(fillMaskFlow(plans.mlm, { truncation: 'error' }));
    const rejected = collect(helper.getNode('caught'), 1);
    helper.getNode('tokenize').receive({ payload: `[MASK] ${'word '.repeat(100)}` });
    const [refusal] = await rejected;
    assert.strictEqual(refusal.error?.code, 'E_INPUT');
    assert.strictEqual((refusal.error as unknown as { source: { id: string } }).source.id, 'tokenize');
  });

  it('a bad plan path shows an error status and sends the error to Catch', async () => {
    const statuses = recordStatuses('tokenize');
    try {
      await load(fillMaskFlow(path.join(dir, 'missing.plan')));
      const caught = collect(helper.getNode('caught'), 1);
      helper.getNode('tokenize').receive({ payload: 'the [MASK]' });
      const [error] = await caught;
      assert.strictEqual(error.error?.code, 'E_PLAN_IO');
      assert.match(error.error!.message, /missing\.plan/);
      assert.deepStrictEqual(statuses.seen, [
        { fill: 'yellow', shape: 'ring', text: 'loading' },
        { fill: 'red', shape: 'ring', text: 'error: E_PLAN_IO' },
      ]);
    } finally {
      statuses.stop();
    }
  });

  it('status: loading, ready, busy (n), and cleared on close', async () => {
    const statuses = recordStatuses('infer');
    try {
      await load(fillMaskFlow(plans.mlm));
      const outputs = collect(helper.getNode('out'), 3);
      for (let i = 0; i < 3; i++) helper.getNode('tokenize').receive({ payload: `number ${i} [MASK]` });
      await outputs;
      await helper.unload();
      const seen = statuses.seen.map((st) => [st.fill, st.shape, st.text].filter(Boolean).join(' '));
      assert.deepStrictEqual(seen.slice(0, 2), ['yellow ring loading', 'green dot ready'], seen.join(' | '));
      assert.ok(seen.some((t) => /^blue dot busy \([123]\)$/.test(t)), seen.join(' | '));
      assert.deepStrictEqual(seen.slice(-2), ['green dot ready', ''], seen.join(' | '));
    } finally {
      statuses.stop();
    }
  });

  it('50 redeploys free every engine', async () => {
    const baseline = nativeMemoryBytes();
    let loaded = 0;
    for (let i = 0; i < 50; i++) {
      await load(fillMaskFlow(plans.mlm));
      const outputs = collect(helper.getNode('out'), 1);
      helper.getNode('tokenize').receive({ payload: `deploy ${i} [MASK]` });
      await outputs;
      if (i === 0) loaded = nativeMemoryBytes();
      assert.strictEqual(nativeMemoryBytes(), loaded, `deploy ${i}`);
      await helper.unload();
      assert.strictEqual(nativeMemoryBytes(), baseline, `after deploy ${i}`);
    }
    assert.ok(loaded > baseline);
  });

  it('a redeploy waits for messages in flight', async () => {
    // One node, so nothing downstream is stopped before the results are sent.
    await load([
      engineNode('engine', plans.mlm, { batchWindowMs: '100' }),
      { id: 'fill', type: 'fusedrt-fill-mask', engine: 'engine', topK: 1, wires: [['out']] },
      { id: 'out', type: 'helper' },
    ]);
    const fill = helper.getNode('fill');
    const warm = collect(helper.getNode('out'), 1);
    fill.receive({ payload: 'warm [MASK]' });
    await warm;
    const sent = watchSends(fill);
    for (let i = 0; i < 5; i++) fill.receive({ payload: `late ${i} [MASK]` });
    // Let the runtime deliver them; they now wait in the engine's 100 ms batch window.
    await new Promise((resolve) => setTimeout(resolve, 10));
    await helper.unload();
    assert.strictEqual(sent.length, 5);
  });

  it('builds a Hugging Face directory once and caches the plan', async () => {
    const cacheHome = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-userdir-'));
    const modelDir = path.join(dir, 'mlm');
    const flow = fillMaskFlow(modelDir);
    const runOnce = async () => {
      await load(flow);
      const outputs = collect(helper.getNode('out'), 1);
      helper.getNode('tokenize').receive({ payload: 'cached [MASK]' });
      const [msg] = await outputs;
      await helper.unload();
      return msg.payload;
    };
    helper.init(require.resolve('node-red'), { userDir: cacheHome });
    try {
      const first = await runOnce();
      const cached = fs.readdirSync(path.join(cacheHome, 'fusedrt-cache'));
      assert.strictEqual(cached.length, 1);
      assert.match(cached[0], /^mlm-fp32-[0-9a-f]{16}\.plan$/);
      const mtime = fs.statSync(path.join(cacheHome, 'fusedrt-cache', cached[0])).mtimeMs;
      assert.deepStrictEqual(await runOnce(), first);
      assert.strictEqual(fs.statSync(path.join(cacheHome, 'fusedrt-cache', cached[0])).mtimeMs, mtime);
    } finally {
      helper.init(require.resolve('node-red'));
      fs.rmSync(cacheHome, { recursive: true, force: true });
    }
  });

  it('builds an fp8 plan when the engine asks for fp8, and fills masks with it on the CPU', async () => {
    const cacheHome = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-userdir-'));
    helper.init(require.resolve('node-red'), { userDir: cacheHome });
    try {
      await load(fillMaskFlow(path.join(dir, 'mlm'), { precision: 'fp8' }));
      const outputs = collect(helper.getNode('out'), 1);
      helper.getNode('tokenize').receive({ payload: 'rounded [MASK] weights' });
      const [msg] = await outputs;
      await helper.unload();
      const [cached] = fs.readdirSync(path.join(cacheHome, 'fusedrt-cache'));
      assert.match(cached, /^mlm-fp8-[0-9a-f]{16}\.plan$/);
      const header = parsePlan(fs.readFileSync(path.join(cacheHome, 'fusedrt-cache', cached))).header;
      assert.strictEqual(header.precision, 'fp8');
      assert.ok(header.tensors.some((t) => t.dtype === 'f8e4m3'), 'the cached plan has E4M3 weights');
      const payload = msg.payload as { masks: Array<{ predictions: Array<{ score: number }> }> };
      assert.strictEqual(payload.masks.length, 1);
      const scores = payload.masks[0].predictions.map((p) => p.score);
      assert.strictEqual(scores.length, 5);
      assert.ok(scores.every((score, i) => score > 0 && score <= 1 && (i === 0 || score <= scores[i - 1])), `scores ${scores}`);
    } finally {
      helper.init(require.resolve('node-red'));
      fs.rmSync(cacheHome, { recursive: true, force: true });
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
    server.on('error', reject);
  });
}

describe('npm start demo (flows/flows.json)', function () {
  this.timeout(180000);
  let child: ChildProcess | undefined;
  let port = 0;
  let log = '';

  before(async () => {
    port = await freePort();
    child = spawn(process.execPath, [path.join(REPO, 'scripts', 'start-demo.js')], {
      cwd: REPO, env: { ...process.env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    child.stdout!.on('data', (d: Buffer) => { log += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { log += d.toString(); });
    const deadline = Date.now() + 150000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`start-demo exited with ${child.exitCode}:\n${log}`);
      try {
        const res = await fetch(`http://127.0.0.1:${port}/fill-mask?text=ping`);
        if (res.status !== 404) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`the demo did not answer in time:\n${log}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  });

  after(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child!.once('exit', resolve));
      child.kill('SIGTERM');
      await exited;
    }
  });

  it('says what the demo model is', () => {
    assert.match(log, /trained on the Brown corpus/);
  });

  it('answers GET /fill-mask?text=... with JSON predictions', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/fill-mask?text=${encodeURIComponent('The capital of France is [MASK].')}`);
    assert.strictEqual(res.status, 200, log);
    assert.match(res.headers.get('content-type') ?? '', /application\/json/);
    const body = await res.json() as { sequence: string; masks: Array<{ predictions: Array<{ token: string; score: number }> }> };
    assert.strictEqual(body.masks.length, 1);
    assert.strictEqual(body.masks[0].predictions.length, 5);
    assert.ok(body.sequence.startsWith('The capital of France is '));
  });

  it('answers a missing or bad text with 400 and a JSON error', async () => {
    for (const query of ['', '?text=', '?text=no%20mask%20here']) {
      const res = await fetch(`http://127.0.0.1:${port}/fill-mask${query}`);
      assert.strictEqual(res.status, 400, `${query}: ${log}`);
      const body = await res.json() as { error: { code: string; message: string } };
      assert.strictEqual(body.error.code, 'E_INPUT');
      assert.ok(body.error.message.length > 0);
    }
  });
});
