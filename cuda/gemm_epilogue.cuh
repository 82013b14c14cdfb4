// The GEMM epilogue that cuBLASLt cannot do exactly: out = act(out + bias)
// in place over a row-major [rows, n] product. Used after a plain cuBLASLt
// GEMM for erf GELU (cuBLASLt's GELU epilogue is the tanh approximation), tanh
// (no cuBLASLt epilogue) and K = 0 (act(bias)); see docs/cuda.md.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/ops.h"

namespace fusedrt::gpu {

struct BiasActivationParams {
  float* out;          // [rows, n], updated in place
  const float* bias;   // [n] or nullptr
  cpu::Activation activation;
  int64_t rows;
  int64_t n;
};

// Queues the epilogue on stream; returns the launch error, if any.
cudaError_t bias_activation(const BiasActivationParams& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
