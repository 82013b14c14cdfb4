// Few-row fp16 GEMM as a streaming matrix-vector product (gemv.cuh).
//
// The grid is persistent (as many blocks as fit the GPU at once) and walks
// the output columns in groups of kCols: a warp takes a group, its lanes
// stride along K in 16-byte vectors of the group's kCols weight rows, and
// each weight vector meets every row of `in`, which the block keeps in
// shared memory as fp32 (converted once, so the inner loop is only FMAs).
// What sets the speed at batch 1 is DRAM bandwidth, so what matters is the
// bytes in flight: a lane issues kCols x kVecsPerPass 16-byte loads before
// it uses any (6 KB a warp; at one row, 86 registers on sm_90, two blocks of
// 8 warps an SM: 96 KB, above the ~23 KB per SM that Little's law asks for
// 3 TB/s at ~1 us of DRAM latency). The weight is read once, with the
// non-coherent, L1-bypassing load (it is streamed, never reused by the same
// block). Columns and vectors per pass were chosen on an H100
// (cuda/tests/gemv_test.cu, decoder 30522 x 768 from DRAM, us at 1 / 2 / 4 /
// 8 rows): 4 x 3: 18.0 / 18.5 / 20.4 / 26.6; 8 x 2: 19.4 / 18.6 / 22.0 /
// 29.4; 8 x 3: 18.4 / 19.8 / 21.4 / 28.8; 16 x 1: 18.5 / 19.0 / 21.9 /
// 28.8; 4 x 4: 18.1 / 18.7 / 20.2 / 32.5. At 1 row that is 2.6 TB/s.
//
// Then each of the group's kCols x kRows sums is reduced over the warp, and
// lane (c * kRows + r) % 32 stores column c of row r with bias and
// activation.
// Columns past n re-read the last real weight row (memory that exists) and
// are not stored; rows past `rows` are zeros in shared memory and are not
// stored either. Each output is summed in one fixed order (lane-strided
// vectors, then the warp's butterfly), so repeated launches are identical.
#include "gemv.cuh"

#include <algorithm>

#include "activation.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kCols = 4;         // weight rows per warp pass
constexpr int kVecsPerPass = 3;  // 16-byte vectors of each weight row per lane per pass
constexpr int kHalvesPerVec = 8;
constexpr size_t kSharedBudget = 48 * 1024;  // no opt-in on any architecture

__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ void widen(const uint4& bits, float (&x)[kHalvesPerVec]) {
  const __half2* h = reinterpret_cast<const __half2*>(&bits);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    x[2 * i] = f.x;
    x[2 * i + 1] = f.y;
  }
}

template <int kRows, class Out>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemvArgs<Out> p) {
  extern __shared__ float4 x_shared[];  // [kRows][k / 4]
  const int64_t vecs = p.k / kHalvesPerVec;
  const int64_t quads = p.k / 4;
  for (int64_t i = threadIdx.x; i < kRows * vecs; i += kThreads) {
    const int64_t r = i / vecs;
    float x[kHalvesPerVec];
    widen(r < p.rows ? reinterpret_cast<const uint4*>(p.in)[i] : make_uint4(0u, 0u, 0u, 0u), x);
    x_shared[2 * i] = make_float4(x[0], x[1], x[2], x[3]);
    x_shared[2 * i + 1] = make_float4(x[4], x[5], x[6], x[7]);
  }
  __syncthreads();

  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t groups = (p.n + kCols - 1) / kCols;
  for (int64_t g = int64_t{blockIdx.x} * kWarps + warp; g < groups; g += int64_t{gridDim.x} * kWarps) {
    const int64_t n0 = g * kCols;
    const uint4* rows_of_weight[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      rows_of_weight[c] = reinterpret_cast<const uint4*>(p.weight) + (n0 + c < p.n ? n0 + c : p.n - 1) * vecs;
    }
    float acc[kCols][kRows] = {};
    for (int64_t v0 = lane; v0 < vecs; v0 += kVecsPerPass * kWarpSize) {
      uint4 w_bits[kVecsPerPass][kCols];
#pragma unroll
      for (int u = 0; u < kVecsPerPass; ++u) {
        const int64_t v = v0 + u * kWarpSize;
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          w_bits[u][c] = v < vecs ? load_streaming(rows_of_weight[c] + v) : make_uint4(0u, 0u, 0u, 0u);
        }
      }
#pragma unroll
      for (int u = 0; u < kVecsPerPass; ++u) {
        const int64_t v = v0 + u * kWarpSize;
        if (v >= vecs) break;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const float4 lo = x_shared[r * quads + 2 * v];
          const float4 hi = x_shared[r * quads + 2 * v + 1];
          const float x[kHalvesPerVec] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
          for (int c = 0; c < kCols; ++c) {
            float w[kHalvesPerVec];
            widen(w_bits[u][c], w);
#pragma unroll
            for (int e = 0; e < kHalvesPerVec; ++e) acc[c][r] = fmaf(w[e], x[e], acc[c][r]);
          }
        }
      }
    }
    // Output c * kRows + r goes to lane (c * kRows + r) % 32, in slot
    // (c * kRows + r) / 32 of its `mine`.
    constexpr int kOutputs = kCols * kRows;
    constexpr int kSlots = (kOutputs + kWarpSize - 1) / kWarpSize;
    float mine[kSlots] = {};
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float sum = warp_sum(acc[c][r]);
        if (lane == (c * kRows + r) % kWarpSize) mine[(c * kRows + r) / kWarpSize] = sum;
      }
    }
#pragma unroll
    for (int slot = 0; slot < kSlots; ++slot) {
      const int output = slot * kWarpSize + lane;
      const int64_t column = n0 + output / kRows;
      const int64_t row = output % kRows;
      if (output < kOutputs && column < p.n && row < p.rows) {
        const float biased = p.bias != nullptr ? mine[slot] + to_float(p.bias[column]) : mine[slot];
        p.out[row * p.n + column] = from_float<Out>(activate(biased, p.activation));
      }
    }
  }
}

// The kernel's row count: the smallest of 1, 2, 4, 8 that holds the call's.
int64_t kernel_rows(int64_t rows) {
  int64_t kernel = 1;
  while (kernel < rows) kernel *= 2;
  return kernel;
}

template <class Out>
size_t shared_bytes(const GemvArgs<Out>& a) {
  return static_cast<size_t>(kernel_rows(a.rows) * a.k) * sizeof(float);
}

template <int kRows, class Out>
cudaError_t launch(const GemvArgs<Out>& a, cudaStream_t stream) {
  const size_t shared = shared_bytes(a);
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (error == cudaSuccess) {
    error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_kernel<kRows, Out>, kThreads, shared);
  }
  if (error != cudaSuccess) return error;
  const int64_t groups = (a.n + kCols - 1) / kCols;
  const int64_t blocks = std::min<int64_t>((groups + kWarps - 1) / kWarps, int64_t{std::max(per_sm, 1)} * sms);
  gemv_kernel<kRows, Out><<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

template <class Out>
bool gemv_supports(const GemvArgs<Out>& a) {
  return a.rows >= 1 && a.rows <= kGemvMaxRows && a.n >= 1 && a.k >= kHalvesPerVec && a.k % kHalvesPerVec == 0 &&
         shared_bytes(a) <= kSharedBudget && a.in != nullptr && a.weight != nullptr && a.out != nullptr &&
         aligned16(a.in) && aligned16(a.weight);
}

template <class Out>
cudaError_t gemv(const GemvArgs<Out>& a, cudaStream_t stream) {
  if (!gemv_supports(a)) return cudaErrorInvalidValue;
  switch (kernel_rows(a.rows)) {
    case 1: return launch<1>(a, stream);
    case 2: return launch<2>(a, stream);
    case 4: return launch<4>(a, stream);
    default: return launch<8>(a, stream);
  }
}

template bool gemv_supports(const GemvArgs<__half>&);
template bool gemv_supports(const GemvArgs<float>&);
template cudaError_t gemv(const GemvArgs<__half>&, cudaStream_t);
template cudaError_t gemv(const GemvArgs<float>&, cudaStream_t);

}  // namespace fusedrt::gpu
