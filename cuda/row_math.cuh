// Device helpers shared by the row kernels (LayerNorms, epilogues): warp
// reductions, vector loads and the one-warp-per-row LayerNorm. Internal to
// cuda/*.cu; declares no launcher.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace fusedrt::gpu {

constexpr int kWarpSize = 32;
constexpr unsigned kFullMask = 0xffffffffu;

__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// kVec consecutive floats; kVec = 4 needs a 16-byte aligned pointer.
template <int kVec>
__device__ __forceinline__ void load_floats(const float* src, float (&x)[kVec]) {
  if constexpr (kVec == 4) {
    const float4 v = *reinterpret_cast<const float4*>(src);
    x[0] = v.x; x[1] = v.y; x[2] = v.z; x[3] = v.w;
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) x[i] = src[i];
  }
}

template <int kVec>
__device__ __forceinline__ void store_floats(float* dst, const float (&x)[kVec]) {
  if constexpr (kVec == 4) {
    *reinterpret_cast<float4*>(dst) = make_float4(x[0], x[1], x[2], x[3]);
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) dst[i] = x[i];
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// LayerNorm of one row by one warp: out = (x - mean) / sqrt(var + eps) * gamma
// + beta, biased variance, fp32 statistics over two passes (mean, then the
// squared deviations), so no cancellation of E[x^2] - mean^2.
// row_value(c, x) yields the pre-norm values of columns c .. c + kVec - 1. It
// is called three times per column, always by the same lane, and that lane
// alone writes out's columns, so out may alias what row_value reads.
// cols must be a multiple of kVec.
template <int kVec, class RowValue>
__device__ __forceinline__ void layernorm_row_warp(RowValue row_value, const float* gamma, const float* beta, float eps,
                                                   int64_t cols, float* out) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t step = int64_t{kWarpSize} * kVec;
  float sum = 0.f;
  for (int64_t c = int64_t{lane} * kVec; c < cols; c += step) {
    float x[kVec];
    row_value(c, x);
#pragma unroll
    for (int i = 0; i < kVec; ++i) sum += x[i];
  }
  const float mean = warp_sum(sum) / static_cast<float>(cols);
  float squares = 0.f;
  for (int64_t c = int64_t{lane} * kVec; c < cols; c += step) {
    float x[kVec];
    row_value(c, x);
#pragma unroll
    for (int i = 0; i < kVec; ++i) squares += (x[i] - mean) * (x[i] - mean);
  }
  const float inv_std = 1.f / sqrtf(warp_sum(squares) / static_cast<float>(cols) + eps);
  for (int64_t c = int64_t{lane} * kVec; c < cols; c += step) {
    float x[kVec], g[kVec], b[kVec];
    row_value(c, x);
    load_floats<kVec>(gamma + c, g);
    load_floats<kVec>(beta + c, b);
#pragma unroll
    for (int i = 0; i < kVec; ++i) x[i] = (x[i] - mean) * inv_std * g[i] + b[i];
    store_floats<kVec>(out + c, x);
  }
}

}  // namespace fusedrt::gpu
