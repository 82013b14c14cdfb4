#!/usr/bin/env node
// Builds the native addon (build/Release/fusedrt.node) with cmake-js and says
// plainly which backends it contains (`--report`: only says it, for the build
// already there). Runs on `npm install`; a failed build prints what to
// install and exits non-zero.
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

// CMake decides whether the CUDA backend is built (cuda/backend.cmake) and
// leaves the reason in its cache; report exactly that.
function cudaStatus() {
  const cache = path.join(root, 'build', 'CMakeCache.txt');
  const text = fs.existsSync(cache) ? fs.readFileSync(cache, 'utf8') : '';
  const match = /^FUSEDRT_CUDA_STATUS:INTERNAL=(.*)$/m.exec(text);
  return match ? match[1] : 'unknown (no CMake cache in build/; build first)';
}

function report(addon) {
  const gemm = addon.gemmImplementation() === 'openblas'
    ? 'GEMM: OpenBLAS'
    : 'GEMM: built-in; install libopenblas-dev for the fast path';
  console.log(`FusedRT native: CPU backend (${gemm})`);
  console.log(`CUDA backend: ${cudaStatus()}`);
}

function loadAddon() {
  try {
    return require(addonPath);
  } catch (e) {
    failBuild(`the built addon ${addonPath} cannot be loaded (${e.message})`);
  }
}

function main() {
  // --report: only say what the existing build contains (used by the tests).
  if (process.argv.includes('--report')) {
    report(loadAddon());
    return;
  }
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

  report(loadAddon());
}

main();
