// Softmax top-k over rows of logits (the fill-mask fast path): per row, the
// softmax over the whole row (fp32 exponentials around the row's maximum) and
// the k most probable columns. The CUDA kernel (cuda/topk.cu) has the same
// semantics; docs/runtime.md, "Top-k".
#pragma once

#include <cstdint>

#include "thread_pool.h"

namespace fusedrt::cpu {

// Largest k a run may ask for (kept small: the CUDA kernel selects in k rounds).
constexpr int kMaxTopK = 64;

struct SoftmaxTopKParams {
  const float* logits;  // [rows, cols]
  int64_t rows;
  int64_t cols;
  int k;               // 1 .. min(kMaxTopK, cols)
  int32_t* top_ids;    // [rows, k]: best first; equal logits: lower column first
  float* top_scores;   // [rows, k]: exp(x - max) / sum over the row of exp(x - max)
};

// NaN logits are never selected; a row with fewer than k other values gets
// id -1 and score 0 in the remaining slots.
void softmax_topk(const SoftmaxTopKParams& p, ThreadPool& pool);

}  // namespace fusedrt::cpu
