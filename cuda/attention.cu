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
//
// The fp16 kernel (launch_attention_fp16, second half of this file) is the
// FlashAttention-2 forward on mma.sync tensor cores; see its own comment.
// On Hopper, head_dim 64 goes to the wgmma version in attention_hopper.cu. A
// split-keys tiling (16 query rows, 4 warps sharing each stage's keys) and a
// 128-row one (4 warps of 32 rows) were tried and dropped: on an H200 the
// best either did against 64 rows was 3% faster (128 rows at batch 128 x 384
// of fixed length, cold L2; 2% warm), and both lost elsewhere, split keys by
// up to 2.5x (cuda/tests/attention_test.cu, BERT-base, warm L2, us per launch
// for 64 rows / 128 rows / split keys: 1 x 128 4.75 / 6.00 / 4.94, 32 x 384
// 72.6 / 75.1 / 170.0, 128 x 384 262.3 / 256.6 / 660.4, the same with lengths
// in [48, 384] 139.4 / 141.5 / 311.6).
#include <cfloat>
#include <climits>
#include <cmath>

#include "attention.cuh"
#include "attention_hopper.cuh"
#include "attention_traits.cuh"
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

// ---------------------------------------------------------------------------
// FP16 tensor-core attention (FlashAttention-2 forward, no causal mask).
//
// A block owns 64 query rows of one (sequence, head), 16 per warp, and walks
// all of the sequence's keys in stages of 64 (AttentionHalfTraits in
// cuda/attention_traits.cuh). Q stays in registers (ldmatrix once); K and V
// stream through shared memory, the next stage's cp.async in flight while
// this one is computed (double buffering). Per stage, each warp does, on its
// 16 rows:
//   S = Q K^T          mma m16n8k16, fp32 accumulators
//   online softmax     fp32, base 2: p = 2^(c s - c m), c = |scale| log2 e,
//                      one FFMA and one MUFU.EX2 per score; the running max m
//                      (of the raw scores) is reduced over the 4 lanes
//                      sharing a row, the running sum stays per lane until
//                      the end
//   O += P V           P rounded to fp16 and reused straight from the S
//                      accumulators as A fragments (their layouts coincide)
// A negative scale flips the sign bits of Q (exact), so c > 0 and the max of
// the raw scores is the max of the scaled ones; a zero scale runs with the
// smallest normal c, so masked keys (-inf) still weigh 2^-inf = 0 and the
// real ones 1 to within 1e-26.
// Keys past the sequence's end are zero-filled by cp.async (no NaN from
// stale memory reaches P V) and masked to -inf before the softmax; every
// stage starts at a real key, so each row's running max is finite from the
// first stage on. Query rows past the end are computed on zeros and not
// stored.
// Grid: x = sequence * tiles_per_sequence + query tile, y = head; tiles per
// sequence come from max_seqlen, so the host never reads cu_seqlens.
//
// Costs for head_dim 64, per block: 45 KB shared (stages of 64 keys) and at
// most 128 registers (the launch bound of 4 blocks per SM; unbounded, CUDA
// 13's ptxas takes 141, which leaves 3). Batch 32 x 128's 768 blocks then
// take 1.45 waves of 132 SMs, so short sequences run stages of 32 keys at 6
// blocks per SM (27 KB, 80 registers): one wave (launch_fp16_by_length).
// Per stage and warp of 64 keys, 64 mma and 32 ldmatrix.x4: 512 bytes of
// shared reads (4 clk at 128 B/clk/SM) per 2 mma (~3 clk of an SM's
// mma.sync rate by our estimate), so long sequences are bound by
// shared-memory reads rather than by the tensor cores. (Registers: sm_90,
// -Xptxas -v, no spills but 4 bytes for padded head dims 40-56 in the
// short tiling; blocks per SM: H100/H200. The timings at the top of this
// file were taken at 126 registers, before the launch bounds.)

namespace {

// Copies kRows rows of one head (src: the first row, a mapped address) into
// shared memory [kRows][kRowStride] with cp.async; rows from rows_valid on
// and columns from head_dim on are zero-filled. Thread t copies chunk
// t % kChunksPerRow of rows t / kChunksPerRow + i * kRowStep. The loop is
// not unrolled: unrolled, nvcc hoists one 64-bit address per row out of the
// stage loop (sm_90, head_dim 128: 243 registers instead of 169).
template <class Traits, int kRows>
__device__ __forceinline__ void load_tile_async(__half* dst, const __half* src, int64_t row_stride, int rows_valid,
                                                int head_dim) {
  constexpr int kChunks = Traits::kChunksPerRow;
  constexpr int kRowStep = Traits::kThreads / kChunks;
  const int row = threadIdx.x / kChunks;
  const int chunk = threadIdx.x % kChunks;
  const bool column_valid = !Traits::kPadded || chunk * 8 < head_dim;
  const __half* from = src + row * row_stride + chunk * 8;
  __half* to = dst + row * Traits::kRowStride + chunk * 8;
#pragma unroll 1
  for (int r = 0; r < kRows; r += kRowStep) {
    if (kRows % kRowStep != 0 && row + r >= kRows) break;
    const bool valid = column_valid && row + r < rows_valid;
    cp_async_16(to + r * Traits::kRowStride, valid ? from + r * row_stride : src, valid);
  }
}

// One warp's part of one stage, on its 16 query rows: S = Q K^T over the
// stage's kBlockN keys (first key index key0, which is < length), the online
// softmax update, O += P V. k_tile and v_tile point at the stage in shared
// memory.
template <class Traits>
__device__ __forceinline__ void attend_stage(const uint32_t (&q_frag)[Traits::kHeadDim / 16][4], const __half* k_tile,
                                             const __half* v_tile, int key0, int length, float c,
                                             float (&acc)[Traits::kHeadDim / 8][4], float (&row_max)[2],
                                             float (&row_sum)[2]) {
  constexpr int kD = Traits::kHeadDim;
  constexpr int kN = Traits::kBlockN;
  constexpr int kLd = Traits::kRowStride;
  const int lane = threadIdx.x % kWarpSize;

  float s[kN / 8][4];
#pragma unroll
  for (int n = 0; n < kN / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
  for (int nn = 0; nn < kN / 16; ++nn) {
#pragma unroll
    for (int kk = 0; kk < kD / 16; ++kk) {
      uint32_t b[4];  // keys nn*16 + 0..7 then + 8..15, each for dims kk*16 + 0..7 and + 8..15
      const int key = nn * 16 + (lane % 8) + (lane / 16) * 8;
      ldmatrix_x4(b, k_tile + key * kLd + kk * 16 + ((lane / 8) % 2) * 8);
      mma_16816(s[2 * nn], q_frag[kk], b[0], b[1]);
      mma_16816(s[2 * nn + 1], q_frag[kk], b[2], b[3]);
    }
  }

  if (key0 + kN > length) {
#pragma unroll
    for (int n = 0; n < kN / 8; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const bool masked = key0 + n * 8 + (lane % 4) * 2 + (e & 1) >= length;
        s[n][e] = masked ? -INFINITY : s[n][e];
      }
    }
  }

  // Key key0 is real, so every row's new maximum is finite and
  // 2^(c (-inf - max)) = 0 rescales a state that has seen no key yet.
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float tile_max = -INFINITY;
#pragma unroll
    for (int n = 0; n < kN / 8; ++n) tile_max = fmaxf(tile_max, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 1));
    tile_max = fmaxf(tile_max, __shfl_xor_sync(kFullMask, tile_max, 2));
    const float new_max = fmaxf(row_max[r], tile_max);
    const float rescale = exp2_ftz((row_max[r] - new_max) * c);
    row_max[r] = new_max;
    const float offset = -new_max * c;
    float sum = 0.f;
#pragma unroll
    for (int n = 0; n < kN / 8; ++n) {
      s[n][2 * r] = exp2_ftz(fmaf(s[n][2 * r], c, offset));
      s[n][2 * r + 1] = exp2_ftz(fmaf(s[n][2 * r + 1], c, offset));
      sum += s[n][2 * r] + s[n][2 * r + 1];
    }
    row_sum[r] = row_sum[r] * rescale + sum;
#pragma unroll
    for (int d = 0; d < kD / 8; ++d) {
      acc[d][2 * r] *= rescale;
      acc[d][2 * r + 1] *= rescale;
    }
  }

  // O += P V: the accumulators of key tiles 2kk and 2kk + 1 are the A
  // fragment of keys kk*16 .. kk*16 + 15.
#pragma unroll
  for (int kk = 0; kk < kN / 16; ++kk) {
    uint32_t a[4];
    a[0] = pack_half2(s[2 * kk][0], s[2 * kk][1]);
    a[1] = pack_half2(s[2 * kk][2], s[2 * kk][3]);
    a[2] = pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]);
    a[3] = pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
    for (int dd = 0; dd < kD / 16; ++dd) {
      uint32_t b[4];  // transposed: keys kk*16 + 0..7 / 8..15 for dims dd*16 + 0..7, then + 8..15
      const int key = kk * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
      ldmatrix_x4_trans(b, v_tile + key * kLd + dd * 16 + (lane / 16) * 8);
      mma_16816(acc[2 * dd], a, b[0], b[1]);
      mma_16816(acc[2 * dd + 1], a, b[2], b[3]);
    }
  }
}

template <class Traits>
__global__ void __launch_bounds__(Traits::kThreads, Traits::kMinBlocksPerSm)
    attention_fp16_kernel(const AttentionHalfParams p, int tiles_per_sequence) {
  constexpr int kD = Traits::kHeadDim;
  constexpr int kM = Traits::kBlockM;
  constexpr int kN = Traits::kBlockN;
  constexpr int kLd = Traits::kRowStride;
  const int sequence = blockIdx.x / tiles_per_sequence;
  const int q0 = (blockIdx.x % tiles_per_sequence) * kM;
  const int64_t start = p.cu_seqlens[sequence];
  const int length = p.cu_seqlens[sequence + 1] - static_cast<int>(start);
  if (q0 >= length) return;  // whole block, before any barrier

  const int head_dim = Traits::kPadded ? static_cast<int>(p.head_dim) : kD;
  const int64_t width = p.heads * head_dim;
  const int64_t row_stride = 3 * width;
  const __half* q_src = p.qkv + start * row_stride + blockIdx.y * head_dim;
  const __half* k_src = q_src + width;
  const __half* v_src = k_src + width;

  extern __shared__ __align__(16) unsigned char shared_bytes[];
  __half* q_tile = reinterpret_cast<__half*>(shared_bytes);  // [kM][kLd]
  __half* k_stages = q_tile + kM * kLd;                        // [2][kN][kLd]
  __half* v_stages = k_stages + 2 * kN * kLd;                  // [2][kN][kLd]

  const int stages = (length + kN - 1) / kN;
  load_tile_async<Traits, kM>(q_tile, q_src + q0 * row_stride, row_stride, length - q0, head_dim);
  load_tile_async<Traits, kN>(k_stages, k_src, row_stride, length, head_dim);
  load_tile_async<Traits, kN>(v_stages, v_src, row_stride, length, head_dim);
  cp_async_commit();

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const float c = fmaxf(fabsf(p.scale) * 1.4426950408889634f, FLT_MIN);  // exp(x) = exp2(x log2 e)
  const uint32_t q_sign = p.scale < 0.f ? 0x80008000u : 0u;

  uint32_t q_frag[kD / 16][4];
  float acc[kD / 8][4];
  // Rows g and g + 8 of the warp's m16 tile (g = lane / 4).
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.f, 0.f};
#pragma unroll
  for (int d = 0; d < kD / 8; ++d) acc[d][0] = acc[d][1] = acc[d][2] = acc[d][3] = 0.f;

  for (int j = 0; j < stages; ++j) {
    const int buffer = j & 1;
    if (j + 1 < stages) {
      const int next = (j + 1) * kN;
      load_tile_async<Traits, kN>(k_stages + (buffer ^ 1) * kN * kLd, k_src + next * row_stride, row_stride,
                                  length - next, head_dim);
      load_tile_async<Traits, kN>(v_stages + (buffer ^ 1) * kN * kLd, v_src + next * row_stride, row_stride,
                                  length - next, head_dim);
      cp_async_commit();
      cp_async_wait<1>();  // stage j (and Q) landed; stage j + 1 may still be in flight
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < kD / 16; ++kk) {
        const int row = warp * 16 + (lane % 8) + ((lane / 8) % 2) * 8;
        ldmatrix_x4(q_frag[kk], q_tile + row * kLd + kk * 16 + (lane / 16) * 8);
#pragma unroll
        for (int i = 0; i < 4; ++i) q_frag[kk][i] ^= q_sign;
      }
    }

    const int offset = buffer * kN * kLd;
    attend_stage<Traits>(q_frag, k_stages + offset, v_stages + offset, j * kN, length, c, acc, row_max, row_sum);
    __syncthreads();  // this buffer is refilled by the next iteration's cp.async
  }

  store_attention_rows<kD>(
      p, [&](int d, int e) { return acc[d][e]; }, row_sum, q0 + warp * 16, length, head_dim,
      start * width + blockIdx.y * head_dim);
}

// Sequences up to this long are latency-bound per block, so that filling the
// GPU in one wave matters more than a stage's width.
constexpr int64_t kShortSequence = 128;

template <class Traits>
cudaError_t prepare_fp16(const AttentionHalfParams& p) {
  const int64_t tiles = (p.max_seqlen + Traits::kBlockM - 1) / Traits::kBlockM;
  if (tiles * p.sequences > INT_MAX) return cudaErrorInvalidValue;
  if (Traits::kSharedBytes <= 48 * 1024) return cudaSuccess;
  return cudaFuncSetAttribute(attention_fp16_kernel<Traits>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                              static_cast<int>(Traits::kSharedBytes));
}

template <class Traits>
cudaError_t launch_fp16(const AttentionHalfParams& p, cudaStream_t stream) {
  const cudaError_t prepared = prepare_fp16<Traits>(p);
  if (prepared != cudaSuccess) return prepared;
  const int64_t tiles = (p.max_seqlen + Traits::kBlockM - 1) / Traits::kBlockM;
  const dim3 grid(static_cast<unsigned>(p.sequences * tiles), static_cast<unsigned>(p.heads));
  attention_fp16_kernel<Traits><<<grid, Traits::kThreads, Traits::kSharedBytes, stream>>>(p, static_cast<int>(tiles));
  return cudaGetLastError();
}

// Waves of the grid over the device's SMs at the kernel's occupancy; 0
// when the device cannot say.
template <class Traits>
int64_t waves_fp16(const AttentionHalfParams& p) {
  int device = 0, sms = 0, per_sm = 0;
  if (prepare_fp16<Traits>(p) != cudaSuccess || cudaGetDevice(&device) != cudaSuccess ||
      cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device) != cudaSuccess ||
      cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, attention_fp16_kernel<Traits>, Traits::kThreads,
                                                    Traits::kSharedBytes) != cudaSuccess ||
      sms * per_sm == 0) {
    cudaGetLastError();
    return 0;
  }
  const int64_t blocks = (p.max_seqlen + Traits::kBlockM - 1) / Traits::kBlockM * p.sequences * p.heads;
  return (blocks + int64_t{sms} * per_sm - 1) / (int64_t{sms} * per_sm);
}

// Head dims up to 64: 4 blocks per SM with stages of 64 keys (128
// registers on sm_90), or, for short sequences whose grid that would spread
// over more waves, 6 per SM with stages of 32 keys (80 registers). On an
// H100 (cuda/tests/attention_test.cu, BERT-base, warm L2): 32 x 128 16.0 ->
// 14.0 us with the short tiling; 128 x 384 278 -> 264 us and 32 x 384 77.2
// -> 73.5 us with 4 blocks per SM instead of the 3 that 141 registers left;
// 1 x 128 and 8 x 128 unchanged. Head dim 128 keeps one block as its bound
// (at 4 it would spill).
template <int kHeadDim, bool kPadded>
cudaError_t launch_fp16_by_length(const AttentionHalfParams& p, cudaStream_t stream) {
  using Long = AttentionHalfTraits<kHeadDim, kPadded, 64, 4>;
  using Short = AttentionHalfTraits<kHeadDim, kPadded, 32, 6>;
  if (p.max_seqlen <= kShortSequence) {
    const int64_t long_waves = waves_fp16<Long>(p);
    const int64_t short_waves = waves_fp16<Short>(p);
    if (short_waves > 0 && short_waves < long_waves) return launch_fp16<Short>(p, stream);
  }
  return launch_fp16<Long>(p, stream);
}

}  // namespace

bool attention_fp16_supports(int64_t head_dim) { return head_dim > 0 && head_dim <= 128 && head_dim % 8 == 0; }

// head_dim -> instantiation: 32, 64 and 128 exact, others zero-padded to the
// next.
cudaError_t launch_attention_fp16(const AttentionHalfParams& p, cudaStream_t stream) {
  if (p.sequences <= 0 || p.heads <= 0 || p.max_seqlen <= 0) return cudaSuccess;
  if (!attention_fp16_supports(p.head_dim) || p.heads > 65535) return cudaErrorInvalidValue;
  if (!aligned16(p.qkv) || (reinterpret_cast<uintptr_t>(p.out) & 3u) != 0 ||
      (reinterpret_cast<uintptr_t>(p.out8) & 1u) != 0) {
    return cudaErrorInvalidValue;
  }
  if (p.head_dim == 32) return launch_fp16_by_length<32, false>(p, stream);
  if (p.head_dim == 64) {
    if (attention_hopper_supports(p)) return launch_attention_hopper(p, stream);
    return launch_fp16_by_length<64, false>(p, stream);
  }
  if (p.head_dim < 32) return launch_fp16_by_length<32, true>(p, stream);
  if (p.head_dim < 64) return launch_fp16_by_length<64, true>(p, stream);
  if (p.head_dim == 128) return launch_fp16<AttentionHalfTraits<128, false>>(p, stream);
  return launch_fp16<AttentionHalfTraits<128, true>>(p, stream);
}

}  // namespace fusedrt::gpu
