// Device helpers shared by the row kernels (LayerNorms, epilogues, copies):
// warp reductions, vector loads that convert to fp32 (float or __half
// storage) and the one-warp-per-row LayerNorm. Internal to cuda/*.cu;
// declares no launcher.
#pragma once

#include <cuda_fp16.h>
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

// Elements of T in one 16-byte vector: the widest load a thread issues.
template <class T>
constexpr int kVector16 = static_cast<int>(16 / sizeof(T));

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// kVec consecutive elements as floats. When kVec fills whole 16-byte vectors
// the loads are 16 bytes wide and src must be 16-byte aligned; otherwise
// they are scalar.
template <int kVec, class T>
__device__ __forceinline__ void load_floats(const T* src, float (&x)[kVec]) {
  constexpr int kPer16 = kVector16<T>;
  if constexpr (kVec % kPer16 == 0) {
#pragma unroll
    for (int v = 0; v < kVec / kPer16; ++v) {
      const uint4 bits = reinterpret_cast<const uint4*>(src)[v];
      if constexpr (sizeof(T) == 4) {
        const float* f = reinterpret_cast<const float*>(&bits);
#pragma unroll
        for (int i = 0; i < 4; ++i) x[v * 4 + i] = f[i];
      } else {
        const __half2* h = reinterpret_cast<const __half2*>(&bits);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 f = __half22float2(h[i]);
          x[v * 8 + 2 * i] = f.x;
          x[v * 8 + 2 * i + 1] = f.y;
        }
      }
    }
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) x[i] = to_float(src[i]);
  }
}

// The store matching load_floats (rounding to nearest for __half).
template <int kVec, class T>
__device__ __forceinline__ void store_floats(T* dst, const float (&x)[kVec]) {
  constexpr int kPer16 = kVector16<T>;
  if constexpr (kVec % kPer16 == 0) {
#pragma unroll
    for (int v = 0; v < kVec / kPer16; ++v) {
      uint4 bits;
      if constexpr (sizeof(T) == 4) {
        float* f = reinterpret_cast<float*>(&bits);
#pragma unroll
        for (int i = 0; i < 4; ++i) f[i] = x[v * 4 + i];
      } else {
        __half2* h = reinterpret_cast<__half2*>(&bits);
#pragma unroll
        for (int i = 0; i < 4; ++i) h[i] = __floats2half2_rn(x[v * 8 + 2 * i], x[v * 8 + 2 * i + 1]);
      }
      reinterpret_cast<uint4*>(dst)[v] = bits;
    }
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) dst[i] = from_float<T>(x[i]);
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// LayerNorm of one row by one warp: out = (x - mean) / sqrt(var + eps) * gamma
// + beta, biased variance, fp32 statistics over two passes (mean, then the
// squared deviations), so no cancellation of E[x^2] - mean^2.
// row_value(c, x) yields the pre-norm values (fp32) of columns c .. c + kVec
// - 1. It is called three times per column, always by the same lane, and
// that lane alone writes out's columns, so out may alias what row_value
// reads. cols must be a multiple of kVec.
template <int kVec, class T, class RowValue>
__device__ __forceinline__ void layernorm_row_warp(RowValue row_value, const float* gamma, const float* beta, float eps,
                                                   int64_t cols, T* out) {
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
