// Tile shapes of the FP16 attention kernel (cuda/attention.cu); its
// tensor-core helpers are in cuda/tensor_core.cuh. Internal to cuda/*.cu;
// declares no launcher.
#pragma once

#include <cuda_fp16.h>

#include <cstddef>

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

}  // namespace fusedrt::gpu
