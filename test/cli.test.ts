import * as assert from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { makeTempDir, writeTinyBert } from './support/tiny-hf-bert';

const CLI = path.resolve(__dirname, '../src/cli.js');

function fusedrt(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { status: result.status, stdout: result.stdout, stderr: result.stderr };
}

/** Exit 1 and exactly one stderr line `fusedrt: <code>: <message>`. */
function assertFails(result: ReturnType<typeof fusedrt>, code: string, fragment: string): void {
  assert.strictEqual(result.status, 1, result.stderr);
  assert.match(result.stderr, new RegExp(`^fusedrt: ${code}: [^\\n]*${fragment.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[^\\n]*\\n$`));
}

describe('fusedrt CLI', function () {
  this.timeout(60000);
  let root: string;
  let modelDir: string;
  let planFile: string;

  before(() => {
    root = makeTempDir('cli');
    modelDir = path.join(root, 'tiny-mlm');
    writeTinyBert(modelDir, { architecture: 'BertForMaskedLM', layers: 3 });
    planFile = path.join(root, 'tiny.plan');
  });
  after(() => fs.rmSync(root, { recursive: true, force: true }));

  it('--help lists the commands; each command has its own help', () => {
    const tool = fusedrt('--help');
    assert.strictEqual(tool.status, 0);
    assert.match(tool.stdout, /Usage: fusedrt <command>/);
    assert.match(tool.stdout, /\bbuild\b.*\n.*\binspect\b/);
    const build = fusedrt('build', '--help');
    assert.strictEqual(build.status, 0);
    assert.match(build.stdout, /--precision fp32\|fp16/);
    assert.match(build.stdout, /--max-seq/);
    const inspect = fusedrt('inspect', '-h');
    assert.strictEqual(inspect.status, 0);
    assert.match(inspect.stdout, /--json/);
    assert.strictEqual(fusedrt('help', 'inspect').stdout, inspect.stdout);
  });

  it('build writes a plan, shows progress on stderr and a summary on stdout', () => {
    const result = fusedrt('build', modelDir, '-o', planFile, '--precision', 'fp16', '--max-seq', '32');
    assert.strictEqual(result.status, 0, result.stderr);
    // stderr is a pipe here: plain lines, no carriage-return updates.
    assert.ok(!result.stderr.includes('\r'));
    assert.deepStrictEqual(result.stderr.trim().split('\n'), ['hashing source files', 'reading and converting tensors', 'writing plan', 'done']);
    assert.match(result.stdout, new RegExp(`^built ${planFile.replace(/[.\\]/g, '\\$&')}\\n`));
    for (const line of [/architecture\s+BertForMaskedLM/, /task\s+fill-mask/, /layers\s+3/, /hidden\s+16/, /precision\s+fp16/, /max seq\s+32/, /size\s+[\d.]+ [kM]B/, /time\s+[\d.]+ s/]) {
      assert.match(result.stdout, line);
    }
    assert.ok(fs.existsSync(planFile));
    assert.ok(!fs.existsSync(`${planFile}.partial`));
  });

  it('inspect prints the header with layers folded, and --json the full header', () => {
    const text = fusedrt('inspect', planFile);
    assert.strictEqual(text.status, 0, text.stderr);
    for (const pattern of [/format\s+fusedrt-plan v1/, /builder\s+fusedrt \d+\.\d+\.\d+/, /source sha256\s+[0-9a-f]{64}/, /task\s+fill-mask/,
      /precision\s+fp16/, /labels\s+none/, /tokenizer\s+tokenizer\.json \([\d.]+ kB\), mask \[MASK\], lowercase/, /checksum\s+ok/,
      /encoder\.layer\.\{i\}\.attention\.self\.qkv\.weight \(i=0-2\)\s+f16\s+48×16\s+3 × 1\.5 kB/,
      /layers 0-1 \(×2\):\n\s+gemm\s+hidden → qkv/, /gather_rows\s+hidden → sel/, /attention\s+qkv → sel_ctx .*select=selected/, /logits\s+mlm_logits \[selected × 30522\]/,
      /mean_rows\s+hidden → mean/, /mean\s+mean \[sequences × 16\]/]) {
      assert.match(text.stdout, pattern);
    }
    const json = fusedrt('inspect', planFile, '--json');
    assert.strictEqual(json.status, 0, json.stderr);
    const parsed = JSON.parse(json.stdout);
    assert.strictEqual(parsed.checksum.ok, true);
    assert.strictEqual(parsed.fileSize, fs.statSync(planFile).size);
    assert.strictEqual(parsed.header.config.maxSeq, 32);
    // Embedding, 3 layers, the last again on the [MASK] rows, the MLM head, then mean_rows and the cls gather.
    assert.strictEqual(parsed.header.ops.length, 1 + 7 * 3 + 7 + 3 + 2);
  });

  it('inspect reports a damaged plan: summary, then E_PLAN_CORRUPT', () => {
    const damaged = path.join(root, 'damaged.plan');
    const bytes = fs.readFileSync(planFile);
    bytes[bytes.length - 100] ^= 0xff;
    fs.writeFileSync(damaged, bytes);
    const result = fusedrt('inspect', damaged);
    assert.match(result.stdout, /checksum\s+MISMATCH/);
    assertFails(result, 'E_PLAN_CORRUPT', 'checksum mismatch');
    fs.writeFileSync(damaged, bytes.subarray(0, 100));
    assertFails(fusedrt('inspect', damaged), 'E_PLAN_CORRUPT', 'invalid plan');
  });

  it('bad arguments and inputs exit 1 with one coded line', () => {
    assertFails(fusedrt(), 'E_INPUT', 'no command given');
    assertFails(fusedrt('compile'), 'E_INPUT', 'unknown command "compile"');
    assertFails(fusedrt('build', modelDir), 'E_INPUT', '-o <model.plan> is required');
    assertFails(fusedrt('build', '-o', planFile), 'E_INPUT', 'expected one model directory');
    assertFails(fusedrt('build', modelDir, '-o', planFile, '--precision', 'int8'), 'E_INPUT', '--precision must be fp32 or fp16');
    assertFails(fusedrt('build', modelDir, '-o', planFile, '--max-seq', '1'), 'E_INPUT', '--max-seq must be an integer');
    assertFails(fusedrt('build', modelDir, '-o', planFile, '--bogus'), 'E_INPUT', "Unknown option '--bogus'");
    assertFails(fusedrt('build', path.join(root, 'nothing-here'), '-o', planFile), 'E_MODEL', 'is not a directory');
    assertFails(fusedrt('inspect', path.join(root, 'missing.plan')), 'E_PLAN_IO', 'cannot read');
    assertFails(fusedrt('inspect'), 'E_INPUT', 'expected one plan file');
  });
});
