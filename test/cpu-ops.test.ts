// Runs the native CPU op test (native/tests/cpu_ops_test.cpp), which checks
// every op against a double-precision reference. The binary is built next to
// the addon by the top-level CMake build (npm install / npm run build:native).
import { strict as assert } from 'assert';
import { runNativeTestBinary } from './support/native-test-binary';

const ops = [
  'thread_pool',
  'gemm',
  'attention',
  'embed_layernorm',
  'add_layernorm',
  'gather_rows',
  'mean_rows',
  'half_to_float',
  'e4m3',
];

describe('CPU ops (native test binary)', function () {
  this.timeout(300_000);

  it('passes every case and covers every op', function () {
    const output = runNativeTestBinary('fusedrt_cpu_ops_test', 240_000);
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
