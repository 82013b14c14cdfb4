import * as assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { BENCH_MODEL } from '../bench/cpu-bench';
import { buildPlan } from '../src/build/builder';
import { SafetensorsCheckpoint } from '../src/build/safetensors';
import { Engine } from '../src/engine/engine';
import { packEncodings } from '../src/engine/pack';
import { randomModelVocabulary } from '../src/tools/demo-words';
import { fnv1a32, randomUint32, streamSeed, uniformFloat32 } from '../src/tools/prng';
import {
  BERT_ARCHITECTURES, BertArchitecture, bertConfigJson, randomBertTensors, RandomBertOptions, weightChecksum,
  writeRandomBertModel,
} from '../src/tools/random-model';

function hex(values: Float32Array): string {
  return Buffer.from(values.buffer, values.byteOffset, values.byteLength).toString('hex');
}

function tinyOptions(architecture: BertArchitecture, seed = 11): RandomBertOptions {
  return {
    architecture, hiddenSize: 32, numLayers: 2, numHeads: 4, intermediateSize: 64, maxPositions: 64,
    vocab: randomModelVocabulary().slice(0, 300), seed, labels: ['NEG', 'NEU', 'POS'],
  };
}

function std(values: Float32Array): number {
  let sum = 0;
  let squares = 0;
  for (const v of values) { sum += v; squares += v * v; }
  const mean = sum / values.length;
  return Math.sqrt(squares / values.length - mean * mean);
}

describe('random BERT models', () => {
  describe('the generator (golden values shared with bench/make_bench_onnx.py)', () => {
    it('hashes names with FNV-1a and keys streams by name and seed', () => {
      assert.strictEqual(fnv1a32(''), 0x811c9dc5);
      assert.strictEqual(fnv1a32('a'), 0xe40c292c);
      assert.strictEqual(streamSeed('embeddings.word_embeddings.weight', 42), 0xdb668dba);
    });

    it('produces the golden 32-bit outputs, including past 2^31', () => {
      const key = streamSeed('embeddings.word_embeddings.weight', 42);
      const got = [0, 1, 2, 1000, 123456, 4294967295].map((i) => randomUint32(key, i));
      assert.deepStrictEqual(got, [0xd6098bae, 0xbd04f928, 0x4fddb7eb, 0xdfc1c50c, 0xfbf37a06, 0x57758b0a]);
    });

    it('produces the golden float32 bytes for weights and LayerNorm gains', () => {
      assert.strictEqual(hex(uniformFloat32('embeddings.word_embeddings.weight', 42, 5, 0, 0.05)),
        'dea8093d1d43c33c50079abc4ae982bc637cd0bc');
      assert.strictEqual(hex(uniformFloat32('bert.encoder.layer.0.output.LayerNorm.weight', 7, 3, 1, 0.1)),
        '7139723f62946a3f6749763f');
    });

    it('is counter-based: a prefix of a longer stream is the shorter stream', () => {
      const long = uniformFloat32('x', 3, 1000, 0, 1);
      assert.deepStrictEqual(long.subarray(0, 10), uniformFloat32('x', 3, 10, 0, 1));
    });

    it('stays inside [center - amplitude, center + amplitude) with the expected spread', () => {
      const values = uniformFloat32('spread', 5, 100000, 1, 0.1);
      assert.ok(values.every((v) => v >= 0.9 - 1e-7 && v < 1.1 + 1e-7));
      assert.ok(Math.abs(std(values) - 0.1 / Math.sqrt(3)) < 0.001, `std ${std(values)}`);
    });
  });

  describe('weights', () => {
    it('are deterministic and depend on the seed', () => {
      const a = weightChecksum(randomBertTensors(tinyOptions('BertModel')));
      assert.deepStrictEqual(weightChecksum(randomBertTensors(tinyOptions('BertModel'))), a);
      assert.notStrictEqual(weightChecksum(randomBertTensors(tinyOptions('BertModel', 12))).sha256, a.sha256);
    });

    it('match what numpy generates for the benchmark model (bench/make_bench_onnx.py --weights-only)', () => {
      const checksum = weightChecksum(randomBertTensors(BENCH_MODEL));
      assert.strictEqual(checksum.sha256, '76f5a087f6833fb2577098b89e2ba1ac528aab1027e8563268306ae12200c376');
      assert.ok(Math.abs(checksum.sum - 4919.310286870) < 1e-6, `sum ${checksum.sum}`);
    });

    it('have weight std in 0.02..0.05, LayerNorm gains near 1, and no zero bias', () => {
      for (const tensor of randomBertTensors(tinyOptions('BertForMaskedLM'))) {
        if (tensor.name.endsWith('LayerNorm.weight')) {
          assert.ok(tensor.data.every((v) => v > 0.89 && v < 1.11), tensor.name);
        } else if (tensor.name.endsWith('bias')) {
          assert.ok(tensor.data.every((v) => v !== 0 && Math.abs(v) < 0.06), tensor.name);
        } else if (tensor.data.length >= 1000) {
          const s = std(tensor.data);
          assert.ok(s > 0.02 && s < 0.05, `${tensor.name} std ${s}`);
        }
      }
    });

    it('use Hugging Face names for each architecture', () => {
      const names = (architecture: BertArchitecture) => randomBertTensors(tinyOptions(architecture)).map((t) => t.name);
      const base = names('BertModel');
      assert.ok(base.includes('embeddings.word_embeddings.weight') && base.includes('pooler.dense.weight'));
      assert.ok(base.includes('encoder.layer.1.attention.self.query.bias'));
      assert.strictEqual(base.length, 5 + 2 * 16 + 2);

      const mlm = names('BertForMaskedLM');
      assert.ok(mlm.includes('bert.encoder.layer.1.output.LayerNorm.weight'));
      assert.ok(mlm.includes('cls.predictions.bias') && mlm.includes('cls.predictions.transform.LayerNorm.bias'));
      assert.ok(!mlm.some((n) => n.includes('decoder') || n.includes('pooler')));

      const shapeOf = (architecture: BertArchitecture, name: string) =>
        randomBertTensors(tinyOptions(architecture)).find((t) => t.name === name)?.shape;
      assert.deepStrictEqual(shapeOf('BertForSequenceClassification', 'classifier.weight'), [3, 32]);
      assert.ok(names('BertForSequenceClassification').includes('bert.pooler.dense.bias'));
      assert.deepStrictEqual(shapeOf('BertForTokenClassification', 'classifier.bias'), [3]);
      assert.ok(!names('BertForTokenClassification').some((n) => n.includes('pooler')));
      assert.deepStrictEqual(shapeOf('BertForQuestionAnswering', 'qa_outputs.weight'), [2, 32]);
    });

    it('reject impossible shapes', () => {
      assert.throws(() => randomBertTensors({ ...tinyOptions('BertModel'), numHeads: 5 }), /divide/);
      assert.throws(() => randomBertTensors({ ...tinyOptions('BertModel'), vocab: ['a', '[PAD]'] }), /\[PAD\]/);
      assert.throws(() => randomBertTensors({ ...tinyOptions('BertModel'), seed: -1 }), /seed/);
    });
  });

  describe('written directories', () => {
    let tmp: string;
    before(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-random-model-')); });
    after(() => fs.rmSync(tmp, { recursive: true, force: true }));

    it('hold an HF config and exactly the generated weights (F32), or their F16 rounding', () => {
      const options = tinyOptions('BertForSequenceClassification');
      const dir = path.join(tmp, 'cls');
      writeRandomBertModel(dir, options);
      const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
      assert.deepStrictEqual(config, bertConfigJson(options));
      assert.deepStrictEqual(config.id2label, { 0: 'NEG', 1: 'NEU', 2: 'POS' });
      assert.deepStrictEqual(config.label2id, { NEG: 0, NEU: 1, POS: 2 });
      assert.strictEqual(config.vocab_size, 300);
      assert.strictEqual(fs.readFileSync(path.join(dir, 'vocab.txt'), 'utf8').split('\n')[4], '[MASK]');
      const tokenizer = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
      assert.strictEqual(tokenizer.model.vocab['[MASK]'], 4);

      const checkpoint = SafetensorsCheckpoint.openDirectory(dir);
      for (const tensor of randomBertTensors(options)) {
        assert.deepStrictEqual(checkpoint.entry(tensor.name)?.shape, tensor.shape);
        assert.deepStrictEqual(checkpoint.readFloat32(tensor.name), tensor.data, tensor.name);
      }

      const halfDir = path.join(tmp, 'cls-f16');
      writeRandomBertModel(halfDir, { ...options, dtype: 'F16' });
      const half = SafetensorsCheckpoint.openDirectory(halfDir);
      const gains = randomBertTensors(options).find((t) => t.name === 'bert.embeddings.LayerNorm.weight')!;
      assert.strictEqual(half.entry(gains.name)?.dtype, 'F16');
      half.readFloat32(gains.name).forEach((v, i) => assert.ok(Math.abs(v - gains.data[i]) < 1e-3));
    });
  });

  describe('the word vocabulary of random models', () => {
    it('holds the specials first, no duplicates, and real English words', () => {
      const vocab = randomModelVocabulary();
      assert.deepStrictEqual(vocab.slice(0, 5), ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']);
      assert.strictEqual(new Set(vocab).size, vocab.length);
      assert.ok(vocab.length > 2000);
      for (const token of ['the', 'capital', 'france', 'paris', 'tower', ',', '.', '7', 'z', '##q', '##ing']) {
        assert.ok(vocab.includes(token), token);
      }
    });
  });

  describe('in the engine', () => {
    let tmp: string;
    before(() => { tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-random-engine-')); });
    after(() => fs.rmSync(tmp, { recursive: true, force: true }));

    for (const architecture of BERT_ARCHITECTURES) {
      it(`${architecture} builds, loads and gives the same rows packed as alone`, async () => {
        const dir = path.join(tmp, architecture);
        writeRandomBertModel(dir, tinyOptions(architecture));
        const planPath = path.join(tmp, `${architecture}.plan`);
        const header = await buildPlan(dir, planPath);
        assert.strictEqual(header.source.architecture, architecture);
        const engine = await Engine.load(planPath, { device: 'cpu', threads: 2, batchWindowMs: 0 });
        try {
          const texts = ['the capital of france is [MASK] .', 'a small dog ran after the red ball in the park'];
          const encodings = engine.tokenizer.encodeBatch(texts);
          const mask = architecture === 'BertForMaskedLM' ? engine.tokenizer.maskTokenId : undefined;
          const together = await engine.run(packEncodings(encodings, { selectTokenId: mask }).batch);
          const first = await engine.run(packEncodings([encodings[0]], { selectTokenId: mask }).batch);
          for (const [name, tensor] of Object.entries(first)) {
            assert.ok(tensor.data.every(Number.isFinite), `${name} has non-finite values`);
            assert.ok(tensor.data.some((v) => v !== 0), `${name} is all zeros`);
            const prefix = together[name].data.subarray(0, tensor.data.length);
            const worst = prefix.reduce((m, v, i) => Math.max(m, Math.abs(v - tensor.data[i])), 0);
            assert.ok(worst < 1e-5, `${name}: packed and alone differ by ${worst}`);
          }
        } finally {
          await engine.dispose();
        }
      });
    }

    it('a random masked LM over the word vocabulary tokenises English without [UNK] and fills masks', async () => {
      const options: RandomBertOptions = {
        architecture: 'BertForMaskedLM', hiddenSize: 64, numLayers: 2, numHeads: 4, intermediateSize: 128,
        maxPositions: 128, vocab: randomModelVocabulary(), seed: 4,
      };
      const dir = path.join(tmp, 'words-mlm');
      writeRandomBertModel(dir, options);
      const planPath = path.join(tmp, 'words-mlm.plan');
      await buildPlan(dir, planPath);
      const engine = await Engine.load(planPath, { device: 'cpu', threads: 2, batchWindowMs: 0 });
      try {
        const encoding = engine.tokenizer.encode('The capital of France, [MASK], contains the Eiffel Tower.');
        assert.ok(!encoding.tokens.includes('[UNK]'), encoding.tokens.join(' '));
        const { batch } = packEncodings([encoding], { selectTokenId: engine.tokenizer.maskTokenId });
        const { logits } = await engine.run({ ...batch, outputs: ['logits'] });
        assert.strictEqual(logits.rows, 1);
        assert.strictEqual(logits.cols, options.vocab.length);
        assert.ok(logits.data.every(Number.isFinite));
      } finally {
        await engine.dispose();
      }
    });
  });
});
