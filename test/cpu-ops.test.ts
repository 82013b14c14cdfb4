// Runs the native CPU op test (native/tests/cpu_ops_test.cpp), which checks
// every op against a double-precision reference. The binary is built next to
// the addon by the top-level CMake build (npm install / npm run build:native).
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import { existsSync } from 'fs';
import * as path from 'path';

const repoRoot = path.resolve(__dirname, '..', '..');
const binary = path.join(
  repoRoot,
  'build',
  'Release',
  process.platform === 'win32' ? 'fusedrt_cpu_ops_test.exe' : 'fusedrt_cpu_ops_test',
);
const ops = [
  'thread_pool',
  'gemm',
  'attention',
  'embed_layernorm',
  'add_layernorm',
  'gather_rows',
  'half_to_float',
];

describe('CPU ops (native test binary)', function () {
  this.timeout(300_000);

  it('passes every case and covers every op', function () {
    assert.ok(existsSync(binary), `${binary} is missing: build it with npm run build:native`);
    const run = spawnSync(binary, [], { encoding: 'utf8', timeout: 240_000 });
    const output = `${run.stdout ?? ''}${run.stderr ?? ''}`;
    assert.equal(run.error, undefined, `could not run ${binary}: ${String(run.error)}\n${output}`);
    assert.equal(run.status, 0, `cpu op test failed (exit ${run.status}, signal ${run.signal}):\n${output}`);

    const lines = output.split('\n');
    assert.deepEqual(lines.filter((line) => line.startsWith('FAIL ')), [], output);
    for (const op of ops) {
      assert.ok(
        lines.some((line) => line.startsWith(`PASS ${op} `)),
        `no passing case reported for ${op}:\n${output}`,
      );
    }
    assert.match(output, /^OK: \d+ cases, 0 failed$/m);
  });
});
