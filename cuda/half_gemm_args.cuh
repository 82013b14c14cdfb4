// The operands of the project's own fp16 GEMM kernels (small_gemm.cuh,
// gemv.cuh): out[rows, n] = act(in[rows, k] . weight[n, k]^T + bias),
// row-major, fp32 accumulation, bias and activation fused.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>

#include "activation.h"

namespace fusedrt::gpu {

// Out is the type of out and bias: __half, or float for logits, which are
// written from the fp32 accumulators without rounding to fp16 (docs/cuda.md,
// "fp32 logits").
template <class Out>
struct HalfGemmArgs {
  int64_t rows = 0;
  int64_t n = 0;
  int64_t k = 0;
  const __half* in = nullptr;      // [rows, k]
  const __half* weight = nullptr;  // [n, k]
  const Out* bias = nullptr;       // [n] or nullptr
  Activation activation = Activation::kNone;
  Out* out = nullptr;  // [rows, n]
};

}  // namespace fusedrt::gpu
