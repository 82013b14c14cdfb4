#include <vector>

#include "layernorm_row.h"
#include "ops.h"

namespace fusedrt::cpu {

void add_layernorm(const AddLayerNormParams& p, ThreadPool& pool) {
  const int64_t cols = p.cols;
  pool.parallel_for(p.rows, 8, [&](int64_t begin, int64_t end) {
    // The sum goes to a private row first: `out` may alias `in` or `residual`.
    std::vector<float> row(static_cast<size_t>(cols));
    for (int64_t r = begin; r < end; ++r) {
      const float* in = p.in + r * cols;
      for (int64_t c = 0; c < cols; ++c) row[c] = in[c];
      // Same order of float additions as Hugging Face: (dense + bias) + residual.
      if (p.bias) {
        for (int64_t c = 0; c < cols; ++c) row[c] += p.bias[c];
      }
      if (p.residual) {
        const float* residual = p.residual + r * cols;
        for (int64_t c = 0; c < cols; ++c) row[c] += residual[c];
      }
      layernorm_row(row.data(), p.gamma, p.beta, p.eps, cols, p.out + r * cols);
    }
  });
}

}  // namespace fusedrt::cpu
