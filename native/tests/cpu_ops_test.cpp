// Checks every CPU op against a naive double-precision reference on random
// inputs, with thread pools of 1 and 4 threads. Prints one line per case
// ("PASS <op> ..." or "FAIL <op> ...") and exits non-zero on any failure.
// Run by test/cpu-ops.test.ts; build target fusedrt_cpu_ops_test.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "../e4m3.h"
#include "../half.h"
#include "ops.h"

using namespace fusedrt::cpu;

namespace {

int g_cases = 0;
int g_failures = 0;

void report(bool ok, const char* op, const std::string& detail, double error, double tolerance) {
  ++g_cases;
  if (!ok) ++g_failures;
  std::printf("%s %s %s max_err=%.3g tol=%.3g\n", ok ? "PASS" : "FAIL", op, detail.c_str(), error, tolerance);
}

std::mt19937 g_rng(20240601);

std::vector<float> random_floats(size_t count, float low, float high) {
  std::uniform_real_distribution<float> dist(low, high);
  std::vector<float> values(count);
  for (auto& v : values) v = dist(g_rng);
  return values;
}

std::vector<int32_t> cu_from_lengths(const std::vector<int32_t>& lengths) {
  std::vector<int32_t> cu{0};
  for (int32_t len : lengths) cu.push_back(cu.back() + len);
  return cu;
}

std::string lengths_text(const std::vector<int32_t>& lengths) {
  std::string text;
  for (size_t i = 0; i < lengths.size(); ++i) text += (i ? "," : "") + std::to_string(lengths[i]);
  return text;
}

// ---- thread pool ---------------------------------------------------------

void test_thread_pool(ThreadPool& pool) {
  const std::string threads = "threads=" + std::to_string(pool.size());
  bool ok = true;
  for (int64_t n : {0, 1, 7, 100, 1000}) {
    for (int64_t min_chunk : {1, 3, 64}) {
      std::vector<std::atomic<int>> visits(static_cast<size_t>(n));
      for (auto& v : visits) v = 0;
      std::atomic<bool> short_chunk{false};
      pool.parallel_for(n, min_chunk, [&](int64_t begin, int64_t end) {
        if (end - begin < min_chunk && end != n) short_chunk = true;
        for (int64_t i = begin; i < end; ++i) ++visits[static_cast<size_t>(i)];
      });
      for (auto& v : visits) ok = ok && v == 1;
      ok = ok && !short_chunk;
    }
  }
  report(ok, "thread_pool", "coverage " + threads, ok ? 0 : 1, 0);

  // Many small jobs back to back: a lost wake-up or a stale worker shows up
  // as a hang or a wrong sum.
  std::atomic<int64_t> total{0};
  for (int round = 0; round < 2000; ++round) {
    pool.parallel_for(16, 1, [&](int64_t begin, int64_t end) { total += end - begin; });
  }
  report(total == 2000 * 16, "thread_pool", "repeated " + threads, static_cast<double>(2000 * 16 - total), 0);

  bool thrown = false;
  try {
    pool.parallel_for(100, 1, [](int64_t begin, int64_t) {
      if (begin == 0) throw std::runtime_error("chunk failed");
    });
  } catch (const std::runtime_error&) {
    thrown = true;
  }
  std::atomic<int64_t> after{0};
  pool.parallel_for(100, 1, [&](int64_t begin, int64_t end) { after += end - begin; });
  report(thrown && after == 100, "thread_pool", "exception " + threads, thrown && after == 100 ? 0 : 1, 0);
}

// The calling thread's nice value; 0 where threads have none of their own.
int thread_nice() {
#if defined(__linux__)
  return getpriority(PRIO_PROCESS, static_cast<id_t>(syscall(SYS_gettid)));
#else
  return 0;
#endif
}

// run(): a background pool's task runs on its own lead thread, and it and
// every thread that takes chunks run kBackgroundNice below the caller (on
// Linux), which keeps its own priority; errors come back through run(); a
// normal pool runs the task on the caller.
// Whether this system lets a thread lower its own priority, asked of the
// kernel directly (a sandbox may forbid it; the pool then keeps its threads'
// priority); always false where threads have no nice value of their own.
bool can_lower_priority() {
#if defined(__linux__)
  bool lowered = false;
  std::thread([&] {
    const auto thread = static_cast<id_t>(syscall(SYS_gettid));
    lowered = setpriority(PRIO_PROCESS, thread, std::min(19, getpriority(PRIO_PROCESS, thread) + 1)) == 0;
  }).join();
  return lowered;
#else
  return false;
#endif
}

void test_background_pool(int threads) {
  const std::string detail = "threads=" + std::to_string(threads);
  const int caller_nice = thread_nice();
  const int want_nice = can_lower_priority() ? std::min(19, caller_nice + kBackgroundNice) : caller_nice;
  ThreadPool pool(threads, true);
  const std::thread::id caller = std::this_thread::get_id();
  std::atomic<bool> on_caller{false};
  std::atomic<int> wrong_nice{0};
  std::atomic<int64_t> total{0};
  for (int round = 0; round < 500; ++round) {
    pool.run([&] {
      if (std::this_thread::get_id() == caller) on_caller = true;
      if (thread_nice() != want_nice) ++wrong_nice;
      pool.parallel_for(64, 1, [&](int64_t begin, int64_t end) {
        if (thread_nice() != want_nice) ++wrong_nice;
        total += end - begin;
      });
    });
  }
  const bool ran = !on_caller && total == 500 * 64;
  report(ran, "thread_pool", "background run() on the lead thread " + detail, ran ? 0 : 1, 0);
  report(wrong_nice == 0 && thread_nice() == caller_nice, "thread_pool",
         "background nice " + std::to_string(want_nice) + ", caller's kept " + detail, wrong_nice, 0);

  bool thrown = false;
  try {
    pool.run([] { throw std::runtime_error("run failed"); });
  } catch (const std::runtime_error&) {
    thrown = true;
  }
  std::atomic<int64_t> after{0};
  pool.run([&] { pool.parallel_for(10, 1, [&](int64_t begin, int64_t end) { after += end - begin; }); });
  report(thrown && after == 10, "thread_pool", "background run() rethrows, then runs again " + detail,
         thrown && after == 10 ? 0 : 1, 0);

  ThreadPool normal(threads);
  bool inline_run = false;
  normal.run([&] { inline_run = std::this_thread::get_id() == caller && thread_nice() == caller_nice; });
  report(inline_run, "thread_pool", "normal run() on the caller " + detail, inline_run ? 0 : 1, 0);
}

// ---- gemm ----------------------------------------------------------------

constexpr double kPi = 3.14159265358979323846;

double activate_reference(Activation activation, double x) {
  switch (activation) {
    case Activation::kNone: return x;
    case Activation::kGelu: return 0.5 * x * (1.0 + std::erf(x / std::sqrt(2.0)));
    case Activation::kGeluTanh:
      return 0.5 * x * (1.0 + std::tanh(std::sqrt(2.0 / kPi) * (x + 0.044715 * x * x * x)));
    case Activation::kRelu: return x > 0 ? x : 0;
    case Activation::kTanh: return std::tanh(x);
  }
  return x;
}

struct GemmError {
  double worst_ratio = 0;  // err/tol, must stay <= 1
  double worst_abs = 0;
};

// Which gemm a check runs: gemm() on the plain weight, or gemm_packed()
// with one micro-kernel on the weight packed by pack_gemm_weight().
struct GemmVariant {
  bool packed;
  GemmKernel kernel;
};

std::string variant_name(const GemmVariant& v) {
  return v.packed ? std::string("packed/") + gemm_kernel_name(v.kernel) : gemm_implementation();
}

// The tolerance scales with the rounding a float sum can carry: 1e-6 of
// sum |in·weight| + |bias|, at least 1e-6.
GemmError gemm_error(ThreadPool& pool, const GemmVariant& variant, int64_t rows, int64_t n, int64_t k,
                     Activation activation, bool with_bias) {
  const auto in = random_floats(static_cast<size_t>(rows * k), -1, 1);
  const auto weight = random_floats(static_cast<size_t>(n * k), -1, 1);
  const auto bias = random_floats(static_cast<size_t>(n), -1, 1);
  std::vector<float> out(static_cast<size_t>(rows * n), NAN);
  const GemmParams params{in.data(), weight.data(), with_bias ? bias.data() : nullptr, activation, rows, n, k, out.data()};
  if (variant.packed) {
    // NaN-filled: a packed-layout slot the packing forgot to write shows up.
    std::vector<float> packed(static_cast<size_t>(n * k), NAN);
    gemm_packed(params, pack_gemm_weight(weight.data(), n, k, packed.data()), pool, variant.kernel);
  } else {
    gemm(params, pool);
  }

  GemmError result;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      double sum = with_bias ? bias[c] : 0.0;
      double magnitude = with_bias ? std::fabs(bias[c]) : 0.0;
      for (int64_t q = 0; q < k; ++q) {
        sum += static_cast<double>(in[r * k + q]) * weight[c * k + q];
        magnitude += std::fabs(static_cast<double>(in[r * k + q]) * weight[c * k + q]);
      }
      const double error = std::fabs(out[r * n + c] - activate_reference(activation, sum));
      const double ratio = error / (1e-6 * magnitude + 1e-6);
      result.worst_abs = std::max(result.worst_abs, error);
      result.worst_ratio = std::isnan(error) ? INFINITY : std::max(result.worst_ratio, ratio);
    }
  }
  return result;
}

void check_gemm(ThreadPool& pool, const GemmVariant& variant, int64_t rows, int64_t n, int64_t k,
                Activation activation, bool with_bias) {
  const GemmError e = gemm_error(pool, variant, rows, n, k, activation, with_bias);
  char detail[192];
  std::snprintf(detail, sizeof detail, "%s rows=%lld n=%lld k=%lld act=%s bias=%s threads=%d max_abs_err=%.3g (max_err is err/tol)",
                variant_name(variant).c_str(), static_cast<long long>(rows), static_cast<long long>(n),
                static_cast<long long>(k), activation_name(activation), with_bias ? "yes" : "no", pool.size(),
                e.worst_abs);
  report(e.worst_ratio <= 1.0, "gemm", detail, e.worst_ratio, 1.0);
}

// The plain gemm, then the packed one with every micro-kernel this CPU runs.
std::vector<GemmVariant> gemm_variants() {
  std::vector<GemmVariant> variants{{false, GemmKernel::kBest}, {true, GemmKernel::kBaseline}};
  if (gemm_best_kernel() == GemmKernel::kAvx2 || gemm_best_kernel() == GemmKernel::kAvx512) {
    variants.push_back({true, GemmKernel::kAvx2});
  }
  if (gemm_best_kernel() == GemmKernel::kAvx512) variants.push_back({true, GemmKernel::kAvx512});
  return variants;
}

void test_gemm(ThreadPool& pool) {
  struct Shape {
    int64_t rows, n, k;
  };
  // Ragged against the packed panel width (32), the micro-kernel rows (4, 6,
  // 12), the k block (256) and the tile grid; n = 1 and k = 1 included.
  const Shape shapes[] = {{1, 1, 1},      {1, 7, 1},       {3, 5, 17},     {5, 1, 9},       {2, 3, 8},
                          {17, 33, 65},   {4, 3, 257},     {64, 96, 128},  {130, 50, 300},  {128, 384, 384},
                          {37, 1536, 384}, {9, 100, 1536}, {300, 1, 1},    {13, 64, 513},   {25, 95, 31}};
  const Activation activations[] = {Activation::kNone, Activation::kGelu, Activation::kGeluTanh,
                                    Activation::kRelu, Activation::kTanh};
  for (const GemmVariant& variant : gemm_variants()) {
    int index = 0;
    for (const Shape& s : shapes) {
      for (Activation activation : activations) {
        check_gemm(pool, variant, s.rows, s.n, s.k, activation, index++ % 2 == 0);
      }
    }
  }
}

// Every row count from 1 to 300 (each micro-kernel row remainder, one and
// several tiles) with a ragged last panel; one line per variant.
void test_gemm_packed_rows(ThreadPool& pool) {
  for (const GemmVariant& variant : gemm_variants()) {
    if (!variant.packed) continue;
    GemmError worst;
    int64_t worst_rows = 0;
    for (int64_t rows = 1; rows <= 300; ++rows) {
      const GemmError e = gemm_error(pool, variant, rows, 45, 19, Activation::kGelu, rows % 2 == 0);
      if (!(e.worst_ratio <= worst.worst_ratio)) worst_rows = rows;
      worst.worst_ratio = std::isnan(e.worst_ratio) ? INFINITY : std::max(worst.worst_ratio, e.worst_ratio);
      worst.worst_abs = std::max(worst.worst_abs, e.worst_abs);
    }
    report(worst.worst_ratio <= 1.0, "gemm",
           variant_name(variant) + " rows=1..300 n=45 k=19 act=gelu threads=" + std::to_string(pool.size()) +
               " worst at rows=" + std::to_string(worst_rows),
           worst.worst_ratio, 1.0);
  }
}

// GELU (erf) over its whole useful range, tails included: a 1×1 weight of 1
// makes gemm apply the activation to each input as is. 5e-7 absolute is the
// float rounding of the result near |x| = 5; std::erf in float does no better.
void test_gelu_range(ThreadPool& pool) {
  const int64_t rows = 8001;
  std::vector<float> in(rows), out(rows, NAN);
  for (int64_t r = 0; r < rows; ++r) in[r] = -12.0f + 24.0f * static_cast<float>(r) / static_cast<float>(rows - 1);
  const float one = 1.0f;
  gemm({in.data(), &one, nullptr, Activation::kGelu, rows, 1, 1, out.data()}, pool);
  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const double error = std::fabs(out[r] - activate_reference(Activation::kGelu, in[r]));
    worst = std::isnan(error) ? INFINITY : std::max(worst, error);
  }
  report(worst <= 5e-7, "gemm", "gelu over [-12, 12] threads=" + std::to_string(pool.size()), worst, 5e-7);
}

// Two pools multiplying at the same time, as two engines would: the OpenBLAS
// path must be safe for concurrent callers.
void test_gemm_concurrent() {
  std::atomic<bool> all_ok{true};
  std::vector<std::thread> engines;
  for (int e = 0; e < 2; ++e) {
    engines.emplace_back([&all_ok, e] {
      ThreadPool pool(2);
      std::mt19937 rng(static_cast<unsigned>(e));
      for (int round = 0; round < 3; ++round) {
        const int64_t rows = 64, n = 200, k = 160;
        std::vector<float> in(rows * k), weight(n * k), out(rows * n);
        std::uniform_real_distribution<float> dist(-1, 1);
        for (auto& v : in) v = dist(rng);
        for (auto& v : weight) v = dist(rng);
        gemm({in.data(), weight.data(), nullptr, Activation::kNone, rows, n, k, out.data()}, pool);
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t c = 0; c < n; ++c) {
            double sum = 0;
            for (int64_t q = 0; q < k; ++q) sum += static_cast<double>(in[r * k + q]) * weight[c * k + q];
            if (!(std::fabs(out[r * n + c] - sum) <= 1e-4)) all_ok = false;
          }
        }
      }
    });
  }
  for (auto& engine : engines) engine.join();
  report(all_ok, "gemm", std::string(gemm_implementation()) + " concurrent pools=2x2", all_ok ? 0 : 1, 1e-4);
}

// ---- attention -----------------------------------------------------------

void check_attention(ThreadPool& pool, const std::vector<int32_t>& lengths, int64_t heads, int64_t head_dim) {
  const auto cu = cu_from_lengths(lengths);
  const int64_t tokens = cu.back();
  const int64_t width = heads * head_dim;
  // Wide enough a range that the softmax is far from uniform.
  const auto qkv = random_floats(static_cast<size_t>(tokens * 3 * width), -3, 3);
  std::vector<float> out(static_cast<size_t>(tokens * width), NAN);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  attention({qkv.data(), cu.data(), static_cast<int64_t>(lengths.size()), heads, head_dim, scale, out.data()},
            pool);

  double worst = 0;
  std::vector<double> scores;
  for (size_t b = 0; b < lengths.size(); ++b) {
    const int64_t start = cu[b], len = lengths[b];
    scores.assign(static_cast<size_t>(len), 0);
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < len; ++i) {
        const float* q = &qkv[(start + i) * 3 * width + h * head_dim];
        double max_score = -INFINITY;
        for (int64_t j = 0; j < len; ++j) {
          const float* key = &qkv[(start + j) * 3 * width + width + h * head_dim];
          double dot = 0;
          for (int64_t d = 0; d < head_dim; ++d) dot += static_cast<double>(q[d]) * key[d];
          scores[j] = dot * scale;
          max_score = std::max(max_score, scores[j]);
        }
        double total = 0;
        for (auto& s : scores) total += (s = std::exp(s - max_score));
        for (int64_t d = 0; d < head_dim; ++d) {
          double value = 0;
          for (int64_t j = 0; j < len; ++j) value += scores[j] * qkv[(start + j) * 3 * width + 2 * width + h * head_dim + d];
          const double error = std::fabs(out[(start + i) * width + h * head_dim + d] - value / total);
          worst = std::isnan(error) ? INFINITY : std::max(worst, error);
        }
      }
    }
  }
  const double tolerance = 1e-5;
  report(worst <= tolerance, "attention",
         "lengths=" + lengths_text(lengths) + " heads=" + std::to_string(heads) + " head_dim=" +
             std::to_string(head_dim) + " threads=" + std::to_string(pool.size()),
         worst, tolerance);
}

void test_attention(ThreadPool& pool) {
  check_attention(pool, {1}, 1, 32);
  check_attention(pool, {1, 3, 7}, 2, 32);
  check_attention(pool, {5, 128, 1, 64}, 12, 64);
  check_attention(pool, {2, 0, 9}, 3, 128);
  check_attention(pool, {512}, 2, 64);
  check_attention(pool, {17, 4, 33}, 3, 24);  // ragged key blocks, head_dim not a multiple of 16
}

// attention_rows against the rows of attention() it stands for; zeros for
// query indices outside the batch. `query_rows` empty: random tokens (with
// repeats) and both kinds of out-of-range index; else those rows.
void check_attention_rows(ThreadPool& pool, const std::vector<int32_t>& lengths, int64_t heads, int64_t head_dim,
                          std::vector<int32_t> query_rows, const char* what) {
  const auto cu = cu_from_lengths(lengths);
  const int64_t tokens = cu.back();
  const int64_t width = heads * head_dim;
  const int64_t sequences = static_cast<int64_t>(lengths.size());
  if (query_rows.empty()) {
    std::uniform_int_distribution<int32_t> token_dist(0, static_cast<int32_t>(tokens - 1));
    for (int i = 0; i < 40; ++i) query_rows.push_back(token_dist(g_rng));
    query_rows.push_back(query_rows.front());
    query_rows.push_back(static_cast<int32_t>(tokens));
    query_rows.push_back(-1);
  }
  const auto qkv = random_floats(static_cast<size_t>(tokens * 3 * width), -3, 3);
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  std::vector<float> full(static_cast<size_t>(tokens * width), NAN);
  attention({qkv.data(), cu.data(), sequences, heads, head_dim, scale, full.data()}, pool);
  const int64_t rows = static_cast<int64_t>(query_rows.size());
  std::vector<float> out(static_cast<size_t>(rows * width), NAN);
  attention_rows({{qkv.data(), cu.data(), sequences, heads, head_dim, scale, out.data()}, query_rows.data(), rows}, pool);

  double worst = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t token = query_rows[r];
    const bool inside = token >= 0 && token < tokens;
    for (int64_t c = 0; c < width; ++c) {
      const double error = std::fabs(out[r * width + c] - (inside ? full[token * width + c] : 0.0f));
      worst = std::isnan(error) ? INFINITY : std::max(worst, error);
    }
  }
  const double tolerance = 1e-5;
  report(worst <= tolerance, "attention_rows",
         std::string(what) + " lengths=" + lengths_text(lengths) + " heads=" + std::to_string(heads) +
             " head_dim=" + std::to_string(head_dim) + " threads=" + std::to_string(pool.size()),
         worst, tolerance);
}

void test_attention_rows(ThreadPool& pool) {
  check_attention_rows(pool, {1, 3, 7}, 2, 32, {}, "random");
  check_attention_rows(pool, {5, 128, 1, 64}, 12, 64, {}, "random");
  check_attention_rows(pool, {2, 0, 9}, 3, 128, {}, "random");
  check_attention_rows(pool, {600}, 2, 24, {}, "random");
  // A batch's first tokens, as the "first" selection passes them: the
  // sequence boundaries, trailing padding sequences ending at the token count.
  const std::vector<int32_t> lengths{17, 4, 33};
  std::vector<int32_t> firsts = cu_from_lengths(lengths);
  firsts.push_back(firsts.back());
  check_attention_rows(pool, lengths, 3, 48, firsts, "first");
}

// ---- layernorms ----------------------------------------------------------

// out = LN(x) in double; returns the largest error of `got` against it.
double layernorm_error(const std::vector<double>& x, const float* gamma, const float* beta, double eps,
                       const float* got) {
  const size_t cols = x.size();
  double mean = 0, variance = 0;
  for (double v : x) mean += v;
  mean /= static_cast<double>(cols);
  for (double v : x) variance += (v - mean) * (v - mean);
  variance /= static_cast<double>(cols);
  double worst = 0;
  for (size_t c = 0; c < cols; ++c) {
    const double expected = (x[c] - mean) / std::sqrt(variance + eps) * gamma[c] + beta[c];
    const double error = std::fabs(got[c] - expected) / (1.0 + std::fabs(expected));
    worst = std::isnan(error) ? INFINITY : std::max(worst, error);
  }
  return worst;
}

void check_embed_layernorm(ThreadPool& pool, const std::vector<int32_t>& lengths, int64_t hidden, bool with_types) {
  const int64_t vocab = 50, max_positions = 64, type_vocab = 2;
  const auto cu = cu_from_lengths(lengths);
  const int64_t tokens = cu.back();
  std::uniform_int_distribution<int32_t> word_dist(0, vocab - 1), type_dist(0, type_vocab - 1);
  std::vector<int32_t> ids(static_cast<size_t>(tokens)), types(static_cast<size_t>(tokens));
  for (auto& id : ids) id = word_dist(g_rng);
  for (auto& type : types) type = type_dist(g_rng);
  const auto word = random_floats(static_cast<size_t>(vocab * hidden), -1, 1);
  // A large common offset in the positions: LayerNorm must not lose the
  // small differences under it.
  const auto position = random_floats(static_cast<size_t>(max_positions * hidden), 40, 42);
  const auto token_type = random_floats(static_cast<size_t>(type_vocab * hidden), -1, 1);
  const auto gamma = random_floats(static_cast<size_t>(hidden), 0.5, 1.5);
  const auto beta = random_floats(static_cast<size_t>(hidden), -0.5, 0.5);
  const float eps = 1e-12f;
  std::vector<float> out(static_cast<size_t>(tokens * hidden), NAN);
  embed_layernorm({ids.data(), with_types ? types.data() : nullptr, cu.data(), tokens,
                   static_cast<int64_t>(lengths.size()), hidden, word.data(), position.data(), token_type.data(),
                   gamma.data(), beta.data(), eps, out.data()},
                  pool);

  double worst = 0;
  std::vector<double> x(static_cast<size_t>(hidden));
  for (size_t b = 0; b < lengths.size(); ++b) {
    for (int64_t t = cu[b]; t < cu[b + 1]; ++t) {
      const int64_t type = with_types ? types[t] : 0;
      for (int64_t c = 0; c < hidden; ++c) {
        x[c] = static_cast<double>(word[ids[t] * hidden + c]) + token_type[type * hidden + c] +
               position[(t - cu[b]) * hidden + c];
      }
      worst = std::max(worst, layernorm_error(x, gamma.data(), beta.data(), eps, &out[t * hidden]));
    }
  }
  const double tolerance = 1e-5;
  report(worst <= tolerance, "embed_layernorm",
         "lengths=" + lengths_text(lengths) + " hidden=" + std::to_string(hidden) +
             " token_types=" + (with_types ? "yes" : "no") + " threads=" + std::to_string(pool.size()),
         worst, tolerance);
}

void test_embed_layernorm(ThreadPool& pool) {
  check_embed_layernorm(pool, {1}, 8, true);
  check_embed_layernorm(pool, {3, 1, 5}, 32, true);
  check_embed_layernorm(pool, {3, 1, 5}, 32, false);
  check_embed_layernorm(pool, {64, 0, 17, 40}, 768, true);
}

enum class Alias { kNone, kOutIsIn, kOutIsResidual };

void check_add_layernorm(ThreadPool& pool, int64_t rows, int64_t cols, bool with_residual, bool with_bias,
                         Alias alias) {
  auto in = random_floats(static_cast<size_t>(rows * cols), -2, 2);
  auto residual = random_floats(static_cast<size_t>(rows * cols), 30, 34);
  const auto bias = random_floats(static_cast<size_t>(cols), -1, 1);
  const auto gamma = random_floats(static_cast<size_t>(cols), 0.5, 1.5);
  const auto beta = random_floats(static_cast<size_t>(cols), -0.5, 0.5);
  const float eps = 1e-5f;
  const auto in_copy = in;
  const auto residual_copy = residual;
  std::vector<float> separate(static_cast<size_t>(rows * cols), NAN);
  float* out = alias == Alias::kOutIsIn ? in.data() : alias == Alias::kOutIsResidual ? residual.data() : separate.data();
  add_layernorm({in.data(), with_residual ? residual.data() : nullptr, with_bias ? bias.data() : nullptr, gamma.data(),
                 beta.data(), eps, rows, cols, out},
                pool);

  double worst = 0;
  std::vector<double> x(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      x[c] = static_cast<double>(in_copy[r * cols + c]) + (with_bias ? bias[c] : 0.0f) +
             (with_residual ? residual_copy[r * cols + c] : 0.0f);
    }
    worst = std::max(worst, layernorm_error(x, gamma.data(), beta.data(), eps, out + r * cols));
  }
  const char* alias_name = alias == Alias::kOutIsIn ? "out=in" : alias == Alias::kOutIsResidual ? "out=residual" : "none";
  const double tolerance = 1e-5;
  report(worst <= tolerance, "add_layernorm",
         "rows=" + std::to_string(rows) + " cols=" + std::to_string(cols) + " residual=" +
             (with_residual ? "yes" : "no") + " bias=" + (with_bias ? "yes" : "no") + " alias=" + alias_name +
             " threads=" + std::to_string(pool.size()),
         worst, tolerance);
}

void test_add_layernorm(ThreadPool& pool) {
  check_add_layernorm(pool, 1, 1, true, true, Alias::kNone);
  check_add_layernorm(pool, 1, 7, true, true, Alias::kNone);
  check_add_layernorm(pool, 33, 768, true, true, Alias::kNone);
  check_add_layernorm(pool, 33, 768, true, true, Alias::kOutIsIn);
  check_add_layernorm(pool, 33, 768, true, true, Alias::kOutIsResidual);
  check_add_layernorm(pool, 20, 65, false, true, Alias::kOutIsIn);
  check_add_layernorm(pool, 20, 65, true, false, Alias::kOutIsResidual);
  check_add_layernorm(pool, 5, 384, false, false, Alias::kNone);
}

// ---- gather_rows ---------------------------------------------------------

void test_gather_rows(ThreadPool& pool) {
  const int64_t tokens = 300, cols = 37;
  const auto in = random_floats(static_cast<size_t>(tokens * cols), -1, 1);
  for (int64_t rows_out : {1, 3, 200}) {
    std::uniform_int_distribution<int32_t> row_dist(0, tokens - 1);
    std::vector<int32_t> index(static_cast<size_t>(rows_out));
    for (auto& i : index) i = row_dist(g_rng);
    std::vector<float> out(static_cast<size_t>(rows_out * cols), NAN);
    gather_rows({in.data(), index.data(), rows_out, cols, out.data()}, pool);
    bool same = true;
    for (int64_t r = 0; r < rows_out; ++r) {
      same = same && std::memcmp(&out[r * cols], &in[index[r] * cols], cols * sizeof(float)) == 0;
    }
    report(same, "gather_rows",
           "rows_out=" + std::to_string(rows_out) + " cols=" + std::to_string(cols) +
               " threads=" + std::to_string(pool.size()),
           same ? 0 : 1, 0);
  }
}

// ---- mean_rows -----------------------------------------------------------

// Sequences of 1 to 300 rows and empty ones (a bucket's padding), against
// sums in double.
void test_mean_rows(ThreadPool& pool) {
  const int64_t cols = 41;
  const std::vector<int32_t> cu_seqlens = {0, 1, 301, 301, 358, 358};
  const int64_t sequences = static_cast<int64_t>(cu_seqlens.size()) - 1;
  const auto in = random_floats(static_cast<size_t>(cu_seqlens.back() * cols), -2, 2);
  std::vector<float> out(static_cast<size_t>(sequences * cols), NAN);
  mean_rows({in.data(), cu_seqlens.data(), sequences, cols, out.data()}, pool);
  double error = 0;
  for (int64_t b = 0; b < sequences; ++b) {
    const int64_t rows = cu_seqlens[b + 1] - cu_seqlens[b];
    for (int64_t c = 0; c < cols; ++c) {
      double sum = 0;
      for (int64_t t = cu_seqlens[b]; t < cu_seqlens[b + 1]; ++t) sum += in[t * cols + c];
      const double want = rows > 0 ? sum / static_cast<double>(rows) : 0.0;
      const double got = out[b * cols + c];
      error = std::isnan(got) ? INFINITY : std::max(error, std::fabs(got - want));
    }
  }
  const double tolerance = 1e-5;
  report(error <= tolerance, "mean_rows", "lengths 1, 300, 0, 57, 0 threads=" + std::to_string(pool.size()), error,
         tolerance);
}

// ---- half_to_float -------------------------------------------------------

// Every one of the 65536 half values against its value computed from the
// definition: normals, subnormals, zeros, infinities, NaNs.
void test_half_to_float() {
  std::vector<uint16_t> halves(65536);
  for (size_t i = 0; i < halves.size(); ++i) halves[i] = static_cast<uint16_t>(i);
  std::vector<float> floats(halves.size());
  half_to_float(halves.data(), floats.data(), static_cast<int64_t>(halves.size()));
  int wrong = 0;
  for (size_t i = 0; i < halves.size(); ++i) {
    const int exponent = (i >> 10) & 0x1f;
    const int mantissa = i & 0x3ff;
    const double sign = (i & 0x8000) ? -1.0 : 1.0;
    uint32_t got_bits;
    std::memcpy(&got_bits, &floats[i], sizeof got_bits);
    bool ok;
    if (exponent == 0x1f && mantissa != 0) {
      // NaN, with the payload kept in the top mantissa bits.
      ok = std::isnan(floats[i]) && ((got_bits >> 13) & 0x3ff) == static_cast<uint32_t>(mantissa) &&
           (got_bits >> 31) == (i >> 15);
    } else {
      const double expected = exponent == 0x1f ? sign * INFINITY
                              : exponent == 0  ? sign * std::ldexp(mantissa, -24)
                                               : sign * std::ldexp(1024 + mantissa, exponent - 25);
      const float expected_float = static_cast<float>(expected);
      uint32_t expected_bits;
      std::memcpy(&expected_bits, &expected_float, sizeof expected_bits);
      ok = got_bits == expected_bits;  // bit equality also checks the sign of zero
    }
    if (!ok) ++wrong;
  }
  report(wrong == 0, "half_to_float", "all 65536 values", wrong, 0);
}

// ---- float_to_half (native/half.h) ----------------------------------------

// Every finite half round-trips; midpoints between neighbouring halves round
// to the even one and values just off a midpoint to the nearer one;
// overflow, infinities and NaN map as IEEE says.
void test_float_to_half() {
  std::vector<uint16_t> halves(65536);
  for (size_t i = 0; i < halves.size(); ++i) halves[i] = static_cast<uint16_t>(i);
  std::vector<float> floats(halves.size());
  half_to_float(halves.data(), floats.data(), static_cast<int64_t>(halves.size()));
  int wrong = 0;
  for (size_t i = 0; i < halves.size(); ++i) {
    const bool nan = ((i >> 10) & 0x1f) == 0x1f && (i & 0x3ff) != 0;
    const uint16_t back = fusedrt::float_to_half(floats[i]);
    if (nan ? !(((back >> 10) & 0x1f) == 0x1f && (back & 0x3ff) != 0) : back != i) ++wrong;
    // Between i and i + 1 (same sign, both finite): the midpoint is exact in float.
    if ((i & 0x7fff) < 0x7bff) {
      const float mid = static_cast<float>((static_cast<double>(floats[i]) + floats[i + 1]) / 2);
      const uint16_t even = (i & 1) == 0 ? static_cast<uint16_t>(i) : static_cast<uint16_t>(i + 1);
      if (fusedrt::float_to_half(mid) != even) ++wrong;
      const float outward = std::nextafter(mid, floats[i + 1]);
      const float inward = std::nextafter(mid, floats[i]);
      if (fusedrt::float_to_half(outward) != i + 1 || fusedrt::float_to_half(inward) != i) ++wrong;
    }
  }
  const auto expect = [&](float value, uint16_t half) {
    if (fusedrt::float_to_half(value) != half) ++wrong;
  };
  expect(65520.f, 0x7c00);                            // halfway past the largest half: to inf
  expect(std::nextafter(65520.f, 0.f), 0x7bff);       // just below: the largest half
  expect(-1e30f, 0xfc00);
  expect(INFINITY, 0x7c00);
  expect(-INFINITY, 0xfc00);
  expect(std::ldexp(1.f, -25), 0x0000);               // half the smallest subnormal: to even (zero)
  expect(std::nextafter(std::ldexp(1.f, -25), 1.f), 0x0001);
  expect(-0.f, 0x8000);
  report(wrong == 0, "float_to_half", "round trips, ties, overflow", wrong, 0);
}

// ---- E4M3 (native/e4m3.h) -------------------------------------------------

// Every code decodes to its bit fields' value; every finite code rounds back
// to itself; a value between two neighbours rounds to the nearer, a midpoint
// to the one with an even mantissa; beyond 448 (and infinity) saturates.
void test_e4m3() {
  int wrong = 0;
  std::vector<float> values;  // the non-negative finite codes, ascending (0x00 .. 0x7e)
  for (int code = 0; code < 256; ++code) {
    const int exponent = (code >> 3) & 0xf;
    const int mantissa = code & 7;
    const double sign = (code & 0x80) ? -1.0 : 1.0;
    const float got = fusedrt::e4m3_to_float(static_cast<uint8_t>(code));
    if (exponent == 0xf && mantissa == 7) {
      if (!std::isnan(got)) ++wrong;
      continue;
    }
    const double expected = exponent == 0 ? sign * std::ldexp(mantissa, -9) : sign * std::ldexp(8 + mantissa, exponent - 10);
    if (got != static_cast<float>(expected) || std::signbit(got) != (sign < 0)) ++wrong;
    if (fusedrt::round_to_e4m3(got) != got) ++wrong;
    if (code < 0x80) values.push_back(got);
  }
  for (size_t i = 0; i + 1 < values.size(); ++i) {
    const float mid = (values[i] + values[i + 1]) / 2;  // exact in float
    const float even = (i % 2 == 0) ? values[i] : values[i + 1];
    if (fusedrt::round_to_e4m3(mid) != even || fusedrt::round_to_e4m3(-mid) != -even) ++wrong;
    if (fusedrt::round_to_e4m3(std::nextafter(mid, values[i])) != values[i]) ++wrong;
    if (fusedrt::round_to_e4m3(std::nextafter(mid, values[i + 1])) != values[i + 1]) ++wrong;
  }
  for (const float big : {448.f, 449.f, 464.f, 1e6f, INFINITY}) {
    if (fusedrt::round_to_e4m3(big) != 448.f || fusedrt::round_to_e4m3(-big) != -448.f) ++wrong;
  }
  if (!std::isnan(fusedrt::round_to_e4m3(NAN)) || fusedrt::round_to_e4m3(std::ldexp(1.f, -10)) != 0.f) ++wrong;
  report(wrong == 0, "e4m3", "codes, round trips, ties to even, saturation", wrong, 0);
}

}  // namespace

int main() {
  std::printf("gemm implementation: %s, packed kernel: %s\n", gemm_implementation(),
              gemm_kernel_name(GemmKernel::kBest));
  for (int threads : {1, 4}) {
    test_background_pool(threads);
    ThreadPool pool(threads);
    test_thread_pool(pool);
    test_gemm(pool);
    test_gemm_packed_rows(pool);
    test_gelu_range(pool);
    test_attention(pool);
    test_attention_rows(pool);
    test_embed_layernorm(pool);
    test_add_layernorm(pool);
    test_gather_rows(pool);
    test_mean_rows(pool);
  }
  test_gemm_concurrent();
  test_half_to_float();
  test_float_to_half();
  test_e4m3();
  std::printf("%s: %d cases, %d failed\n", g_failures == 0 ? "OK" : "FAILED", g_cases, g_failures);
  return g_failures == 0 ? 0 : 1;
}
