/**
 * Softmax top-k on the engine (run option topK): the CPU backend against a
 * straightforward TS reference over the full logits of the same run, its
 * path through the batcher, fill-mask on top-k results, and the checks.
 * (test/gpu/topk.gpu.ts compares the CUDA kernel with the CPU.)
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { Engine } from '../src/engine/engine';
import { packEncodings } from '../src/engine/pack';
import { isTopK, runGpuMs } from '../src/engine/run-result';
import type { OutputTensor, PackedBatch, TopKTensor } from '../src/engine/types';
import { fillMask } from '../src/post/fill-mask';
import { softmaxRow } from '../src/post/softmax';
import { randomModelVocabulary } from '../src/tools/demo-words';
import { writeRandomBertModel } from '../src/tools/random-model';

/** Per row: every column sorted by logit descending, lower id first on ties, with float64 softmax scores. */
function referenceTopK(logits: OutputTensor, k: number): { ids: number[]; scores: number[] } {
  const ids: number[] = [];
  const scores: number[] = [];
  for (let r = 0; r < logits.rows; r++) {
    const start = r * logits.cols;
    const probabilities = softmaxRow(logits.data, start, logits.cols);
    const order = Array.from({ length: logits.cols }, (_, c) => c)
      .sort((a, b) => logits.data[start + b] - logits.data[start + a] || a - b);
    for (const c of order.slice(0, k)) {
      ids.push(c);
      scores.push(probabilities[c]);
    }
  }
  return { ids, scores };
}

function assertMatchesReference(top: TopKTensor, logits: OutputTensor, k: number): void {
  assert.equal(top.rows, logits.rows);
  assert.equal(top.k, k);
  const want = referenceTopK(logits, k);
  assert.deepEqual(Array.from(top.topIds), want.ids);
  top.topScores.forEach((score, i) => {
    assert.ok(Math.abs(score - want.scores[i]) <= 1e-6 * Math.max(1, want.scores[i]) + 1e-9,
      `score ${i}: ${score} vs ${want.scores[i]}`);
  });
}

describe('softmax top-k on the engine', function () {
  this.timeout(120000);
  let dir: string;
  let engine: Engine;
  const texts = ['the [MASK] is red.', 'a dog and a [MASK] play in the [MASK].', 'we [MASK] home.'];
  let batch: PackedBatch;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-topk-'));
    const model = path.join(dir, 'mlm');
    writeRandomBertModel(model, {
      architecture: 'BertForMaskedLM', hiddenSize: 32, numLayers: 2, numHeads: 2, intermediateSize: 64, maxPositions: 64,
      vocab: randomModelVocabulary(), seed: 11,
    });
    const plan = path.join(dir, 'mlm.plan');
    await buildPlan(model, plan);
    engine = await Engine.load(plan, { device: 'cpu', threads: 2 });
    batch = packEncodings(engine.tokenizer.encodeBatch(texts), { selectTokenId: engine.tokenizer.maskTokenId }).batch;
  });

  after(async () => {
    await engine?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('gives the k best ids and their softmax scores over the whole row, for k = 1, 5, 64', async () => {
    const { logits } = await engine.run({ ...batch, outputs: ['logits'] });
    for (const k of [1, 5, 64]) {
      const result = await engine.run({ ...batch, outputs: ['logits'], topK: k });
      const top = result.logits;
      assert.ok(isTopK(top), 'a top-k output');
      assertMatchesReference(top, logits, k);
      assert.equal(runGpuMs(result), undefined, 'no GPU time on the CPU');
    }
  });

  it('leaves outputs without selected rows as they are', async () => {
    const result = await engine.run({ ...batch, outputs: ['logits', 'hidden'].filter((n) => engine.outputNames.includes(n)), topK: 3 });
    for (const [name, tensor] of Object.entries(result)) {
      const selected = engine.header.buffers.find((b) => b.name === engine.header.outputs.find((o) => o.name === name)?.buffer)?.rows === 'selected';
      assert.equal(isTopK(tensor), selected, name);
    }
  });

  it('merges concurrent top-k requests and splits their rows back', async () => {
    const single = texts.map((t) => packEncodings(engine.tokenizer.encodeBatch([t]), { selectTokenId: engine.tokenizer.maskTokenId }).batch);
    const alone: TopKTensor[] = [];
    for (const b of single) alone.push((await engine.run({ ...b, outputs: ['logits'], topK: 4 })).logits as TopKTensor);
    const together = await Promise.all(single.map((b) => engine.run({ ...b, outputs: ['logits'], topK: 4 })));
    // The GEMMs of a bigger batch may round differently: ids equal, scores close.
    together.forEach((r, i) => {
      const top = r.logits as TopKTensor;
      assert.deepEqual([top.rows, top.k, Array.from(top.topIds)], [alone[i].rows, alone[i].k, Array.from(alone[i].topIds)]);
      top.topScores.forEach((score, j) => assert.ok(Math.abs(score - alone[i].topScores[j]) <= 1e-6));
    });
  });

  it('fill-mask gives the same predictions from top-k results as from full logits', async () => {
    const encodings = engine.tokenizer.encodeBatch(texts);
    const { logits } = await engine.run({ ...batch, outputs: ['logits'] });
    const { logits: top } = await engine.run({ ...batch, outputs: ['logits'], topK: 5 });
    const full = fillMask(logits, encodings, engine.tokenizer, { topK: 5, texts });
    const fromTop = fillMask(top, encodings, engine.tokenizer, { topK: 5, texts });
    assert.equal(fromTop.length, full.length);
    fromTop.forEach((r, s) => {
      assert.equal(r.sequence, full[s].sequence);
      r.masks.forEach((m, i) => m.predictions.forEach((p, j) => {
        const want = full[s].masks[i].predictions[j];
        assert.deepEqual([p.tokenId, p.token, p.sequence], [want.tokenId, want.token, want.sequence]);
        assert.ok(Math.abs(p.score - want.score) <= 1e-6, `${p.score} vs ${want.score}`);
      }));
    });
    assert.throws(() => fillMask(top, encodings, engine.tokenizer, { topK: 6, texts }), { code: 'E_INPUT' });
  });

  it('rejects a bad topK, and topK without an output with selected rows', async () => {
    for (const topK of [0, 65, 2.5]) {
      await assert.rejects(engine.run({ ...batch, outputs: ['logits'], topK }), { code: 'E_INPUT' });
    }
    const others = engine.outputNames.filter((n) => n !== 'logits');
    if (others.length > 0) {
      await assert.rejects(engine.run({ ...batch, outputs: others, topK: 3 }), { code: 'E_INPUT' });
    }
  });
});
