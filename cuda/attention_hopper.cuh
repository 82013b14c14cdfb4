// The fp16 attention op (attention.cuh, AttentionHalfParams) on Hopper's
// warpgroup MMA: the same semantics as launch_attention_fp16's mma.sync
// kernel, for head_dim 64 on compute capability 9.0. launch_attention_fp16
// picks it by itself; this header is for that dispatch.
// cuda/attention_hopper.cu is compiled for sm_90a only (wgmma exists on no
// other target).
#pragma once

#include <cuda_runtime.h>

#include "attention.cuh"

namespace fusedrt::gpu {

// Whether launch_attention_hopper runs p on the current device: head_dim 64,
// a GPU of compute capability 9.0, and FUSEDRT_ATTENTION not set to "mma"
// (the switch that keeps the mma.sync kernel, for comparisons).
bool attention_hopper_supports(const AttentionHalfParams& p);

// Queues the op on stream. Call only where attention_hopper_supports(p);
// alignment and sizes are checked by launch_attention_fp16, which calls it.
cudaError_t launch_attention_hopper(const AttentionHalfParams& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
