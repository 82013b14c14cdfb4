// CUDA add_layernorm: out = LN((in + bias) + residual), the semantics of
// native/cpu/README.md ("add_layernorm"), with activations in T (float or
// __half), parameters in fp32 and fp32 statistics; out may alias in or
// residual.
#pragma once

#include <cuda_fp16.h>
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
};

// Queues the op on stream; returns the launch error, if any. T: float, __half.
template <class T>
cudaError_t add_layernorm(const AddLayerNormArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
