import * as assert from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Engine } from '../src/engine/engine';
import { packEncodings } from '../src/engine/pack';
import { poolEmbeddings } from '../src/post/embed';

const CLI = path.resolve(__dirname, '../src/cli.js');
const MODELS = path.resolve(__dirname, '../../models');

function fusedrt(...args: string[]) {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

describe('fusedrt run and bench', function () {
  this.timeout(120000);
  let root: string;
  let mlmPlan: string;
  let classifierPlan: string;

  before(() => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-cli-run-'));
    mlmPlan = path.join(root, 'demo.plan');
    classifierPlan = path.join(root, 'classifier.plan');
    for (const [dir, plan] of [['demo', mlmPlan], ['demo-classifier', classifierPlan]]) {
      const built = fusedrt('build', path.join(MODELS, dir), '-o', plan);
      assert.strictEqual(built.status, 0, built.stderr);
    }
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('run prints top-k predictions per [MASK] and the filled sentence', () => {
    const text = 'The capital of France, [MASK], contains the Eiffel [MASK].';
    const result = fusedrt('run', mlmPlan, text, '--top-k', '3', '--device', 'cpu');
    assert.strictEqual(result.status, 0, result.stderr);
    const lines = result.stdout.trim().split('\n');
    assert.strictEqual(lines[0], text);
    assert.match(lines[1], /^ {2}mask 1: (\S+ \(0\.\d{3}\), ){2}\S+ \(0\.\d{3}\)$/);
    assert.match(lines[2], /^ {2}mask 2: /);
    assert.match(lines[3], /^ {2}→ The capital of France, \S+, contains the Eiffel \S+\.$/);
  });

  it('run --json gives the fill-mask results of a batch, scores in descending order', () => {
    const result = fusedrt('run', mlmPlan, 'a [MASK] day', 'the [MASK] and the [MASK]', '--json');
    assert.strictEqual(result.status, 0, result.stderr);
    const parsed = JSON.parse(result.stdout) as Array<{ masks: Array<{ predictions: Array<{ score: number }> }> }>;
    assert.deepStrictEqual(parsed.map((r) => r.masks.length), [1, 2]);
    for (const mask of parsed.flatMap((r) => r.masks)) {
      assert.strictEqual(mask.predictions.length, 5);
      for (let i = 1; i < 5; i++) assert.ok(mask.predictions[i - 1].score >= mask.predictions[i].score);
    }
  });

  it('run on a classifier prints labels and scores from the plan', () => {
    const result = fusedrt('run', classifierPlan, 'She laughed and whispered that she had never loved him.', '--json');
    assert.strictEqual(result.status, 0, result.stderr);
    const [first] = JSON.parse(result.stdout) as Array<{ label: string; score: number; scores: Array<{ label: string; score: number }> }>;
    assert.strictEqual(first.label, 'imaginative');
    assert.ok(Math.abs(first.scores.reduce((s, x) => s + x.score, 0) - 1) < 1e-6);
  });

  it('run on a base model prints each text\'s mean token state: size, norm, first values', async () => {
    const basePlan = path.join(root, 'base.plan');
    const built = fusedrt('build', path.resolve(__dirname, '../../test/fixtures/bert/tiny32-base'), '-o', basePlan);
    assert.strictEqual(built.status, 0, built.stderr);
    const texts = ['the quick brown fox', 'jumps'];
    const result = fusedrt('run', basePlan, ...texts, '--json', '--device', 'cpu');
    assert.strictEqual(result.status, 0, result.stderr);
    const printed = JSON.parse(result.stdout) as Array<{ dimensions: number; norm: number; first: number[] }>;
    const engine = await Engine.load(basePlan, { device: 'cpu', threads: 1 });
    try {
      const { batch } = packEncodings(engine.tokenizer.encodeBatch(texts));
      const { hidden } = await engine.run({ ...batch, outputs: ['hidden'] });
      const want = poolEmbeddings(hidden, batch.cuSeqlens, { pooling: 'mean' });
      assert.deepStrictEqual(printed.map((p) => p.dimensions), [32, 32]);
      printed.forEach((p, b) => {
        assert.ok(Math.abs(p.norm - Math.hypot(...want[b])) < 1e-3, `norm of text ${b}`);
        p.first.forEach((x, j) => assert.ok(Math.abs(x - want[b][j]) < 1e-3, `text ${b} value ${j}`));
      });
    } finally {
      await engine.dispose();
    }
  });

  it('run without a model answers with the bundled demo model', () => {
    const result = fusedrt('run', 'She opened the [MASK] and went out.', '--json');
    assert.strictEqual(result.status, 0, result.stderr);
    const [first] = JSON.parse(result.stdout) as Array<{ masks: Array<{ predictions: Array<{ token: string }> }> }>;
    const words = first.masks[0].predictions.map((p) => p.token);
    assert.ok(words.includes('door'), `predictions: ${words.join(', ')}`);
  });

  it('run without a [MASK] on a fill-mask plan fails with E_INPUT', () => {
    const result = fusedrt('run', mlmPlan, 'no mask here');
    assert.strictEqual(result.status, 1);
    assert.match(result.stderr, /^fusedrt: E_INPUT: no \[MASK\] in the text/);
  });

  it('bench times each batch size and reports throughput', () => {
    const result = fusedrt('bench', mlmPlan, '--batch', '1,3', '--seq', '16', '--runs', '3', '--warmup', '1', '--varlen', '--json');
    assert.strictEqual(result.status, 0, result.stderr);
    const { rows, eventLoop } = JSON.parse(result.stdout) as {
      rows: Array<{ batch: number; tokens: number; medianMs: number; tokensPerS: number }>;
      eventLoop: { batch: number; requests: number; maxMs: number; over1Ms: number; idle: { turns: number } };
    };
    assert.deepStrictEqual(rows.map((r) => r.batch), [1, 3]);
    for (const r of rows) {
      assert.ok(r.tokens >= 2 * r.batch && r.tokens <= 16 * r.batch);
      assert.ok(r.medianMs > 0 && r.tokensPerS > 0);
    }
    assert.strictEqual(eventLoop.batch, 3);
    assert.ok(eventLoop.requests > 0 && eventLoop.maxMs > 0 && eventLoop.idle.turns > 0, JSON.stringify(eventLoop));
    assert.match(result.stderr, /backend (cpu \(GEMM (openblas|builtin)\), \d+ threads|cuda)/);
    const topK = fusedrt('bench', mlmPlan, '--batch', '2', '--seq', '16', '--runs', '2', '--warmup', '0', '--top-k', '3');
    assert.strictEqual(topK.status, 0, topK.stderr);
    assert.match(topK.stderr, /outputs logits, top 3/, 'a fill-mask plan is timed on its logits only by default');
    assert.match(topK.stdout, /^batch +seq +tokens +median ms +p90 ms +GPU ms/m);
    assert.match(topK.stdout, /^event loop, batch 2 back to back for 1 s \(\d+ runs\): longest stall [\d.]+ ms, .* \d+ over 1 ms; idle: longest [\d.]+ ms/m);
    const tooLong = fusedrt('bench', mlmPlan, '--seq', '4096');
    assert.strictEqual(tooLong.status, 1);
    assert.match(tooLong.stderr, /E_INPUT: bench: --seq 4096 exceeds the plan's maximum sequence length 128/);
  });
});
