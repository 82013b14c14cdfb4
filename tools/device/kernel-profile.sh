#!/usr/bin/env bash
# Per-kernel GPU times of one BERT-base MLM run (fp16, top-5 on the device)
# under Nsight Compute, on the GPU machine (bench/gpu/README.md, "Per-kernel
# profile"). Run there as
#   source .device/env.sh && bash tools/device/kernel-profile.sh [BATCHxSEQ[v] ...]
# after the addon is built with CUDA (node scripts/build-native.js) and with
# dist carried. Default cases: 1x128 32x128; a trailing v (32x128v) makes
# the lengths uniform in [SEQ/8, SEQ] (kernel-profile.js --varlen). For each case it prints every
# kernel of the last profiled run (name, grid, block, microseconds), totals
# per kernel name, and the run's GPU time with CUDA graphs on for comparison
# (also with cuBLASLt's GEMMs only).
# ncu's own clock and cache control are off (--clock-control none
# --cache-control none), so kernels run as they do in production.
set -uo pipefail
out="${OUT:-.}"
work=/tmp/fusedrt-profile
mkdir -p "$work"
ncu=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
if [ -z "$ncu" ]; then echo "ncu not found"; exit 1; fi
source "$(dirname "$0")/profile-cases.sh"
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(1x128 32x128)
for c in "${cases[@]}"; do
  args=$(profile_case_args "$c")
  # GPU time with graphs, then with cuBLASLt's GEMMs only, for comparison
  # within the run (docs/cuda.md, "GEMM tactics").
  for variant in "" FUSEDRT_GEMM_TACTICS=cublaslt; do
    echo "variant: ${variant:-default}"
    env $variant node dist/bench/gpu/kernel-profile.js --work "$work" $args --warmup 20 \
      --runs 200 --graphs
  done
  "$ncu" --clock-control none --cache-control none --metrics gpu__time_duration.sum --csv --page raw \
    node dist/bench/gpu/kernel-profile.js --work "$work" $args --warmup 2 --runs 1 \
    > "$out/ncu-$c.csv" 2> "$out/ncu-$c.err" || { echo "ncu failed for $c:"; tail -5 "$out/ncu-$c.err"; continue; }
  python3 tools/device/kernel_table.py "$out/ncu-$c.csv" "$c"
done
