// The GEMM epilogue that cuBLASLt cannot do exactly: out = act(out + bias)
// in place over a row-major [rows, n] product, for T = float or __half
// (computed in fp32). Used after a cuBLASLt GEMM for erf GELU in fp32 and tf32
// plans (cuBLASLt's GELU epilogue is the tanh approximation, which only fp16
// plans accept), tanh (no cuBLASLt epilogue), a GEMM whose fused epilogue has
// no algorithm, and K = 0 (act(bias)); see docs/cuda.md.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/ops.h"

namespace fusedrt::gpu {

template <class T>
struct BiasActivationArgs {
  T* out;         // [rows, n], updated in place
  const T* bias;  // [n] or nullptr
  cpu::Activation activation;
  int64_t rows;
  int64_t n;
};

// Queues the epilogue on stream; returns the launch error, if any.
template <class T>
cudaError_t bias_activation(const BiasActivationArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
