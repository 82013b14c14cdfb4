#!/usr/bin/env bash
# Per-kernel GPU times of BERT-base MLM runs (fp16, top-5 on the device) as
# they run replayed from CUDA graphs, on the GPU machine (bench/gpu/README.md,
# "Per-kernel profile"). Run there as
#   source .device/env.sh && bash tools/device/graph-profile.sh [BATCHxSEQ[v] ...]
# after the addon is built with CUDA (node scripts/build-native.js) and with
# dist carried. Default cases: 1x128 32x128; a trailing v makes the lengths
# uniform in [SEQ/8, SEQ]. kernel-profile.sh (Nsight Compute) times each
# kernel alone; this one records them back to back in the graph, with what
# the L2 holds and the time between kernels, through a CUPTI injection
# library (kernel_trace.cpp; Nsight Systems is not installed there), and
# summarises the last 100 runs (graph_kernel_table.py). CUPTI comes from the
# toolkit, or from the nvidia-cuda-cupti wheel unpacked into $CUPTI_DIR.
set -uo pipefail
out="${OUT:-.}"
work=/tmp/fusedrt-profile
mkdir -p "$work"
cupti=""
for dir in "${CUPTI_DIR:-}" /usr/local/cuda/extras/CUPTI /usr/local/cuda; do
  if [ -n "$dir" ] && [ -f "$dir/include/cupti_activity.h" ]; then cupti=$dir; break; fi
done
if [ -z "$cupti" ]; then echo "CUPTI headers not found (set CUPTI_DIR)"; exit 1; fi
lib=$(ls -d "$cupti"/lib64 "$cupti"/lib 2>/dev/null | head -1)
g++ -std=c++17 -O2 -shared -fPIC -I"$cupti/include" -I/usr/local/cuda/include tools/device/kernel_trace.cpp \
  -L"$lib" -l:libcupti.so.13 -Wl,-rpath,"$lib" -o "$work/libkernel_trace.so" || exit 1
source "$(dirname "$0")/profile-cases.sh"
cases=("$@")
[ ${#cases[@]} -eq 0 ] && cases=(1x128 32x128)
for c in "${cases[@]}"; do
  args=$(profile_case_args "$c")
  # Once untraced, for the GPU time to set the traced one against.
  node dist/bench/gpu/kernel-profile.js --work "$work" $args --warmup 20 --runs 200 --graphs
  CUDA_INJECTION64_PATH="$work/libkernel_trace.so" FUSEDRT_KERNEL_TRACE="$work/trace-$c.csv" \
    node dist/bench/gpu/kernel-profile.js --work "$work" $args --warmup 20 --runs 200 \
    --graphs || { echo "traced run failed for $c"; continue; }
  python3 tools/device/graph_kernel_table.py "$work/trace-$c.csv" "$c"
done
