// FP16 flash attention on Hopper's warpgroup MMA (wgmma), head_dim 64.
//
// The algorithm and the grid are those of attention.cu's mma.sync kernel
// (FlashAttention-2 forward, online softmax in fp32 base 2, one block per
// 64 query rows of one (sequence, head), K/V double-buffered by cp.async);
// only the matrix products change. There each of the 4 warps reads every K
// and V stage from shared memory through ldmatrix for its own 16 rows: 4
// reads of each stage per block, which bounds long sequences. Here the
// block is one warpgroup and each product is one wgmma over all 64 rows:
//   S = Q K^T   m64nNk16, Q and K read by the tensor cores from shared
//               memory (K-major descriptors), 4 steps over head_dim 64
//   O += P V    m64n64k16, P from registers (the S accumulators rounded to
//               fp16, as in the mma.sync kernel: the layouts coincide), V
//               from shared memory read MN-major (transposed), one step per
//               16 keys
// so each stage is read from shared memory once. Tiles are stored with the
// 128-byte swizzle wgmma expects (wgmma.cuh); cp.async writes each 16-byte
// chunk at its swizzled place, then a proxy fence hands the tile to wgmma.
//
// Stages of 64 keys at 4 blocks per SM, or of 32 keys at 6 per SM where
// short sequences would otherwise need a second wave of blocks (the rule of
// launch_fp16_by_length in attention.cu).
#include <cfloat>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "attention_hopper.cuh"
#include "row_math.cuh"
#include "wgmma.cuh"

// Built for anything but sm_90a the kernel would have no body and write
// nothing; refuse such a build instead.
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "cuda/attention_hopper.cu is built for sm_90a only: -gencode arch=compute_90a,code=sm_90a"
#endif

namespace fusedrt::gpu {

namespace {

constexpr int kHeadDim = 64;  // one 128-byte swizzled row per Q, K or V row
constexpr int kBlockM = 64;   // query rows per block: one m64 warpgroup tile
constexpr int kThreads = 128;
constexpr int kRowBytes = kHeadDim * 2;
constexpr int kChunksPerRow = kRowBytes / 16;

template <int kBlockN>
struct HopperTiles {
  static constexpr int kQBytes = kBlockM * kRowBytes;
  static constexpr int kStageBytes = kBlockN * kRowBytes;  // one K or one V stage
  // Q, two K stages, two V stages, and 1024 bytes to align the first to 1024.
  static constexpr size_t kSharedBytes = kQBytes + 4 * kStageBytes + 1024;
};

// Rows [0, kRows) of one head into a swizzled tile; rows from rows_valid on
// are zero-filled (src, the tile's first row, is read for none of them).
template <int kRows>
__device__ __forceinline__ void load_tile_swizzled(unsigned char* tile, const __half* src, int64_t row_stride,
                                                   int rows_valid) {
  const int chunk = threadIdx.x % kChunksPerRow;
#pragma unroll 1
  for (int row = threadIdx.x / kChunksPerRow; row < kRows; row += kThreads / kChunksPerRow) {
    const bool valid = row < rows_valid;
    cp_async_16(tile + swizzled_offset(row, chunk), valid ? src + row * row_stride + chunk * 8 : src, valid);
  }
}

template <int kBlockN>
__device__ __forceinline__ void scores(float (&s)[kBlockN / 2], uint64_t q, uint64_t k, int step) {
  // A k16 step along a K-major row is 32 bytes: 2 in the descriptor's units.
  if constexpr (kBlockN == 64) {
    wgmma_m64n64k16_ss(s, q + 2 * step, k + 2 * step, step > 0);
  } else {
    wgmma_m64n32k16_ss(s, q + 2 * step, k + 2 * step, step > 0);
  }
}

template <int kBlockN, int kMinBlocksPerSm>
__global__ void __launch_bounds__(kThreads, kMinBlocksPerSm)
    attention_hopper_kernel(const AttentionHalfParams p, int tiles_per_sequence) {
  using Tiles = HopperTiles<kBlockN>;
  const int sequence = blockIdx.x / tiles_per_sequence;
  const int q0 = (blockIdx.x % tiles_per_sequence) * kBlockM;
  const int64_t start = p.cu_seqlens[sequence];
  const int length = p.cu_seqlens[sequence + 1] - static_cast<int>(start);
  if (q0 >= length) return;  // whole block, before any barrier or wgmma

  const int64_t width = p.heads * kHeadDim;
  const int64_t row_stride = 3 * width;
  const __half* q_src = p.qkv + start * row_stride + blockIdx.y * kHeadDim;
  const __half* k_src = q_src + width;
  const __half* v_src = k_src + width;

  extern __shared__ unsigned char shared_raw[];
  unsigned char* q_tile = shared_raw + ((1024 - (shared_address(shared_raw) & 1023)) & 1023);
  unsigned char* k_stages = q_tile + Tiles::kQBytes;
  unsigned char* v_stages = k_stages + 2 * Tiles::kStageBytes;

  const int stages = (length + kBlockN - 1) / kBlockN;
  load_tile_swizzled<kBlockM>(q_tile, q_src + q0 * row_stride, row_stride, length - q0);
  load_tile_swizzled<kBlockN>(k_stages, k_src, row_stride, length);
  load_tile_swizzled<kBlockN>(v_stages, v_src, row_stride, length);
  cp_async_commit();

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  // As in attention.cu: base 2, c > 0; a negative scale negates the scores.
  const float c = fmaxf(fabsf(p.scale) * 1.4426950408889634f, FLT_MIN);
  const bool negate = p.scale < 0.f;
  const uint64_t q_desc = swizzled_tile_descriptor(q_tile);

  float o[kHeadDim / 2];
#pragma unroll
  for (int i = 0; i < kHeadDim / 2; ++i) o[i] = 0.f;
  // Rows g and g + 8 of the warp's 16 (g = lane / 4).
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};

  for (int j = 0; j < stages; ++j) {
    const int buffer = j & 1;
    if (j + 1 < stages) {
      const int next = (j + 1) * kBlockN;
      load_tile_swizzled<kBlockN>(k_stages + (buffer ^ 1) * Tiles::kStageBytes, k_src + next * row_stride, row_stride,
                                  length - next);
      load_tile_swizzled<kBlockN>(v_stages + (buffer ^ 1) * Tiles::kStageBytes, v_src + next * row_stride, row_stride,
                                  length - next);
      cp_async_commit();
      cp_async_wait<1>();  // stage j (and Q) landed
    } else {
      cp_async_wait<0>();
    }
    fence_shared_for_async_proxy();
    __syncthreads();

    float s[kBlockN / 2];  // 8-key block n: s[4 n .. 4 n + 3], the mma C fragment
    wgmma_fence();
#pragma unroll
    for (int step = 0; step < kHeadDim / 16; ++step) {
      scores<kBlockN>(s, q_desc, swizzled_tile_descriptor(k_stages + buffer * Tiles::kStageBytes), step);
    }
    wgmma_commit();
    wgmma_wait_all();

    const int key0 = j * kBlockN;
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) {
      const bool masked = key0 + (i / 4) * 8 + (lane % 4) * 2 + (i & 1) >= length;
      s[i] = masked ? -INFINITY : (negate ? -s[i] : s[i]);
    }
    // Key key0 is real, so every row's new maximum is finite.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float tile_max = -INFINITY;
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) tile_max = fmaxf(tile_max, fmaxf(s[4 * n + 2 * r], s[4 * n + 2 * r + 1]));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
      tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
      const float new_max = fmaxf(row_max[r], tile_max);
      const float rescale = exp2_ftz((row_max[r] - new_max) * c);
      row_max[r] = new_max;
      const float offset = -new_max * c;
      float sum = 0.f;
#pragma unroll
      for (int n = 0; n < kBlockN / 8; ++n) {
        s[4 * n + 2 * r] = exp2_ftz(fmaf(s[4 * n + 2 * r], c, offset));
        s[4 * n + 2 * r + 1] = exp2_ftz(fmaf(s[4 * n + 2 * r + 1], c, offset));
        sum += s[4 * n + 2 * r] + s[4 * n + 2 * r + 1];
      }
      row_sum[r] = row_sum[r] * rescale + sum;
#pragma unroll
      for (int d = 0; d < kHeadDim / 8; ++d) {
        o[4 * d + 2 * r] *= rescale;
        o[4 * d + 2 * r + 1] *= rescale;
      }
    }

    // Keys 16 kk .. 16 kk + 15 are 8-key blocks 2 kk and 2 kk + 1: their C
    // fragments are the A fragment of P.
    uint32_t pa[kBlockN / 16][4];
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      pa[kk][0] = pack_half2(s[8 * kk], s[8 * kk + 1]);
      pa[kk][1] = pack_half2(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack_half2(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack_half2(s[8 * kk + 6], s[8 * kk + 7]);
    }
    const uint64_t v_desc = swizzled_tile_descriptor(v_stages + buffer * Tiles::kStageBytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      // 16 MN-major rows of 128 bytes: 2048 bytes, 128 in the descriptor's units.
      wgmma_m64n64k16_rs_mn(o, pa[kk], v_desc + 128 * kk);
    }
    wgmma_commit();
    wgmma_wait_all();
    __syncthreads();  // this buffer is refilled by the next iteration's cp.async
  }

  const int64_t out_offset = start * width + blockIdx.y * kHeadDim;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float sum = row_sum[r];
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    sum += __shfl_xor_sync(kFullMask, sum, 2);
    const float inv_sum = 1.f / sum;
    const int row = q0 + warp * 16 + lane / 4 + r * 8;
    if (row >= length) continue;
#pragma unroll
    for (int d = 0; d < kHeadDim / 8; ++d) {
      const int col = d * 8 + (lane % 4) * 2;
      const float pair[2] = {o[4 * d + 2 * r] * inv_sum, o[4 * d + 2 * r + 1] * inv_sum};
      const int64_t at = out_offset + static_cast<int64_t>(row) * width + col;
      if (p.out8 != nullptr) {
        store_e4m3<2>(p.out8 + at, pair);
      } else {
        *reinterpret_cast<__half2*>(p.out + at) = __floats2half2_rn(pair[0], pair[1]);
      }
    }
  }
}

template <int kBlockN, int kMinBlocksPerSm>
struct HopperKernel {
  static constexpr auto kernel = attention_hopper_kernel<kBlockN, kMinBlocksPerSm>;
  static constexpr size_t kSharedBytes = HopperTiles<kBlockN>::kSharedBytes;

  static cudaError_t prepare() {
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(kSharedBytes));
  }

  // Waves of the grid over the device's SMs; 0 when the device cannot say.
  static int64_t waves(int64_t blocks) {
    int device = 0, sms = 0, per_sm = 0;
    if (prepare() != cudaSuccess || cudaGetDevice(&device) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, kSharedBytes) != cudaSuccess ||
        sms * per_sm == 0) {
      cudaGetLastError();
      return 0;
    }
    return (blocks + int64_t{sms} * per_sm - 1) / (int64_t{sms} * per_sm);
  }

  static cudaError_t launch(const AttentionHalfParams& p, int64_t tiles, cudaStream_t stream) {
    const cudaError_t prepared = prepare();
    if (prepared != cudaSuccess) return prepared;
    const dim3 grid(static_cast<unsigned>(p.sequences * tiles), static_cast<unsigned>(p.heads));
    kernel<<<grid, kThreads, kSharedBytes, stream>>>(p, static_cast<int>(tiles));
    return cudaGetLastError();
  }
};

using LongStages = HopperKernel<64, 4>;
using ShortStages = HopperKernel<32, 5>;
constexpr int64_t kShortSequence = 128;

bool switched_to_mma() {
  static const bool mma = [] {
    const char* choice = std::getenv("FUSEDRT_ATTENTION");
    return choice != nullptr && std::strcmp(choice, "mma") == 0;
  }();
  return mma;
}

}  // namespace

bool attention_hopper_supports(const AttentionHalfParams& p) {
  if (p.head_dim != kHeadDim || switched_to_mma()) return false;
  int device = 0, major = 0, minor = 0;
  if (cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess ||
      cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return major == 9 && minor == 0;
}

cudaError_t launch_attention_hopper(const AttentionHalfParams& p, cudaStream_t stream) {
  const int64_t tiles = (p.max_seqlen + kBlockM - 1) / kBlockM;
  if (tiles * p.sequences > INT_MAX) return cudaErrorInvalidValue;
  if (p.max_seqlen <= kShortSequence) {
    const int64_t blocks = tiles * p.sequences * p.heads;
    const int64_t short_waves = ShortStages::waves(blocks);
    if (short_waves > 0 && short_waves < LongStages::waves(blocks)) return ShortStages::launch(p, tiles, stream);
  }
  return LongStages::launch(p, tiles, stream);
}

}  // namespace fusedrt::gpu
