// fp16 GEMM for few rows: out[rows, n] = act(in[rows, k] . weight[n, k]^T +
// bias), row-major, fp32 accumulation, bias and activation fused. It is one
// of the GEMM tactics the backend times against cuBLASLt's (docs/cuda.md,
// "GEMM tactics"; docs/decisions/0008-small-row-gemm-tactic.md): small tiles,
// K optionally split over blocks whose last one reduces, so that few rows
// still spread a weight over the whole GPU. Measured on an H100, it wins the
// MLM decoder (1 x 30522 x 768: 19.7 us against cuBLASLt's 24.1) and loses
// BERT-base's 128-row GEMMs to cuBLASLt's Hopper kernels by 1.6-2.3x, where
// the tuner keeps cuBLASLt.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "half_gemm_args.cuh"

namespace fusedrt::gpu {

// A tactic: rows per tile (16, 32 or 64; columns per tile are always 64) and
// how many blocks share the K range of one output tile.
struct SmallGemmConfig {
  int tile_rows = 64;
  int splits = 1;
};

// Out: __half or float (half_gemm_args.cuh).
template <class Out>
struct SmallGemmArgs : HalfGemmArgs<Out> {
  // With splits > 1: small_gemm_workspace_bytes() of fp32 partial sums, and
  // small_gemm_tiles() counters that are zero before the launch (each launch
  // leaves them zero again, so one zeroed array serves every launch queued
  // on one stream).
  float* partials = nullptr;
  int32_t* tile_counters = nullptr;
};

// K is walked in stages of this width; splits take whole stages.
constexpr int kSmallGemmStageK = 64;

// The kernel copies in, weight and partials 16 bytes at a time, and stores
// out (and reads bias) in pairs of Out.
constexpr uintptr_t kSmallGemmLoadAlignment = 16;
constexpr uintptr_t small_gemm_store_alignment(size_t out_bytes) { return 2 * out_bytes; }

// Whether the kernel takes a shape: k a multiple of 8, n even, a
// configuration the kernel has (splits at most the stages of k).
bool small_gemm_supports_shape(int64_t rows, int64_t n, int64_t k, const SmallGemmConfig& config);
// The same, and the pointers: present and aligned as above.
template <class Out>
bool small_gemm_supports(const SmallGemmArgs<Out>& args, const SmallGemmConfig& config);
// The most splits the kernel takes for this k (one stage each at least).
int small_gemm_max_splits(int64_t k);
int64_t small_gemm_tiles(int64_t rows, int64_t n, const SmallGemmConfig& config);
size_t small_gemm_workspace_bytes(int64_t rows, int64_t n, const SmallGemmConfig& config);

// Queues the GEMM on stream; cudaErrorInvalidValue for operands it does not
// support, else the launch error, if any.
template <class Out>
cudaError_t small_gemm(const SmallGemmArgs<Out>& args, const SmallGemmConfig& config, cudaStream_t stream);

}  // namespace fusedrt::gpu
