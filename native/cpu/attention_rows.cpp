// Attention for chosen query rows only: what attention() computes for those
// rows, without computing the others. A model's last layer needs no more
// when its head reads a few rows ([MASK] positions, each sequence's first
// token), so the runtime skips the rest of that layer's work.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fast_math.h"
#include "ops.h"

namespace fusedrt::cpu {

namespace {

// The sequence holding `token`, or -1 when the token lies past the batch
// (a padding entry of query_rows). cu_seqlens is non-decreasing.
int64_t sequence_of(const AttentionParams& p, int64_t token) {
  if (token < 0 || token >= p.cu_seqlens[p.sequences]) return -1;
  const int32_t* end = p.cu_seqlens + p.sequences + 1;
  // The last boundary <= token starts its sequence; upper_bound skips empty ones.
  return std::upper_bound(p.cu_seqlens, end, static_cast<int32_t>(token)) - p.cu_seqlens - 1;
}

// One query row of one head: scores against the sequence's keys, their
// softmax (row maximum subtracted, exp_fast as in attention()), then the
// probability-weighted sum of the values.
FUSEDRT_SIMD_CLONES
void attend_row(const AttentionParams& p, int64_t token, int64_t row, int64_t head, std::vector<float>& scores) {
  const int64_t dim = p.head_dim;
  const int64_t width = p.heads * dim;
  const int64_t stride = 3 * width;
  float* out = p.out + row * width + head * dim;
  const int64_t sequence = sequence_of(p, token);
  if (sequence < 0) {
    std::fill(out, out + dim, 0.0f);
    return;
  }
  const int64_t start = p.cu_seqlens[sequence];
  const int64_t len = p.cu_seqlens[sequence + 1] - start;
  const float* query = p.qkv + token * stride + head * dim;
  const float* keys = p.qkv + start * stride + width + head * dim;
  const float* values = keys + width;

  float max_score = -INFINITY;
  for (int64_t j = 0; j < len; ++j) {
    const float* key = keys + j * stride;
    float dot = 0.0f;
    for (int64_t d = 0; d < dim; ++d) dot += query[d] * key[d];
    scores[j] = dot * p.scale;
    max_score = std::max(max_score, scores[j]);
  }
  float total = 0.0f;
  for (int64_t j = 0; j < len; ++j) {
    scores[j] = exp_fast(scores[j] - max_score);
    total += scores[j];
  }
  std::fill(out, out + dim, 0.0f);
  for (int64_t j = 0; j < len; ++j) {
    const float* value = values + j * stride;
    const float weight = scores[j];
    for (int64_t d = 0; d < dim; ++d) out[d] += weight * value[d];
  }
  const float inv_total = 1.0f / total;
  for (int64_t d = 0; d < dim; ++d) out[d] *= inv_total;
}

}  // namespace

void attention_rows(const AttentionRowsParams& p, ThreadPool& pool) {
  const AttentionParams& a = p.attention;
  int64_t longest = 0;
  for (int64_t b = 0; b < a.sequences; ++b) longest = std::max<int64_t>(longest, a.cu_seqlens[b + 1] - a.cu_seqlens[b]);
  pool.parallel_for(p.rows * a.heads, 4, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(static_cast<size_t>(longest));
    for (int64_t item = begin; item < end; ++item) {
      const int64_t row = item / a.heads;
      attend_row(a, p.query_rows[row], row, item % a.heads, scores);
    }
  });
}

}  // namespace fusedrt::cpu
