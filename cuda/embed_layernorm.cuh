// CUDA embed_layernorm: out[t] = LN((word[id[t]] + token_type[type[t]]) +
// position[t - cu_seqlens[b]]), the semantics of native/cpu/README.md.
#pragma once

#include <cuda_runtime.h>

#include "cpu/ops.h"

namespace fusedrt::gpu {

// Queues the op on stream; returns the launch error, if any.
cudaError_t embed_layernorm(const cpu::EmbedLayerNormParams& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
