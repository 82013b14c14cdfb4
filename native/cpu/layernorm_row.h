// LayerNorm of one row, shared by embed_layernorm and add_layernorm.
#pragma once

#include <cmath>
#include <cstdint>

namespace fusedrt::cpu {

// out = (x - mean) / sqrt(var + eps) * gamma + beta, biased variance.
// Statistics are taken in double over two passes: a one-pass E[x²] - E[x]²
// in float loses digits on rows with a large mean, and PyTorch-level
// agreement (1e-5) needs them. `out` may be `x`.
inline void layernorm_row(const float* x, const float* gamma, const float* beta, float eps,
                          int64_t cols, float* out) {
  double sum = 0.0;
  for (int64_t c = 0; c < cols; ++c) sum += x[c];
  const double mean = sum / static_cast<double>(cols);
  double squares = 0.0;
  for (int64_t c = 0; c < cols; ++c) {
    const double centred = x[c] - mean;
    squares += centred * centred;
  }
  const double variance = squares / static_cast<double>(cols);
  const double inv_std = 1.0 / std::sqrt(variance + static_cast<double>(eps));
  for (int64_t c = 0; c < cols; ++c) {
    out[c] = static_cast<float>((x[c] - mean) * inv_std * gamma[c] + beta[c]);
  }
}

}  // namespace fusedrt::cpu
