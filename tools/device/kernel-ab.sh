#!/usr/bin/env bash
# A/B of one CUDA kernel file on the GPU machine: the file as committed at a
# revision (default HEAD) against the working tree's, each linked with the
# working tree's test and every other kernel, then the two test binaries run
# in turn, round after round (alternating, so a host that drifts shows in
# both). Run there, from the repository root, as
#   bash tools/device/kernel-ab.sh [--rev REV] [--rounds N] [--grep REGEX] cuda/<kernel>.cu cuda/tests/<test>.cu
# Prints the lines of each run that match REGEX (default: table rows and the
# test's verdict); the full outputs go to $OUT/kernel-ab/ (or /tmp/kernel-ab).
# KERNEL_AB_ARCH overrides -arch=native (to compile-check on a machine
# without a GPU, e.g. KERNEL_AB_ARCH=sm_90 with --rounds 0).
set -uo pipefail
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
rev=HEAD
rounds=2
pattern='^\||checks passed|FAILED|failure'
while [ $# -gt 0 ]; do
  case "$1" in
    --rev) rev=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --grep) pattern=$2; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) break ;;
  esac
done
if [ $# -ne 2 ] || [ ! -f "$1" ] || [ ! -f "$2" ]; then usage >&2; exit 2; fi
kernel=$1
test=$2
arch=${KERNEL_AB_ARCH:-native}
out="${OUT:-/tmp}/kernel-ab"
work=/tmp/kernel-ab-build
rm -rf "$work" && mkdir -p "$out" "$work/base" "$work/new"
git show "$rev:$kernel" > "$work/base/$(basename "$kernel")" || { echo "$kernel is not in $rev" >&2; exit 2; }
cp "$kernel" "$work/new/"

# An sm_90a file (wgmma) is built for that target alone, as cuda/backend.cmake does.
compile() {  # source object
  case "$1" in
    *_hopper.cu) nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -I native -I cuda -c "$1" -o "$2" ;;
    *) nvcc -std=c++17 -O3 -arch="$arch" -I native -I cuda -c "$1" -o "$2" ;;
  esac
}

echo "building the kernels other than $kernel, once"
others=""
for source in cuda/*.cu; do
  [ "$source" = "$kernel" ] && continue
  object="$work/$(basename "$source" .cu).o"
  compile "$source" "$object" || exit 1
  others="$others $object"
done
for side in base new; do
  echo "building $side ($([ $side = base ] && echo "$rev" || echo 'working tree'))"
  compile "$work/$side/$(basename "$kernel")" "$work/$side/kernel.o" || exit 1
  nvcc -std=c++17 -O3 -arch="$arch" -I native -o "$work/$side/test" "$test" "$work/$side/kernel.o" $others \
    native/cpu/topk.cpp native/cpu/mean_rows.cpp native/cpu/thread_pool.cpp || exit 1
done

status=0
for round in $(seq 1 "$rounds"); do
  for side in base new; do
    log="$out/$side-$round.log"
    "$work/$side/test" > "$log" 2>&1
    rc=$?
    [ $rc -ne 0 ] && status=$rc
    echo "=== $side, round $round (exit $rc; $log)"
    grep -E "$pattern" "$log"
  done
done
exit $status
