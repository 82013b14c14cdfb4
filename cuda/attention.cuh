// CUDA attention over packed variable-length sequences: per sequence b and
// head h, out = softmax(scale * Q K^T) V over the tokens of b only
// (native/cpu/README.md, "attention").
#pragma once

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

}  // namespace fusedrt::gpu
