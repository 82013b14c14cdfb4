// CUDA add_layernorm: out = LN((in + bias) + residual), the semantics of
// native/cpu/README.md ("add_layernorm"); out may alias in or residual.
#pragma once

#include <cuda_runtime.h>

#include "cpu/ops.h"

namespace fusedrt::gpu {

// Queues the op on stream; returns the launch error, if any.
cudaError_t add_layernorm(const cpu::AddLayerNormParams& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
