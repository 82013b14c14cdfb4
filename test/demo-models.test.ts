/**
 * The bundled demo models (models/demo, models/demo-classifier), trained by
 * tools/train/train_demo.py, run through FusedRT's CPU engine on the fixed
 * held-out sample that the same run wrote with PyTorch's figures
 * (test/fixtures/demo-heldout.json): fp32 plans built from the fp16 weights
 * must give the same held-out accuracies within half a percentage point.
 */
import * as assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { Engine } from '../src/engine/engine';
import { packEncodings } from '../src/engine/pack';
import type { Encoding } from '../src/tokenize/types';

const REPO = path.resolve(__dirname, '..', '..');
const SAMPLE_FILE = path.join(REPO, 'test', 'fixtures', 'demo-heldout.json');
/** How far FusedRT's accuracies may lie from PyTorch's on the same sample. */
const TOLERANCE = 0.005;
/** Sequences per engine run: well inside the engine's default limits. */
const CHUNK = 32;

interface MaskedSentence { text: string; ids: number[]; masked: number[]; gold: number[]; pytorchTop1: number[] }
interface LabelledText { text: string; label: string; pytorchLabel: string }
interface FillMaskExample { text: string; answer: string; top5: string[]; top5Ids: number[]; scores: number[] }
interface HeldoutSample {
  format: number;
  mlm: { model: string; maskTokenId: number; sentences: MaskedSentence[]; pytorch: { masks: number; top1: number; top5: number } };
  classification: {
    model: string; labels: string[]; texts: LabelledText[];
    pytorch: { texts: number; accuracy: number; confusion: number[][] };
  };
  fillMask: FillMaskExample[];
}

const SPECIAL_TOKENS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];

/** Indices of the k largest values of one row, largest first. */
function topK(row: Float32Array, k: number): number[] {
  const best: number[] = [];
  for (let i = 0; i < row.length; i++) {
    if (best.length < k || row[i] > row[best[best.length - 1]]) {
      let at = best.length < k ? best.length : k - 1;
      best[at] = i;
      while (at > 0 && row[best[at - 1]] < row[i]) { best[at] = best[at - 1]; best[--at] = i; }
    }
  }
  return best;
}

function rowOf(data: Float32Array, cols: number, r: number): Float32Array {
  return data.subarray(r * cols, (r + 1) * cols);
}

function withMasks(encoding: Encoding, positions: number[], maskId: number): Encoding {
  const ids = Int32Array.from(encoding.ids);
  for (const p of positions) ids[p] = maskId;
  return { ...encoding, ids };
}

function percent(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}

describe('the bundled demo models on the held-out sample', function () {
  this.timeout(120000);
  let sample: HeldoutSample;
  let tmp: string;
  let mlm: Engine;
  let classifier: Engine;

  before(async () => {
    if (!fs.existsSync(SAMPLE_FILE)) {
      throw new Error(`${path.relative(REPO, SAMPLE_FILE)} is missing: it comes with the demo models from tools/train/train_demo.py (tools/train/README.md)`);
    }
    sample = JSON.parse(fs.readFileSync(SAMPLE_FILE, 'utf8'));
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-demo-models-'));
    const mlmPlan = path.join(tmp, 'demo.plan');
    const classifierPlan = path.join(tmp, 'demo-classifier.plan');
    await buildPlan(path.join(REPO, sample.mlm.model), mlmPlan, { precision: 'fp32' });
    await buildPlan(path.join(REPO, sample.classification.model), classifierPlan, { precision: 'fp32' });
    mlm = await Engine.load(mlmPlan, { device: 'cpu', threads: 2, batchWindowMs: 0 });
    classifier = await Engine.load(classifierPlan, { device: 'cpu', threads: 2, batchWindowMs: 0 });
  });

  after(async () => {
    await mlm?.dispose();
    await classifier?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('is a real sample: hundreds of held-out sentences and texts, both labels', () => {
    assert.strictEqual(sample.format, 1);
    assert.ok(sample.mlm.sentences.length >= 300, `${sample.mlm.sentences.length} sentences`);
    assert.ok(sample.classification.texts.length >= 200, `${sample.classification.texts.length} texts`);
    assert.deepStrictEqual(sample.classification.labels, ['informative', 'imaginative']);
    for (const label of sample.classification.labels) {
      assert.ok(sample.classification.texts.filter((t) => t.label === label).length >= 50, label);
    }
    assert.ok(fs.statSync(SAMPLE_FILE).size < 1024 * 1024);
  });

  it('tokenizes every sample text to the ids of the Hugging Face tokenizer', () => {
    for (const engine of [mlm, classifier]) {
      for (const sentence of sample.mlm.sentences) {
        assert.deepStrictEqual(Array.from(engine.tokenizer.encode(sentence.text).ids), sentence.ids, sentence.text);
      }
    }
    assert.strictEqual(mlm.tokenizer.maskTokenId, sample.mlm.maskTokenId);
  });

  it('fill-mask: held-out top-1 and top-5 accuracy match PyTorch within 0.5 points', async () => {
    const maskId = mlm.tokenizer.maskTokenId!;
    let masks = 0;
    let top1 = 0;
    let top5 = 0;
    let sameTop1 = 0;
    for (let start = 0; start < sample.mlm.sentences.length; start += CHUNK) {
      const sentences = sample.mlm.sentences.slice(start, start + CHUNK);
      const encodings = sentences.map((s) => withMasks(mlm.tokenizer.encode(s.text), s.masked, maskId));
      const { batch } = packEncodings(encodings, { selectTokenId: maskId });
      const { logits } = await mlm.run({ ...batch, outputs: ['logits'] });
      assert.strictEqual(logits.cols, mlm.tokenizer.vocabSize);
      const gold = sentences.flatMap((s) => s.gold);
      const pytorchTop1 = sentences.flatMap((s) => s.pytorchTop1);
      assert.strictEqual(logits.rows, gold.length);
      gold.forEach((id, r) => {
        const best = topK(rowOf(logits.data, logits.cols, r), 5);
        masks++;
        if (best[0] === id) top1++;
        if (best.includes(id)) top5++;
        if (best[0] === pytorchTop1[r]) sameTop1++;
      });
    }
    const expected = sample.mlm.pytorch;
    assert.strictEqual(masks, expected.masks);
    const got = { top1: top1 / masks, top5: top5 / masks };
    const message = `FusedRT top-1 ${percent(got.top1)} top-5 ${percent(got.top5)}, PyTorch top-1 ${percent(expected.top1)} `
      + `top-5 ${percent(expected.top5)}; same top-1 on ${sameTop1} of ${masks} masks`;
    assert.ok(Math.abs(got.top1 - expected.top1) <= TOLERANCE, message);
    assert.ok(Math.abs(got.top5 - expected.top5) <= TOLERANCE, message);
    // A trained model, not noise: the answer is among the top 5 far more often than by chance.
    assert.ok(got.top5 > 0.3, message);
  });

  it('classification: held-out accuracy and confusion match PyTorch within 0.5 points', async () => {
    const { labels, texts } = sample.classification;
    const confusion = labels.map(() => labels.map(() => 0));
    let samePrediction = 0;
    for (let start = 0; start < texts.length; start += CHUNK) {
      const chunk = texts.slice(start, start + CHUNK);
      const { batch } = packEncodings(classifier.tokenizer.encodeBatch(chunk.map((t) => t.text)));
      const { logits } = await classifier.run({ ...batch, outputs: ['logits'] });
      assert.strictEqual(logits.cols, labels.length);
      chunk.forEach((text, r) => {
        const predicted = labels[topK(rowOf(logits.data, logits.cols, r), 1)[0]];
        confusion[labels.indexOf(text.label)][labels.indexOf(predicted)]++;
        if (predicted === text.pytorchLabel) samePrediction++;
      });
    }
    const accuracy = labels.reduce((n, _, i) => n + confusion[i][i], 0) / texts.length;
    const expected = sample.classification.pytorch;
    const message = `FusedRT accuracy ${percent(accuracy)} ${JSON.stringify(confusion)}, PyTorch ${percent(expected.accuracy)} `
      + `${JSON.stringify(expected.confusion)}; same label on ${samePrediction} of ${texts.length}`;
    assert.ok(Math.abs(accuracy - expected.accuracy) <= TOLERANCE, message);
    confusion.forEach((row, i) => row.forEach((n, j) => {
      assert.ok(Math.abs(n - expected.confusion[i][j]) <= TOLERANCE * texts.length, message);
    }));
    assert.ok(accuracy > 0.7, message);
  });

  it('the plans carry the classifier labels and the MLM vocabulary', () => {
    assert.deepStrictEqual(classifier.info.header.labels, sample.classification.labels);
    assert.strictEqual(classifier.info.header.source.architecture, 'BertForSequenceClassification');
    assert.strictEqual(mlm.info.header.source.architecture, 'BertForMaskedLM');
  });

  it('fill-mask answers on held-out sentences are ordinary English words, as in PyTorch', async () => {
    const maskId = mlm.tokenizer.maskTokenId!;
    assert.ok(sample.fillMask.length >= 3);
    const encodings = sample.fillMask.map((e) => mlm.tokenizer.encode(e.text));
    const { batch } = packEncodings(encodings, { selectTokenId: maskId });
    const { logits } = await mlm.run({ ...batch, outputs: ['logits'] });
    assert.strictEqual(logits.rows, sample.fillMask.length);
    sample.fillMask.forEach((example, r) => {
      const best = topK(rowOf(logits.data, logits.cols, r), 5);
      const words = best.map((id) => mlm.tokenizer.idToToken(id)!);
      // Near-ties may swap the lower ranks; the top answer and most of the five must agree.
      assert.strictEqual(words[0], example.top5[0], `${example.text}: ${words.join(' ')} vs ${example.top5.join(' ')}`);
      assert.ok(words.filter((w) => example.top5.includes(w)).length >= 4, `${words.join(' ')} vs ${example.top5.join(' ')}`);
      assert.match(words[0], /^[a-z]+$/, `${example.text}: ${words.join(' ')}`);
      assert.ok(!SPECIAL_TOKENS.includes(words[0]));
      assert.strictEqual(mlm.tokenizer.tokenToId(words[0]), best[0]);
    });
  });
});
