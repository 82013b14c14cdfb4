#!/usr/bin/env node
// Builds the native addon (build/Release/fusedrt.node) with cmake-js and says
// plainly which backends it contains. Runs on `npm install`; a failed build
// prints what to install and exits non-zero.
'use strict';

const { spawnSync } = require('child_process');
const fs = require('fs');
const path = require('path');

const root = path.resolve(__dirname, '..');
const addonPath = path.join(root, 'build', 'Release', 'fusedrt.node');

function failBuild(reason) {
  console.error(`FusedRT native: build failed: ${reason}`);
  console.error('FusedRT needs CMake >= 3.18, a C++17 compiler (g++ or clang++) and make or ninja;');
  console.error('on Debian/Ubuntu: apt-get install cmake g++ make (and libopenblas-dev for fast GEMMs).');
  process.exit(1);
}

function hasCommand(command, args) {
  const result = spawnSync(command, args, { stdio: 'ignore' });
  return !result.error && result.status === 0;
}

function findOnPath(file) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    if (dir && fs.existsSync(path.join(dir, file))) return path.join(dir, file);
  }
  return undefined;
}

// The CUDA backend is not part of this version; report what a later build
// would need so users know where they stand.
function cudaStatus() {
  const cudaRoots = [process.env.CUDA_HOME, process.env.CUDA_PATH, '/usr/local/cuda'].filter(Boolean);
  const nvcc = findOnPath('nvcc') || cudaRoots.map((r) => path.join(r, 'bin', 'nvcc')).find((p) => fs.existsSync(p));
  const includeDirs = [...cudaRoots.map((r) => path.join(r, 'include')), '/usr/include', '/usr/include/x86_64-linux-gnu'];
  const cublasLt = includeDirs.map((d) => path.join(d, 'cublasLt.h')).find((p) => fs.existsSync(p));
  const missing = [];
  if (!nvcc) missing.push('nvcc not found');
  if (!cublasLt) missing.push('cuBLAS headers (cublasLt.h) not found');
  if (missing.length > 0) return `not built (${missing.join('; ')})`;
  return `not built (nvcc and cublasLt.h found, but this version of FusedRT has no CUDA backend yet)`;
}

function main() {
  if (!hasCommand('cmake', ['--version'])) failBuild('cmake was not found on PATH');
  let cmakeJs;
  try {
    cmakeJs = path.join(path.dirname(require.resolve('cmake-js/package.json', { paths: [root] })), 'bin', 'cmake-js');
  } catch {
    failBuild('cmake-js is not installed (run npm install)');
  }
  // cmake-js runs node from PATH inside CMake (to locate node-addon-api).
  const env = { ...process.env, PATH: `${path.dirname(process.execPath)}${path.delimiter}${process.env.PATH || ''}` };
  const build = spawnSync(process.execPath, [cmakeJs, 'build', '--release', '--out', 'build'], { cwd: root, stdio: 'inherit', env });
  if (build.error) failBuild(`could not run cmake-js (${build.error.message})`);
  if (build.status !== 0) failBuild(`cmake-js exited with status ${build.status} (see the compiler output above)`);

  let addon;
  try {
    addon = require(addonPath);
  } catch (e) {
    failBuild(`the built addon ${addonPath} cannot be loaded (${e.message})`);
  }
  const gemm = addon.gemmImplementation() === 'openblas'
    ? 'GEMM: OpenBLAS'
    : 'GEMM: built-in; install libopenblas-dev for the fast path';
  console.log(`FusedRT native: CPU backend (${gemm})`);
  console.log(`CUDA backend: ${cudaStatus()}`);
}

main();
