// Flash-style attention in fp32: one block per (query tile, head) of each
// sequence, K/V streamed through shared memory in tiles of 32 keys, online
// softmax (running max and sum), so memory does not grow with length^2 and
// any sequence length works.
//
// Split for tuning: AttentionTraits fixes the tile shape, the kernel is
// generic over the traits, and attention() (the launcher) maps head_dim to an
// instantiation. Nothing here has been timed yet; the layout is the simple
// correct one: a warp owns kQueriesPerWarp query rows, lane j scores key j of
// the tile, and each lane accumulates head dims lane, lane + 32, ...
//
// Work mapping without reading cu_seqlens on the host: sequence b's query
// tiles take the grid slots first_slot(b) + j, first_slot(b) = b +
// floor(cu_seqlens[b] / kQueryTile). Since 1 + floor(e/T) - floor(s/T) >=
// ceil((e - s)/T), the sequences' slot ranges never overlap, and all of them
// fit in sequences + floor(tokens / kQueryTile) + 1 slots; a block finds its
// sequence by binary search and exits when its slot is past the sequence's
// last tile (at most one idle block per sequence).
#include <cmath>

#include "attention.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

// Query rows per block; fixed for every instantiation because the grid slots
// (see the top of this file) are counted in query tiles.
constexpr int kQueryTile = 16;

// kHeadDim: the head dimension when fixed at compile time (32, 64, 128), 0
// for any head_dim up to 32 * kDimsPerLane.
template <int kHeadDim, int kDimsPerLane>
struct AttentionTraits {
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * kWarpSize;
  static constexpr int kQueriesPerWarp = 4;
  static_assert(kWarps * kQueriesPerWarp == kQueryTile, "a block covers one query tile");
  static constexpr int kKeyTile = kWarpSize;  // one key per lane
  static_assert(kHeadDim == 0 || kHeadDim <= kDimsPerLane * kWarpSize, "head dims must fit the lanes");

  // Q tile, then K and V tiles with rows padded by one float so that lanes
  // reading one column of 32 K rows hit 32 different banks.
  static size_t shared_bytes(int64_t head_dim) {
    return sizeof(float) * static_cast<size_t>(kQueryTile * head_dim + 2 * kKeyTile * (head_dim + 1));
  }
};

__device__ __forceinline__ int64_t first_slot(const int32_t* cu_seqlens, int64_t b) {
  return b + cu_seqlens[b] / kQueryTile;
}

template <class Traits, int kHeadDim, int kDimsPerLane>
__global__ void __launch_bounds__(Traits::kThreads) attention_kernel(const cpu::AttentionParams p) {
  constexpr int kQueries = Traits::kQueriesPerWarp;
  const int64_t head_dim = kHeadDim > 0 ? kHeadDim : p.head_dim;
  const int64_t slot = blockIdx.x;

  int64_t lo = 0;
  int64_t hi = p.sequences;
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (first_slot(p.cu_seqlens, mid) <= slot) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const int64_t start = p.cu_seqlens[lo];
  const int64_t length = p.cu_seqlens[lo + 1] - start;
  const int64_t q0 = (slot - first_slot(p.cu_seqlens, lo)) * kQueryTile;
  if (q0 >= length) return;  // whole block: no barrier has been reached yet
  const int64_t query_count = min(int64_t{kQueryTile}, length - q0);

  const int64_t width = p.heads * head_dim;  // of Q, K, V and out
  const int64_t qkv_stride = 3 * width;
  const float* q_src = p.qkv + start * qkv_stride + blockIdx.y * head_dim;
  const float* k_src = q_src + width;
  const float* v_src = q_src + 2 * width;
  const int64_t padded = head_dim + 1;

  extern __shared__ float shared[];
  float* q_tile = shared;                              // [kQueryTile][head_dim], pre-scaled
  float* k_tile = q_tile + kQueryTile * head_dim;      // [kKeyTile][head_dim + 1]
  float* v_tile = k_tile + Traits::kKeyTile * padded;  // [kKeyTile][head_dim + 1]

  for (int64_t e = threadIdx.x; e < kQueryTile * head_dim; e += Traits::kThreads) {
    const int64_t r = e / head_dim;
    const int64_t c = e % head_dim;
    q_tile[e] = r < query_count ? q_src[(q0 + r) * qkv_stride + c] * p.scale : 0.f;
  }

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  float row_max[kQueries];
  float row_sum[kQueries];
  float acc[kQueries][kDimsPerLane];
#pragma unroll
  for (int qi = 0; qi < kQueries; ++qi) {
    row_max[qi] = -INFINITY;
    row_sum[qi] = 0.f;
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) acc[qi][i] = 0.f;
  }

  for (int64_t k0 = 0; k0 < length; k0 += Traits::kKeyTile) {
    const int64_t key_count = min(int64_t{Traits::kKeyTile}, length - k0);
    __syncthreads();  // the previous K/V tile is no longer read (first time: q_tile is written)
    for (int64_t e = threadIdx.x; e < key_count * head_dim; e += Traits::kThreads) {
      const int64_t r = e / head_dim;
      const int64_t c = e % head_dim;
      k_tile[r * padded + c] = k_src[(k0 + r) * qkv_stride + c];
      v_tile[r * padded + c] = v_src[(k0 + r) * qkv_stride + c];
    }
    __syncthreads();

#pragma unroll
    for (int qi = 0; qi < kQueries; ++qi) {
      const int row = warp * kQueries + qi;
      if (row >= query_count) continue;  // uniform across the warp
      const float* q = q_tile + row * head_dim;
      float score = -INFINITY;
      if (lane < key_count) {
        const float* k = k_tile + lane * padded;
        float dot = 0.f;
        for (int64_t d = 0; d < head_dim; ++d) dot += q[d] * k[d];
        score = dot;
      }
      const float new_max = fmaxf(row_max[qi], warp_max(score));
      const float weight = lane < key_count ? expf(score - new_max) : 0.f;
      const float rescale = expf(row_max[qi] - new_max);  // 0 on the first tile
      row_sum[qi] = row_sum[qi] * rescale + warp_sum(weight);
      row_max[qi] = new_max;
#pragma unroll
      for (int i = 0; i < kDimsPerLane; ++i) acc[qi][i] *= rescale;
      for (int64_t j = 0; j < key_count; ++j) {
        const float w = __shfl_sync(kFullMask, weight, static_cast<int>(j));
        const float* v = v_tile + j * padded;
#pragma unroll
        for (int i = 0; i < kDimsPerLane; ++i) {
          const int64_t d = lane + i * kWarpSize;
          if (kHeadDim > 0 ? (kHeadDim % kWarpSize == 0 || d < kHeadDim) : d < head_dim) acc[qi][i] += w * v[d];
        }
      }
    }
  }

  float* out = p.out + start * width + blockIdx.y * head_dim;
#pragma unroll
  for (int qi = 0; qi < kQueries; ++qi) {
    const int row = warp * kQueries + qi;
    if (row >= query_count) continue;
    const float inv_sum = 1.f / row_sum[qi];
#pragma unroll
    for (int i = 0; i < kDimsPerLane; ++i) {
      const int64_t d = lane + i * kWarpSize;
      if (d < head_dim) out[(q0 + row) * width + d] = acc[qi][i] * inv_sum;
    }
  }
}

template <int kHeadDim, int kDimsPerLane>
cudaError_t launch(const cpu::AttentionParams& p, unsigned slots, cudaStream_t stream) {
  using Traits = AttentionTraits<kHeadDim, kDimsPerLane>;
  auto kernel = attention_kernel<Traits, kHeadDim, kDimsPerLane>;
  const size_t shared = Traits::shared_bytes(p.head_dim);
  // Past the 48 KB default a block needs the dynamic limit raised (per
  // kernel; cheap enough to repeat per launch).
  if (shared > 48 * 1024) {
    cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(shared));
    if (error != cudaSuccess) return error;
  }
  kernel<<<dim3(slots, static_cast<unsigned>(p.heads)), Traits::kThreads, shared, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace

cudaError_t attention(const cpu::AttentionParams& p, int64_t tokens, cudaStream_t stream) {
  if (p.sequences <= 0 || tokens <= 0 || p.heads <= 0) return cudaSuccess;
  if (p.head_dim <= 0 || p.head_dim > kAttentionMaxHeadDim || p.heads > 65535) return cudaErrorInvalidValue;
  const int64_t slots = p.sequences + tokens / kQueryTile + 1;
  if (slots > 0x7fffffff) return cudaErrorInvalidValue;
  const auto grid_x = static_cast<unsigned>(slots);
  switch (p.head_dim) {
    case 32: return launch<32, 1>(p, grid_x, stream);
    case 64: return launch<64, 2>(p, grid_x, stream);
    case 128: return launch<128, 4>(p, grid_x, stream);
    default: break;
  }
  if (p.head_dim <= 64) return launch<0, 2>(p, grid_x, stream);
  if (p.head_dim <= 128) return launch<0, 4>(p, grid_x, stream);
  return launch<0, 8>(p, grid_x, stream);
}

}  // namespace fusedrt::gpu
