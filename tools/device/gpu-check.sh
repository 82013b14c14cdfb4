#!/usr/bin/env bash
# The CUDA backend's check on the GPU machine (docs/cuda.md). Run there as
#   source .device/env.sh && bash tools/device/gpu-check.sh [kernels|addon]
# with .device (../shared/device/pack.sh, then tools/device/pack-node-modules.sh) and dist (npx tsc -p
# tsconfig.json) carried. The whole check takes longer than one device call
# (600 s); its two parts, the kernels on their own (kernels) and the addon
# (addon), fit one call each. Builds and runs the kernel tests (cuda/tests),
# holds every op to PyTorch (cuda/tests/torch_ops_test.py), builds the addon
# with CUDA, runs
# dist/test/gpu/*.gpu.js, times a BERT-base-shaped plan
# (dist/test/gpu/cuda-timing.js), and writes everything to $OUT/gpu-check.log (or
# ./gpu-check.log without $OUT). Keeps going after a failed step so one call
# reports as much as it can; the exit status is the first failure's.
set -uo pipefail
part=${1:-all}
case "$part" in kernels|addon|all) ;; *) echo "usage: $0 [kernels|addon]" >&2; exit 2 ;; esac
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
if [ "$part" != addon ]; then
  # The kernels and the CPU top-k reference once into a library for this GPU,
  # then every kernel test (cuda/tests/*_test.cu: checks against a CPU
  # reference, then timings). cuda/*_hopper.cu hold sm_90a code (wgmma) and
  # are built apart for that target, as cuda/backend.cmake builds them; on
  # other GPUs their launchers are never called.
  hopper_objects=""
  for source in cuda/*_hopper.cu; do
    object=/tmp/$(basename "$source" .cu).o
    hopper_objects="$hopper_objects $object"
    step "$(basename "$source" .cu)" nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -Xcompiler -fPIC \
      -I native -c "$source" -o "$object"
  done
  kernels="$(ls cuda/*.cu | grep -v '_hopper[.]cu$' | tr '\n' ' ') $hopper_objects"
  step kernel-library sh -c "nvcc -std=c++17 -O3 -arch=native -I native -lib -o /tmp/fusedrt_kernels.a $kernels native/cpu/topk.cpp native/cpu/mean_rows.cpp native/cpu/thread_pool.cpp"
  for test in cuda/tests/*_test.cu; do
    name=$(basename "$test" .cu)
    step "$name" sh -c "nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/$name $test /tmp/fusedrt_kernels.a && /tmp/$name"
  done
  # On a Hopper GPU the test above ran the wgmma kernel for head_dim 64; the
  # mma.sync one again for that head_dim.
  step attention_test-mma env FUSEDRT_ATTENTION=mma /tmp/attention_test
  # Every op and the backend's GEMM against PyTorch's own ops
  # (cuda/tests/torch_ops_test.py, through cuda/tests/ops_c_api.cu).
  step torch_ops_test sh -c "nvcc -std=c++17 -O3 -arch=native -shared -Xcompiler -fPIC -DFUSEDRT_WITH_CUDA=1 -I native \
    -o /tmp/libfusedrt_ops.so cuda/tests/ops_c_api.cu $kernels native/cuda_gemm.cpp -lcublasLt -lcublas &&
    python3 cuda/tests/torch_ops_test.py /tmp/libfusedrt_ops.so"
fi
if [ "$part" != kernels ]; then
  # A fresh build tree: the carried checkout must not reuse a CPU-only cache.
  rm -rf build
  if step build node scripts/build-native.js; then
    # Most informative first: the device call has a time limit, and what the
    # log holds when it is cut off still comes back.
    step gpu-tests node_modules/.bin/mocha --no-config --timeout 600000 dist/test/gpu/*.gpu.js
    # The backend and top-k tests again with the project's small-row GEMM
    # kernels in every fp16 GEMM they take, whether or not tuning would choose
    # them (the decoder's gemv at a few rows then also does the top-k).
    step gpu-tests-own-gemm env FUSEDRT_GEMM_TACTICS=fusedrt node_modules/.bin/mocha --no-config --timeout 600000 \
      dist/test/gpu/cuda-backend.gpu.js dist/test/gpu/topk.gpu.js
    # And with every GEMM that feeds an add_layernorm split into two fp32
    # partials (tuning splits only where that is faster, so the tests above may
    # not take that path).
    step gpu-tests-partials env FUSEDRT_GEMM_PARTIALS=2 node_modules/.bin/mocha --no-config --timeout 600000 \
      dist/test/gpu/cuda-backend.gpu.js
    step timing node dist/test/gpu/cuda-timing.js
    # Engine tests of the CPU suite again with this build: 'auto' now picks CUDA.
    # (The Node-RED tests need dev packages the device pack leaves out.)
    step cpu-suite node_modules/.bin/mocha --no-config --timeout 600000 dist/test/numerics.test.js \
      dist/test/native-engine.test.js dist/test/plan-fuzz.test.js dist/test/cli-run.test.js
  fi
fi
echo
echo "--- last lines of the GPU tests (full log: $log) ---"
awk '/=== gpu-tests: node_modules/{on=1} on; /=== gpu-tests: exit/{on=0}' "$log" | tail -130
echo "--- timing (engine.run wall time from JS; BERT-base shape, random weights; then wall vs GPU ms, fill-mask top-k) ---"
awk '/=== timing: node/{on=1} /=== timing: exit/{on=0} on' "$log" | tail -32
echo "--- kernel tests: failures and timings (full output in the log) ---"
awk '/=== [a-z_]+_test: sh/{on=1} /=== [a-z_]+_test: exit/{on=0} on' "$log" | grep -viE '(\| ok \||^ok |PASS)' | tail -60
echo "--- GEMM tactics chosen (FUSEDRT_GEMM_TUNING_LOG=1) ---"
grep -E '^fusedrt gemm tuning' "$log" | sort | uniq | head -40
echo "--- build report ---"
grep -E '^(FusedRT native|CUDA backend):' "$log"
echo "--- steps ---"
cat "$log.summary"
exit $status
