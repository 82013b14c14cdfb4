// CUDA gather_rows: out[r] = in[row_index[r]] (native/cpu/README.md).
#pragma once

#include <cuda_runtime.h>

#include "cpu/ops.h"

namespace fusedrt::gpu {

// Queues the op on stream; returns the launch error, if any.
cudaError_t gather_rows(const cpu::GatherRowsParams& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
