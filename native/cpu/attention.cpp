// softmax(scale · Q · Kᵀ) · V for every (sequence, head) of a packed batch.
// Packed sequences need no mask: a sequence only sees its own tokens.
#include <algorithm>
#include <cmath>
#include <vector>

#include "fast_math.h"
#include "ops.h"

namespace fusedrt::cpu {

namespace {

// Keys per score vector, and queries handled together so that every key or
// value vector loaded feeds kQueryBlock multiply-adds.
constexpr int64_t kLanes = 16;
constexpr int64_t kQueryBlock = 4;

// 16 floats: one AVX-512 register, two AVX2 ones, four SSE ones, depending on
// the clone. Only used inside one function, never passed by value.
using Vec16 = float __attribute__((vector_size(64)));
using UnalignedVec16 = float __attribute__((vector_size(64), aligned(4), may_alias));

inline const UnalignedVec16& load16(const float* p) { return *reinterpret_cast<const UnalignedVec16*>(p); }
inline UnalignedVec16& store16(float* p) { return *reinterpret_cast<UnalignedVec16*>(p); }

int64_t round_up(int64_t value, int64_t multiple) { return (value + multiple - 1) / multiple * multiple; }

// Per-chunk working memory, sized for the longest sequence of the batch.
struct Scratch {
  Scratch(int64_t longest, int64_t head_dim)
      : keys_t(static_cast<size_t>(head_dim * round_up(longest, kLanes))),
        values(static_cast<size_t>(longest * head_dim)),
        probs(static_cast<size_t>(kQueryBlock * round_up(longest, kLanes))) {}
  std::vector<float> keys_t;  // [head_dim, padded len]: K transposed, zero padded
  std::vector<float> values;  // [len, head_dim]
  std::vector<float> probs;   // [kQueryBlock, padded len]: scores, then probabilities
};

// One head of one sequence, kQueryBlock queries at a time: their scores
// against all keys (vectors of kLanes keys), the softmax of each row, then
// the probability-weighted sum of the values (vectors of kLanes dimensions).
// K is transposed and V copied into contiguous scratch once per head. A
// ragged last block reuses the last query and drops the extra rows.
FUSEDRT_SIMD_CLONES
void attend(const AttentionParams& p, int64_t start, int64_t len, int64_t head, Scratch& s) {
  const int64_t dim = p.head_dim;
  const int64_t width = p.heads * dim;
  const int64_t stride = 3 * width;
  const int64_t padded = round_up(len, kLanes);
  const int64_t vector_dims = dim / kLanes * kLanes;
  const float* q_base = p.qkv + start * stride + head * dim;
  const float* k_base = q_base + width;
  const float* v_base = q_base + 2 * width;
  float* keys_t = s.keys_t.data();
  float* values = s.values.data();
  float* probs = s.probs.data();

  for (int64_t d = 0; d < dim; ++d) {
    float* column = keys_t + d * padded;
    for (int64_t j = 0; j < len; ++j) column[j] = k_base[j * stride + d];
    std::fill(column + len, column + padded, 0.0f);
  }
  for (int64_t j = 0; j < len; ++j) std::copy(v_base + j * stride, v_base + j * stride + dim, values + j * dim);

  for (int64_t i0 = 0; i0 < len; i0 += kQueryBlock) {
    const int64_t valid = std::min(kQueryBlock, len - i0);
    const float* query[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) query[r] = q_base + (i0 + std::min(r, valid - 1)) * stride;

    for (int64_t j0 = 0; j0 < padded; j0 += kLanes) {
      Vec16 acc[kQueryBlock] = {};
      for (int64_t d = 0; d < dim; ++d) {
        const Vec16 key = load16(keys_t + d * padded + j0);
#pragma GCC unroll 4
        for (int64_t r = 0; r < kQueryBlock; ++r) acc[r] += query[r][d] * key;
      }
      for (int64_t r = 0; r < kQueryBlock; ++r) store16(probs + r * padded + j0) = acc[r] * p.scale;
    }

    float inv_total[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) {
      float* row = probs + r * padded;
      std::fill(row + len, row + padded, -INFINITY);
      Vec16 max_vec = load16(row);
      for (int64_t j0 = kLanes; j0 < padded; j0 += kLanes) {
        const Vec16 v = load16(row + j0);
        max_vec = max_vec > v ? max_vec : v;
      }
      float max_score = max_vec[0];
      for (int64_t l = 1; l < kLanes; ++l) max_score = std::max(max_score, max_vec[l]);
      for (int64_t j = 0; j < len; ++j) row[j] = exp_fast(row[j] - max_score);
      std::fill(row + len, row + padded, 0.0f);
      Vec16 sum_vec = {};
      for (int64_t j0 = 0; j0 < padded; j0 += kLanes) sum_vec += load16(row + j0);
      float total = 0.0f;
      for (int64_t l = 0; l < kLanes; ++l) total += sum_vec[l];
      inv_total[r] = 1.0f / total;
    }

    float* out[kQueryBlock];
    for (int64_t r = 0; r < kQueryBlock; ++r) out[r] = p.out + (start + i0 + std::min(r, valid - 1)) * width + head * dim;
    for (int64_t d0 = 0; d0 < vector_dims; d0 += kLanes) {
      Vec16 acc[kQueryBlock] = {};
      for (int64_t j = 0; j < len; ++j) {
        const Vec16 value = load16(values + j * dim + d0);
#pragma GCC unroll 4
        for (int64_t r = 0; r < kQueryBlock; ++r) acc[r] += probs[r * padded + j] * value;
      }
      for (int64_t r = 0; r < valid; ++r) store16(out[r] + d0) = acc[r] * inv_total[r];
    }
    for (int64_t d = vector_dims; d < dim; ++d) {
      float acc[kQueryBlock] = {};
      for (int64_t j = 0; j < len; ++j) {
        for (int64_t r = 0; r < kQueryBlock; ++r) acc[r] += probs[r * padded + j] * values[j * dim + d];
      }
      for (int64_t r = 0; r < valid; ++r) out[r][d] = acc[r] * inv_total[r];
    }
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
