// CUDA mean_rows: each sequence's mean row, the semantics of
// native/cpu/ops.h (mean_rows): out[b] = the mean of in's rows
// cu_seqlens[b] .. cu_seqlens[b + 1] - 1, summed in fp32 (in another order
// than the CPU's); zeros for an empty sequence (a bucket's padding
// sequences). Activations of type T (float or __half), in and out alike.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fusedrt::gpu {

template <class T>
struct MeanRowsArgs {
  const T* in;                // [tokens, cols]
  const int32_t* cu_seqlens;  // [sequences + 1], device memory
  int64_t sequences;
  int64_t cols;
  T* out;  // [sequences, cols]
};

// Queues the op on stream; returns the launch error, if any. T: float, __half.
template <class T>
cudaError_t mean_rows(const MeanRowsArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
