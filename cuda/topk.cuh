// CUDA softmax top-k over rows of logits: the semantics of
// native/cpu/topk.h (fp32 softmax around the row's maximum over the whole
// row; the k best columns, larger logit first, equal logits lower column
// first; NaN never selected, missing slots id -1 and score 0).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fusedrt::gpu {

template <class T>
struct SoftmaxTopKArgs {
  const T* logits;  // [rows, cols]
  int64_t rows;
  int64_t cols;
  int k;  // 1 .. 64, at most cols (the runtime checks)
  int32_t* top_ids;   // [rows, k]
  float* top_scores;  // [rows, k]
};

// Queues the kernel on stream (one block per row); returns the launch error,
// if any. T: float, __half.
template <class T>
cudaError_t softmax_topk(const SoftmaxTopKArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
