/**
 * The CUDA kernels compile on machines without a GPU or cuBLAS (CI), and a
 * machine without nvcc is told so by the build. Which branch runs depends on
 * whether nvcc is installed; both assert something.
 */
import { strict as assert } from 'assert';
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');
const ARCHITECTURES = ['sm_80', 'sm_86', 'sm_87', 'sm_89', 'sm_90'];

/** nvcc where scripts/check-cuda-compile.sh and CMake look for it, or undefined. */
function findNvcc(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(path.delimiter),
    ...[process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda'].filter((d): d is string => !!d).map((d) => path.join(d, 'bin'))];
  return dirs.map((d) => path.join(d, 'nvcc')).find((p) => fs.existsSync(p));
}

function buildReport(): string {
  const result = spawnSync(process.execPath, [path.join(ROOT, 'scripts', 'build-native.js'), '--report'], { encoding: 'utf8' });
  assert.equal(result.status, 0, `build-native.js --report failed: ${result.stderr}`);
  return result.stdout;
}

describe('CUDA kernels', function () {
  this.timeout(400_000);
  const nvcc = findNvcc();

  if (nvcc) {
    it(`compile for ${ARCHITECTURES.join(', ')} with ${nvcc}`, () => {
      const out = fs.mkdtempSync(path.join(os.tmpdir(), 'fusedrt-cuda-'));
      try {
        const result = spawnSync('bash', [path.join(ROOT, 'scripts', 'check-cuda-compile.sh'), out], { encoding: 'utf8' });
        assert.equal(result.status, 0, `check-cuda-compile.sh failed:\n${result.stdout}\n${result.stderr}`);
        const kernels = fs.readdirSync(path.join(ROOT, 'cuda')).filter((f) => f.endsWith('.cu'));
        assert.ok(kernels.length >= 5, `only ${kernels.length} kernel files in cuda/`);
        for (const kernel of kernels) {
          const object = path.join(out, kernel.replace(/\.cu$/, '.o'));
          assert.ok(fs.existsSync(object) && fs.statSync(object).size > 0, `no object for ${kernel}`);
          // The fatbinary names each embedded architecture.
          const bytes = fs.readFileSync(object).toString('latin1');
          // Hopper-only kernels (wgmma) carry sm_90a code alone; their launchers check the device.
          const expected = kernel.endsWith('_hopper.cu') ? ['sm_90a'] : ARCHITECTURES;
          for (const arch of expected) assert.ok(bytes.includes(arch), `${kernel}: no ${arch} code in ${object}`);
        }
      } finally {
        fs.rmSync(out, { recursive: true, force: true });
      }
    });

    it('are seen by the build (nvcc is not reported missing)', () => {
      assert.doesNotMatch(buildReport(), /CUDA backend: not built \(nvcc not found\)/);
    });
  } else {
    it('the build reports that the CUDA backend was not built for lack of nvcc', () => {
      assert.match(buildReport(), /^CUDA backend: not built \(nvcc not found\)$/m);
    });
  }
});
