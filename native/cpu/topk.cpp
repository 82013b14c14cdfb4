#include "topk.h"

#include <cmath>
#include <limits>

namespace fusedrt::cpu {

namespace {

// The selection order: larger logit first, then lower column. NaN is never
// better than anything, so it is never selected.
bool better(float a, int32_t a_id, float b, int32_t b_id) { return a > b || (a == b && a_id < b_id); }

void softmax_topk_row(const float* x, int64_t cols, int k, int32_t* ids, float* scores) {
  float max = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < cols; ++c) max = std::fmax(max, x[c]);
  // Exponentials in fp32 as on the GPU; the sum in double, so its order does
  // not matter at fp32 precision.
  double sum = 0;
  for (int64_t c = 0; c < cols; ++c) sum += std::exp(x[c] - max);

  // Insertion into a list that starts full of sentinels worse than any
  // number (-inf with the largest id), exactly what the GPU's rounds start from.
  float best[kMaxTopK];
  int32_t best_ids[kMaxTopK];
  for (int i = 0; i < k; ++i) {
    best[i] = -std::numeric_limits<float>::infinity();
    best_ids[i] = std::numeric_limits<int32_t>::max();
  }
  for (int64_t c = 0; c < cols; ++c) {
    const auto id = static_cast<int32_t>(c);
    if (!better(x[c], id, best[k - 1], best_ids[k - 1])) continue;
    int at = k - 1;
    while (at > 0 && better(x[c], id, best[at - 1], best_ids[at - 1])) {
      best[at] = best[at - 1];
      best_ids[at] = best_ids[at - 1];
      --at;
    }
    best[at] = x[c];
    best_ids[at] = id;
  }
  const auto total = static_cast<float>(sum);
  for (int i = 0; i < k; ++i) {
    const bool found = best_ids[i] != std::numeric_limits<int32_t>::max();
    ids[i] = found ? best_ids[i] : -1;
    scores[i] = found ? std::exp(best[i] - max) / total : 0.f;
  }
}

}  // namespace

void softmax_topk(const SoftmaxTopKParams& p, ThreadPool& pool) {
  pool.parallel_for(p.rows, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      softmax_topk_row(p.logits + r * p.cols, p.cols, p.k, p.top_ids + r * p.k, p.top_scores + r * p.k);
    }
  });
}

}  // namespace fusedrt::cpu
