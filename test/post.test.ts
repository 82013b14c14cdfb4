/** Post-processing against values worked out by hand (comments give the arithmetic). */
import * as assert from 'assert';
import type { OutputTensor } from '../src/engine/types';
import { errorCode } from '../src/errors';
import { classify, defaultActivation, embeddingsOfRows, fillMask, logSumExp, poolEmbeddings, sigmoid, softmaxRow, topKIndices } from '../src/post';
import { createTokenizer } from '../src/tokenize/tokenizer';
import { tokenizerJsonFromVocab } from '../src/tokenize/vocab';

function tensor(rows: number[][]): OutputTensor {
  return { data: Float32Array.from(rows.flat()), rows: rows.length, cols: rows[0].length };
}

function close(actual: number, expected: number, tolerance = 1e-12): void {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${actual} is not within ${tolerance} of ${expected}`);
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return errorCode(err);
  }
  assert.fail('expected an error');
}

describe('post: activations', () => {
  it('log-sum-exp: 3 + ln(1 + e^-1 + e^-2) for [1, 2, 3]', () => {
    close(logSumExp([1, 2, 3], 0, 3), 3.40760596444438);
  });

  it('log-sum-exp and softmax stay finite where exp() overflows', () => {
    close(logSumExp([1000, 1000], 0, 2), 1000 + Math.LN2);
    assert.deepStrictEqual(Array.from(softmaxRow([1000, 1000], 0, 2)), [0.5, 0.5]);
    // e^-1000 underflows: the small class gets 0, not NaN.
    assert.deepStrictEqual(Array.from(softmaxRow([0, 1000], 0, 2)), [0, 1]);
  });

  it('softmax of [0, ln 3] is [1/4, 3/4], reading a row at an offset', () => {
    const p = softmaxRow([9, 9, 0, Math.log(3)], 2, 2);
    close(p[0], 0.25);
    close(p[1], 0.75);
  });

  it('sigmoid: 1/(1+e^-x) on both sides of 0, no overflow far out', () => {
    assert.strictEqual(sigmoid(0), 0.5);
    close(sigmoid(2), 0.8807970779778823);
    close(sigmoid(-2), 0.11920292202211755);
    assert.strictEqual(sigmoid(-1e6), 0);
    assert.strictEqual(sigmoid(1e6), 1);
  });

  it('top-k: largest first, ties keep the lower index, k larger than the row', () => {
    assert.deepStrictEqual(topKIndices([1, 5, 3, 5, 2], 0, 5, 3), [1, 3, 2]);
    assert.deepStrictEqual(topKIndices([1, 5, 3, 5, 2], 0, 5, 1), [1]);
    assert.deepStrictEqual(topKIndices([2, 1], 0, 2, 10), [0, 1]);
    assert.deepStrictEqual(topKIndices([0, 0, 4, 1, 2], 2, 3, 2), [0, 2]);
  });
});

describe('post: classify', () => {
  const logits = tensor([[1, 2, 3], [0, 0, 0]]);

  it('softmax: e^i / (e + e^2 + e^3), labels sorted by score', () => {
    const [first, second] = classify(logits, ['a', 'b', 'c']);
    assert.strictEqual(first.label, 'c');
    close(first.score, 0.6652409557748219);
    assert.deepStrictEqual(first.scores.map((s) => s.label), ['c', 'b', 'a']);
    close(first.scores[1].score, 0.24472847105479764);
    close(first.scores[2].score, 0.09003057317038046);
    // Equal logits: a third each, and the tie goes to the first label.
    assert.strictEqual(second.label, 'a');
    second.scores.forEach((s) => close(s.score, 1 / 3));
  });

  it('sigmoid per label, top k, and LABEL_i when the plan has no labels', () => {
    const [first] = classify(logits, null, { activation: 'sigmoid', topK: 2 });
    assert.strictEqual(first.label, 'LABEL_2');
    close(first.score, 0.9525741268224334);
    assert.deepStrictEqual(first.scores.map((s) => s.label), ['LABEL_2', 'LABEL_1']);
    close(first.scores[1].score, 0.8807970779778823);
  });

  it('raw logits with activation none', () => {
    const [first] = classify(logits, ['a', 'b', 'c'], { activation: 'none' });
    assert.deepStrictEqual(first.scores.map((s) => s.score), [3, 2, 1]);
  });

  it('picks sigmoid for multi-label models only', () => {
    assert.strictEqual(defaultActivation('multi_label_classification'), 'sigmoid');
    assert.strictEqual(defaultActivation('single_label_classification'), 'softmax');
    assert.strictEqual(defaultActivation(null), 'softmax');
  });

  it('rejects labels that do not match the classes, and bad options', () => {
    assert.strictEqual(codeOf(() => classify(logits, ['a', 'b'])), 'E_SHAPE');
    assert.strictEqual(codeOf(() => classify(logits, null, { topK: -1 })), 'E_INPUT');
    assert.strictEqual(codeOf(() => classify(logits, null, { activation: 'relu' as 'none' })), 'E_INPUT');
  });
});

describe('post: poolEmbeddings', () => {
  // Sequence 0: rows [1,2] [3,4] [5,6]; sequence 1: rows [0,0] [2,0].
  const hidden = tensor([[1, 2], [3, 4], [5, 6], [0, 0], [2, 0]]);
  const cu = Int32Array.from([0, 3, 5]);

  it('mean over every token of each sequence', () => {
    assert.deepStrictEqual(poolEmbeddings(hidden, cu).map((v) => Array.from(v)), [[3, 4], [1, 0]]);
  });

  it('CLS takes the first token', () => {
    assert.deepStrictEqual(poolEmbeddings(hidden, cu, { pooling: 'cls' }).map((v) => Array.from(v)), [[1, 2], [0, 0]]);
  });

  it('normalize: [3, 4] / 5 = [0.6, 0.8]; an all-zero vector stays zero', () => {
    const [a, b] = poolEmbeddings(hidden, cu, { normalize: true });
    close(a[0], 0.6, 1e-7);
    close(a[1], 0.8, 1e-7);
    assert.deepStrictEqual(Array.from(b), [1, 0]);
    const [, zero] = poolEmbeddings(hidden, cu, { pooling: 'cls', normalize: true });
    assert.deepStrictEqual(Array.from(zero), [0, 0]);
  });

  it('rejects cu_seqlens that do not cover the rows, and unknown pooling', () => {
    assert.strictEqual(codeOf(() => poolEmbeddings(hidden, Int32Array.from([0, 3]))), 'E_SHAPE');
    assert.strictEqual(codeOf(() => poolEmbeddings(hidden, Int32Array.from([0, 3, 3, 5]))), 'E_SHAPE');
    assert.strictEqual(codeOf(() => poolEmbeddings(hidden, cu, { pooling: 'max' as 'cls' })), 'E_INPUT');
  });
});

describe('post: embeddingsOfRows (a plan\'s pooled mean or cls output)', () => {
  const pooled = tensor([[3, 4], [0, 0], [1, -1]]);

  it('one vector per row, as given', () => {
    assert.deepStrictEqual(embeddingsOfRows(pooled).map((v) => Array.from(v)), [[3, 4], [0, 0], [1, -1]]);
  });

  it('normalize: unit length; an all-zero row stays zero', () => {
    const [a, zero, c] = embeddingsOfRows(pooled, true);
    close(a[0], 0.6, 1e-7);
    close(a[1], 0.8, 1e-7);
    assert.deepStrictEqual(Array.from(zero), [0, 0]);
    close(Math.hypot(...c), 1, 1e-7);
  });
});

describe('post: fillMask', () => {
  const vocab = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', 'the', 'cat', 'sat', 'on', 'mat', '##s'];
  const tokenizer = createTokenizer(tokenizerJsonFromVocab(vocab.join('\n')));
  const id = (token: string) => vocab.indexOf(token);
  const text = 'The [MASK] sat on the [MASK]';
  const encoding = tokenizer.encode(text);

  // Mask 1: cat 2, mat 1, the other nine 0. Mask 2: mat 3, ##s 2.5, the rest 0.
  function logits(): OutputTensor {
    const rows = [new Array(vocab.length).fill(0), new Array(vocab.length).fill(0)];
    rows[0][id('cat')] = 2;
    rows[0][id('mat')] = 1;
    rows[1][id('mat')] = 3;
    rows[1][id('##s')] = 2.5;
    return tensor(rows);
  }

  it('finds the masks where packEncodings selects them', () => {
    assert.deepStrictEqual(Array.from(encoding.ids), [2, 5, 4, 7, 8, 5, 4, 3]);
  });

  it('scores are softmax probabilities over the vocabulary, best first', () => {
    const [result] = fillMask(logits(), [encoding], tokenizer, { topK: 3, texts: [text] });
    assert.deepStrictEqual(result.masks.map((m) => m.position), [2, 6]);
    const first = result.masks[0].predictions;
    const z1 = Math.exp(2) + Math.exp(1) + 9;
    assert.deepStrictEqual(first.map((p) => p.token), ['cat', 'mat', '[PAD]']);
    assert.deepStrictEqual(first.map((p) => p.tokenId), [id('cat'), id('mat'), 0]);
    close(first[0].score, Math.exp(2) / z1, 1e-7);
    close(first[1].score, Math.exp(1) / z1, 1e-7);
    close(first[2].score, 1 / z1, 1e-7);
    const z2 = Math.exp(3) + Math.exp(2.5) + 9;
    close(result.masks[1].predictions[0].score, Math.exp(3) / z2, 1e-7);
    close(result.masks[1].predictions[1].score, Math.exp(2.5) / z2, 1e-7);
  });

  it('fills the text as written: top-1 everywhere, one mask varied per prediction', () => {
    const [result] = fillMask(logits(), [encoding], tokenizer, { texts: [text] });
    assert.strictEqual(result.sequence, 'The cat sat on the mat');
    assert.strictEqual(result.masks[0].predictions[1].sequence, 'The mat sat on the mat');
    // A word piece loses its ##.
    assert.strictEqual(result.masks[1].predictions[1].sequence, 'The cat sat on the s');
    assert.strictEqual(result.masks[0].predictions.length, 5);
  });

  it('decodes the tokens when no texts are given', () => {
    const [result] = fillMask(logits(), [encoding], tokenizer);
    assert.strictEqual(result.sequence, 'the cat sat on the mat');
  });

  it('takes rows in order across a batch', () => {
    const one = tokenizer.encode('the [MASK]');
    const results = fillMask(logits(), [one, one], tokenizer, { topK: 1 });
    assert.deepStrictEqual(results.map((r) => r.masks[0].predictions[0].token), ['cat', 'mat']);
  });

  it('rejects rows that do not match the masks, and a bad top k', () => {
    assert.strictEqual(codeOf(() => fillMask(logits(), [tokenizer.encode('the cat')], tokenizer)), 'E_SHAPE');
    assert.strictEqual(codeOf(() => fillMask(logits(), [encoding], tokenizer, { topK: 0 })), 'E_INPUT');
  });
});
