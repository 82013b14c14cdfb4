#!/usr/bin/env bash
# Compiles the CUDA kernels (cuda/*.cu; no cuBLAS, no GPU needed) for every
# architecture the backend ships (sm_80, sm_86, sm_87, sm_89, sm_90), one nvcc
# call per file, two files at a time. Exit status 0 when all compile.
#   scripts/check-cuda-compile.sh [OUT_DIR]   (objects go there; default: a temp dir)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
nvcc=$(command -v nvcc || true)
for dir in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda; do
  [ -z "$nvcc" ] && [ -n "$dir" ] && [ -x "$dir/bin/nvcc" ] && nvcc="$dir/bin/nvcc"
done
if [ -z "$nvcc" ]; then echo "check-cuda-compile: nvcc not found" >&2; exit 2; fi
out=${1:-$(mktemp -d)}
mkdir -p "$out"
gencode=""
for arch in 80 86 87 89 90; do gencode="$gencode -gencode=arch=compute_$arch,code=sm_$arch"; done
export nvcc gencode out root
ls "$root"/cuda/*.cu | xargs -P 2 -I{} sh -c \
  '"$nvcc" -std=c++17 -O3 -Werror all-warnings -I "$root/native" $gencode -c "$1" -o "$out/$(basename "$1" .cu).o" && echo "compiled $(basename "$1")"' _ {}
echo "check-cuda-compile: all kernels compiled for sm_80 sm_86 sm_87 sm_89 sm_90 into $out"
