#!/usr/bin/env bash
# Compiles the CUDA kernels (cuda/*.cu; no cuBLAS, no GPU needed) for every
# architecture the backend ships (sm_80, sm_86, sm_87, sm_89, sm_90), one nvcc
# call per file, two files at a time; cuda/*_hopper.cu, built on sm_90a's own
# instructions, for sm_90a only (as cuda/backend.cmake builds them). Exit
# status 0 when all compile.
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
hopper_gencode="-gencode=arch=compute_90a,code=sm_90a"
export nvcc gencode hopper_gencode out root
ls "$root"/cuda/*.cu | xargs -P 2 -I{} sh -c \
  'case "$1" in *_hopper.cu) g=$hopper_gencode ;; *) g=$gencode ;; esac
   "$nvcc" -std=c++17 -O3 -Werror all-warnings -I "$root/native" $g -c "$1" -o "$out/$(basename "$1" .cu).o" && echo "compiled $(basename "$1")"' _ {}
echo "check-cuda-compile: all kernels compiled for sm_80 sm_86 sm_87 sm_89 sm_90 (*_hopper.cu: sm_90a) into $out"
