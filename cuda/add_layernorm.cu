// Rows of at most 4 * kRowThreadsMax 16-byte vectors (fp16: 4096 columns)
// with every pointer 16-byte aligned are LayerNormed in registers: a block
// of whole warps holds one row (or, from kManyRows rows on, several; a
// warp two rows of fp16 768 or narrower), loads
// in, bias, residual, gamma and beta once and all before the first use,
// takes mean and variance in two passes over the registers and stores. The
// layout and the reasons for it are at launch_rows_in_registers
// (row_math.cuh). Wider or unaligned rows take the multi-pass path: one warp
// per row (4 rows per block of 128 threads), the row read again in each of
// three passes (sum, squared deviations, normalise).
//
// With partials (a split-K GEMM's fp32 products, add_layernorm.cuh), the
// thread adds up its elements of each partial where it would load `in`,
// several partials' loads in flight at once: the GEMM's own reduction pass
// (a kernel of its own in cuBLASLt) is folded into this one.
//
// Each element is read and written by one thread, so out may alias in or
// residual. Rows are independent, so padding rows of a bucket
// (docs/cuda.md) cost time but never touch real rows.
#include "add_layernorm.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

// The thread's vectors of one row of `in` given as partial products: their
// fp32 sum in the order of the partials (zeros past `vectors`). first_partial
// is the row in partial 0, and partial j + 1 starts `stride` floats after
// partial j. Loads of several partials are issued before their adds.
template <int kVecs, int kPer>
__device__ __forceinline__ void sum_share_partials(const float* first_partial, int64_t stride, int count,
                                                   int64_t vectors, float (&x)[kVecs][kPer]) {
  constexpr int kInFlight = kVecs >= 4 ? 1 : 4 / kVecs;
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
#pragma unroll
    for (int k = 0; k < kPer; ++k) x[i][k] = 0.f;
  }
  for (int j0 = 0; j0 < count; j0 += kInFlight) {
    float part[kInFlight][kVecs][kPer];
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
      const bool present = j0 + j < count;
      load_share_floats(present ? first_partial + (j0 + j) * stride : nullptr, present ? vectors : 0, part[j]);
    }
#pragma unroll
    for (int j = 0; j < kInFlight; ++j) {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
#pragma unroll
        for (int k = 0; k < kPer; ++k) x[i][k] += part[j][i][k];
      }
    }
  }
}

// kFromPartials: p.partial_count > 0, a template parameter so that the
// registers the partials take do not cost the plain kernel occupancy.
template <class T, int kVecs, int kRows, bool kFromPartials>
__global__ void __launch_bounds__(kRowThreadsMax) add_layernorm_registers_kernel(const AddLayerNormArgs<T> p) {
  constexpr int kPer = kVector16<T>;
  const int64_t vectors = p.cols / kPer;
  const int64_t first = int64_t{blockIdx.x} * kRows;
  uint4 in_bits[kRows][kVecs], residual_bits[kRows][kVecs];
  float bias[kVecs][kPer], gamma[kVecs][kPer], beta[kVecs][kPer];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t n = first + r < p.rows ? vectors : 0;
    if constexpr (!kFromPartials) load_share_bits(p.in + (first + r) * p.cols, n, in_bits[r]);
    load_share_bits(p.residual != nullptr ? p.residual + (first + r) * p.cols : nullptr,
                    p.residual != nullptr ? n : 0, residual_bits[r]);
  }
  load_share_floats(p.bias, p.bias != nullptr ? vectors : 0, bias);
  load_share_floats(p.gamma, vectors, gamma);
  load_share_floats(p.beta, vectors, beta);

  // Same order of float additions as the CPU op: (in + bias) + residual.
  float x[kRows][kVecs][kPer];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    if constexpr (kFromPartials) {
      sum_share_partials(p.partials + (first + r) * p.cols, p.rows * p.cols, p.partial_count,
                         first + r < p.rows ? vectors : 0, x[r]);
    } else {
#pragma unroll
      for (int i = 0; i < kVecs; ++i) bits_to_floats<T>(in_bits[r][i], x[r][i]);
    }
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      float residual[kPer];
      bits_to_floats<T>(residual_bits[r][i], residual);
#pragma unroll
      for (int k = 0; k < kPer; ++k) x[r][i][k] = (x[r][i][k] + bias[i][k]) + residual[k];
    }
  }
  float mean[kRows], inv_std[kRows];
  share_statistics(x, vectors, p.cols, p.eps, mean, inv_std);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    store_share_normalised(x[r], mean[r], inv_std[r], gamma, beta, first + r < p.rows ? vectors : 0,
                           p.out + (first + r) * p.cols, p.out8 != nullptr ? p.out8 + (first + r) * p.cols : nullptr);
  }
}

constexpr int kRowsPerWarpBlock = 4;

template <class T, int kVec>
__global__ void __launch_bounds__(kRowsPerWarpBlock * kWarpSize) add_layernorm_multipass_kernel(
    const AddLayerNormArgs<T> p) {
  const int64_t row = int64_t{blockIdx.x} * kRowsPerWarpBlock + threadIdx.x / kWarpSize;
  if (row >= p.rows) return;
  const T* in = p.partial_count > 0 ? nullptr : p.in + row * p.cols;
  const float* partials = p.partial_count > 0 ? p.partials + row * p.cols : nullptr;
  const int64_t stride = p.rows * p.cols;
  const int partial_count = p.partial_count;
  const T* residual = p.residual != nullptr ? p.residual + row * p.cols : nullptr;
  const float* bias = p.bias;
  auto row_value = [=](int64_t c, float (&x)[kVec]) {
    if (partials != nullptr) {
      for (int i = 0; i < kVec; ++i) x[i] = 0.f;
      for (int j = 0; j < partial_count; ++j) {
        float part[kVec];
        load_floats<kVec>(partials + j * stride + c, part);
#pragma unroll
        for (int i = 0; i < kVec; ++i) x[i] += part[i];
      }
    } else {
      load_floats<kVec>(in + c, x);
    }
    if (bias != nullptr) {
      float b[kVec];
      load_floats<kVec>(bias + c, b);
#pragma unroll
      for (int i = 0; i < kVec; ++i) x[i] += b[i];
    }
    if (residual != nullptr) {
      float r[kVec];
      load_floats<kVec>(residual + c, r);
#pragma unroll
      for (int i = 0; i < kVec; ++i) x[i] += r[i];
    }
  };
  layernorm_row_warp<kVec>(row_value, p.gamma, p.beta, p.eps, p.cols, p.out + row * p.cols,
                           p.out8 != nullptr ? p.out8 + row * p.cols : nullptr);
}

}  // namespace

template <class T>
cudaError_t add_layernorm(const AddLayerNormArgs<T>& p, cudaStream_t stream) {
  if (p.rows <= 0 || p.cols <= 0) return cudaSuccess;
  constexpr int kVec = kVector16<T>;
  const bool in_aligned = p.partial_count > 0 ? aligned16(p.partials) : aligned16(p.in);
  const bool vectorised = p.cols % kVec == 0 && in_aligned && aligned16(p.out) && aligned16(p.out8) && aligned16(p.gamma) &&
                          aligned16(p.beta) && (p.residual == nullptr || aligned16(p.residual)) &&
                          (p.bias == nullptr || aligned16(p.bias));
  if (vectorised && launch_rows_in_registers(p.cols / kVec, p.rows, [&](auto vecs, auto rows, dim3 grid, dim3 block) {
        constexpr int kVecs = decltype(vecs)::value;
        constexpr int kRows = decltype(rows)::value;
        if (p.partial_count > 0) {
          add_layernorm_registers_kernel<T, kVecs, kRows, true><<<grid, block, 0, stream>>>(p);
        } else {
          add_layernorm_registers_kernel<T, kVecs, kRows, false><<<grid, block, 0, stream>>>(p);
        }
      })) {
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>((p.rows + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock));
  const dim3 block(kRowsPerWarpBlock * kWarpSize);
  if (vectorised) {
    add_layernorm_multipass_kernel<T, kVec><<<grid, block, 0, stream>>>(p);
  } else {
    add_layernorm_multipass_kernel<T, 1><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template cudaError_t add_layernorm<float>(const AddLayerNormArgs<float>&, cudaStream_t);
template cudaError_t add_layernorm<__half>(const AddLayerNormArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
