// FP16 flash attention on Hopper's warpgroup MMA (wgmma), head_dim 64.
//
// The algorithm is that of attention.cu's mma.sync kernel (FlashAttention-2
// forward, online softmax in fp32 base 2, K/V in stages of 64 keys
// double-buffered by cp.async); the matrix products and the block change.
// There each of a block's 4 warps reads every K and V stage from shared
// memory through ldmatrix for its own 16 rows. Here 64 query rows are one
// warpgroup, and each product one wgmma over all of them:
//   S = Q K^T   m64n64k16, Q from registers (loaded once), K read by the
//               tensor cores from shared memory (K-major), 4 k16 steps
//   O += P V    m64n64k16, P from registers (the S accumulators rounded to
//               fp16, as in the mma.sync kernel: the layouts coincide), V
//               from shared memory read MN-major (transposed), one step per
//               16 keys
// Tiles are stored with the 128-byte swizzle wgmma expects (wgmma.cuh);
// cp.async writes each 16-byte chunk at its swizzled place, then a proxy
// fence hands the tile to the tensor cores.
//
// A stage overlaps its softmax with the tensor cores: it issues S_j and
// O += P_{j-1} V_{j-1} together, runs the softmax of S_j while P V is in
// flight, then rescales O (kernel comment). The softmax masks only on the
// last stage.
//
// When every sequence has at most 128 keys (the two stage buffers), a block
// requests all of its tiles at once instead of stage by stage (kWhole, at
// the kernel).
//
// The output leaves in 16-byte chunks, each assembled by shuffles within a
// quad of lanes (store_rows_in_chunks): at 32 x 128 the 4-byte stores the
// mma.sync kernel uses took 1.4 us of a block's 10 (bench/gpu/
// attention_phases.cu times a block's phases).
//
// A block is one warpgroup, 64 query rows of one (sequence, head); 4 fit an
// SM (at most 128 registers). Where sequences of up to 128 keys would need
// a second, partial wave of such blocks, a block takes both 64-row halves of
// its sequence in turn instead, loading K and V once (kQTiles, at the
// kernel).
// Blocks of two warpgroups sharing each K/V stage (half the K/V traffic from
// L2) were tried: 1.5% faster at 128 x 384, 4% slower with lengths in [48,
// 384] (bench/RESULTS.md, eleventh session).
#include <cfloat>
#include <climits>
#include <cstdlib>
#include <cstring>

#include "attention_hopper.cuh"
#include "attention_traits.cuh"
#include "row_math.cuh"
#include "wgmma.cuh"

// Built for anything but sm_90a the kernel would use instructions its
// target lacks; refuse such a build with a clear message.
#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#error "cuda/attention_hopper.cu is built for sm_90a only: -gencode arch=compute_90a,code=sm_90a"
#endif

// Phase marks for the probe bench/gpu/attention_phases.cu, which defines
// this before including this file; in the backend's build they are nothing.
#ifndef FUSEDRT_ATTENTION_MARK
#define FUSEDRT_ATTENTION_MARK(tile, phase)
#endif

namespace fusedrt::gpu {

namespace {

constexpr int kHeadDim = 64;  // one 128-byte swizzled row per Q, K or V row
constexpr int kBlockN = 64;  // keys per stage
constexpr int kRowBytes = kHeadDim * 2;
constexpr int kChunksPerRow = kRowBytes / 16;
constexpr int kStageBytes = kBlockN * kRowBytes;  // one K or one V stage

constexpr int kThreads = 128;  // one warpgroup
constexpr int kBlocksPerSm = 4;  // at most 128 registers a thread
constexpr int kBlockM = 64;    // its query rows
constexpr int kQBytes = kBlockM * kRowBytes;
// Q, two K stages, two V stages, and 1024 bytes to align the first to 1024
// (with kQTiles 2, a second Q tile after the first).
constexpr size_t kSharedBytes = kQBytes + 4 * kStageBytes + 1024;

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

// Q in registers as wgmma A fragments, one per k16 step of head_dim: each
// warp its 16 rows, read with ldmatrix; a negative scale flips their sign
// bits (exact), so the scores come out negated.
__device__ __forceinline__ void load_q_fragments(const unsigned char* q_tile, bool negate,
                                                 uint32_t (&q)[kHeadDim / 16][4]) {
  const int lane = threadIdx.x % kWarpSize;
  const int row = (threadIdx.x / kWarpSize) * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
  const uint32_t sign = negate ? 0x80008000u : 0u;
#pragma unroll
  for (int step = 0; step < kHeadDim / 16; ++step) {
    ldmatrix_x4(q[step], reinterpret_cast<const __half*>(q_tile + swizzled_offset(row, 2 * step + lane / 16)));
#pragma unroll
    for (int i = 0; i < 4; ++i) q[step][i] ^= sign;
  }
}

__device__ __forceinline__ void issue_scores(float (&s)[kBlockN / 2], const uint32_t (&q)[kHeadDim / 16][4],
                                             uint64_t k) {
#pragma unroll
  for (int step = 0; step < kHeadDim / 16; ++step) {
    // A k16 step along a K-major row is 32 bytes: 2 in the descriptor's units.
    wgmma_m64n64k16_rs(s, q[step], k + 2 * step, step > 0);
  }
}

__device__ __forceinline__ void issue_pv(float (&o)[kHeadDim / 2], const uint32_t (&pa)[kBlockN / 16][4], uint64_t v) {
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    // 16 MN-major rows of 128 bytes: 2048 bytes, 128 in the descriptor's units.
    wgmma_m64n64k16_rs_mn(o, pa[kk], v + 128 * kk);
  }
}

// The online softmax of one stage's scores s (8-key block n: s[4 n .. 4 n +
// 3], the mma C fragment; keys from key0): masks keys past length, turns s
// into P = 2^(c s - c max) in fp32, updates the rows' max and sum, and
// returns in rescale the factor the rows' O must take before P V is added.
// Key key0 is real, so every row's new maximum is finite.
__device__ __forceinline__ void softmax_stage(float (&s)[kBlockN / 2], int key0, int length, float c,
                                              float (&row_max)[2], float (&row_sum)[2], float (&rescale)[2]) {
  // Only the last stage masks (a branch uniform over the block): per score
  // the softmax is otherwise one FMNMX, FFMA, MUFU.EX2 and FADD, half a
  // conversion, and the rescale of O. (Masking every stage cost 6% at
  // 128 x 384.)
  if (key0 + kBlockN > length) {
    const int lane = threadIdx.x % kWarpSize;
#pragma unroll
    for (int i = 0; i < kBlockN / 2; ++i) {
      if (key0 + (i / 4) * 8 + (lane % 4) * 2 + (i & 1) >= length) s[i] = -INFINITY;
    }
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float tile_max = -INFINITY;
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) tile_max = fmaxf(tile_max, fmaxf(s[4 * n + 2 * r], s[4 * n + 2 * r + 1]));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
    const float new_max = fmaxf(row_max[r], tile_max);
    rescale[r] = exp2_ftz((row_max[r] - new_max) * c);  // 0 before the first stage
    row_max[r] = new_max;
    const float offset = -new_max * c;
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < kBlockN / 8; ++n) {
      s[4 * n + 2 * r] = exp2_ftz(fmaf(s[4 * n + 2 * r], c, offset));
      s[4 * n + 2 * r + 1] = exp2_ftz(fmaf(s[4 * n + 2 * r + 1], c, offset));
      sum += s[4 * n + 2 * r] + s[4 * n + 2 * r + 1];
    }
    row_sum[r] = row_sum[r] * rescale[r] + sum;
  }
}

// Keys 16 kk .. 16 kk + 15 are 8-key blocks 2 kk and 2 kk + 1: their C
// fragments, rounded to fp16, are the A fragment of P.
__device__ __forceinline__ void pack_p(const float (&s)[kBlockN / 2], uint32_t (&pa)[kBlockN / 16][4]) {
#pragma unroll
  for (int kk = 0; kk < kBlockN / 16; ++kk) {
    pa[kk][0] = pack_half2(s[8 * kk], s[8 * kk + 1]);
    pa[kk][1] = pack_half2(s[8 * kk + 2], s[8 * kk + 3]);
    pa[kk][2] = pack_half2(s[8 * kk + 4], s[8 * kk + 5]);
    pa[kk][3] = pack_half2(s[8 * kk + 6], s[8 * kk + 7]);
  }
}

// Until at most `pending` (0, 1 or 2) of this thread's cp.async groups are
// in flight; then the block's landed tiles are handed to the tensor cores.
__device__ __forceinline__ void wait_for_stage(int pending) {
  if (pending >= 2) {
    cp_async_wait<2>();
  } else if (pending == 1) {
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  fence_shared_for_async_proxy();
  __syncthreads();
}

// The tile's output rows, normalised and rounded to fp16, stored as 16-byte
// chunks (4 stores a thread instead of store_attention_rows' 16 of 4 bytes).
//
// A row's chunk c (columns 8 c .. 8 c + 7) is spread over the quad of lanes
// holding that row (4 g .. 4 g + 3), as one word (two columns) each; a 4 x 4
// transpose by shuffles within the quad gives lane q the whole chunk
// 4 h + q, for h = 0, 1.

// a[i] = a[i ^ x] for x in 0..3 (per thread): two conditional pair swaps.
__device__ __forceinline__ void xor_permute(uint32_t (&a)[4], int x) {
  if (x & 1) {
    const uint32_t t0 = a[0], t2 = a[2];
    a[0] = a[1], a[1] = t0, a[2] = a[3], a[3] = t2;
  }
  if (x & 2) {
    const uint32_t t0 = a[0], t1 = a[1];
    a[0] = a[2], a[1] = a[3], a[2] = t0, a[3] = t1;
  }
}

// first_row: the tile's first query row; out_offset: its sequence's first
// token, this head's first column.
__device__ __forceinline__ void store_rows_in_chunks(const AttentionHalfParams& p, const float (&o)[kHeadDim / 2],
                                                     const float (&row_sum)[2], int first_row, int length,
                                                     int64_t out_offset) {
  const int lane = threadIdx.x % kWarpSize;
  const int g = lane / 4, q = lane % 4;
  const int64_t width = p.heads * kHeadDim;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float inv_sum = inverse_row_sum(row_sum[r]);
    const int row = first_row + (threadIdx.x / kWarpSize) * 16 + g + 8 * r;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t mine[4], chunk[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        mine[i] = pack_half2(o[4 * (4 * h + i) + 2 * r] * inv_sum, o[4 * (4 * h + i) + 2 * r + 1] * inv_sum);
      }
      // Word p of lane q's chunk is lane p's mine[q]. Round x swaps with
      // lane q ^ x: send mine[q ^ x], receive word q ^ x.
      xor_permute(mine, q);  // mine[x] is now what round x sends
#pragma unroll
      for (int x = 0; x < 4; ++x) chunk[x] = __shfl_xor_sync(kFullMask, mine[x], x);
      xor_permute(chunk, q);  // chunk[p]: lane p's word
      if (row < length) {
        *reinterpret_cast<uint4*>(p.out + out_offset + row * width + (4 * h + q) * 8) =
            make_uint4(chunk[0], chunk[1], chunk[2], chunk[3]);
      }
    }
  }
}

// Sequences up to this long fit the two K and two V stage buffers whole.
constexpr int kWholeSequence = 2 * kBlockN;

// Grid: x = sequence * blocks_per_sequence + block of the sequence, y = head
// (as in attention.cu); a block takes kQTiles query tiles of kBlockM rows.
// Stage j issues S_j = Q K_j^T and O += P_{j-1} V_{j-1}
// together, so it needs K_j and V_{j-1} and loads K_{j+1} and V_j; each
// buffer is refilled only after the product that read it has been waited
// for by every warp (the barrier at the top of the stage). Query rows past
// the sequence are computed on zeros and not stored.
//
// kWhole (every sequence at most kWholeSequence keys): all loads are issued
// at once, as groups (Q, K_0), (K_1, V_0), (V_1), and stage j waits until
// only the groups after its own are pending. Issuing each stage's loads only
// after the previous stage landed costs three memory round trips in a row,
// and blocks of short sequences are bound by that latency (H100, cold L2:
// 1 x 128 8.0 -> 7.2 us, 32 x 128 20.4 -> 19.8; bench/RESULTS.md). Longer
// sequences keep the plain pipeline, which the switch would slow by ~0.5%.
//
// kQTiles 2 (kWhole only): both query tiles of a sequence of up to 128 keys
// in one block, one after the other, on the K and V loaded once (the second
// Q tile comes with the last group). Launched where that makes the grid fit
// the GPU in one wave of 4 blocks an SM (launch_attention_hopper).
template <bool kWhole, int kQTiles>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    attention_hopper_kernel(const AttentionHalfParams p, int blocks_per_sequence) {
  const int sequence = blockIdx.x / blocks_per_sequence;
  const int first_q0 = (blockIdx.x % blocks_per_sequence) * kQTiles * kBlockM;
  const int64_t start = p.cu_seqlens[sequence];
  const int length = p.cu_seqlens[sequence + 1] - static_cast<int>(start);
  if (first_q0 >= length) return;  // whole block, before any barrier or wgmma
  FUSEDRT_ATTENTION_MARK(0, 0);

  const int64_t width = p.heads * kHeadDim;
  const int64_t row_stride = 3 * width;
  const __half* q_src = p.qkv + start * row_stride + blockIdx.y * kHeadDim;
  const __half* k_src = q_src + width;
  const __half* v_src = k_src + width;

  extern __shared__ unsigned char shared_raw[];
  unsigned char* q_tiles = shared_raw + ((1024 - (shared_address(shared_raw) & 1023)) & 1023);
  unsigned char* k_stages = q_tiles + kQTiles * kQBytes;
  unsigned char* v_stages = k_stages + 2 * kStageBytes;
  auto k_stage = [&](int j) { return k_stages + (j & 1) * kStageBytes; };
  auto v_stage = [&](int j) { return v_stages + (j & 1) * kStageBytes; };
  // K_j (when it exists) and V_{j-1} (when j > 0), as one cp.async group.
  auto load_stage = [&](int j, int stages) {
    if (j < stages) {
      load_tile_swizzled<kBlockN>(k_stage(j), k_src + j * kBlockN * row_stride, row_stride, length - j * kBlockN);
    }
    if (j > 0) {
      const int v0 = (j - 1) * kBlockN;
      load_tile_swizzled<kBlockN>(v_stage(j - 1), v_src + v0 * row_stride, row_stride, length - v0);
    }
    cp_async_commit();
  };

  auto load_q = [&](int t) {
    const int tile_q0 = first_q0 + t * kBlockM;
    if (tile_q0 < length) {
      load_tile_swizzled<kBlockM>(q_tiles + t * kQBytes, q_src + tile_q0 * row_stride, row_stride, length - tile_q0);
    }
  };

  const int stages = (length + kBlockN - 1) / kBlockN;
  // A sequence longer than max_seqlen breaks the launch's contract; it still
  // gets the plain pipeline (for every tile) rather than overwritten buffers.
  const bool whole = kWhole && stages <= 2;
  // fp16 output 16-byte aligned goes out in 16-byte chunks; E4M3 and an
  // unaligned out as the mma.sync kernel stores them.
  const bool chunked_out = p.out8 == nullptr && (reinterpret_cast<uintptr_t>(p.out) & 15) == 0;
#pragma unroll 1
  for (int tile = 0; tile < kQTiles; ++tile) {
    const int q0 = first_q0 + tile * kBlockM;
    if (q0 >= length) break;
    unsigned char* q_tile = q_tiles + tile * kQBytes;
    if (tile == 0) {
      load_q(0);
    } else if (!whole) {
      __syncthreads();  // every warp is done with the previous tile's stages
      load_q(tile);
    }
    if (tile == 0 || !whole) {
      load_stage(0, stages);
      if (whole) {
        for (int j = 1; j <= stages; ++j) {
          // The later query tiles join the last group: the first tile's
          // work needs only Q_0 and K_0 to start.
          if (j == stages) {
#pragma unroll
            for (int t = 1; t < kQTiles; ++t) load_q(t);
          }
          load_stage(j, stages);
        }
      }
    }

    // As in attention.cu: base 2, c > 0; a negative scale negates Q.
    const float c = fmaxf(fabsf(p.scale) * 1.4426950408889634f, FLT_MIN);
    uint32_t q[kHeadDim / 16][4];
    float o[kHeadDim / 2];
#pragma unroll
    for (int i = 0; i < kHeadDim / 2; ++i) o[i] = 0.f;
    // Rows g and g + 8 of the warp's 16 (g = lane / 4).
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};
    float rescale[2];
    float s[kBlockN / 2];
    uint32_t pa[kBlockN / 16][4];

    // Stage 0: S_0 and its softmax alone (O is still zero). A whole block's
    // later tiles find every group landed and visible (the first tile's
    // waits), so they skip the waits and their barriers: nothing is written
    // to shared memory after the loads.
    const bool waits = tile == 0 || !whole;
    if (waits) wait_for_stage(whole ? stages : 0);
    FUSEDRT_ATTENTION_MARK(tile, 1);
    if (!whole) load_stage(1, stages);
    load_q_fragments(q_tile, p.scale < 0.f, q);
    wgmma_fence();
    issue_scores(s, q, swizzled_tile_descriptor(k_stage(0)));
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_hold(s);
    FUSEDRT_ATTENTION_MARK(tile, 2);
    softmax_stage(s, 0, length, c, row_max, row_sum, rescale);
    pack_p(s, pa);
    FUSEDRT_ATTENTION_MARK(tile, 3);

    for (int j = 1; j < stages; ++j) {
      if (waits) wait_for_stage(whole ? stages - j : 0);  // K_j and V_{j-1}
      FUSEDRT_ATTENTION_MARK(tile, 4);
      if (!whole) load_stage(j + 1, stages);
      wgmma_hold(o);
      wgmma_fence();
      issue_scores(s, q, swizzled_tile_descriptor(k_stage(j)));
      wgmma_commit();
      issue_pv(o, pa, swizzled_tile_descriptor(v_stage(j - 1)));
      wgmma_commit();
      wgmma_wait<1>();  // S_j
      wgmma_hold(s);
      FUSEDRT_ATTENTION_MARK(tile, 5);
      softmax_stage(s, j * kBlockN, length, c, row_max, row_sum, rescale);
      FUSEDRT_ATTENTION_MARK(tile, 6);
      wgmma_wait<0>();  // P_{j-1} V_{j-1}
      wgmma_hold(o);
      wgmma_hold(pa);  // the product has read pa: only now may it be refilled
#pragma unroll
      for (int d = 0; d < kHeadDim / 8; ++d) {
        o[4 * d] *= rescale[0];
        o[4 * d + 1] *= rescale[0];
        o[4 * d + 2] *= rescale[1];
        o[4 * d + 3] *= rescale[1];
      }
      pack_p(s, pa);
      FUSEDRT_ATTENTION_MARK(tile, 7);
    }

    if (waits) wait_for_stage(0);  // V of the last stage
    FUSEDRT_ATTENTION_MARK(tile, 8);
    wgmma_hold(o);
    wgmma_fence();
    issue_pv(o, pa, swizzled_tile_descriptor(v_stage(stages - 1)));
    wgmma_commit();
    wgmma_wait<0>();
    wgmma_hold(o);
    FUSEDRT_ATTENTION_MARK(tile, 9);

    if (chunked_out) {
      store_rows_in_chunks(p, o, row_sum, q0, length, start * width + blockIdx.y * kHeadDim);
    } else {
      store_attention_rows<kHeadDim>(
          p, [&](int d, int e) { return o[4 * d + e]; }, row_sum, q0 + (threadIdx.x / kWarpSize) * 16, length,
          kHeadDim, start * width + blockIdx.y * kHeadDim);
    }
    FUSEDRT_ATTENTION_MARK(tile, 10);
  }
}

bool switched_to_mma() {
  static const bool mma = [] {
    const char* choice = std::getenv("FUSEDRT_ATTENTION");
    return choice != nullptr && std::strcmp(choice, "mma") == 0;
  }();
  return mma;
}

template <bool kWhole, int kQTiles>
cudaError_t launch_hopper(const AttentionHalfParams& p, int64_t tiles, cudaStream_t stream) {
  constexpr size_t kShared = kSharedBytes + (kQTiles - 1) * kQBytes;
  const cudaError_t prepared = cudaFuncSetAttribute(attention_hopper_kernel<kWhole, kQTiles>,
                                                    cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                    static_cast<int>(kShared));
  if (prepared != cudaSuccess) return prepared;
  const int64_t blocks_per_sequence = (tiles + kQTiles - 1) / kQTiles;
  const dim3 grid(static_cast<unsigned>(p.sequences * blocks_per_sequence), static_cast<unsigned>(p.heads));
  attention_hopper_kernel<kWhole, kQTiles>
      <<<grid, kThreads, kShared, stream>>>(p, static_cast<int>(blocks_per_sequence));
  return cudaGetLastError();
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
  if (p.max_seqlen > kWholeSequence) return launch_hopper<false, 1>(p, tiles, stream);
  int device = 0, sms = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (error != cudaSuccess) return error;
  // Both query tiles a block where one tile a block spills into a second,
  // partial wave and two fit one: 32 x 128 on an H100, 768 blocks for 528
  // places, 12.7 -> 11.5 us warm. Larger grids keep one tile a block: at
  // 128 x 128 (still 1.45 waves with two) two were 7% slower
  // (bench/RESULTS.md, fifteenth session).
  const int64_t one_tile_blocks = tiles * p.sequences * p.heads;
  const int64_t places = int64_t{kBlocksPerSm} * sms;
  if (tiles == 2 && one_tile_blocks > places && one_tile_blocks <= 2 * places) {
    return launch_hopper<true, 2>(p, tiles, stream);
  }
  return launch_hopper<true, 1>(p, tiles, stream);
}

}  // namespace fusedrt::gpu
