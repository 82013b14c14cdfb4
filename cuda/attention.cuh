// CUDA attention over packed variable-length sequences: per sequence b and
// head h, out = softmax(scale * Q K^T) V over the tokens of b only
// (native/cpu/README.md, "attention"). Two launchers: fp32 (SIMT) and fp16
// (tensor cores, fp32 softmax and accumulation).
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/ops.h"

namespace fusedrt::gpu {

// Largest head_dim attention() runs; larger ones return cudaErrorInvalidValue
// (the backend turns that into E_SHAPE before launching).
constexpr int64_t kAttentionMaxHeadDim = 256;

// tokens: rows of p.qkv (= cu_seqlens[sequences]), for sizing the grid on the
// host without reading cu_seqlens back. Queues the op on stream; returns the
// launch error, if any.
cudaError_t attention(const cpu::AttentionParams& p, int64_t tokens, cudaStream_t stream);

// The fp16 op: same layout and semantics as cpu::AttentionParams, in halves.
struct AttentionHalfParams {
  const __half* qkv;           // [tokens, 3 * heads * head_dim]: Q | K | V; 16-byte aligned
  const int32_t* cu_seqlens;   // [sequences + 1], device memory
  int64_t sequences;
  // At least the longest sequence (the plan's max_seq will do: blocks past a
  // sequence's end exit at once). Query rows past max_seqlen are not computed.
  int64_t max_seqlen;
  int64_t heads;
  int64_t head_dim;
  float scale;
  __half* out;                 // [tokens, heads * head_dim]; 4-byte aligned
  // Instead of out (then nullptr): the same values rounded to E4M3
  // (row_math.cuh, store_e4m3), for an fp8 GEMM that reads them; 2-byte aligned.
  __nv_fp8_e4m3* out8 = nullptr;
};

// Whether launch_attention_fp16 runs this head_dim: multiples of 8 up to 128
// (32, 64 and 128 are specialised; the others run the next larger width with
// zero-filled columns). The backend checks this and reports E_SHAPE otherwise.
bool attention_fp16_supports(int64_t head_dim);

// Queues the fp16 op on stream (flash attention with mma.sync m16n8k16,
// sm_80+; cuda/attention.cu, "FP16 tensor-core attention", has the tiling
// and its costs). Returns cudaErrorInvalidValue for an unsupported head_dim,
// more than 65535 heads, or misaligned qkv/out, else the launch error, if any.
cudaError_t launch_attention_fp16(const AttentionHalfParams& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
