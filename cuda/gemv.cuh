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

// The softmax top-k of every row of out, computed by the product's own
// launch: the semantics of topk.cuh's softmax_topk over out as stored, so
// that the MLM decoder at batch 1 needs no second kernel (gemv.cu says how).
// Its device memory follows softmax_topk's rules:
//   counter  one uint32, zero before the call; every call leaves it zero.
//            Calls queued on one stream may share it, concurrent ones not.
//   scratch  gemv_topk_scratch_bytes(rows, k) bytes, 8-byte aligned, no
//            initialisation; dead once the call has finished.
constexpr int kGemvTopKMax = 8;
// Up to 4 rows: at 8 the lists' registers would halve the blocks an SM holds.
constexpr int64_t kGemvTopKMaxRows = 4;

struct GemvTopK {
  int k = 0;                    // 1 .. kGemvTopKMax (may exceed n: the surplus slots are id -1, score 0)
  int32_t* top_ids = nullptr;   // [rows, k]
  float* top_scores = nullptr;  // [rows, k]
  uint32_t* counter = nullptr;
  void* scratch = nullptr;
};

// Bytes of GemvTopK::scratch (0 for sizes gemv_topk_supports never takes);
// it only grows with rows and k.
size_t gemv_topk_scratch_bytes(int64_t rows, int k);

// gemv_supports, at most kGemvTopKMaxRows rows, and k, counter and scratch as above.
template <class Out>
bool gemv_topk_supports(const GemvArgs<Out>& args, const GemvTopK& topk);

// Queues the product and the top-k in one launch; cudaErrorInvalidValue for
// a call that gemv_topk_supports refuses, else the launch error, if any.
template <class Out>
cudaError_t gemv_topk(const GemvArgs<Out>& args, const GemvTopK& topk, cudaStream_t stream);

}  // namespace fusedrt::gpu
