// add_layernorm and embed_layernorm (fp32 and fp16 storage) against the CPU
// reference LayerNorm (native/cpu/layernorm_row.h: double statistics) on
// fresh random inputs, over every path of the launchers: rows in registers
// (one and several rows per block, 1 to 4 vectors per thread, masked
// threads), the multi-pass warp path for wide rows and the scalar path for
// odd or unaligned ones, with and without residual and bias, outputs that
// alias an input, and embed padding rows past cu_seqlens[sequences] (zeros;
// their stale ids are out of range, so a gather with them faults). Then
// both kernels are timed at BERT-base width with CUDA events (add_layernorm
// at 4096 rows also without its bias and without its residual, to show what
// each costs). Exit status 0 only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/layernorm_test cuda/tests/layernorm_test.cu cuda/add_layernorm.cu cuda/embed_layernorm.cu
//   /tmp/layernorm_test
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "test_support.cuh"
#include "../add_layernorm.cuh"
#include "../embed_layernorm.cuh"
#include "cpu/layernorm_row.h"

namespace {

using fusedrt::test::DeviceBuffer;
using fusedrt::test::median_us;
using fusedrt::test::Rng;

// Tolerances, per element, against the reference computed from the same
// (storage-rounded) inputs: fp32 statistics against double ones differ by
// ~1e-6 at these magnitudes (|out| <= ~6), so fp32 outputs must be within
// kFp32Tolerance * (1 + |want|); fp16 outputs may in addition be rounded, by
// at most half an fp16 ulp, 2^-11 * |want|. Padding rows must be exactly 0.
constexpr double kFp32Tolerance = 2e-5;
constexpr double kHalfUlp = 1.0 / 2048;
constexpr float kEps = 1e-12f;  // BERT's

template <class T>
void upload(T* dst, const std::vector<T>& src) {
  CHECK_CUDA(cudaMemcpy(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <class T>
T to_storage(float x);
template <>
float to_storage<float>(float x) { return x; }
template <>
__half to_storage<__half>(float x) { return __float2half_rn(x); }

float widen(float x) { return x; }
float widen(__half x) { return __half2float(x); }

template <class T>
const char* type_name() { return sizeof(T) == 4 ? "fp32" : "fp16"; }

// Values in storage type and widened back, as the kernels see them.
template <class T>
struct HostTensor {
  std::vector<T> stored;
  std::vector<float> values;
  void push(float x) {
    stored.push_back(to_storage<T>(x));
    values.push_back(widen(stored.back()));
  }
};

// rows x cols values in [-2, 2] around a per-row offset in [-offset, offset]
// (a row mean far from 0 is what a one-pass variance gets wrong).
template <class T>
HostTensor<T> random_rows(Rng& rng, int64_t rows, int64_t cols, float offset) {
  HostTensor<T> t;
  for (int64_t r = 0; r < rows; ++r) {
    const float shift = rng.uniform(-offset, offset);
    for (int64_t c = 0; c < cols; ++c) t.push(shift + rng.uniform(-2.f, 2.f));
  }
  return t;
}

std::vector<float> random_vector(Rng& rng, int64_t count, float lo, float hi) {
  std::vector<float> v(static_cast<size_t>(count));
  for (float& x : v) x = rng.uniform(lo, hi);
  return v;
}

int failures = 0;

// Compares out (rows x cols of T on the device) with want; rows from
// exact_from_row on must be exactly 0.
template <class T>
void check(const std::string& op, const std::string& label, int64_t rows, int64_t cols, const T* out,
           const std::vector<float>& want, int64_t exact_from_row) {
  std::vector<T> got(static_cast<size_t>(rows * cols));
  CHECK_CUDA(cudaDeviceSynchronize());
  CHECK_CUDA(cudaMemcpy(got.data(), out, got.size() * sizeof(T), cudaMemcpyDeviceToHost));
  double worst = 0, worst_ratio = 0;
  size_t unwritten = 0, nonzero_padding = 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const size_t i = static_cast<size_t>(r * cols + c);
      const double g = widen(got[i]);
      if (std::isnan(g)) {
        ++unwritten;
        continue;
      }
      if (r >= exact_from_row) {
        if (g != 0.0) ++nonzero_padding;
        continue;
      }
      const double w = want[i];
      const double err = std::fabs(g - w);
      double tolerance = kFp32Tolerance * (1 + std::fabs(w));
      if (sizeof(T) == 2) tolerance += kHalfUlp * std::fabs(w);
      worst = std::max(worst, err);
      worst_ratio = std::max(worst_ratio, err / tolerance);
    }
  }
  const bool ok = unwritten == 0 && nonzero_padding == 0 && worst_ratio <= 1.0;
  if (!ok) ++failures;
  std::string verdict = ok ? "ok" : "FAIL";
  if (unwritten) verdict += " (" + std::to_string(unwritten) + " NaN)";
  if (nonzero_padding) verdict += " (" + std::to_string(nonzero_padding) + " padding values not 0)";
  std::printf("| %-15s | %-38s | %s | %4lld | %5lld | %9.2e | %5.3f | %s |\n", op.c_str(), label.c_str(),
              type_name<T>(), static_cast<long long>(cols), static_cast<long long>(rows), worst, worst_ratio,
              verdict.c_str());
}

enum class Alias { none, in, residual };

// partial_count > 0: `in` comes as that many fp32 partial products (a
// split-K GEMM's), which the kernel must add up in order, in fp32.
template <class T>
void add_case(Rng& rng, int64_t rows, int64_t cols, bool with_residual, bool with_bias, Alias alias = Alias::none,
              bool unaligned = false, int partial_count = 0) {
  HostTensor<T> in = random_rows<T>(rng, rows, cols, 4.f);
  std::vector<float> partials;
  for (int j = 0; j < partial_count; ++j) {
    const HostTensor<float> part = random_rows<float>(rng, rows, cols, 4.f / partial_count);
    partials.insert(partials.end(), part.values.begin(), part.values.end());
  }
  if (partial_count > 0) {
    for (int64_t i = 0; i < rows * cols; ++i) {
      float sum = 0.f;
      for (int j = 0; j < partial_count; ++j) sum += partials[static_cast<size_t>(j * rows * cols + i)];
      in.values[static_cast<size_t>(i)] = sum;
    }
  }
  const HostTensor<T> residual = random_rows<T>(rng, rows, cols, 1.f);
  const std::vector<float> bias = random_vector(rng, cols, -0.5f, 0.5f);
  const std::vector<float> gamma = random_vector(rng, cols, 0.5f, 1.5f);
  const std::vector<float> beta = random_vector(rng, cols, -0.5f, 0.5f);

  // The CPU op's order of float additions: (in + bias) + residual.
  std::vector<float> want(static_cast<size_t>(rows * cols)), row(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      float x = in.values[r * cols + c];
      if (with_bias) x += bias[c];
      if (with_residual) x += residual.values[r * cols + c];
      row[c] = x;
    }
    fusedrt::cpu::layernorm_row(row.data(), gamma.data(), beta.data(), kEps, cols, want.data() + r * cols);
  }

  const size_t count = static_cast<size_t>(rows * cols);
  const size_t shift = unaligned ? 1 : 0;  // one element: no 16-byte loads
  DeviceBuffer<T> in_d(count + 1), residual_d(count), out_d(count);
  DeviceBuffer<float> bias_d(cols), gamma_d(cols), beta_d(cols), partials_d(partials.size() + 1);
  CHECK_CUDA(cudaMemcpy(in_d.ptr + shift, in.stored.data(), count * sizeof(T), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(partials_d.ptr + shift, partials.data(), partials.size() * sizeof(float),
                        cudaMemcpyHostToDevice));
  upload(residual_d.ptr, residual.stored);
  upload(bias_d.ptr, bias);
  upload(gamma_d.ptr, gamma);
  upload(beta_d.ptr, beta);
  CHECK_CUDA(cudaMemset(out_d.ptr, 0xff, count * sizeof(T)));  // NaN in fp32 and fp16

  fusedrt::gpu::AddLayerNormArgs<T> p{};
  p.in = in_d.ptr + shift;
  p.residual = with_residual ? residual_d.ptr : nullptr;
  p.bias = with_bias ? bias_d.ptr : nullptr;
  p.gamma = gamma_d.ptr;
  p.beta = beta_d.ptr;
  p.eps = kEps;
  p.rows = rows;
  p.cols = cols;
  p.out = alias == Alias::in ? in_d.ptr + shift : alias == Alias::residual ? residual_d.ptr : out_d.ptr;
  if (partial_count > 0) {
    p.in = nullptr;
    p.partials = partials_d.ptr + shift;
    p.partial_count = partial_count;
  }
  CHECK_CUDA(fusedrt::gpu::add_layernorm(p, nullptr));

  std::string label = with_residual && with_bias ? "residual + bias"
                      : with_residual             ? "residual"
                      : with_bias                 ? "bias"
                                                  : "no residual, no bias";
  if (alias == Alias::in) label += ", out = in";
  if (alias == Alias::residual) label += ", out = residual";
  if (partial_count > 0) label = std::to_string(partial_count) + " partials, " + label;
  if (unaligned) label += partial_count > 0 ? ", partials unaligned" : ", in unaligned";
  check("add_layernorm", label, rows, cols, p.out, want, rows);
}

template <class T>
void embed_case(Rng& rng, const std::vector<int>& lengths, int64_t padding, int64_t hidden, bool with_types) {
  constexpr int kVocab = 1000, kPositions = 512, kTypes = 2;
  std::vector<int32_t> cu(lengths.size() + 1, 0);
  for (size_t b = 0; b < lengths.size(); ++b) cu[b + 1] = cu[b] + lengths[b];
  const int64_t real = cu.back();
  const int64_t tokens = real + padding;
  std::vector<int32_t> ids(static_cast<size_t>(tokens)), types(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) {
    ids[t] = t < real ? rng.between(0, kVocab - 1) : (1 << 30);  // stale padding ids: far outside the table
    types[t] = t < real ? rng.between(0, kTypes - 1) : (1 << 30);
  }
  const HostTensor<T> word = random_rows<T>(rng, kVocab, hidden, 2.f);
  const HostTensor<T> position = random_rows<T>(rng, kPositions, hidden, 0.25f);
  const HostTensor<T> token_type = random_rows<T>(rng, kTypes, hidden, 0.25f);
  const std::vector<float> gamma = random_vector(rng, hidden, 0.5f, 1.5f);
  const std::vector<float> beta = random_vector(rng, hidden, -0.5f, 0.5f);

  // The CPU op's order of float additions: (word + token type) + position.
  std::vector<float> want(static_cast<size_t>(tokens * hidden), 0.f), row(static_cast<size_t>(hidden));
  for (int64_t t = 0; t < real; ++t) {
    const int64_t b = std::upper_bound(cu.begin(), cu.end(), t) - cu.begin() - 1;
    const int64_t type = with_types ? types[t] : 0;
    for (int64_t c = 0; c < hidden; ++c) {
      row[c] = (word.values[ids[t] * hidden + c] + token_type.values[type * hidden + c]) +
               position.values[(t - cu[b]) * hidden + c];
    }
    fusedrt::cpu::layernorm_row(row.data(), gamma.data(), beta.data(), kEps, hidden, want.data() + t * hidden);
  }

  DeviceBuffer<int32_t> ids_d(ids.size()), types_d(types.size()), cu_d(cu.size());
  DeviceBuffer<T> word_d(word.stored.size()), position_d(position.stored.size()),
      token_type_d(token_type.stored.size()), out_d(static_cast<size_t>(tokens * hidden));
  DeviceBuffer<float> gamma_d(hidden), beta_d(hidden);
  upload(ids_d.ptr, ids);
  upload(types_d.ptr, types);
  upload(cu_d.ptr, cu);
  upload(word_d.ptr, word.stored);
  upload(position_d.ptr, position.stored);
  upload(token_type_d.ptr, token_type.stored);
  upload(gamma_d.ptr, gamma);
  upload(beta_d.ptr, beta);
  CHECK_CUDA(cudaMemset(out_d.ptr, 0xff, static_cast<size_t>(tokens * hidden) * sizeof(T)));

  fusedrt::gpu::EmbedLayerNormArgs<T> p{};
  p.input_ids = ids_d.ptr;
  p.token_type_ids = with_types ? types_d.ptr : nullptr;
  p.cu_seqlens = cu_d.ptr;
  p.tokens = tokens;
  p.sequences = static_cast<int64_t>(lengths.size());
  p.hidden = hidden;
  p.word = word_d.ptr;
  p.position = position_d.ptr;
  p.token_type = token_type_d.ptr;
  p.gamma = gamma_d.ptr;
  p.beta = beta_d.ptr;
  p.eps = kEps;
  p.out = out_d.ptr;
  CHECK_CUDA(fusedrt::gpu::embed_layernorm(p, nullptr));

  const std::string label = std::to_string(lengths.size()) + " sequences, " + std::to_string(padding) +
                            " padding rows" + (with_types ? ", token types" : "");
  check("embed_layernorm", label, tokens, hidden, out_d.ptr, want, real);
}

void time_row(const char* op, int64_t rows, double bytes, size_t l2_bytes,
              const std::function<void(cudaStream_t)>& launch) {
  const double single = median_us(launch, 1, 200);
  const double graphed = median_us(launch, 20, 50);
  std::printf("| %s | %6lld | %7.2f%s | %7.2f | %7.2f | %6.0f |\n", op, static_cast<long long>(rows), bytes / 1e6,
              bytes < 0.5 * static_cast<double>(l2_bytes) ? " (L2)" : "", single, graphed, bytes / (graphed * 1e3));
}

// What a case leaves out, to see what each stream costs.
enum class Without { kNothing, kBias, kResidual };

// BERT-base width, fp16 activations, fp32 parameters and bias; `in` as
// partial_count fp32 partials when that is > 0.
void time_add_layernorm(int64_t rows, size_t l2_bytes, int partial_count = 0, Without without = Without::kNothing) {
  constexpr int64_t kCols = 768;
  Rng rng{0x51ed2701u + static_cast<uint64_t>(rows)};
  const HostTensor<__half> in = random_rows<__half>(rng, rows, kCols, 1.f);
  const HostTensor<__half> residual = random_rows<__half>(rng, rows, kCols, 1.f);
  const std::vector<float> params = random_vector(rng, 3 * kCols, 0.5f, 1.5f);  // bias, gamma, beta
  DeviceBuffer<__half> in_d(in.stored.size()), residual_d(residual.stored.size()), out_d(in.stored.size());
  DeviceBuffer<float> params_d(params.size()), partials_d(static_cast<size_t>(partial_count * rows * kCols));
  upload(in_d.ptr, in.stored);
  upload(residual_d.ptr, residual.stored);
  upload(params_d.ptr, params);
  CHECK_CUDA(cudaMemset(partials_d.ptr, 0, static_cast<size_t>(partial_count * rows * kCols) * sizeof(float)));
  fusedrt::gpu::AddLayerNormArgs<__half> p{};
  p.in = in_d.ptr;
  p.residual = without == Without::kResidual ? nullptr : residual_d.ptr;
  p.bias = without == Without::kBias ? nullptr : params_d.ptr;
  p.gamma = params_d.ptr + kCols;
  p.beta = params_d.ptr + 2 * kCols;
  p.eps = kEps;
  p.rows = rows;
  p.cols = kCols;
  p.out = out_d.ptr;
  p.partials = partial_count > 0 ? partials_d.ptr : nullptr;
  p.partial_count = partial_count;
  // Per element: in (or its partials), the residual, out; then the parameters.
  const double per_element = (partial_count > 0 ? partial_count * sizeof(float) : sizeof(__half)) +
                             (p.residual != nullptr ? sizeof(__half) : 0) + sizeof(__half);
  const double bytes = per_element * rows * kCols + (p.bias != nullptr ? 3.0 : 2.0) * kCols * sizeof(float);
  std::string op = "add_layernorm";
  if (partial_count > 0) op += ", " + std::to_string(partial_count) + " partials";
  if (without != Without::kNothing) op += without == Without::kBias ? ", no bias" : ", no residual";
  time_row(op.c_str(), rows, bytes, l2_bytes,
           [&](cudaStream_t s) { CHECK_CUDA(fusedrt::gpu::add_layernorm(p, s)); });
}

void time_embed_layernorm(int64_t sequences, int64_t length, size_t l2_bytes) {
  constexpr int64_t kHidden = 768, kVocab = 30522, kPositions = 512, kTypes = 2;
  const int64_t rows = sequences * length;
  Rng rng{0x2545f491u + static_cast<uint64_t>(rows)};
  std::vector<int32_t> ids(static_cast<size_t>(rows)), types(static_cast<size_t>(rows)), cu(sequences + 1);
  for (int64_t t = 0; t < rows; ++t) {
    ids[t] = rng.between(0, kVocab - 1);
    types[t] = rng.between(0, kTypes - 1);
  }
  for (int64_t b = 0; b <= sequences; ++b) cu[b] = static_cast<int32_t>(b * length);
  const HostTensor<__half> table = random_rows<__half>(rng, kVocab + kPositions + kTypes, kHidden, 1.f);
  const std::vector<float> params = random_vector(rng, 2 * kHidden, 0.5f, 1.5f);  // gamma, beta
  DeviceBuffer<int32_t> ids_d(ids.size()), types_d(types.size()), cu_d(cu.size());
  DeviceBuffer<__half> table_d(table.stored.size()), out_d(static_cast<size_t>(rows * kHidden));
  DeviceBuffer<float> params_d(params.size());
  upload(ids_d.ptr, ids);
  upload(types_d.ptr, types);
  upload(cu_d.ptr, cu);
  upload(table_d.ptr, table.stored);
  upload(params_d.ptr, params);
  fusedrt::gpu::EmbedLayerNormArgs<__half> p{};
  p.input_ids = ids_d.ptr;
  p.token_type_ids = types_d.ptr;
  p.cu_seqlens = cu_d.ptr;
  p.tokens = rows;
  p.sequences = sequences;
  p.hidden = kHidden;
  p.word = table_d.ptr;
  p.position = table_d.ptr + kVocab * kHidden;
  p.token_type = p.position + kPositions * kHidden;
  p.gamma = params_d.ptr;
  p.beta = params_d.ptr + kHidden;
  p.eps = kEps;
  p.out = out_d.ptr;
  // ids, token types, gathered word rows and the output per token; the
  // position rows of one sequence, both type rows and the parameters once.
  const double bytes = rows * (2.0 * sizeof(int32_t) + 2.0 * kHidden * sizeof(__half)) +
                       (length + kTypes) * kHidden * sizeof(__half) + 2.0 * kHidden * sizeof(float) +
                       cu.size() * sizeof(int32_t);
  time_row("embed_layernorm", rows, bytes, l2_bytes,
           [&](cudaStream_t s) { CHECK_CUDA(fusedrt::gpu::embed_layernorm(p, s)); });
}

template <class T>
void add_checks(Rng& rng) {
  // From kManyRows rows, widths up to 96 vectors (fp16 256, 384, 768; fp32
  // 256, 384) take a warp per two rows, 1 to 3 vectors a lane.
  for (int64_t cols : {768, 1024, 384, 256, 100, 2048, 4096}) {
    for (int64_t rows : {37, 1029}) {  // one row per block, then several (kManyRows), last block partial
      add_case<T>(rng, rows, cols, true, true);
      add_case<T>(rng, rows, cols, true, false);
      add_case<T>(rng, rows, cols, false, true);
      add_case<T>(rng, rows, cols, false, false);
    }
  }
  add_case<T>(rng, 1, 768, true, true);
  add_case<T>(rng, 1029, 768, true, true, Alias::residual);
  add_case<T>(rng, 37, 768, true, true, Alias::in);
  add_case<T>(rng, 37, 768, true, true, Alias::none, true);
  for (int partials : {1, 2, 3, 4, 5, 8}) {
    for (int64_t cols : {768, 1024, 2048, 100}) add_case<T>(rng, 37, cols, true, true, Alias::residual, false, partials);
  }
  add_case<T>(rng, 1029, 768, true, true, Alias::none, false, 4);  // several rows per block
  add_case<T>(rng, 37, 4104, true, true, Alias::none, false, 3);   // multi-pass
  add_case<T>(rng, 37, 768, false, true, Alias::none, true, 2);    // scalar
}

template <class T>
void embed_checks(Rng& rng) {
  std::vector<int> many(9);
  for (int& l : many) l = rng.between(120, 200);  // >= 1080 tokens: several rows per block
  for (int64_t hidden : {768, 384, 256, 100, 2048, 4096}) {
    embed_case<T>(rng, {7, 1, 30, 0, 64}, 26, hidden, true);
    embed_case<T>(rng, {128}, 0, hidden, false);
    embed_case<T>(rng, many, 37, hidden, true);
    embed_case<T>(rng, many, 3, hidden, false);
  }
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("layernorm_test on %s (sm_%d%d, %d SMs, %d MB L2)\n\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20);
  std::printf("Tolerance per element: %.0e * (1 + |want|), plus 2^-11 * |want| for fp16 outputs; padding rows 0.\n\n",
              kFp32Tolerance);
  std::printf("| op | case | dtype | cols | rows | max abs err | / tolerance | result |\n");
  std::printf("| --- | --- | --- | ---: | ---: | ---: | ---: | --- |\n");
  Rng rng{0x9e3779b97f4a7c15ull};
  add_checks<float>(rng);
  add_checks<__half>(rng);
  embed_checks<float>(rng);
  embed_checks<__half>(rng);

  std::printf("\nTiming, hidden 768, fp16 activations, fp32 parameters, median of 200 single launches and of 50\n");
  std::printf("graphs of 20 launches (per launch); GB/s from the graphed time. MB: bytes each launch must move\n");
  std::printf("at least; (L2): under half the L2, so repeats find them in L2, as a run does after the GEMM.\n\n");
  std::printf("| op | rows | MB | single us | graphed us | GB/s |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
  const size_t l2 = static_cast<size_t>(prop.l2CacheSize);
  for (int64_t rows : {128, 512, 4096, 49152}) time_add_layernorm(rows, l2);
  // What a stream costs at 32 x 128: the parameters (bias), the residual.
  for (Without without : {Without::kBias, Without::kResidual}) time_add_layernorm(4096, l2, 0, without);
  // What the GEMM runner's choice of split-K partials (native/cuda_gemm.cpp)
  // costs the LayerNorm after it, at the rows a fill-mask run has.
  for (int64_t rows : {1, 8, 128}) {
    if (rows != 128) time_add_layernorm(rows, l2);
    for (int partials : {2, 3, 4, 6, 8, 16}) time_add_layernorm(rows, l2, partials);
  }
  time_add_layernorm(1024, l2, 4);
  time_embed_layernorm(1, 128, l2);
  time_embed_layernorm(4, 128, l2);
  time_embed_layernorm(32, 128, l2);
  time_embed_layernorm(128, 384, l2);

  std::printf("\nlayernorm_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
