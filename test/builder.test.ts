import * as assert from 'assert';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { e4m3ToFloat32 } from '../src/build/e4m3';
import { parsePlan, readPlanFile, type PlanContents } from '../src/build/plan-file';
import type { AddLayerNormOp, BufferDecl, GemmOp, PlanHeader, PlanOp, TensorEntry } from '../src/build/plan-types';
import { halfToFloat32 } from '../src/build/safetensors';
import { assemblePlan, splitPlan } from './support/tiny-bert-plan';
import { makeTempDir, writeTinyBert, type TinyBertOptions, type TinyBertWeights } from './support/tiny-hf-bert';

const LAYERS = 2;
const OPS_PER_LAYER = 7;

function floats(plan: PlanContents, name: string): Float32Array {
  const entry = plan.header.tensors.find((t) => t.name === name);
  assert.ok(entry, `plan has tensor ${name}`);
  const bytes = plan.tensorBytes(name);
  const copy = new Uint8Array(bytes);
  return entry.dtype === 'f16' ? halfToFloat32(new Uint16Array(copy.buffer)) : new Float32Array(copy.buffer);
}

async function rejectsWith(promise: Promise<unknown>, code: string, ...fragments: string[]): Promise<void> {
  await assert.rejects(promise, (err: Error & { code?: string }) => {
    assert.strictEqual(err.code, code, err.message);
    for (const f of fragments) assert.ok(err.message.includes(f), `"${err.message}" mentions "${f}"`);
    return true;
  });
}

describe('buildPlan', function () {
  this.timeout(60000);
  let root: string;
  let counter = 0;

  before(() => { root = makeTempDir('builder'); });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  async function build(options: TinyBertOptions, buildOptions: Parameters<typeof buildPlan>[2] = {}):
    Promise<{ header: PlanHeader; plan: PlanContents; weights: TinyBertWeights; dir: string }> {
    const dir = path.join(root, `model-${counter++}`);
    const weights = writeTinyBert(dir, options);
    const out = path.join(dir, 'model.plan');
    const header = await buildPlan(dir, out, buildOptions);
    return { header, plan: readPlanFile(out), weights, dir };
  }

  describe('architectures', () => {
    it('BertModel: embedding task, hidden, pooled, mean and cls outputs, encoder op graph', async () => {
      const { header, plan } = await build({ architecture: 'BertModel' });
      assert.deepStrictEqual(plan.header, header);
      assert.strictEqual(header.family, 'bert');
      assert.strictEqual(header.task, 'embedding');
      assert.strictEqual(header.source.architecture, 'BertModel');
      assert.deepStrictEqual(header.outputs, [{ name: 'hidden', buffer: 'hidden' }, { name: 'pooled', buffer: 'pooled' },
        { name: 'mean', buffer: 'mean' }, { name: 'cls', buffer: 'first' }]);
      assert.deepStrictEqual(header.config, {
        hiddenSize: 16, numLayers: 2, numHeads: 2, intermediateSize: 32, vocabSize: 30522, maxPositions: 64,
        typeVocabSize: 2, layerNormEps: 1e-12, hiddenAct: 'gelu', maxSeq: 64,
      });
      assert.strictEqual(header.labels, null);
      assert.deepStrictEqual(header.tokenizer, { tensor: 'tokenizer.json', maskToken: '[MASK]', doLowerCase: true });
      // The last layer also runs on the first rows alone (gather + 6 ops), which the pooler reads; then the mean rows.
      assert.strictEqual(header.ops.length, 1 + OPS_PER_LAYER * LAYERS + 7 + 2);
      assert.deepStrictEqual(header.ops.slice(1, 1 + OPS_PER_LAYER), [
        { type: 'gemm', in: 'hidden', weight: 'encoder.layer.0.attention.self.qkv.weight', bias: 'encoder.layer.0.attention.self.qkv.bias', activation: 'none', out: 'qkv' },
        { type: 'attention', in: 'qkv', out: 'ctx', heads: 2, headDim: 8, scale: 1 / Math.sqrt(8) },
        { type: 'gemm', in: 'ctx', weight: 'encoder.layer.0.attention.output.dense.weight', activation: 'none', out: 'proj' },
        { type: 'add_layernorm', in: 'proj', residual: 'hidden', bias: 'encoder.layer.0.attention.output.dense.bias', gamma: 'encoder.layer.0.attention.output.LayerNorm.weight', beta: 'encoder.layer.0.attention.output.LayerNorm.bias', eps: 1e-12, out: 'hidden' },
        { type: 'gemm', in: 'hidden', weight: 'encoder.layer.0.intermediate.dense.weight', bias: 'encoder.layer.0.intermediate.dense.bias', activation: 'gelu', out: 'inter' },
        { type: 'gemm', in: 'inter', weight: 'encoder.layer.0.output.dense.weight', activation: 'none', out: 'proj' },
        { type: 'add_layernorm', in: 'proj', residual: 'hidden', bias: 'encoder.layer.0.output.dense.bias', gamma: 'encoder.layer.0.output.LayerNorm.weight', beta: 'encoder.layer.0.output.LayerNorm.bias', eps: 1e-12, out: 'hidden' },
      ]);
      const lastLayer = header.ops.slice(1 + OPS_PER_LAYER * (LAYERS - 1));
      assert.deepStrictEqual(lastLayer.slice(0, 8), [
        { type: 'gemm', in: 'hidden', weight: 'encoder.layer.1.attention.self.qkv.weight', bias: 'encoder.layer.1.attention.self.qkv.bias', activation: 'none', out: 'qkv' },
        { type: 'gather_rows', in: 'hidden', out: 'first', select: 'first' },
        { type: 'attention', in: 'qkv', out: 'first_ctx', heads: 2, headDim: 8, scale: 1 / Math.sqrt(8), select: 'first' },
        { type: 'gemm', in: 'first_ctx', weight: 'encoder.layer.1.attention.output.dense.weight', activation: 'none', out: 'first_proj' },
        { type: 'add_layernorm', in: 'first_proj', residual: 'first', bias: 'encoder.layer.1.attention.output.dense.bias', gamma: 'encoder.layer.1.attention.output.LayerNorm.weight', beta: 'encoder.layer.1.attention.output.LayerNorm.bias', eps: 1e-12, out: 'first' },
        { type: 'gemm', in: 'first', weight: 'encoder.layer.1.intermediate.dense.weight', bias: 'encoder.layer.1.intermediate.dense.bias', activation: 'gelu', out: 'first_inter' },
        { type: 'gemm', in: 'first_inter', weight: 'encoder.layer.1.output.dense.weight', activation: 'none', out: 'first_proj' },
        { type: 'add_layernorm', in: 'first_proj', residual: 'first', bias: 'encoder.layer.1.output.dense.bias', gamma: 'encoder.layer.1.output.LayerNorm.weight', beta: 'encoder.layer.1.output.LayerNorm.bias', eps: 1e-12, out: 'first' },
      ]);
      // Then the same layer on every token (for `hidden`), the pooler on the first rows, each sequence's mean row.
      assert.deepStrictEqual(lastLayer.slice(8, -2), header.ops.slice(2, 1 + OPS_PER_LAYER).map((op) => JSON.parse(JSON.stringify(op).replace(/layer\.0\./g, 'layer.1.'))));
      assert.deepStrictEqual(header.ops.slice(-2), [
        { type: 'gemm', in: 'first', weight: 'pooler.dense.weight', bias: 'pooler.dense.bias', activation: 'tanh', out: 'pooled' },
        { type: 'mean_rows', in: 'hidden', out: 'mean' },
      ]);
      assert.deepStrictEqual(header.buffers.find((b) => b.name === 'mean'), { name: 'mean', rows: 'sequences', cols: 16 });
      assert.deepStrictEqual(header.buffers.filter((b) => b.name.startsWith('first')), [
        { name: 'first', rows: 'sequences', cols: 16 }, { name: 'first_ctx', rows: 'sequences', cols: 16 },
        { name: 'first_proj', rows: 'sequences', cols: 16 }, { name: 'first_inter', rows: 'sequences', cols: 32 },
      ]);
      const tokenizer = JSON.parse(Buffer.from(plan.tensorBytes('tokenizer.json')).toString('utf8'));
      assert.strictEqual(tokenizer.model.type, 'WordPiece');
    });

    it('BertModel without pooler weights has no pooled output, but still mean and cls (the last layer on the first rows)', async () => {
      const { header } = await build({ architecture: 'BertModel', pooler: false });
      assert.deepStrictEqual(header.outputs, [{ name: 'hidden', buffer: 'hidden' }, { name: 'mean', buffer: 'mean' }, { name: 'cls', buffer: 'first' }]);
      assert.ok(!header.buffers.some((b) => b.name === 'pooled'));
      assert.ok(header.ops.some((op) => op.type === 'attention' && op.out === 'first_ctx' && op.select === 'first'));
    });

    it('BertForMaskedLM: MLM head on the selected rows, decoder tied to the word embeddings', async () => {
      const { header, plan, weights } = await build({ architecture: 'BertForMaskedLM', config: { hidden_act: 'gelu_new' } });
      assert.strictEqual(header.task, 'fill-mask');
      assert.deepStrictEqual(header.outputs, [{ name: 'logits', buffer: 'mlm_logits' }, { name: 'hidden', buffer: 'hidden' },
        { name: 'mean', buffer: 'mean' }, { name: 'cls', buffer: 'cls' }]);
      assert.deepStrictEqual(header.buffers.find((b) => b.name === 'mlm_logits'), { name: 'mlm_logits', rows: 'selected', cols: 30522 });
      // The last layer ran on the selected rows alone into `sel`, which the head reads.
      assert.deepStrictEqual(header.ops.slice(1 + OPS_PER_LAYER * (LAYERS - 1) + 1, 1 + OPS_PER_LAYER * (LAYERS - 1) + 3), [
        { type: 'gather_rows', in: 'hidden', out: 'sel', select: 'selected' },
        { type: 'attention', in: 'qkv', out: 'sel_ctx', heads: 2, headDim: 8, scale: 1 / Math.sqrt(8), select: 'selected' },
      ]);
      assert.deepStrictEqual(header.ops.slice(-5), [
        { type: 'gemm', in: 'sel', weight: 'cls.predictions.transform.dense.weight', bias: 'cls.predictions.transform.dense.bias', activation: 'gelu_tanh', out: 'sel_t' },
        { type: 'add_layernorm', in: 'sel_t', gamma: 'cls.predictions.transform.LayerNorm.weight', beta: 'cls.predictions.transform.LayerNorm.bias', eps: 1e-12, out: 'sel_t' },
        { type: 'gemm', in: 'sel_t', weight: 'embeddings.word_embeddings.weight', bias: 'cls.predictions.bias', activation: 'none', out: 'mlm_logits' },
        // Sentence embeddings, as every BERT plan has them; without the first rows' last layer, cls gathers them.
        { type: 'mean_rows', in: 'hidden', out: 'mean' },
        { type: 'gather_rows', in: 'hidden', out: 'cls', select: 'first' },
      ]);
      assert.strictEqual((header.ops[5] as GemmOp).activation, 'gelu_tanh', 'the FFN uses hidden_act too');
      assert.ok(!header.tensors.some((t) => t.name.includes('decoder')), 'the tied decoder is not copied');
      assert.deepStrictEqual(floats(plan, 'cls.predictions.bias'), weights.get('cls.predictions.bias')!.values);
    });

    it('BertForMaskedLM with tie_word_embeddings false uses the stored decoder and the legacy decoder bias name', async () => {
      const { header, plan, weights } = await build({ architecture: 'BertForMaskedLM', storeDecoder: true, config: { tie_word_embeddings: false } });
      assert.strictEqual((header.ops[header.ops.length - 3] as GemmOp).weight, 'cls.predictions.decoder.weight');
      assert.deepStrictEqual(floats(plan, 'cls.predictions.decoder.weight'), weights.get('cls.predictions.decoder.weight')!.values);
    });

    it('BertForSequenceClassification: pooler + classifier, labels in id order', async () => {
      const { header, plan, weights } = await build({
        architecture: 'BertForSequenceClassification', labels: ['negative', 'neutral', 'positive'],
        config: { problem_type: 'single_label_classification' },
      });
      assert.strictEqual(header.task, 'classification');
      assert.deepStrictEqual(header.labels, ['negative', 'neutral', 'positive']);
      assert.strictEqual(header.problemType, 'single_label_classification');
      assert.deepStrictEqual(header.outputs[0], { name: 'logits', buffer: 'cls_logits' });
      assert.deepStrictEqual(header.buffers.find((b) => b.name === 'cls_logits'), { name: 'cls_logits', rows: 'sequences', cols: 3 });
      assert.deepStrictEqual(header.ops.slice(-2), [
        { type: 'gemm', in: 'pooled', weight: 'classifier.weight', bias: 'classifier.bias', activation: 'none', out: 'cls_logits' },
        { type: 'mean_rows', in: 'hidden', out: 'mean' },
      ]);
      assert.deepStrictEqual(header.outputs.slice(-2), [{ name: 'mean', buffer: 'mean' }, { name: 'cls', buffer: 'first' }]);
      assert.deepStrictEqual(floats(plan, 'classifier.weight'), weights.get('classifier.weight')!.values);
    });

    it('BertForTokenClassification: classifier on every token', async () => {
      const { header } = await build({ architecture: 'BertForTokenClassification', labels: ['O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC'] });
      assert.strictEqual(header.task, 'token-classification');
      assert.strictEqual(header.labels!.length, 5);
      assert.deepStrictEqual(header.buffers.find((b) => b.name === 'token_logits'), { name: 'token_logits', rows: 'tokens', cols: 5 });
      assert.deepStrictEqual(header.ops[header.ops.length - 3],
        { type: 'gemm', in: 'hidden', weight: 'classifier.weight', bias: 'classifier.bias', activation: 'none', out: 'token_logits' });
      assert.strictEqual(header.ops.length, 1 + OPS_PER_LAYER * LAYERS + 1 + 2);
    });

    it('BertForQuestionAnswering: span logits [tokens, 2]', async () => {
      const { header } = await build({ architecture: 'BertForQuestionAnswering' });
      assert.strictEqual(header.task, 'question-answering');
      assert.strictEqual(header.labels, null);
      assert.deepStrictEqual(header.outputs[0], { name: 'span_logits', buffer: 'span_logits' });
      assert.deepStrictEqual(header.buffers.find((b) => b.name === 'span_logits'), { name: 'span_logits', rows: 'tokens', cols: 2 });
    });

    it('classifiers without id2label get LABEL_<i> names sized by the checkpoint', async () => {
      const { header } = await build({ architecture: 'BertForSequenceClassification' });
      assert.deepStrictEqual(header.labels, ['LABEL_0', 'LABEL_1']);
    });
  });

  describe('weights', () => {
    it('fuses Q, K and V into one [3H, H] matrix and [3H] bias', async () => {
      const { plan, weights } = await build({ architecture: 'BertForQuestionAnswering' });
      const q = weights.get('bert.encoder.layer.1.attention.self.query.weight')!.values;
      const k = weights.get('bert.encoder.layer.1.attention.self.key.weight')!.values;
      const v = weights.get('bert.encoder.layer.1.attention.self.value.weight')!.values;
      assert.deepStrictEqual(floats(plan, 'encoder.layer.1.attention.self.qkv.weight'), Float32Array.from([...q, ...k, ...v]));
      assert.deepStrictEqual(plan.header.tensors.find((t) => t.name === 'encoder.layer.1.attention.self.qkv.bias')!.shape, [48]);
      const vb = weights.get('bert.encoder.layer.1.attention.self.value.bias')!.values;
      assert.deepStrictEqual(floats(plan, 'encoder.layer.1.attention.self.qkv.bias').subarray(32), vb);
    });

    it('fp16 halves the matrix bytes, keeps biases and LayerNorm in f32 and rounds to nearest', async () => {
      const base = { architecture: 'BertForMaskedLM', seed: 7 };
      const fp32 = await build(base);
      const fp16 = await build(base, { precision: 'fp16' });
      assert.strictEqual(fp16.header.precision, 'fp16');
      assert.deepStrictEqual(fp16.header.tensors.map((t) => t.name), fp32.header.tensors.map((t) => t.name));
      for (const t of fp16.header.tensors) {
        const full = fp32.header.tensors.find((e) => e.name === t.name)!;
        if (t.name === 'tokenizer.json') continue;
        if (t.shape.length === 2) {
          assert.strictEqual(t.dtype, 'f16', t.name);
          assert.strictEqual(t.size * 2, full.size, t.name);
        } else {
          assert.strictEqual(t.dtype, 'f32', t.name);
          assert.strictEqual(t.size, full.size, t.name);
        }
      }
      const exact = floats(fp32.plan, 'encoder.layer.0.intermediate.dense.weight');
      const half = floats(fp16.plan, 'encoder.layer.0.intermediate.dense.weight');
      for (let i = 0; i < exact.length; i++) {
        // Round-to-nearest is within half an ulp: 2^-11 relative for normal halves, 2^-25 absolute below 2^-14.
        assert.ok(Math.abs(half[i] - exact[i]) <= Math.max(Math.abs(exact[i]) * 2 ** -11, 2 ** -25), `${exact[i]} → ${half[i]}`);
      }
      const weightBytes = (h: PlanHeader) => h.tensors.filter((t) => t.shape.length === 2).reduce((n, t) => n + t.size, 0);
      assert.strictEqual(weightBytes(fp16.header) * 2, weightBytes(fp32.header));
    });

    it('a sharded checkpoint builds the same tensors as a single file', async () => {
      const single = await build({ architecture: 'BertForSequenceClassification', seed: 3 });
      const sharded = await build({ architecture: 'BertForSequenceClassification', seed: 3, shards: 3 });
      assert.deepStrictEqual(sharded.header.source.files, ['config.json', 'model.safetensors.index.json',
        'model-00001-of-00003.safetensors', 'model-00002-of-00003.safetensors', 'model-00003-of-00003.safetensors']);
      assert.deepStrictEqual(sharded.header.tensors, single.header.tensors);
      assert.deepStrictEqual(sharded.header.ops, single.header.ops);
      for (const t of single.header.tensors) {
        assert.ok(Buffer.from(sharded.plan.tensorBytes(t.name)).equals(Buffer.from(single.plan.tensorBytes(t.name))), t.name);
      }
      assert.notStrictEqual(sharded.header.source.sha256, single.header.source.sha256);
    });

    it('reads BF16 and F16 checkpoints', async () => {
      for (const dtype of ['BF16', 'F16'] as const) {
        const { plan, weights } = await build({ architecture: 'BertModel', dtype });
        assert.deepStrictEqual(floats(plan, 'encoder.layer.0.output.dense.weight'), weights.get('encoder.layer.0.output.dense.weight')!.values);
        assert.deepStrictEqual(floats(plan, 'embeddings.LayerNorm.bias'), weights.get('embeddings.LayerNorm.bias')!.values);
      }
    });

    it('accepts legacy gamma/beta names and encoders with or without the bert. prefix', async () => {
      const legacy = await build({ architecture: 'BertForTokenClassification', legacyLayerNormNames: true });
      assert.deepStrictEqual(floats(legacy.plan, 'encoder.layer.1.output.LayerNorm.weight'), legacy.weights.get('bert.encoder.layer.1.output.LayerNorm.gamma')!.values);
      const prefixedBase = await build({ architecture: 'BertModel', prefixed: true });
      assert.deepStrictEqual(floats(prefixedBase.plan, 'pooler.dense.weight'), prefixedBase.weights.get('bert.pooler.dense.weight')!.values);
      const unprefixedHead = await build({ architecture: 'BertForQuestionAnswering', prefixed: false });
      assert.deepStrictEqual(floats(unprefixedHead.plan, 'embeddings.word_embeddings.weight').subarray(0, 16),
        unprefixedHead.weights.get('embeddings.word_embeddings.weight')!.values.subarray(0, 16));
    });

    it('hashes config.json and the weight files, each framed by name and size', async () => {
      const { header, dir } = await build({ architecture: 'BertModel' });
      assert.deepStrictEqual(header.source.files, ['config.json', 'model.safetensors']);
      const hash = createHash('sha256');
      for (const f of header.source.files) {
        const bytes = fs.readFileSync(path.join(dir, f));
        hash.update(`${f}\0${bytes.length}\0`);
        hash.update(bytes);
      }
      assert.strictEqual(header.source.sha256, hash.digest('hex'));
    });
  });

  describe('fp8', () => {
    const E4M3_WEIGHT = /^encoder\.layer\.\d+\.(attention\.self\.qkv|attention\.output\.dense|intermediate\.dense|output\.dense)\.weight$/;

    /** A plan tensor's values in the checkpoint; the fused QKV matrix is query, key and value one after another. */
    function sourceValues(weights: TinyBertWeights, prefix: string, planName: string): Float32Array {
      const parts = planName.endsWith('.qkv.weight')
        ? ['query', 'key', 'value'].map((m) => `${prefix}${planName.replace('qkv', m)}`)
        : [`${prefix}${planName}`];
      return Float32Array.from(parts.flatMap((name) => [...weights.get(name)!.values]));
    }

    it('stores the four GEMM weights of every layer in E4M3 scaled by max |w| / 448, everything else as fp16 does', async () => {
      for (const [architecture, prefix] of [['BertModel', ''], ['BertForMaskedLM', 'bert.']] as const) {
        const fp16 = await build({ architecture, seed: 5 }, { precision: 'fp16' });
        const { header, plan, weights } = await build({ architecture, seed: 5 }, { precision: 'fp8' });
        assert.strictEqual(header.precision, 'fp8');
        assert.deepStrictEqual(header.tensors.map((t) => t.name), fp16.header.tensors.map((t) => t.name));
        const e4m3 = header.tensors.filter((t) => t.dtype === 'f8e4m3');
        assert.deepStrictEqual(e4m3.map((t) => t.name), header.tensors.map((t) => t.name).filter((n) => E4M3_WEIGHT.test(n)));
        assert.strictEqual(e4m3.length, 4 * LAYERS);
        for (const t of e4m3) {
          const source = sourceValues(weights, prefix, t.name);
          assert.strictEqual(t.size, source.length, t.name);
          // The runtime reads the scale as a float32.
          assert.strictEqual(t.scale, Math.fround(source.reduce((m, v) => Math.max(m, Math.abs(v)), 0) / 448), t.name);
          const decoded = e4m3ToFloat32(plan.tensorBytes(t.name), t.scale!);
          // Within half a step: 2^-4 of the value for normals, scale · 2^-10 among the subnormals.
          source.forEach((v, i) => assert.ok(Math.abs(decoded[i] - v) <= Math.max(Math.abs(v) * 2 ** -4, t.scale! * 2 ** -10), `${t.name}[${i}]: ${v} → ${decoded[i]}`));
          assert.ok(decoded.some((v, i) => v !== source[i]), `${t.name} is rounded`);
        }
        for (const t of header.tensors.filter((e) => e.dtype !== 'f8e4m3')) {
          const same = fp16.header.tensors.find((e) => e.name === t.name)!;
          assert.deepStrictEqual({ ...t, offset: 0 }, { ...same, offset: 0 }, t.name);
          assert.ok(!('scale' in t), t.name);
          if (t.name !== 'tokenizer.json') assert.ok(Buffer.from(plan.tensorBytes(t.name)).equals(Buffer.from(fp16.plan.tensorBytes(t.name))), t.name);
        }
      }
    });

    it('feeds the E4M3 GEMMs from hidden8 (the LayerNorms\' out8), ctx8 (attention) and inter8 (FFN1)', async () => {
      const { header } = await build({ architecture: 'BertModel' }, { precision: 'fp8' });
      const f8 = (name: string, rows: BufferDecl['rows'], cols: number): BufferDecl => ({ name, rows, cols, dtype: 'f8e4m3' });
      assert.deepStrictEqual(header.buffers, [
        { name: 'hidden', rows: 'tokens', cols: 16 }, f8('hidden8', 'tokens', 16), { name: 'qkv', rows: 'tokens', cols: 48 },
        f8('ctx8', 'tokens', 16), { name: 'proj', rows: 'tokens', cols: 16 }, f8('inter8', 'tokens', 32),
        { name: 'first', rows: 'sequences', cols: 16 }, f8('first8', 'sequences', 16), f8('first_ctx8', 'sequences', 16),
        { name: 'first_proj', rows: 'sequences', cols: 16 }, f8('first_inter8', 'sequences', 32), { name: 'pooled', rows: 'sequences', cols: 16 },
        { name: 'mean', rows: 'sequences', cols: 16 },
      ]);
      assert.strictEqual(header.ops.length, 1 + OPS_PER_LAYER * LAYERS + 7 + 2);
      assert.deepStrictEqual(header.ops[0], {
        type: 'embed_layernorm', word: 'embeddings.word_embeddings.weight', position: 'embeddings.position_embeddings.weight',
        tokenType: 'embeddings.token_type_embeddings.weight', gamma: 'embeddings.LayerNorm.weight', beta: 'embeddings.LayerNorm.bias',
        eps: 1e-12, out: 'hidden', out8: 'hidden8',
      });
      const layer = (l: number, x: string, [ctx, proj, inter]: string[], last: boolean): PlanOp[] => [
        { type: 'gemm', in: ctx, weight: `encoder.layer.${l}.attention.output.dense.weight`, activation: 'none', out: proj },
        { type: 'add_layernorm', in: proj, residual: x, bias: `encoder.layer.${l}.attention.output.dense.bias`, gamma: `encoder.layer.${l}.attention.output.LayerNorm.weight`, beta: `encoder.layer.${l}.attention.output.LayerNorm.bias`, eps: 1e-12, out: x, out8: `${x}8` },
        { type: 'gemm', in: `${x}8`, weight: `encoder.layer.${l}.intermediate.dense.weight`, bias: `encoder.layer.${l}.intermediate.dense.bias`, activation: 'gelu', out: inter },
        { type: 'gemm', in: inter, weight: `encoder.layer.${l}.output.dense.weight`, activation: 'none', out: proj },
        { type: 'add_layernorm', in: proj, residual: x, bias: `encoder.layer.${l}.output.dense.bias`, gamma: `encoder.layer.${l}.output.LayerNorm.weight`, beta: `encoder.layer.${l}.output.LayerNorm.bias`, eps: 1e-12, out: x, ...(last ? {} : { out8: `${x}8` }) },
      ];
      const qkv = (l: number): PlanOp => ({ type: 'gemm', in: 'hidden8', weight: `encoder.layer.${l}.attention.self.qkv.weight`, bias: `encoder.layer.${l}.attention.self.qkv.bias`, activation: 'none', out: 'qkv' });
      const attention = { type: 'attention', in: 'qkv', out: 'ctx8', heads: 2, headDim: 8, scale: 1 / Math.sqrt(8) } as const;
      assert.deepStrictEqual(header.ops.slice(1), [
        qkv(0), attention, ...layer(0, 'hidden', ['ctx8', 'proj', 'inter8'], false),
        qkv(1),
        { type: 'gather_rows', in: 'hidden', out: 'first', select: 'first' },
        { ...attention, out: 'first_ctx8', select: 'first' },
        // The last layer's outputs have no E4M3 copy: no GEMM reads them.
        ...layer(1, 'first', ['first_ctx8', 'first_proj', 'first_inter8'], true),
        attention, ...layer(1, 'hidden', ['ctx8', 'proj', 'inter8'], true),
        { type: 'gemm', in: 'first', weight: 'pooler.dense.weight', bias: 'pooler.dense.bias', activation: 'tanh', out: 'pooled' },
        { type: 'mean_rows', in: 'hidden', out: 'mean' },
      ]);
    });

    it('names the E4M3 buffers of the selected rows after sel, and adds none where no head rows are computed', async () => {
      const mlm = await build({ architecture: 'BertForMaskedLM' }, { precision: 'fp8' });
      assert.deepStrictEqual(mlm.header.buffers.filter((b) => b.dtype === 'f8e4m3').map((b) => [b.name, b.rows, b.cols]),
        [['hidden8', 'tokens', 16], ['ctx8', 'tokens', 16], ['inter8', 'tokens', 32], ['sel8', 'selected', 16], ['sel_ctx8', 'selected', 16],
          ['sel_inter8', 'selected', 32]]);
      assert.ok(mlm.header.ops.some((op) => op.type === 'gemm' && op.in === 'sel8' && op.out === 'sel_inter8'));
      const tokens = await build({ architecture: 'BertForTokenClassification' }, { precision: 'fp8' });
      assert.deepStrictEqual(tokens.header.buffers.filter((b) => b.dtype === 'f8e4m3').map((b) => b.name), ['hidden8', 'ctx8', 'inter8']);
      const norms = tokens.header.ops.filter((op): op is AddLayerNormOp => op.type === 'add_layernorm');
      assert.deepStrictEqual(norms.map((op) => op.out8), ['hidden8', 'hidden8', 'hidden8', undefined]);
      // Without fp8 the same model has no E4M3 buffer, tensor or out8.
      const fp16 = await build({ architecture: 'BertForTokenClassification' }, { precision: 'fp16' });
      assert.ok(!JSON.stringify(fp16.header).match(/f8e4m3|out8|hidden8|ctx8|inter8/));
    });

    describe('the plan reader enforces the f8e4m3 rules', () => {
      let bytes: Buffer;
      before(async () => {
        const dir = path.join(root, 'fp8-reader');
        writeTinyBert(dir, { architecture: 'BertModel' });
        await buildPlan(dir, path.join(dir, 'model.plan'), { precision: 'fp8' });
        bytes = fs.readFileSync(path.join(dir, 'model.plan'));
      });

      const edited = (edit: (h: PlanHeader) => void): Buffer => {
        const { headerText, data } = splitPlan(bytes);
        const header = JSON.parse(headerText) as PlanHeader;
        edit(header);
        return assemblePlan(Buffer.from(JSON.stringify(header), 'utf8'), data);
      };
      const tensor = (h: PlanHeader, name: string): TensorEntry => h.tensors.find((t) => t.name === name)!;
      const gemm = (h: PlanHeader, weight: string): GemmOp => h.ops.find((op): op is GemmOp => op.type === 'gemm' && op.weight === weight)!;
      const opOf = <T extends PlanOp['type']>(h: PlanHeader, type: T) => h.ops.find((op): op is Extract<PlanOp, { type: T }> => op.type === type)!;
      const QKV = 'encoder.layer.0.attention.self.qkv.weight';

      it('reads the plan as built', () => {
        assert.strictEqual(parsePlan(edited(() => undefined)).header.precision, 'fp8');
      });

      const cases: [string, (h: PlanHeader) => void, string][] = [
        ['an f8e4m3 tensor without a scale', (h) => { delete tensor(h, QKV).scale; }, `f8e4m3 tensor "${QKV}" needs a finite scale > 0, has undefined`],
        ['scale 0', (h) => { tensor(h, QKV).scale = 0; }, 'needs a finite scale > 0, has 0'],
        ['a scale that is 0 as a float32', (h) => { tensor(h, QKV).scale = 1e-50; }, 'needs a finite scale > 0'],
        ['a scale given as a string', (h) => { (tensor(h, QKV) as { scale: unknown }).scale = '0.5'; }, 'needs a finite scale > 0'],
        ['an f16 tensor with a scale', (h) => { tensor(h, 'pooler.dense.weight').scale = 1; }, 'has a scale, which only f8e4m3 tensors have'],
        ['an f8e4m3 tensor read as LayerNorm gamma', (h) => { Object.assign(tensor(h, 'embeddings.LayerNorm.weight'), { dtype: 'f8e4m3', scale: 1 }); }, 'reads f8e4m3 tensor "embeddings.LayerNorm.weight"'],
        ['a gemm with an f8e4m3 weight reading a float buffer', (h) => { gemm(h, QKV).in = 'hidden'; }, `its weight "${QKV}" is f8e4m3, so its input must be an f8e4m3 buffer, not "hidden"`],
        ['a gemm with an f16 weight reading an f8e4m3 buffer', (h) => { gemm(h, 'pooler.dense.weight').in = 'first8'; }, 'its input "first8" is an f8e4m3 buffer'],
        ['a gemm with an f16 weight writing an f8e4m3 buffer', (h) => { gemm(h, 'pooler.dense.weight').out = 'first8'; }, 'writes f8e4m3 buffer "first8" as out'],
        ['out8 naming a float buffer', (h) => { opOf(h, 'embed_layernorm').out8 = 'proj'; }, 'out8 names buffer "proj", which is not an f8e4m3 buffer'],
        ['out8 of other cols', (h) => { opOf(h, 'embed_layernorm').out8 = 'inter8'; }, 'out8 buffer "inter8" (tokens × 32) is not shaped as out "hidden" (tokens × 16)'],
        ['out8 of other rows', (h) => { opOf(h, 'add_layernorm').out8 = 'first8'; }, 'out8 buffer "first8" (sequences × 16) is not shaped as out "hidden"'],
        ['a LayerNorm writing an f8e4m3 buffer as out', (h) => { opOf(h, 'add_layernorm').out = 'hidden8'; }, 'writes f8e4m3 buffer "hidden8" as out'],
        ['an f8e4m3 buffer as a plan output', (h) => { h.outputs[0].buffer = 'hidden8'; }, 'output "hidden" names f8e4m3 buffer "hidden8"'],
        ['an f8e4m3 buffer as attention input', (h) => { opOf(h, 'attention').in = 'hidden8'; }, 'reads f8e4m3 buffer "hidden8" as in'],
        ['an f8e4m3 buffer as residual', (h) => { opOf(h, 'add_layernorm').residual = 'hidden8'; }, 'reads f8e4m3 buffer "hidden8" as residual'],
        ['an f8e4m3 buffer as gather input', (h) => { opOf(h, 'gather_rows').in = 'hidden8'; }, 'reads f8e4m3 buffer "hidden8" as in'],
        ['a buffer of another dtype', (h) => { (h.buffers[0] as { dtype?: string }).dtype = 'f16'; }, 'buffer "hidden" has unknown dtype "f16"'],
      ];
      for (const [what, edit, message] of cases) {
        it(`rejects ${what}`, () => {
          assert.throws(() => parsePlan(edited(edit)), (err: Error & { code?: string }) => {
            assert.strictEqual(err.code, 'E_PLAN_CORRUPT', err.message);
            assert.ok(err.message.includes(message), `"${err.message}" mentions "${message}"`);
            return true;
          });
        });
      }
    });
  });

  describe('options and tokenizer', () => {
    it('caps maxSeq at max_position_embeddings and rejects bad values', async () => {
      assert.strictEqual((await build({ architecture: 'BertModel' }, { maxSeq: 32 })).header.config.maxSeq, 32);
      assert.strictEqual((await build({ architecture: 'BertModel' }, { maxSeq: 4096 })).header.config.maxSeq, 64);
      const dir = path.join(root, 'maxseq');
      writeTinyBert(dir, { architecture: 'BertModel' });
      for (const maxSeq of [1, 2.5, NaN]) await rejectsWith(buildPlan(dir, path.join(dir, 'x.plan'), { maxSeq }), 'E_INPUT', 'maxSeq');
      await rejectsWith(buildPlan(dir, path.join(dir, 'x.plan'), { precision: 'int8' as never }), 'E_INPUT', 'precision');
      assert.ok(!fs.existsSync(path.join(dir, 'x.plan')));
    });

    it('reports progress from 0 to 1, never going back', async () => {
      const dir = path.join(root, 'progress');
      writeTinyBert(dir, { architecture: 'BertForMaskedLM' });
      const seen: Array<[string, number]> = [];
      await buildPlan(dir, path.join(dir, 'model.plan'), { onProgress: (m, f) => seen.push([m, f]) });
      assert.ok(seen.length > 3);
      seen.forEach(([, f], i) => assert.ok(f >= 0 && f <= 1 && (i === 0 || f >= seen[i - 1][1]), `fraction ${f} at ${i}`));
      assert.strictEqual(seen[seen.length - 1][1], 1);
      for (const phase of ['hashing', 'reading', 'writing']) assert.ok(seen.some(([m]) => m.includes(phase)), phase);
    });

    it('falls back to vocab.txt, honouring do_lower_case from tokenizer_config.json', async () => {
      const dir = path.join(root, 'vocab-only');
      writeTinyBert(dir, { architecture: 'BertForMaskedLM', tokenizer: 'vocab' });
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ do_lower_case: false, mask_token: '[MASK]' }));
      const header = await buildPlan(dir, path.join(dir, 'model.plan'));
      assert.deepStrictEqual(header.tokenizer, { tensor: 'tokenizer.json', maskToken: '[MASK]', doLowerCase: false });
      assert.deepStrictEqual(header.source.files, ['config.json', 'model.safetensors']);
      const stored = JSON.parse(Buffer.from(readPlanFile(path.join(dir, 'model.plan')).tensorBytes('tokenizer.json')).toString('utf8'));
      assert.strictEqual(Object.keys(stored.model.vocab).length, 30522);
      assert.strictEqual(stored.model.vocab['[MASK]'], 103);
    });

    it('takes mask_token from tokenizer_config.json and requires it in the vocabulary for fill-mask', async () => {
      const dir = path.join(root, 'mask-token');
      writeTinyBert(dir, { architecture: 'BertForMaskedLM' });
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ mask_token: { content: '<mask>' } }));
      await rejectsWith(buildPlan(dir, path.join(dir, 'model.plan')), 'E_MODEL', 'no mask token "<mask>"');
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ mask_token: '[unused0]' }));
      assert.strictEqual((await buildPlan(dir, path.join(dir, 'model.plan'))).tokenizer.maskToken, '[unused0]');
    });

    it('a tokenizer with ids beyond vocab_size is an E_MODEL', async () => {
      const dir = path.join(root, 'small-vocab');
      writeTinyBert(dir, { architecture: 'BertModel', vocabSize: 1000 });
      await rejectsWith(buildPlan(dir, path.join(dir, 'model.plan')), 'E_MODEL', 'vocab_size 1000');
    });
  });

  describe('errors', () => {
    function modelDir(name: string, options: TinyBertOptions): string {
      const dir = path.join(root, name);
      writeTinyBert(dir, options);
      return dir;
    }
    const out = () => path.join(root, 'never.plan');

    it('lists every missing tensor', async () => {
      const missing = ['bert.encoder.layer.0.attention.self.key.weight', 'bert.encoder.layer.1.output.LayerNorm.bias', 'classifier.bias'];
      const dir = modelDir('missing', { architecture: 'BertForSequenceClassification', omit: missing });
      await rejectsWith(buildPlan(dir, out()), 'E_MODEL', 'missing 3 tensor(s)', ...missing);
      assert.ok(!fs.existsSync(out()));
    });

    it('names tensors whose shape disagrees with config.json', async () => {
      const dir = modelDir('shape', { architecture: 'BertModel', config: { intermediate_size: 24 } });
      await rejectsWith(buildPlan(dir, out()), 'E_MODEL', 'encoder.layer.0.intermediate.dense.weight has shape [32,16], config.json implies [24,16]');
    });

    it('rejects unknown architectures naming the supported ones', async () => {
      const dir = modelDir('roberta', { architecture: 'BertModel', config: { architectures: ['RobertaForMaskedLM'] } });
      await rejectsWith(buildPlan(dir, out()), 'E_MODEL', 'RobertaForMaskedLM is not supported', 'BertForMaskedLM', 'BertForQuestionAnswering');
    });

    it('rejects unsupported hidden_act and relative position embeddings', async () => {
      await rejectsWith(buildPlan(modelDir('silu', { architecture: 'BertModel', config: { hidden_act: 'silu' } }), out()), 'E_MODEL', 'hidden_act "silu"');
      await rejectsWith(buildPlan(modelDir('relative', { architecture: 'BertModel', config: { position_embedding_type: 'relative_key' } }), out()),
        'E_MODEL', 'position_embedding_type "relative_key"');
    });

    it('rejects a directory without config.json, weights or tokenizer', async () => {
      const empty = path.join(root, 'empty');
      fs.mkdirSync(empty);
      await rejectsWith(buildPlan(empty, out()), 'E_MODEL', 'no config.json');
      await rejectsWith(buildPlan(path.join(root, 'does-not-exist'), out()), 'E_MODEL', 'not a directory');
      const noWeights = modelDir('no-weights', { architecture: 'BertModel' });
      fs.rmSync(path.join(noWeights, 'model.safetensors'));
      fs.writeFileSync(path.join(noWeights, 'pytorch_model.bin'), 'x');
      await rejectsWith(buildPlan(noWeights, out()), 'E_MODEL', 'only PyTorch .bin weights');
      await rejectsWith(buildPlan(modelDir('no-tokenizer', { architecture: 'BertModel', tokenizer: 'none' }), out()), 'E_MODEL', 'no tokenizer');
    });

    it('rejects a config.json that is not JSON', async () => {
      const dir = modelDir('bad-json', { architecture: 'BertModel' });
      fs.writeFileSync(path.join(dir, 'config.json'), '{"architectures": [');
      await rejectsWith(buildPlan(dir, out()), 'E_MODEL', 'config.json is not valid JSON');
    });
  });
});
