// CUDA gather_rows: out[r] = in[row_index[r]] (native/cpu/README.md), for
// activations of type T (float or __half).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fusedrt::gpu {

template <class T>
struct GatherRowsArgs {
  const T* in;               // [in_rows, cols]
  int64_t in_rows;           // indices past it (padding sequences of a bucket) read the last row
  const int32_t* row_index;  // [rows_out]: which input row each output row copies
  int64_t rows_out;
  int64_t cols;
  T* out;  // [rows_out, cols]
};

// Queues the op on stream; returns the launch error, if any. T: float, __half.
template <class T>
cudaError_t gather_rows(const GatherRowsArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
