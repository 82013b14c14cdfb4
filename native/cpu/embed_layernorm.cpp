#include <algorithm>
#include <vector>

#include "layernorm_row.h"
#include "ops.h"

namespace fusedrt::cpu {

void embed_layernorm(const EmbedLayerNormParams& p, ThreadPool& pool) {
  const int64_t hidden = p.hidden;
  pool.parallel_for(p.tokens, 16, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(hidden));
    // Sequence of the first token of the chunk; later tokens move it forward.
    int64_t sequence = std::upper_bound(p.cu_seqlens, p.cu_seqlens + p.sequences + 1, begin) -
                       p.cu_seqlens - 1;
    for (int64_t t = begin; t < end; ++t) {
      while (t >= p.cu_seqlens[sequence + 1]) ++sequence;
      const int64_t position = t - p.cu_seqlens[sequence];
      const int64_t type = p.token_type_ids ? p.token_type_ids[t] : 0;
      const float* word = p.word + static_cast<int64_t>(p.input_ids[t]) * hidden;
      const float* type_row = p.token_type + type * hidden;
      const float* position_row = p.position + position * hidden;
      // Same order of float additions as Hugging Face BertEmbeddings.
      for (int64_t c = 0; c < hidden; ++c) row[c] = (word[c] + type_row[c]) + position_row[c];
      layernorm_row(row.data(), p.gamma, p.beta, p.eps, hidden, p.out + t * hidden);
    }
  });
}

}  // namespace fusedrt::cpu
