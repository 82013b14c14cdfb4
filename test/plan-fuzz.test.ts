/**
 * Hostile plans: several hundred mutations of a valid plan, loaded in one
 * process. Each must either be rejected with a plan error code or (when a
 * mutation happens to be harmless) load and run; the process must survive.
 */
import * as assert from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import { addon, type NativeEngine } from './support/native-addon';
import { assemblePlan, makeTinyBert, splitPlan, withRecomputedCrc, writeTinyBertPlan } from './support/tiny-bert-plan';
import { mulberry32 } from './support/mulberry32';

const PLAN_ERRORS = ['E_PLAN_CORRUPT', 'E_PLAN_VERSION', 'E_PLAN_IO', 'E_OOM'];
const LOAD_OPTIONS = { device: 'cpu', threads: 1, maxTokens: 32, maxSequences: 4 };

type Outcome = { loaded: true } | { loaded: false; code: string; message: string };

async function smokeRun(engine: NativeEngine) {
  const result = await engine.run({
    inputIds: Int32Array.from([1, 2, 3, 4, 5]),
    cuSeqlens: Int32Array.from([0, 2, 5]),
    selectedRows: Int32Array.from([1]),
    outputs: ['hidden'],
  });
  assert.strictEqual(result.hidden.rows, 5);
}

/** Loads the bytes; a load that succeeds must also run. Any other failure than a plan error fails the test. */
async function tryLoad(bytes: Uint8Array, what: string): Promise<Outcome> {
  let engine: NativeEngine;
  try {
    engine = await addon.loadEngine(bytes, LOAD_OPTIONS);
  } catch (e) {
    assert.ok(e instanceof Error, `${what}: rejected with a non-Error`);
    const code = (e as Error & { code?: string }).code ?? '';
    assert.ok(PLAN_ERRORS.includes(code), `${what}: unexpected code ${code}: ${(e as Error).message}`);
    assert.ok((e as Error).message.length > 0, `${what}: empty message`);
    return { loaded: false, code, message: (e as Error).message };
  }
  try {
    await smokeRun(engine);
  } finally {
    await engine.dispose();
  }
  return { loaded: true };
}

async function expectRejected(bytes: Uint8Array, what: string, code = 'E_PLAN_CORRUPT', messagePart?: RegExp) {
  const outcome = await tryLoad(bytes, what);
  assert.ok(!outcome.loaded, `${what}: the plan loaded`);
  assert.strictEqual(outcome.code, code, `${what}: ${outcome.message}`);
  if (messagePart) assert.match(outcome.message, messagePart, what);
}

describe('plan fuzzing', function () {
  this.timeout(120000);
  let base: Buffer;
  let headerText: string;
  let data: Buffer;
  let dir: string;
  const startMemory = addon.nativeMemoryBytes();

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-fuzz-'));
    const planPath = path.join(dir, 'base.plan');
    writeTinyBertPlan(planPath, makeTinyBert({ seed: 3, layers: 1 }));
    base = fs.readFileSync(planPath);
    ({ headerText, data } = splitPlan(base));
  });

  after(() => {
    fs.rmSync(dir, { recursive: true, force: true });
    assert.strictEqual(addon.nativeMemoryBytes(), startMemory, 'native memory leaked');
  });

  it('loads and runs the unmutated plan', async () => {
    assert.deepStrictEqual(await tryLoad(base, 'base plan'), { loaded: true });
  });

  it('rejects truncations at many offsets', async () => {
    const offsets = new Set<number>([0, 1, 7, 8, 11, 12, 15, 16, 17, base.length - 1, base.length - 4, base.length - 8, base.length - 9]);
    for (let i = 0; i < 60; i++) offsets.add(Math.floor((base.length * i) / 60));
    for (const at of offsets) {
      const outcome = await tryLoad(base.subarray(0, at), `truncated at ${at}`);
      assert.ok(!outcome.loaded, `truncated at ${at}: loaded`);
    }
    // A plan file cut short on disk is reported the same way.
    const cut = path.join(dir, 'cut.plan');
    fs.writeFileSync(cut, base.subarray(0, base.length - 100));
    await assert.rejects(addon.loadEngine(cut, LOAD_OPTIONS), (e: Error & { code?: string }) => e.code === 'E_PLAN_CORRUPT');
  });

  it('rejects random bit flips when the stored CRC is left as is', async () => {
    const random = mulberry32(1234);
    for (let i = 0; i < 150; i++) {
      const mutated = Buffer.from(base);
      const at = Math.floor(random() * mutated.length);
      mutated[at] ^= 1 << Math.floor(random() * 8);
      const outcome = await tryLoad(mutated, `bit flip at ${at}`);
      assert.ok(!outcome.loaded, `bit flip at ${at} loaded`);
    }
  });

  it('survives random bit flips with a recomputed CRC (deep validation)', async () => {
    const random = mulberry32(99);
    const headerEnd = 16 + base.readUInt32LE(12);
    let rejected = 0;
    for (let i = 0; i < 250; i++) {
      const mutated = Buffer.from(base);
      const flips = 1 + Math.floor(random() * 3);
      for (let f = 0; f < flips; f++) {
        // Mostly the preamble and header, where flips change meaning; data flips only change weights.
        const at = random() < 0.85 ? Math.floor(random() * headerEnd) : Math.floor(random() * (mutated.length - 8));
        mutated[at] ^= 1 << Math.floor(random() * 8);
      }
      const outcome = await tryLoad(withRecomputedCrc(mutated), `crc-fixed flips #${i}`);
      if (!outcome.loaded) rejected++;
    }
    assert.ok(rejected > 100, `only ${rejected} of 250 header mutations were rejected`);
  });

  describe('header edits', () => {
    // Header edits reach into arbitrary fields, so the header is untyped here.
    type Header = Record<string, any>;
    const edited = (edit: (h: Header) => void): Buffer => {
      const header = JSON.parse(headerText) as Header;
      edit(header);
      return assemblePlan(Buffer.from(JSON.stringify(header), 'utf8'), data);
    };
    const tensorIndex = (h: Header, name: string) => h.tensors.findIndex((t: { name: string }) => t.name === name);
    const opIndex = (h: Header, type: string) => h.ops.findIndex((o: { type: string }) => o.type === type);

    const cases: [string, (h: Header) => void, string?][] = [
      ['dim 2^40', (h) => { h.tensors[0].shape[0] = 2 ** 40; }],
      ['dim 2^31 + 1', (h) => { h.tensors[0].shape[1] = 2 ** 31 + 1; }],
      ['negative dim', (h) => { h.tensors[0].shape[0] = -50; }],
      ['zero dim', (h) => { h.tensors[0].shape[0] = 0; }],
      ['float dim', (h) => { h.tensors[0].shape[0] = 49.5; }],
      ['string dim', (h) => { h.tensors[0].shape[0] = '50'; }],
      ['empty shape', (h) => { h.tensors[0].shape = []; }],
      ['elements 2^40', (h) => { h.tensors[0].shape = [2 ** 20, 2 ** 20]; h.tensors[0].size = 2 ** 42; }],
      ['size off by 4', (h) => { h.tensors[1].size += 4; }],
      ['overlapping tensors', (h) => { h.tensors[1].offset = h.tensors[0].offset; }],
      ['misaligned offset', (h) => { h.tensors[1].offset += 4; }],
      ['offset beyond data', (h) => { h.tensors[2].offset = h.dataSize; }],
      ['offset 2^60', (h) => { h.tensors[2].offset = 2 ** 60; }],
      ['negative offset', (h) => { h.tensors[2].offset = -64; }],
      ['wrong dtype', (h) => { h.tensors[0].dtype = 'f64'; }],
      ['u8 weight', (h) => { const t = h.tensors[tensorIndex(h, 'embeddings.ln.gamma')]; t.dtype = 'u8'; t.size = t.shape[0]; }],
      ['f16 with f32 size', (h) => { h.tensors[0].dtype = 'f16'; }],
      ['duplicate tensor name', (h) => { h.tensors[1].name = h.tensors[0].name; }],
      ['tensor name not a string', (h) => { h.tensors[0].name = 7; }],
      ['tensors not an array', (h) => { h.tensors = {}; }],
      ['unknown op', (h) => { h.ops[1].type = 'conv2d'; }],
      ['op not an object', (h) => { h.ops[1] = 'gemm'; }],
      ['op missing field', (h) => { delete h.ops[0].word; }],
      ['op unknown tensor', (h) => { h.ops[1].weight = 'no.such.tensor'; }],
      ['op unknown buffer', (h) => { h.ops[1].out = 'no_such_buffer'; }],
      ['op field of wrong type', (h) => { h.ops[1].in = 3; }],
      ['unknown activation', (h) => { h.ops[1].activation = 'swish'; }],
      ['gemm weight shape vs in.cols', (h) => { h.ops[1].weight = 'layer.0.ffn_out.weight'; }],
      ['gemm bias shape', (h) => { h.ops[1].bias = 'mlm.bias'; }],
      ['gemm rows kinds differ', (h) => { h.buffers.find((b: { name: string }) => b.name === 'qkv').rows = 'sequences'; }],
      ['attention heads vs cols', (h) => { h.ops[opIndex(h, 'attention')].headDim = 4; }],
      ['attention heads vs config', (h) => { const op = h.ops[opIndex(h, 'attention')]; op.heads = 4; op.headDim = 4; }],
      ['attention huge heads', (h) => { const op = h.ops[opIndex(h, 'attention')]; op.heads = 2 ** 31; op.headDim = 2 ** 31; }],
      ['attention scale overflows float', (h) => { h.ops[opIndex(h, 'attention')].scale = 1e39; }],
      ['attention select into a tokens buffer', (h) => { h.ops[opIndex(h, 'attention')].select = 'first'; }],
      ['attention unknown select', (h) => { h.ops[opIndex(h, 'attention')].select = 'all'; }],
      ['attention select not a string', (h) => { h.ops[opIndex(h, 'attention')].select = 1; }],
      ['eps zero', (h) => { h.ops[0].eps = 0; }],
      ['eps negative', (h) => { h.ops[opIndex(h, 'add_layernorm')].eps = -1e-5; }],
      ['eps underflows float', (h) => { h.ops[0].eps = 1e-60; }],
      ['embed out not tokens', (h) => { h.buffers[0].rows = 'selected'; }],
      ['position rows below maxSeq', (h) => { h.config.maxSeq = h.config.maxPositions; h.tensors[tensorIndex(h, 'embeddings.position')].shape[0] = 8; h.tensors[tensorIndex(h, 'embeddings.position')].size = 8 * 16 * 4; }],
      ['vocab disagrees with word table', (h) => { h.config.vocabSize = 51; }],
      ['maxSeq above maxPositions', (h) => { h.config.maxSeq = h.config.maxPositions + 1; }],
      ['config missing', (h) => { delete h.config; }],
      ['config dim as string', (h) => { h.config.hiddenSize = '16'; }],
      ['gather first into selected', (h) => { h.ops[h.ops.length - 2].select = 'selected'; }],
      ['gather unknown select', (h) => { h.ops[h.ops.length - 2].select = 'last'; }],
      ['mean_rows into a tokens buffer', (h) => { h.ops[opIndex(h, 'mean_rows')].out = 'context'; }],
      ['mean_rows writing its input', (h) => { h.ops[opIndex(h, 'mean_rows')].in = 'mean'; }],
      ['mean_rows into fewer cols', (h) => { h.buffers.find((b: { name: string }) => b.name === 'mean').cols = 8; }],
      ['reads an unwritten buffer', (h) => { const [first, second] = [h.ops[0], h.ops[1]]; h.ops[0] = second; h.ops[1] = first; }],
      ['gemm writes its input', (h) => { h.ops[1].out = h.ops[1].in; }],
      ['unknown rows kind', (h) => { h.buffers[0].rows = 'batch'; }],
      ['buffer named like an input', (h) => { h.buffers[0].name = 'input_ids'; }],
      ['duplicate buffer', (h) => { h.buffers[1].name = h.buffers[0].name; }],
      ['buffer cols 0', (h) => { h.buffers[0].cols = 0; }],
      ['output of unknown buffer', (h) => { h.outputs[0].buffer = 'nope'; }],
      ['no outputs', (h) => { h.outputs = []; }],
      ['no ops', (h) => { h.ops = []; }],
      ['duplicate output', (h) => { h.outputs[1].name = h.outputs[0].name; }],
      ['tokenizer tensor missing', (h) => { h.tokenizer.tensor = 'vocab.txt'; }],
      ['bad task', (h) => { h.task = 'translation'; }],
      ['bad precision', (h) => { h.precision = 'int4'; }],
      ['labels of numbers', (h) => { h.labels = [1, 2]; }],
      ['wrong format', (h) => { h.format = 'onnx'; }],
      ['formatVersion 2', (h) => { h.formatVersion = 2; }, 'E_PLAN_VERSION'],
      ['dataSize 2^50', (h) => { h.dataSize = 2 ** 50; }],
      ['dataSize negative', (h) => { h.dataSize = -1; }],
      ['empty header object', (h) => { Object.keys(h).forEach((k) => delete h[k]); }],
      // An unused buffer this wide needs terabytes of workspace: refused before allocating.
      ['absurd workspace', (h) => { h.buffers.push({ name: 'wide', rows: 'tokens', cols: 2 ** 31 }); }, 'E_OOM'],
    ];
    for (const [what, edit, code] of cases) {
      it(`rejects ${what}`, async () => {
        await expectRejected(edited(edit), what, code ?? 'E_PLAN_CORRUPT');
      });
    }
  });

  // The fp8 rules (docs/plan-format.md, "FP8"), on an fp8 build of a fixture.
  describe('fp8 header edits', () => {
    type Header = Record<string, any>;
    let fp8Header = '';
    let fp8Data: Buffer;
    before(async () => {
      const planPath = path.join(dir, 'fp8.plan');
      await buildPlan(path.join(__dirname, '..', '..', 'test', 'fixtures', 'bert', 'tiny32-mlm'), planPath, { precision: 'fp8' });
      ({ headerText: fp8Header, data: fp8Data } = splitPlan(fs.readFileSync(planPath)));
    });
    const edited = (edit: (h: Header) => void): Buffer => {
      const header = JSON.parse(fp8Header) as Header;
      edit(header);
      return assemblePlan(Buffer.from(JSON.stringify(header), 'utf8'), fp8Data);
    };
    const fp8Tensor = (h: Header) => h.tensors.find((t: { dtype: string }) => t.dtype === 'f8e4m3');
    const gemmReading = (h: Header, buffer: string) => h.ops.find((o: { type: string; in: string }) => o.type === 'gemm' && o.in === buffer);

    it('loads and runs the unedited fp8 plan', async () => {
      const outcome = await tryLoad(edited(() => {}), 'unedited fp8 plan');
      assert.ok(outcome.loaded, outcome.loaded ? '' : outcome.message);
    });

    const cases: [string, (h: Header) => void, RegExp][] = [
      ['an f8e4m3 tensor without a scale', (h) => { delete fp8Tensor(h).scale; }, /has no scale/],
      ['a scale of 0', (h) => { fp8Tensor(h).scale = 0; }, /positive finite/],
      ['a negative scale', (h) => { fp8Tensor(h).scale = -0.01; }, /positive finite/],
      ['a scale that overflows float', (h) => { fp8Tensor(h).scale = 1e39; }, /positive finite/],
      ['a scale as a string', (h) => { fp8Tensor(h).scale = '0.01'; }, /scale/],
      ['a scale on an f16 tensor', (h) => { h.tensors.find((t: { dtype: string }) => t.dtype === 'f16').scale = 1; }, /only f8e4m3 tensors/],
      ['an f8e4m3 tensor as a LayerNorm parameter', (h) => { h.ops[0].gamma = fp8Tensor(h).name; }, /only a gemm's weight/],
      ['an fp8 gemm reading a float buffer', (h) => { gemmReading(h, 'hidden8').in = 'hidden'; }, /reads an f8e4m3 buffer/],
      // The MLM head's transform: a float gemm on the selected rows.
      ['a float gemm reading an fp8 buffer', (h) => { gemmReading(h, 'sel').in = 'sel8'; }, /reads a float buffer/],
      ['a float gemm writing an fp8 buffer', (h) => { gemmReading(h, 'sel').out = 'sel8'; }, /writes f8e4m3 buffer/],
      ['a LayerNorm writing an fp8 buffer as out', (h) => { h.ops[0].out = 'hidden8'; delete h.ops[0].out8; }, /writes f8e4m3 buffer/],
      ['out8 naming a float buffer', (h) => { h.ops[0].out8 = 'proj'; }, /not f8e4m3/],
      ['out8 of other columns', (h) => { h.ops[0].out8 = 'inter8'; }, /columns/],
      ['an fp8 buffer as a residual', (h) => { h.ops.find((o: { type: string; residual?: string }) => o.residual === 'hidden').residual = 'hidden8'; }, /as residual/],
      ['an fp8 buffer as a plan output', (h) => { h.outputs[0].buffer = 'hidden8'; }, /names f8e4m3 buffer/],
      ['an unknown buffer dtype', (h) => { h.buffers.find((b: { name: string }) => b.name === 'hidden8').dtype = 'f16'; }, /unknown dtype/],
      ['fp8 with an unknown precision', (h) => { h.precision = 'fp4'; }, /precision/],
    ];
    for (const [what, edit, message] of cases) {
      it(`rejects ${what}`, async () => {
        await expectRejected(edited(edit), what, 'E_PLAN_CORRUPT', message);
      });
    }
  });

  describe('raw header text and preamble', () => {
    const withHeaderText = (text: string | Buffer) => assemblePlan(Buffer.isBuffer(text) ? text : Buffer.from(text, 'utf8'), data);
    const cases: [string, () => Buffer, string?][] = [
      ['bad JSON', () => withHeaderText(headerText.slice(0, headerText.length - 1))],
      ['trailing data', () => withHeaderText(headerText + ' {}')],
      ['JSON null', () => withHeaderText('null')],
      ['JSON array', () => withHeaderText('[]')],
      ['unterminated string', () => withHeaderText('{"format": "fusedrt-plan')],
      ['deep nesting', () => withHeaderText('['.repeat(200000) + ']'.repeat(200000))],
      ['deep objects', () => withHeaderText('{"a":'.repeat(5000) + '1' + '}'.repeat(5000))],
      ['too many values', () => withHeaderText(`{"x":[${new Array(300000).fill('0').join(',')}]}`)],
      ['invalid UTF-8', () => withHeaderText(Buffer.concat([Buffer.from(headerText.slice(0, 20)), Buffer.from([0xc3, 0x28]), Buffer.from(headerText.slice(20))]))],
      ['overlong UTF-8', () => withHeaderText(Buffer.from([0x7b, 0x22, 0xc0, 0xaf, 0x22, 0x3a, 0x31, 0x7d]))],
      ['lone surrogate', () => withHeaderText(headerText.replace('"fusedrt-test"', '"\\ud800"'))],
      ['duplicate key', () => withHeaderText(headerText.replace('{', '{"dataSize":0,'))],
      ['number out of range', () => withHeaderText(headerText.replace(/"dataSize":\d+/, '"dataSize":1e400'))],
      ['control character', () => withHeaderText(headerText.replace('fusedrt-test', 'fused\u0001rt'))],
      ['header length 0', () => { const b = Buffer.from(base); b.writeUInt32LE(0, 12); return withRecomputedCrc(b); }],
      ['header length 2^32-1', () => { const b = Buffer.from(base); b.writeUInt32LE(0xffffffff, 12); return withRecomputedCrc(b); }],
      ['header length 16 MiB + 1', () => { const b = Buffer.from(base); b.writeUInt32LE(16 * 1024 * 1024 + 1, 12); return withRecomputedCrc(b); }],
      ['header length past the end', () => { const b = Buffer.from(base); b.writeUInt32LE(b.length, 12); return withRecomputedCrc(b); }],
      ['bad magic', () => { const b = Buffer.from(base); b.write('GGUF', 0, 'latin1'); return withRecomputedCrc(b); }],
      ['bad footer magic', () => { const b = Buffer.from(base); b.write('FENX', b.length - 4, 'latin1'); return b; }],
      ['version 2', () => { const b = Buffer.from(base); b.writeUInt32LE(2, 8); return withRecomputedCrc(b); }, 'E_PLAN_VERSION'],
      ['extra bytes at the end', () => withRecomputedCrc(Buffer.concat([base, Buffer.alloc(64)]))],
    ];
    for (const [what, make, code] of cases) {
      it(`rejects ${what}`, async () => {
        await expectRejected(make(), what, code ?? 'E_PLAN_CORRUPT');
      });
    }
  });
});
