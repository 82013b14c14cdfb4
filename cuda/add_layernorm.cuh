// CUDA add_layernorm: out = LN((in + bias) + residual), the semantics of
// native/cpu/README.md ("add_layernorm"), with activations in T (float or
// __half), parameters in fp32 and fp32 statistics; out may alias in or
// residual. `in` may instead come as the fp32 partial products of a split-K
// GEMM, which the kernel adds up first (docs/cuda.md, "Split-K partials
// into the LayerNorm").
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fusedrt::gpu {

template <class T>
struct AddLayerNormArgs {
  const T* in;            // [rows, cols]
  const T* residual;      // [rows, cols] or nullptr
  const float* bias;      // [cols] or nullptr
  const float* gamma;     // [cols]
  const float* beta;      // [cols]
  float eps;
  int64_t rows;
  int64_t cols;
  T* out;  // [rows, cols]; may alias in or residual
  // [rows, cols] or nullptr: also gets out's values (before rounding to T)
  // rounded to E4M3 (row_math.cuh, store_e4m3).
  __nv_fp8_e4m3* out8 = nullptr;
  // With partial_count > 0, `in` is not read: its values are the sum, in
  // fp32 and in order, of partial_count arrays of [rows, cols] fp32 that
  // follow one another from `partials`.
  const float* partials = nullptr;
  int partial_count = 0;
};

// Queues the op on stream; returns the launch error, if any. T: float, __half.
template <class T>
cudaError_t add_layernorm(const AddLayerNormArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
