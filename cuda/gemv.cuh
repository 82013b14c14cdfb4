// fp16 GEMM for a handful of rows, as a matrix-vector product: out[rows, n]
// = act(in[rows, k] . weight[n, k]^T + bias), row-major, fp32 accumulation,
// bias and activation fused. At up to kGemvMaxRows rows a GEMM only streams
// its weight once, so the kernel is built for bandwidth, not tensor cores:
// each warp walks whole weight rows with 16-byte loads, many in flight. It is
// one of the GEMM tactics the backend times (docs/cuda.md, "GEMM tactics"),
// meant for the MLM decoder at batch 1-8 (30522 x 768: 47 MB of fp16 weight
// per run).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "half_gemm_args.cuh"

namespace fusedrt::gpu {

constexpr int64_t kGemvMaxRows = 8;

// Out: __half or float (half_gemm_args.cuh).
template <class Out>
using GemvArgs = HalfGemmArgs<Out>;

// Whether the kernel takes a call: 1 to kGemvMaxRows rows, k a multiple of 8
// whose rows of `in` fit the block's shared memory, in and weight 16-byte
// aligned, every pointer present but bias.
template <class Out>
bool gemv_supports(const GemvArgs<Out>& args);

// Queues the product on stream; cudaErrorInvalidValue for a call that
// gemv_supports refuses, else the launch error, if any.
template <class Out>
cudaError_t gemv(const GemvArgs<Out>& args, cudaStream_t stream);

}  // namespace fusedrt::gpu
