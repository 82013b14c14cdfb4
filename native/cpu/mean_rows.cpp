#include <algorithm>

#include "ops.h"

namespace fusedrt::cpu {

void mean_rows(const MeanRowsParams& p, ThreadPool& pool) {
  pool.parallel_for(p.sequences, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      float* out = p.out + b * p.cols;
      std::fill(out, out + p.cols, 0.f);
      const int64_t first = p.cu_seqlens[b], last = p.cu_seqlens[b + 1];
      if (last <= first) continue;
      for (int64_t t = first; t < last; ++t) {
        const float* row = p.in + t * p.cols;
        for (int64_t c = 0; c < p.cols; ++c) out[c] += row[c];
      }
      const float scale = 1.f / static_cast<float>(last - first);
      for (int64_t c = 0; c < p.cols; ++c) out[c] *= scale;
    }
  });
}

}  // namespace fusedrt::cpu
