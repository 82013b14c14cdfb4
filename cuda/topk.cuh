// CUDA softmax top-k over rows of logits: the semantics of
// native/cpu/topk.h (fp32 softmax around the row's maximum over the whole
// row; the k best columns, larger logit first, equal logits lower column
// first; NaN never selected, missing slots id -1 and score 0).
//
// Each row is split across up to 32 warps, so one row still spreads over the
// GPU; the last warp of a row to finish merges the parts. That needs two
// pieces of device memory from the caller:
//   row_counters  rows uint32s, zero before the call; every call leaves them
//                 zero again. Allocate them once (zero-filled, e.g. cudaMemset
//                 at allocation), use them for nothing else, and never let two
//                 calls that may run concurrently share them; calls queued on
//                 one stream may, for any rows up to the allocated count.
//   scratch       softmax_topk_scratch_bytes(rows, cols, k) bytes, 8-byte
//                 aligned, no initialisation: the per-warp partial results,
//                 dead once the call has finished. The size only grows with
//                 rows and k, so the bytes for the largest rows and k cover
//                 every call with that cols.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace fusedrt::gpu {

template <class T>
struct SoftmaxTopKArgs {
  const T* logits;  // [rows, cols]
  int64_t rows;
  int64_t cols;       // 1 .. INT32_MAX
  int k;              // 1 .. 64 (may exceed cols: the surplus slots are id -1, score 0)
  int32_t* top_ids;   // [rows, k]
  float* top_scores;  // [rows, k]
  uint32_t* row_counters;  // [rows], see above
  void* scratch;           // softmax_topk_scratch_bytes(rows, cols, k) bytes, see above
};

// Bytes of SoftmaxTopKArgs::scratch for these sizes (0 when one is not positive).
size_t softmax_topk_scratch_bytes(int64_t rows, int64_t cols, int k);

// Queues the kernel on stream (one launch; no host sync, no allocation);
// returns the launch error, if any, or cudaErrorInvalidValue for sizes
// outside the ranges above, a missing counter or scratch pointer, or a
// misaligned scratch. T: float, __half.
template <class T>
cudaError_t softmax_topk(const SoftmaxTopKArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
