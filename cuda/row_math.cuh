// Device helpers shared by the row kernels (LayerNorms, epilogues, copies):
// warp reductions, vector loads that convert to fp32 (float or __half
// storage), the one-warp-per-row multi-pass LayerNorm, and the
// register-resident LayerNorm of rows split over a block (its layout rule,
// launch_rows_in_registers, is at the end). Internal to cuda/*.cu; declares
// no launcher.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

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

// kVec values rounded to E4M3 (to nearest even, saturating at +-448 as
// cvt.satfinite does; NaN stays NaN). kVec 2, 4 or 8: one store of kVec
// bytes, dst aligned to it; otherwise byte stores.
template <int kVec>
__device__ __forceinline__ void store_e4m3(__nv_fp8_e4m3* dst, const float (&x)[kVec]) {
  if constexpr (kVec == 2 || kVec == 4 || kVec == 8) {
    uint16_t pairs[kVec / 2];
#pragma unroll
    for (int i = 0; i < kVec / 2; ++i) {
      pairs[i] = __nv_cvt_float2_to_fp8x2(make_float2(x[2 * i], x[2 * i + 1]), __NV_SATFINITE, __NV_E4M3);
    }
    if constexpr (kVec == 8) {
      *reinterpret_cast<uint2*>(dst) = make_uint2(pairs[0] | uint32_t{pairs[1]} << 16, pairs[2] | uint32_t{pairs[3]} << 16);
    } else if constexpr (kVec == 4) {
      *reinterpret_cast<uint32_t*>(dst) = pairs[0] | uint32_t{pairs[1]} << 16;
    } else {
      *reinterpret_cast<uint16_t*>(dst) = pairs[0];
    }
  } else {
#pragma unroll
    for (int i = 0; i < kVec; ++i) dst[i] = __nv_fp8_e4m3(x[i]);
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15u) == 0; }

// LayerNorm of one row by one warp: out = (x - mean) / sqrt(var + eps) * gamma
// + beta, biased variance, fp32 statistics over two passes (mean, then the
// squared deviations), so no cancellation of E[x^2] - mean^2.
// row_value(c, x) yields the pre-norm values (fp32) of columns c .. c + kVec
// - 1. It is called three times per column, always by the same lane, and
// that lane alone writes out's columns, so out may alias what row_value
// reads. cols must be a multiple of kVec. out8, unless nullptr, gets the
// same values rounded to E4M3.
template <int kVec, class T, class RowValue>
__device__ __forceinline__ void layernorm_row_warp(RowValue row_value, const float* gamma, const float* beta, float eps,
                                                   int64_t cols, T* out, __nv_fp8_e4m3* out8) {
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
    if (out8 != nullptr) store_e4m3<kVec>(out8 + c, x);
  }
}

// ---------------------------------------------------------------------------
// Register-resident LayerNorm. A row is split into 16-byte vectors of T
// (kVector16<T> elements); the blockDim.x threads of a block (whole warps, at
// most kRowThreadsMax) hold kRows rows, thread t holding vectors t,
// t + blockDim.x, ..., t + (kVecs - 1) * blockDim.x of each (coalesced). Each
// input is read from global memory once, the statistics come from the
// registers, and every element is read and written by the same thread, so
// outputs may alias inputs.

constexpr int kRowThreadsMax = 128;

// Index of the thread's i-th vector within its row.
__device__ __forceinline__ int64_t share_vector(int i) { return int64_t{threadIdx.x} + int64_t{i} * blockDim.x; }

// The thread's vectors of one row of T as raw bits (zeros past `vectors`,
// so a row outside the tensor passes vectors = 0). Raw, so that every load
// of a row is issued before any conversion waits on one.
template <int kVecs, class T>
__device__ __forceinline__ void load_share_bits(const T* row, int64_t vectors, uint4 (&bits)[kVecs]) {
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t v = share_vector(i);
    bits[i] = v < vectors ? reinterpret_cast<const uint4*>(row)[v] : make_uint4(0u, 0u, 0u, 0u);
  }
}

// One 16-byte vector of T widened to kVector16<T> floats.
template <class T>
__device__ __forceinline__ void bits_to_floats(const uint4& bits, float (&x)[kVector16<T>]) {
  load_floats<kVector16<T>>(reinterpret_cast<const T*>(&bits), x);
}

// The fp32 values (LayerNorm parameters, bias) matching the thread's
// vectors: kPer floats per vector (kPer = kVector16<T> of the activations);
// zeros past `vectors`.
template <int kVecs, int kPer>
__device__ __forceinline__ void load_share_floats(const float* row, int64_t vectors, float (&x)[kVecs][kPer]) {
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t v = share_vector(i);
    if (v < vectors) {
      load_floats<kPer>(row + v * kPer, x[i]);
    } else {
#pragma unroll
      for (int k = 0; k < kPer; ++k) x[i][k] = 0.f;
    }
  }
}

// Sums each v[r] over the block; every thread gets the same bits (the warp
// butterfly gives all lanes the same sum, and the warps' sums are added in
// one order). partial must be used for no other sum in the kernel: so one
// __syncthreads suffices.
template <int kRows>
__device__ __forceinline__ void block_sum(float (&v)[kRows], float (&partial)[kRows][kWarpSize]) {
#pragma unroll
  for (int r = 0; r < kRows; ++r) v[r] = warp_sum(v[r]);
  const int warps = static_cast<int>(blockDim.x) / kWarpSize;
  if (warps == 1) return;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) partial[r][warp] = v[r];
  }
  __syncthreads();
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    float s = partial[r][0];
    for (int w = 1; w < warps; ++w) s += partial[r][w];
    v[r] = s;
  }
}

// mean and 1 / sqrt(var + eps) (biased variance) of kRows rows of `cols`
// values held as above, fp32 in two passes over the registers (mean, then
// squared deviations: no cancellation of E[x^2] - mean^2). Vectors past
// `vectors` are ignored. Every thread of the block must call it, once per
// kernel.
template <int kRows, int kVecs, int kPer>
__device__ __forceinline__ void share_statistics(const float (&x)[kRows][kVecs][kPer], int64_t vectors, int64_t cols,
                                                 float eps, float (&mean)[kRows], float (&inv_std)[kRows]) {
  __shared__ float partial[2][kRows][kWarpSize];
  float acc[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    acc[r] = 0.f;
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      if (share_vector(i) < vectors) {
#pragma unroll
        for (int k = 0; k < kPer; ++k) acc[r] += x[r][i][k];
      }
    }
  }
  block_sum<kRows>(acc, partial[0]);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    mean[r] = acc[r] / static_cast<float>(cols);
    acc[r] = 0.f;
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      if (share_vector(i) < vectors) {
#pragma unroll
        for (int k = 0; k < kPer; ++k) acc[r] += (x[r][i][k] - mean[r]) * (x[r][i][k] - mean[r]);
      }
    }
  }
  block_sum<kRows>(acc, partial[1]);
#pragma unroll
  for (int r = 0; r < kRows; ++r) inv_std[r] = 1.f / sqrtf(acc[r] / static_cast<float>(cols) + eps);
}

// Stores (x - mean) * inv_std * gamma + beta for the thread's vectors of one
// row (none when vectors = 0).
template <int kVecs, int kPer, class T>
__device__ __forceinline__ void store_share_normalised(const float (&x)[kVecs][kPer], float mean, float inv_std,
                                                       const float (&gamma)[kVecs][kPer],
                                                       const float (&beta)[kVecs][kPer], int64_t vectors, T* row,
                                                       __nv_fp8_e4m3* row8) {
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const int64_t v = share_vector(i);
    if (v < vectors) {
      float y[kPer];
#pragma unroll
      for (int k = 0; k < kPer; ++k) y[k] = (x[i][k] - mean) * inv_std * gamma[i][k] + beta[i][k];
      store_floats<kPer>(row + v * kPer, y);
      if (row8 != nullptr) store_e4m3<kPer>(row8 + v * kPer, y);
    }
  }
}

// Rows at or below 4 * kRowThreadsMax vectors (fp16: 4096 columns, fp32:
// 2048) are LayerNormed in registers; launch_rows_in_registers picks the
// layout and calls launch(std::integral_constant<int, kVecs>,
// std::integral_constant<int, kRows>, grid, block) and returns false for a
// longer row, which the caller then runs on its multi-pass path.
//
// Threads per row: the fewest vectors per thread (kVecs 1, 2, 4) that keep a
// row within 128 threads, rounded up to whole warps (fp16 768: 96 threads,
// one vector each, the layout of TensorRT's skipLayerNorm; fp16 1024: 128;
// fp32 768: 96 threads x 2). More threads per row than one warp shorten each
// thread's chain of loads and spread a row over an SM's four schedulers; the
// cross-warp sum costs a shared-memory round, ~0.1 us over the two sums.
//
// Rows per block: one below kManyRows rows, so that a batch of 128 tokens is
// 128 blocks on 128 SMs (the warp-per-row kernel put it on 32 SMs, each
// then pulling 4 rows, and the fp32 parameters for each, through its own
// L2 port), and up to kManyRows the whole grid is resident at once (fp16
// 768: 48 registers, 14 blocks of 96 threads per SM).
//
// From kManyRows on, a row of at most 3 x 32 vectors (fp16: 768 columns)
// goes to one warp, two rows a warp: each lane holds up to 3 vectors of
// both, the statistics are warp sums (no shared memory, no barrier), and
// every warp issues its own rows' loads (embed_layernorm's table lookups
// included) without waiting on the block's other warps. Measured on an H100
// (cuda/tests/layernorm_test.cu, fp16 768, per launch in graphs of 20):
// add_layernorm 6.42 -> 5.95 us at 4096 rows and 77.3 -> 77.2 at 49152;
// embed_layernorm 9.8 -> 6.2 and 96.8 -> 61.9; one row a warp was within 2%
// for add_layernorm and 15% slower for embed at 4096 rows, four rows a warp
// 7-18% slower. Wider rows keep blocks of kVecs-vector threads, 4 / kVecs
// rows each, parameters loaded once per block for all its rows.
constexpr int64_t kManyRows = 1024;

template <class Launch>
bool launch_rows_in_registers(int64_t vectors, int64_t rows, Launch&& launch) {
  const auto block_for = [&](int vecs) {
    const int64_t threads = (vectors + vecs - 1) / vecs;
    return dim3(static_cast<unsigned>((threads + kWarpSize - 1) / kWarpSize * kWarpSize));
  };
  const auto grid_for = [&](int rows_per_block) {
    return dim3(static_cast<unsigned>((rows + rows_per_block - 1) / rows_per_block));
  };
  const bool many = rows >= kManyRows;
  using One = std::integral_constant<int, 1>;
  using Two = std::integral_constant<int, 2>;
  using Three = std::integral_constant<int, 3>;
  using Four = std::integral_constant<int, 4>;
  if (many && vectors <= 3 * kWarpSize) {
    const dim3 warp(kWarpSize);
    if (vectors <= kWarpSize) {
      launch(One{}, Two{}, grid_for(2), warp);
    } else if (vectors <= 2 * kWarpSize) {
      launch(Two{}, Two{}, grid_for(2), warp);
    } else {
      launch(Three{}, Two{}, grid_for(2), warp);
    }
  } else if (vectors <= kRowThreadsMax) {
    if (many) {
      launch(One{}, Four{}, grid_for(4), block_for(1));
    } else {
      launch(One{}, One{}, grid_for(1), block_for(1));
    }
  } else if (vectors <= 2 * kRowThreadsMax) {
    if (many) {
      launch(Two{}, Two{}, grid_for(2), block_for(2));
    } else {
      launch(Two{}, One{}, grid_for(1), block_for(2));
    }
  } else if (vectors <= 4 * kRowThreadsMax) {
    launch(Four{}, One{}, grid_for(1), block_for(4));
  } else {
    return false;
  }
  return true;
}

}  // namespace fusedrt::gpu
