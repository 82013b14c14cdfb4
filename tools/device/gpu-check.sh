#!/usr/bin/env bash
# The CUDA backend's check on the GPU machine (docs/cuda.md). Run there as
#   source .device/env.sh && bash tools/device/gpu-check.sh
# with .device (../shared/device/pack.sh mocha) and dist (npx tsc -p
# tsconfig.json) carried. Builds the addon with CUDA, runs
# dist/test/gpu/*.gpu.js, and writes everything to $OUT/gpu-check.log (or
# ./gpu-check.log without $OUT). Keeps going after a failed step so one call
# reports as much as it can; the exit status is the first failure's.
set -uo pipefail
log="${OUT:-.}/gpu-check.log"
: > "$log"
status=0
step() {
  local name=$1; shift
  echo "=== $name: $*" >> "$log"
  local start=$SECONDS
  "$@" >> "$log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - start)) s" >> "$log"
  printf '%-16s %s (%ss)\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED ($rc)")" "$((SECONDS - start))" >> "$log.summary"
  [ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc
  return $rc
}
: > "$log.summary"
step environment sh -c 'node --version; nvcc --version | tail -1; nvidia-smi; cmake --version | head -1'
# A fresh build tree: the carried checkout must not reuse a CPU-only cache.
rm -rf build
if step build node scripts/build-native.js; then
  step kernels bash scripts/check-cuda-compile.sh /tmp/cuda-objects
  step gpu-tests node_modules/.bin/mocha --no-config --timeout 600000 dist/test/gpu/*.gpu.js
  # Engine tests of the CPU suite again with this build: 'auto' now picks CUDA.
  # (The Node-RED tests need dev packages the device pack leaves out.)
  step cpu-suite node_modules/.bin/mocha --no-config --timeout 600000 dist/test/numerics.test.js \
    dist/test/native-engine.test.js dist/test/plan-fuzz.test.js dist/test/cli-run.test.js
fi
echo
echo "--- last lines of the GPU tests (full log: $log) ---"
awk '/=== gpu-tests: node_modules/{on=1} on' "$log" | tail -60
echo "--- build report ---"
grep -E '^(FusedRT native|CUDA backend):' "$log"
echo "--- steps ---"
cat "$log.summary"
exit $status
