/**
 * The importable example flows (examples/*.json) run as shipped, in the real
 * Node-RED runtime (test/support/examples.ts says how).
 */
import * as assert from 'assert';
import { helper } from './support/red-helper';
import { readExample, runExample } from './support/examples';

describe('examples (as shipped)', function () {
  this.timeout(180000);
  afterEach(() => helper.unload());

  it('every example names only nodes of this package and Node-RED core', () => {
    for (const name of ['fill-mask', 'classification', 'embedding-similarity']) {
      for (const node of readExample(name)) {
        assert.match(node.type, /^(fusedrt-(engine|tokenize|infer|fill-mask|classify|embed)|inject|debug|function|catch|comment)$/, `${name}: ${node.type}`);
      }
    }
  });

  it('every infer node feeding a fill-mask node asks the engine for that node\'s top k', () => {
    let pairs = 0;
    for (const name of ['fill-mask', 'classification', 'embedding-similarity']) {
      const flow = readExample(name);
      for (const infer of flow.filter((n) => n.type === 'fusedrt-infer')) {
        for (const target of flow.filter((n) => n.type === 'fusedrt-fill-mask' && infer.wires!.flat().includes(n.id))) {
          assert.strictEqual(Number(infer.topK), Number(target.topK), `${name}: ${infer.id} → ${target.id}`);
          pairs++;
        }
      }
    }
    assert.ok(pairs > 0, 'no example wires infer → fill-mask');
  });

  it('fill-mask: one sentence and a batch of three', async () => {
    const got = await runExample('fill-mask', { 'fm-debug': 2 });
    const results = got['fm-debug'].map((m) => m.payload);
    const single = results.find((p) => !Array.isArray(p)) as { sequence: string; masks: unknown[] };
    const batch = results.find((p) => Array.isArray(p)) as Array<{ masks: unknown[] }>;
    assert.ok(single.sequence.startsWith('The capital of France is '));
    assert.deepStrictEqual(batch.map((r) => r.masks.length), [1, 2, 1]);
    for (const r of [single, ...batch] as Array<{ masks: Array<{ predictions: unknown[] }> }>) {
      for (const m of r.masks) assert.strictEqual(m.predictions.length, 5);
    }
  });

  it('embedding-similarity: the candidates ranked by cosine', async () => {
    const got = await runExample('embedding-similarity', { 'es-debug': 1 });
    const ranking = got['es-debug'][0].payload as Array<{ text: string; similarity: number }>;
    assert.strictEqual(ranking.length, 3);
    for (let i = 1; i < ranking.length; i++) assert.ok(ranking[i - 1].similarity >= ranking[i].similarity);
    for (const r of ranking) assert.ok(r.similarity >= -1 - 1e-6 && r.similarity <= 1 + 1e-6);
  });

  it('classification: a batch, a pair and a text straight to classify', async () => {
    const got = await runExample('classification', { 'cl-debug': 3 });
    const payloads = got['cl-debug'].map((m) => m.payload);
    const batch = payloads.find((p) => Array.isArray(p)) as Array<{ label: string }>;
    assert.strictEqual(batch.length, 2);
    for (const p of payloads) {
      for (const r of (Array.isArray(p) ? p : [p]) as Array<{ label: string; score: number; scores: unknown[] }>) {
        assert.ok(['informative', 'imaginative'].includes(r.label), r.label);
        assert.ok(r.score > 0 && r.score <= 1);
      }
    }
    // The trained demo classifier tells the committee report from the story.
    assert.deepStrictEqual(batch.map((r) => r.label), ['informative', 'imaginative']);
  });
});
