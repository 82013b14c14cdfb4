#!/usr/bin/env bash
# The GPU benchmark in one device call (bench/gpu/README.md). Run there as
#   source .device/env.sh && bash tools/device/gpu-bench.sh
# with .device (../shared/device/pack.sh, then tools/device/pack-node-modules.sh) and dist (npx tsc -p
# tsconfig.json) carried. Steps: build the addon with CUDA, build and run the
# attention kernel test (cuda/tests/attention_test.cu), the PyTorch benchmark
# (saves the model and the inputs), FusedRT on the same model and inputs,
# then the combined table. Keeps going after a failed step; everything is
# logged to $OUT/gpu-bench.log, JSON results go to $OUT, the table is last.
# Every case is timed 100 times; all of them take longer than one device
# call may run, so BENCH_SEQ=128 or BENCH_SEQ=384 runs the cases of one
# sequence length (one call each; dist/bench/gpu/report.js --dir A --dir B
# joins the two). Without it, every case. BENCH_PRECISIONS=fp8 (or a list,
# fp16,fp8,fp32) picks the plans FusedRT runs; default fp16,fp32.
set -uo pipefail
out="${OUT:-$PWD/bench-out}"
mkdir -p "$out"
log="$out/gpu-bench.log"
summary="$out/gpu-bench.summary"
: > "$log"
: > "$summary"
status=0
step() {
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$log"
  local start=$SECONDS
  "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  echo "=== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$log"
  printf '%-16s %s (%ss)\n' "$name" "$([ $rc -eq 0 ] && echo ok || echo "FAILED ($rc)")" "$((SECONDS - start))" >> "$summary"
  [ $rc -ne 0 ] && [ $status -eq 0 ] && status=$rc
  return $rc
}
# The model (about 220 MB) stays off $OUT, which comes back to the caller.
work=/tmp/fusedrt-gpu-bench
mkdir -p "$work"
seq_option=${BENCH_SEQ:+--seq $BENCH_SEQ}
precision_option=${BENCH_PRECISIONS:+--precisions $BENCH_PRECISIONS}
nvcc=$(command -v nvcc || echo "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc")

step environment sh -c 'node --version; "$0" --version | tail -1; nvidia-smi; python3 -c "import torch, transformers; print(torch.__version__, transformers.__version__)"' "$nvcc"
# cuda/attention_hopper.cu is sm_90a code, built apart (cuda/backend.cmake).
step attention-test sh -c "$nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -I native -c cuda/attention_hopper.cu \
  -o $work/attention_hopper.o && $nvcc -std=c++17 -O3 -arch=native -I native -o $work/attention_test \
  cuda/tests/attention_test.cu cuda/attention.cu $work/attention_hopper.o && $work/attention_test"
rm -rf build  # a fresh build tree: the carried checkout must not reuse a CPU-only cache
step build node scripts/build-native.js
step pytorch python3 bench/gpu/pytorch_bench.py --model-dir "$work/bert-base" --out "$out" --reference-dir "$work" $seq_option
if [ -f "$out/inputs.json" ] && [ -f build/Release/fusedrt.node ]; then
  step fusedrt node --expose-gc dist/bench/gpu/fusedrt-bench.js --model-dir "$work/bert-base" --inputs "$out/inputs.json" \
    --out "$out" --reference-dir "$work" --plan-dir "$work" $seq_option $precision_option
fi
node dist/bench/gpu/report.js --dir "$out" > "$out/report.txt" 2>&1 || echo "report failed (see $out/report.txt)" >> "$summary"
echo
echo "--- attention kernel test (rows that passed are only in the log) ---"
awk '/=== attention-test: sh/{on=1} /=== attention-test: exit/{on=0} on' "$log" | grep -vE '[|] ok [|]$' | tail -25
echo "--- steps (full log: $log) ---"
cat "$summary"
echo
cat "$out/report.txt"
exit $status
