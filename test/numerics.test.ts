/**
 * FusedRT against Hugging Face transformers. Every fixture in test/fixtures/bert
 * (written by tools/fixtures/make_bert_fixtures.py: a tiny random BERT saved by
 * transformers, a packed batch and transformers' float32 outputs for it) is
 * built into an fp32 and an fp16 plan and run on the CPU backend.
 */
import { strict as assert } from 'assert';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { buildPlan } from '../src/build/builder';
import type { Precision, RowsKind } from '../src/build/plan-types';
import { Engine } from '../src/engine/engine';
import type { OutputTensor, PackedBatch, RunResult } from '../src/engine/types';
import { poolEmbeddings } from '../src/post/embed';
import { leastRowCosine } from './support/row-cosine';

/** Max abs error per element against transformers' float32 outputs (fp8: see FP8_MIN_COSINE). */
const TOLERANCE: Record<Exclude<Precision, 'fp8'>, number> = { fp32: 1e-4, fp16: 2e-2, tf32: 1e-2 };
/**
 * One packed batch against the same sequences run apart. Not exact: a GEMM may
 * take another kernel (blocking, summation order) for another number of rows.
 * Any leak between sequences is orders of magnitude larger.
 */
const BATCHING_TOLERANCE = 1e-5;
/**
 * fp8 plans on the CPU (E4M3 emulated) against transformers' float32: every
 * encoder GEMM's input and weight rounded to 3 mantissa bits moves outputs
 * by a few percent of their scale (the fixtures: row cosines 0.990-0.998,
 * max |error| up to 0.40). A lost scale or a broken rounding moves them by
 * their whole size.
 */
const FP8_MIN_COSINE = 0.98;
const FP8_MAX_ERROR = 0.6;
const ARCHITECTURES = ['BertModel', 'BertForMaskedLM', 'BertForSequenceClassification',
  'BertForTokenClassification', 'BertForQuestionAnswering'];

interface FixtureInputs {
  inputIds: number[];
  tokenTypeIds: number[];
  cuSeqlens: number[];
  selectedRows: number[];
}

interface FixtureOutput {
  rows: number;
  cols: number;
  rowsKind: RowsKind;
  data: number[];
  /** transformers' own fp32-vs-fp64 difference: the noise floor. */
  fp64MaxAbsDiff: number;
  /** How far rounding the weights to fp16 moves this output in transformers. */
  fp16WeightsMaxAbsDiff: number;
}

interface Fixture {
  name: string;
  architecture: string;
  inputs: FixtureInputs;
  outputs: Record<string, FixtureOutput>;
}

interface FixtureIndex {
  fixtures: Array<{ name: string; architecture: string }>;
}

function findRepoRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, 'package.json'))) return dir;
    if (path.dirname(dir) === dir) throw new Error(`no package.json above ${start}`);
  }
}

const FIXTURE_ROOT = path.join(findRepoRoot(__dirname), 'test', 'fixtures', 'bert');
const INDEX_PATH = path.join(FIXTURE_ROOT, 'index.json');

function readIndex(): FixtureIndex | undefined {
  if (!fs.existsSync(INDEX_PATH)) return undefined;
  const index = JSON.parse(fs.readFileSync(INDEX_PATH, 'utf8')) as FixtureIndex;
  if (!Array.isArray(index.fixtures)) throw new Error(`${INDEX_PATH}: no "fixtures" array`);
  return index;
}

/** Reads expected.json and checks that its arrays agree with each other, so a bad fixture fails loudly. */
function loadFixture(name: string): Fixture {
  const file = path.join(FIXTURE_ROOT, name, 'expected.json');
  const fixture = JSON.parse(fs.readFileSync(file, 'utf8')) as Fixture;
  const { inputIds, tokenTypeIds, cuSeqlens, selectedRows } = fixture.inputs;
  const tokens = inputIds.length;
  const problems: string[] = [];
  if (tokenTypeIds.length !== tokens) problems.push('tokenTypeIds and inputIds differ in length');
  if (cuSeqlens[0] !== 0 || cuSeqlens[cuSeqlens.length - 1] !== tokens) problems.push('cuSeqlens do not span the tokens');
  if (selectedRows.some((r) => r < 0 || r >= tokens)) problems.push('a selected row is out of range');
  for (const [key, out] of Object.entries(fixture.outputs)) {
    if (out.data.length !== out.rows * out.cols) problems.push(`output ${key} has ${out.data.length} values, not ${out.rows}x${out.cols}`);
  }
  if (problems.length) throw new Error(`${file}: ${problems.join('; ')}`);
  return fixture;
}

function batchOf(inputs: FixtureInputs, outputs: string[]): PackedBatch {
  return {
    inputIds: Int32Array.from(inputs.inputIds),
    // All-zero type ids are left out, which the runtime must read as zeros.
    tokenTypeIds: inputs.tokenTypeIds.some((t) => t !== 0) ? Int32Array.from(inputs.tokenTypeIds) : undefined,
    cuSeqlens: Int32Array.from(inputs.cuSeqlens),
    selectedRows: inputs.selectedRows.length ? Int32Array.from(inputs.selectedRows) : undefined,
    outputs,
  };
}

/** Sequence b of a batch as a batch of its own. */
function sequenceOf(inputs: FixtureInputs, b: number): FixtureInputs {
  const start = inputs.cuSeqlens[b];
  const end = inputs.cuSeqlens[b + 1];
  return {
    inputIds: inputs.inputIds.slice(start, end),
    tokenTypeIds: inputs.tokenTypeIds.slice(start, end),
    cuSeqlens: [0, end - start],
    selectedRows: inputs.selectedRows.filter((r) => r >= start && r < end).map((r) => r - start),
  };
}

/** Which rows of a batch output belong to sequence b. */
function rowsOfSequence(kind: RowsKind, inputs: FixtureInputs, b: number): number[] {
  const start = inputs.cuSeqlens[b];
  const end = inputs.cuSeqlens[b + 1];
  if (kind === 'tokens') return Array.from({ length: end - start }, (_, i) => start + i);
  if (kind === 'sequences') return [b];
  return inputs.selectedRows.flatMap((r, i) => (r >= start && r < end ? [i] : []));
}

function pickRows(t: OutputTensor, rows: number[]): Float32Array {
  const out = new Float32Array(rows.length * t.cols);
  rows.forEach((r, i) => out.set(t.data.subarray(r * t.cols, (r + 1) * t.cols), i * t.cols));
  return out;
}

interface Worst { error: number; index: number }


/** The largest absolute difference; NaN counts as infinitely wrong. */
function worstDifference(got: ArrayLike<number>, want: ArrayLike<number>): Worst {
  const worst: Worst = { error: 0, index: -1 };
  for (let i = 0; i < want.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    const error = Number.isNaN(d) ? Infinity : d;
    if (error > worst.error || worst.index < 0) Object.assign(worst, { error, index: i });
  }
  return worst;
}

/** The rows kind of each plan output, from the plan header the engine loaded. */
function planRowsKinds(engine: Engine): Map<string, RowsKind> {
  const { header } = engine.info;
  const kinds = new Map<string, RowsKind>();
  for (const out of header.outputs) {
    const buffer = header.buffers.find((b) => b.name === out.buffer);
    if (buffer) kinds.set(out.name, buffer.rows);
  }
  return kinds;
}

async function withEngine<T>(planPath: string, use: (engine: Engine) => Promise<T>): Promise<T> {
  const engine = await Engine.load(planPath, { device: 'cpu', threads: 2 });
  try {
    return await use(engine);
  } finally {
    await engine.dispose();
  }
}

const index = readIndex();

describe('numerics against Hugging Face transformers', function () {
  this.timeout(120_000);
  let workDir = '';
  before(() => { workDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-numerics-')); });
  after(() => { if (workDir) fs.rmSync(workDir, { recursive: true, force: true }); });

  it('has reference fixtures for every architecture', () => {
    assert.ok(index, `${INDEX_PATH} is missing: run tools/fixtures/make_bert_fixtures.py where torch and `
      + 'transformers are installed and commit what it writes to test/fixtures/bert (see tools/fixtures/README.md)');
    for (const architecture of ARCHITECTURES) {
      const count = index.fixtures.filter((f) => f.architecture === architecture).length;
      assert.ok(count >= 2, `${INDEX_PATH} has ${count} ${architecture} fixtures, expected at least 2: regenerate them`);
    }
  });

  for (const entry of index?.fixtures ?? []) {
    describe(`${entry.name} (${entry.architecture})`, () => {
      const fixtureDir = path.join(FIXTURE_ROOT, entry.name);
      const plans = new Map<Precision, Promise<string>>();
      /** Builds each precision's plan once, on first use, so a build failure is reported by the test that needs it. */
      const planFor = (precision: Precision): Promise<string> => {
        let plan = plans.get(precision);
        if (!plan) {
          const planPath = path.join(workDir, `${entry.name}-${precision}.plan`);
          plan = buildPlan(fixtureDir, planPath, { precision }).then(() => planPath);
          plans.set(precision, plan);
        }
        return plan;
      };

      for (const precision of ['fp32', 'fp16'] as const) {
        it(`matches transformers with ${precision} weights`, async () => {
          const fixture = loadFixture(entry.name);
          const names = Object.keys(fixture.outputs);
          await withEngine(await planFor(precision), async (engine) => {
            const kinds = planRowsKinds(engine);
            for (const name of names) {
              assert.ok(kinds.has(name), `the plan has no output "${name}" (it has: ${[...kinds.keys()].join(', ')})`);
              assert.equal(kinds.get(name), fixture.outputs[name].rowsKind, `rows of output "${name}"`);
            }
            const result = await engine.run(batchOf(fixture.inputs, names));
            for (const name of names) {
              const want = fixture.outputs[name];
              const got = result[name];
              assert.ok(got, `the run returned no output "${name}"`);
              assert.deepEqual([got.rows, got.cols], [want.rows, want.cols], `shape of output "${name}"`);
              const worst = worstDifference(got.data, want.data);
              const row = Math.floor(worst.index / want.cols);
              const col = worst.index % want.cols;
              assert.ok(worst.error <= TOLERANCE[precision],
                `${entry.name} ${precision} "${name}": max |error| ${worst.error.toExponential(3)} > ${TOLERANCE[precision]} `
                + `at row ${row}, col ${col}: got ${got.data[worst.index]}, expected ${want.data[worst.index]} `
                + `(transformers fp32-vs-fp64 noise ${want.fp64MaxAbsDiff.toExponential(2)}, `
                + `fp16-weight effect ${want.fp16WeightsMaxAbsDiff.toExponential(2)})`);
            }
          });
        });
      }

      it('stays near transformers with fp8 weights and GEMM inputs (E4M3 emulated on the CPU)', async () => {
        const fixture = loadFixture(entry.name);
        const names = Object.keys(fixture.outputs);
        const batch = batchOf(fixture.inputs, names);
        const [fp8, fp16] = [
          await withEngine(await planFor('fp8'), (engine) => engine.run(batch)),
          await withEngine(await planFor('fp16'), (engine) => engine.run(batch)),
        ];
        for (const name of names) {
          const want = fixture.outputs[name];
          const worst = worstDifference(fp8[name].data, want.data);
          const cosine = leastRowCosine(fp8[name].data, want.data, want.cols);
          assert.ok(worst.error <= FP8_MAX_ERROR && cosine >= FP8_MIN_COSINE,
            `${entry.name} fp8 "${name}": max |error| ${worst.error.toExponential(3)}, least row cosine ${cosine.toFixed(5)}`);
        }
        // The rounding is in effect: E4M3 moves the hidden states well beyond what fp16 weights do.
        const hidden = fixture.outputs.hidden.data;
        const fp8Error = worstDifference(fp8.hidden.data, hidden).error;
        const fp16Error = worstDifference(fp16.hidden.data, hidden).error;
        assert.ok(fp8Error > 10 * fp16Error, `fp8 error ${fp8Error} is not beyond fp16's ${fp16Error}: is E4M3 applied?`);
      });

      // A head that reads a few rows (fill-mask, the pooler) gets a last layer
      // computed on those rows alone when the full hidden states are not asked for.
      it('matches transformers with each output requested alone (fp32)', async () => {
        const fixture = loadFixture(entry.name);
        await withEngine(await planFor('fp32'), async (engine) => {
          for (const [name, want] of Object.entries(fixture.outputs)) {
            const got = (await engine.run(batchOf(fixture.inputs, [name])))[name];
            assert.ok(got, `the run returned no output "${name}"`);
            const worst = worstDifference(got.data, want.data);
            assert.ok(worst.error <= TOLERANCE.fp32, `${entry.name} "${name}" alone: max |error| ${worst.error.toExponential(3)} > ${TOLERANCE.fp32}`);
          }
        });
      });

      // Sentence embeddings pooled on the backend, which every BERT plan
      // offers: transformers' hidden states averaged over each sequence
      // (sentence-transformers' mean pooling) and its first row, each
      // requested alone as the embed node does.
      for (const precision of ['fp32', 'fp16'] as const) {
        it(`gives mean and cls as transformers' hidden states pooled (${precision})`, async () => {
          const fixture = loadFixture(entry.name);
          const hidden = fixture.outputs.hidden;
          const states = { data: Float32Array.from(hidden.data), rows: hidden.rows, cols: hidden.cols };
          const sequences = fixture.inputs.cuSeqlens.length - 1;
          const pooled = (pooling: 'mean' | 'cls') => {
            const vectors = poolEmbeddings(states, fixture.inputs.cuSeqlens, { pooling });
            const flat = new Float32Array(sequences * hidden.cols);
            vectors.forEach((v, b) => flat.set(v, b * hidden.cols));
            return flat;
          };
          await withEngine(await planFor(precision), async (engine) => {
            for (const name of ['mean', 'cls'] as const) {
              const want = pooled(name);
              const got = (await engine.run(batchOf(fixture.inputs, [name])))[name];
              assert.ok(got, `the run returned no output "${name}"`);
              assert.deepEqual([got.rows, got.cols], [sequences, hidden.cols], `shape of "${name}"`);
              const worst = worstDifference(got.data, want);
              assert.ok(worst.error <= TOLERANCE[precision],
                `${entry.name} ${precision} "${name}": max |error| ${worst.error.toExponential(3)} > ${TOLERANCE[precision]}`);
            }
          });
        });
      }

      it('gives each sequence the same rows in one batch as in batches of its own', async () => {
        const fixture = loadFixture(entry.name);
        const names = Object.keys(fixture.outputs);
        const sequences = fixture.inputs.cuSeqlens.length - 1;
        await withEngine(await planFor('fp32'), async (engine) => {
          const kinds = planRowsKinds(engine);
          const kindOf = (name: string): RowsKind => {
            const kind = kinds.get(name);
            assert.ok(kind, `the plan has no output "${name}"`);
            return kind;
          };
          const whole = await engine.run(batchOf(fixture.inputs, names));
          const singles = Array.from({ length: sequences }, (_, b) => sequenceOf(fixture.inputs, b));
          // A sequence without [MASK] asks for no selected-row outputs: an empty request is another test's business.
          const wantedFor = (inputs: FixtureInputs) =>
            names.filter((n) => kindOf(n) !== 'selected' || inputs.selectedRows.length > 0);
          const apart: RunResult[] = [];
          for (const single of singles) apart.push(await engine.run(batchOf(single, wantedFor(single))));
          // Submitted together, the engine's batcher may pack them into one batch again.
          const together = await Promise.all(singles.map((single) => engine.run(batchOf(single, wantedFor(single)))));

          for (const [how, results] of [['apart', apart], ['concurrently', together]] as const) {
            results.forEach((result, b) => {
              for (const name of wantedFor(singles[b])) {
                assert.ok(result[name], `sequence ${b} run ${how}: no output "${name}"`);
                const want = pickRows(whole[name], rowsOfSequence(kindOf(name), fixture.inputs, b));
                const { data: got, cols } = result[name];
                assert.equal(got.length, want.length, `sequence ${b} run ${how}: size of "${name}"`);
                const worst = worstDifference(got, want);
                assert.ok(worst.error <= BATCHING_TOLERANCE,
                  `sequence ${b} run ${how}: "${name}" differs from the whole batch by ${worst.error.toExponential(3)} `
                  + `at its row ${Math.floor(worst.index / cols)}, col ${worst.index % cols}: `
                  + `${got[worst.index]} alone vs ${want[worst.index]} in the batch`);
              }
            });
          }
        });
      });
    });
  }
});
