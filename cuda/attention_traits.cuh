// Tile shapes of the FP16 attention kernel (cuda/attention.cu), and the
// epilogue it shares with the Hopper one (cuda/attention_hopper.cu); the
// tensor-core helpers are in cuda/tensor_core.cuh. Internal to cuda/*.cu;
// declares no launcher.
#pragma once

#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

#include "attention.cuh"
#include "row_math.cuh"
#include "tensor_core.cuh"

namespace fusedrt::gpu {

// A block owns kBlockM query rows of one (sequence, head), one m16 tile per
// warp, and walks all of the sequence's keys in stages of kBlockN.
//
// kHeadDim: 32, 64 or 128, the compile-time width of the tiles. A head_dim
// below it (a multiple of 8) runs with the columns past head_dim zero-filled
// (kPadded): the dot products do not change and the extra output columns are
// not stored.
//
// kBlockN and kMinBlocksPerSm trade a stage's width for blocks resident per
// SM (the latter is the kernel's launch bound, which caps its registers):
// 64 keys and 4 blocks suit long sequences, 32 keys and 6 blocks short ones
// whose grid would otherwise need a second wave (launch_attention_fp16).
template <int kHeadDimT, bool kPaddedT, int kBlockNT = 64, int kMinBlocksPerSmT = 1>
struct AttentionHalfTraits {
  static constexpr int kHeadDim = kHeadDimT;
  static constexpr bool kPadded = kPaddedT;
  static constexpr int kWarps = 4;
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kBlockM = 16 * kWarps;  // query rows per block
  static constexpr int kBlockN = kBlockNT;     // keys per stage
  static constexpr int kMinBlocksPerSm = kMinBlocksPerSmT;
  // Shared-memory row stride in halves: 16 bytes of padding so that the 8 row
  // addresses of one ldmatrix fall in 8 different 16-byte bank groups (a
  // stride of 64, 128 or 256 bytes would put all 8 in the same group).
  static constexpr int kRowStride = kHeadDim + 8;
  // 16-byte chunks (8 halves) per row, the unit of cp.async.
  static constexpr int kChunksPerRow = kHeadDim / 8;
  static_assert(kHeadDim % 16 == 0 && kBlockN % 16 == 0, "tiles are whole mma k-steps");
  static_assert(kThreads % kChunksPerRow == 0, "the tile loader gives each thread one column chunk");

  // Q tile, then two K stages and two V stages (double buffering).
  static constexpr size_t kStageBytes = sizeof(__half) * static_cast<size_t>(kBlockN) * kRowStride;
  static constexpr size_t kSharedBytes = sizeof(__half) * static_cast<size_t>(kBlockM) * kRowStride + 4 * kStageBytes;
  // sm_86/sm_89 give a block at most 99 KB.
  static_assert(kSharedBytes <= 99 * 1024, "a block must fit every architecture the backend ships");
};

// 1 / a row's softmax sum, from this lane's part of it: the four lanes of a
// quad hold parts of the same two rows (mma's C fragment).
__device__ __forceinline__ float inverse_row_sum(float part) {
  part += __shfl_xor_sync(kFullMask, part, 1);
  part += __shfl_xor_sync(kFullMask, part, 2);
  return 1.f / part;
}

// Normalises one warp's 16 query rows of O and stores them, as fp16 or as
// E4M3 (p.out8). O is in the mma C layout: acc(d, e) is element e of
// 8-column block d, rows g and g + 8 (g = lane / 4; e / 2 picks the row);
// row_sum holds this lane's part of the two rows' softmax sums. first_row:
// the warp's first row in the sequence; rows from length on are not stored,
// nor columns from head_dim on (a multiple of 8). out_offset: the sequence's
// first token and this head, as an element offset into the output.
template <int kHeadDim, class Acc>
__device__ __forceinline__ void store_attention_rows(const AttentionHalfParams& p, Acc acc, const float (&row_sum)[2],
                                                     int first_row, int length, int head_dim, int64_t out_offset) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t width = p.heads * head_dim;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float inv_sum = inverse_row_sum(row_sum[r]);
    const int row = first_row + lane / 4 + r * 8;
    if (row >= length) continue;
#pragma unroll
    for (int d = 0; d < kHeadDim / 8; ++d) {
      const int col = d * 8 + (lane % 4) * 2;
      if (col >= head_dim) continue;  // padded head dims only; col + 1 is in too
      const float pair[2] = {acc(d, 2 * r) * inv_sum, acc(d, 2 * r + 1) * inv_sum};
      const int64_t at = out_offset + static_cast<int64_t>(row) * width + col;
      if (p.out8 != nullptr) {
        store_e4m3<2>(p.out8 + at, pair);
      } else {
        *reinterpret_cast<__half2*>(p.out + at) = __floats2half2_rn(pair[0], pair[1]);
      }
    }
  }
}

}  // namespace fusedrt::gpu
