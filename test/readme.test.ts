/**
 * The README's first commands, as a new user copies them: the demo's curl
 * line and the "From code" example, run as written.
 */
import * as assert from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const REPO = path.resolve(__dirname, '../..');
const README = fs.readFileSync(path.join(REPO, 'README.md'), 'utf8');

describe('README', function () {
  this.timeout(120000);

  it("gives a demo curl command that curl sends as written (no [ ] { }, which curl reads as URL ranges)", () => {
    const line = README.split('\n').find((l) => l.trim().startsWith("curl '"));
    assert.ok(line, 'the README has a curl line');
    const written = /'([^']+)'/.exec(line)![1];
    assert.doesNotMatch(written, /[[\]{}]/);
    assert.match(new URL(written).searchParams.get('text') ?? '', /\[MASK\]/);
  });

  it('has a "From code" example that runs as written against a plan', () => {
    const section = README.slice(README.indexOf('## From code'));
    const code = /```js\n([\s\S]*?)```/.exec(section)?.[1];
    assert.ok(code, 'the section has a js block');
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-readme-'));
    try {
      const plan = path.join(root, 'model.plan');
      const built = spawnSync(process.execPath, [path.join(REPO, 'dist/src/cli.js'), 'build', path.join(REPO, 'models/demo'), '-o', plan],
        { encoding: 'utf8' });
      assert.strictEqual(built.status, 0, built.stderr);
      // The package resolves by its name, as it does once installed.
      const scope = path.join(root, 'node_modules', '@fusedrt');
      fs.mkdirSync(scope, { recursive: true });
      fs.symlinkSync(REPO, path.join(scope, 'node-red-fusedrt'), 'dir');
      const report = 'console.log(JSON.stringify({ hidden: [hidden.rows, hidden.cols], mean: [mean.rows, mean.cols] }));\n';
      fs.writeFileSync(path.join(root, 'example.mjs'), code.replace("'model.plan'", JSON.stringify(plan)) + report);
      const run = spawnSync(process.execPath, ['example.mjs'], { cwd: root, encoding: 'utf8' });
      assert.strictEqual(run.status, 0, run.stderr);
      const shapes = JSON.parse(run.stdout.trim().split('\n').pop()!) as { hidden: number[]; mean: number[] };
      assert.strictEqual(shapes.mean[0], 2, 'one pooled vector per text');
      assert.strictEqual(shapes.hidden[1], shapes.mean[1]);
      assert.ok(shapes.hidden[0] > shapes.mean[0], 'a row per token');
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});
