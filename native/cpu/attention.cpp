// softmax(scale · Q · Kᵀ) · V for every (sequence, head) of a packed batch.
// Packed sequences need no mask: a sequence only sees its own tokens.
#include <algorithm>
#include <cmath>
#include <vector>

#include "ops.h"

namespace fusedrt::cpu {

namespace {

// Per-chunk working memory, sized for the longest sequence of the batch.
struct Scratch {
  explicit Scratch(int64_t longest, int64_t head_dim)
      : keys_t(static_cast<size_t>(longest * head_dim)),
        values(static_cast<size_t>(longest * head_dim)),
        scores(static_cast<size_t>(longest)),
        acc(static_cast<size_t>(head_dim)) {}
  std::vector<float> keys_t;  // [head_dim, len]: K transposed
  std::vector<float> values;  // [len, head_dim]
  std::vector<float> scores;  // [len]
  std::vector<float> acc;     // [head_dim]
};

// One head of one sequence. K is transposed and V copied into contiguous
// scratch once, so that both products below are axpy loops over contiguous
// memory, which the compiler vectorises without reassociating sums.
void attend(const AttentionParams& p, int64_t start, int64_t len, int64_t head, Scratch& s) {
  const int64_t dim = p.head_dim;
  const int64_t width = p.heads * dim;
  const int64_t stride = 3 * width;
  const float* q_base = p.qkv + head * dim;
  const float* k_base = p.qkv + width + head * dim;
  const float* v_base = p.qkv + 2 * width + head * dim;
  float* keys_t = s.keys_t.data();
  float* values = s.values.data();
  float* scores = s.scores.data();
  float* acc = s.acc.data();

  for (int64_t j = 0; j < len; ++j) {
    const float* key = k_base + (start + j) * stride;
    for (int64_t d = 0; d < dim; ++d) keys_t[d * len + j] = key[d];
    std::copy(v_base + (start + j) * stride, v_base + (start + j) * stride + dim, values + j * dim);
  }

  for (int64_t i = 0; i < len; ++i) {
    const float* query = q_base + (start + i) * stride;
    std::fill(scores, scores + len, 0.0f);
    for (int64_t d = 0; d < dim; ++d) {
      const float qd = query[d];
      const float* key_column = keys_t + d * len;
      for (int64_t j = 0; j < len; ++j) scores[j] += qd * key_column[j];
    }

    float max_score = -INFINITY;
    for (int64_t j = 0; j < len; ++j) {
      scores[j] *= p.scale;
      max_score = std::max(max_score, scores[j]);
    }
    double total = 0.0;
    for (int64_t j = 0; j < len; ++j) {
      scores[j] = std::exp(scores[j] - max_score);
      total += scores[j];
    }

    std::fill(acc, acc + dim, 0.0f);
    for (int64_t j = 0; j < len; ++j) {
      const float weight = scores[j];
      const float* value = values + j * dim;
      for (int64_t d = 0; d < dim; ++d) acc[d] += weight * value[d];
    }
    const float inv_total = static_cast<float>(1.0 / total);
    float* out = p.out + (start + i) * width + head * dim;
    for (int64_t d = 0; d < dim; ++d) out[d] = acc[d] * inv_total;
  }
}

}  // namespace

void attention(const AttentionParams& p, ThreadPool& pool) {
  int64_t longest = 0;
  for (int64_t b = 0; b < p.sequences; ++b) longest = std::max<int64_t>(longest, p.cu_seqlens[b + 1] - p.cu_seqlens[b]);
  if (longest == 0) return;
  pool.parallel_for(p.sequences * p.heads, 1, [&](int64_t begin, int64_t end) {
    Scratch scratch(longest, p.head_dim);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t sequence = item / p.heads;
      const int64_t start = p.cu_seqlens[sequence];
      const int64_t len = p.cu_seqlens[sequence + 1] - start;
      if (len > 0) attend(p, start, len, item % p.heads, scratch);
    }
  });
}

}  // namespace fusedrt::cpu
