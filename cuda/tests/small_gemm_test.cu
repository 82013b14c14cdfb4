// small_gemm (cuda/small_gemm.cu) against a double-precision host reference
// computed from the same fp16 inputs: every tile (16, 32 and 64 rows) with
// 1, 2, 3, 5, 7 and one split per 64-wide K stage (as far as k has stages),
// on shapes with partial row and column tiles (rows 1 to 200, n 2 to 768),
// partial last K stages (k 8, 40, 776, 1000), with and without bias, under
// every activation; fp32 output (logits) on a shape with tails, every tile,
// with and without splits. Each configuration is queued three times back to back on
// one set of tile counters that is never re-zeroed: the three outputs must be
// bit-identical, the counters zero afterwards, nothing written around out
// (sentinels before it and past rows x n, as far as a whole last tile
// reaches) or past the workspace, and the NaNs after in and weight must not
// leak into a K tail. Two launches where the second reads the first's output
// and overwrites its input must still compute both right. Unsupported operands must be refused with
// cudaErrorInvalidValue and nothing queued. Then BERT-base GEMMs and the MLM
// decoder are timed in CUDA graphs, weights read from DRAM. Exit status 0
// only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/small_gemm_test cuda/tests/small_gemm_test.cu cuda/small_gemm.cu
//   /tmp/small_gemm_test
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "test_support.cuh"
#include "../small_gemm.cuh"

namespace {

using fusedrt::Activation;
using fusedrt::gpu::SmallGemmArgs;
using HalfArgs = SmallGemmArgs<__half>;
using fusedrt::gpu::SmallGemmConfig;
using fusedrt::test::DeviceBuffer;
using fusedrt::test::activate;
using fusedrt::test::kActivationCount;
using fusedrt::test::kActivations;
using fusedrt::test::Rng;

// Tolerance per element, against the reference from the same fp16 inputs
// (exact products, double sums). The kernel's fp32 sum takes one rounding per
// mma (k / 16 of them; splits shorten that chain and add splits - 1
// additions), each at most about an ulp of the running sum (tensor cores
// truncate). Here the running sums stay below 8 where k = 3072 (inputs in
// [-1, 1]: sigma 0.92) and below 16 where k <= 1000 (inputs in [-4, 4]: sigma
// <= 2.1), so even with every rounding the same way the error is at most
// 192 x 2^-21 ~ 9e-5 or 63 x 2^-20 ~ 6e-5; activations' slopes are at most
// 1.13. kAccumTolerance * (1 + |want|) leaves twice that. The fp16 output
// adds half an ulp, at most 2^-11 |want|. Tighter than an error of fp16
// accumulation (~1e-3 here) and than the gap between GELU's erf and tanh
// forms (up to 4.7e-4 near x = -2.7, where |GELU| is small).
constexpr double kAccumTolerance = 2e-4;
constexpr double kHalfUlp = 1.0 / 2048;

// The kernel's K stage, column tile and split limit (small_gemm.cu).
constexpr int64_t kStageK = fusedrt::gpu::kSmallGemmStageK;
constexpr int64_t kTileCols = 64;
constexpr int64_t kMaxSplits = 64;
constexpr int kTileRows[] = {16, 32, 64};

// Halves of sentinel before out (keeping it 128-byte aligned) and beyond a
// last column tile; halves of NaN after in and weight.
constexpr int64_t kGuard = 64;
constexpr unsigned char kSentinelByte = 0x5a;
constexpr uint16_t kSentinel = 0x5a5a;  // fp16 203.25: no output here comes near it
constexpr size_t kWorkspaceGuard = 4096;  // bytes past the workspace that must keep their poison
constexpr int kRepeats = 3;


double tolerance(double want) { return kAccumTolerance * (1 + std::fabs(want)) + kHalfUlp * std::fabs(want); }

uint16_t bits_of(__half h) {
  uint16_t b;
  std::memcpy(&b, &h, sizeof b);
  return b;
}

int64_t round_up(int64_t x, int64_t to) { return (x + to - 1) / to * to; }
int64_t k_stages(int64_t k) { return (k + kStageK - 1) / kStageK; }

// fp16 values uniform in [-range, range], and the same values for the reference.
struct Halves {
  std::vector<__half> stored;
  std::vector<double> values;
};

Halves random_halves(Rng& rng, int64_t count, float range) {
  Halves h;
  h.stored.reserve(static_cast<size_t>(count));
  h.values.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    h.stored.push_back(__float2half_rn(rng.uniform(-range, range)));
    h.values.push_back(__half2float(h.stored.back()));
  }
  return h;
}

// The values, then kGuard NaNs (dst holds size + kGuard halves).
void upload_then_nans(__half* dst, const std::vector<__half>& src) {
  CHECK_CUDA(cudaMemset(dst, 0xff, (src.size() + kGuard) * sizeof(__half)));
  CHECK_CUDA(cudaMemcpy(dst, src.data(), src.size() * sizeof(__half), cudaMemcpyHostToDevice));
}

int failures = 0;

// Split-K state shared by every check, as a runtime context shares it: the
// counters are zeroed once, in the constructor, and every launch must leave
// them zero.
struct SplitState {
  DeviceBuffer<float> partials;
  DeviceBuffer<int32_t> counters;
  int64_t counter_count;
  SplitState(size_t bytes, int64_t counters_needed)
      : partials(bytes / sizeof(float)), counters(counters_needed), counter_count(counters_needed) {
    CHECK_CUDA(cudaMemset(counters.ptr, 0, counter_count * sizeof(int32_t)));
  }
  bool counters_zero() const {
    std::vector<int32_t> host(static_cast<size_t>(counter_count));
    CHECK_CUDA(cudaMemcpy(host.data(), counters.ptr, host.size() * sizeof(int32_t), cudaMemcpyDeviceToHost));
    return std::all_of(host.begin(), host.end(), [](int32_t c) { return c == 0; });
  }
};

struct Shape {
  int64_t rows, n, k;
  bool bias;
  Activation activation;
  float in_range;  // in is uniform in [-in_range, in_range]
};

// 1, 2, 3, 5, 7 and one split per K stage, as far as k has stages (at most 64).
std::vector<int> splits_for(int64_t k) {
  const int64_t most = std::min(k_stages(k), kMaxSplits);
  std::vector<int> splits;
  for (int64_t s : {int64_t{1}, int64_t{2}, int64_t{3}, int64_t{5}, int64_t{7}, most}) {
    if (s <= most && (splits.empty() || splits.back() < s)) splits.push_back(static_cast<int>(s));
  }
  return splits;
}

// Worst errors of one shape and tile over its splits, and the first failure.
struct Tally {
  double worst_error = 0;
  double worst_ratio = 0;
  double other_ratio = std::numeric_limits<double>::infinity();  // nearest other activation's
  std::string failure;
  void fail(int splits, const std::string& why) {
    if (failure.empty()) failure = "splits " + std::to_string(splits) + ": " + why;
  }
};

// Device operands of one shape, and kRepeats outputs, each between sentinels.
struct Operands {
  int64_t body, total;  // halves of one out, and of one out with its sentinels
  DeviceBuffer<__half> in, weight, bias, outs;
  Operands(const Shape& s, const Halves& in_h, const Halves& weight_h, const Halves& bias_h)
      : body(s.rows * s.n),
        // A whole last row tile of 64 rows and column tile of 64 stays inside.
        total(kGuard + body + (round_up(s.rows, 64) - s.rows) * s.n + kTileCols),
        in(in_h.stored.size() + kGuard),
        weight(weight_h.stored.size() + kGuard),
        bias(bias_h.stored.size()),
        outs(static_cast<size_t>(kRepeats * total)) {
    upload_then_nans(in.ptr, in_h.stored);
    upload_then_nans(weight.ptr, weight_h.stored);
    CHECK_CUDA(cudaMemcpy(bias.ptr, bias_h.stored.data(), bias_h.stored.size() * sizeof(__half),
                          cudaMemcpyHostToDevice));
  }
};

// Queues one configuration kRepeats times back to back, each into its own
// out, on one set of counters that is not re-zeroed, and checks all it
// promises.
void check_config(const Shape& s, const SmallGemmConfig& config, Operands& d, SplitState& split,
                  const std::vector<double> (&wants)[kActivationCount], int own, cudaStream_t stream, Tally& tally) {
  HalfArgs args{};
  args.rows = s.rows;
  args.n = s.n;
  args.k = s.k;
  args.in = d.in.ptr;
  args.weight = d.weight.ptr;
  args.bias = s.bias ? d.bias.ptr : nullptr;
  args.activation = s.activation;
  if (config.splits > 1) {
    args.partials = split.partials.ptr;
    args.tile_counters = split.counters.ptr;
  }
  const size_t workspace = fusedrt::gpu::small_gemm_workspace_bytes(s.rows, s.n, config);
  const size_t bytes = static_cast<size_t>(d.total) * sizeof(__half);
  CHECK_CUDA(cudaMemsetAsync(d.outs.ptr, kSentinelByte, kRepeats * bytes, stream));
  // Poisoned partials: a sum that reads one not written by the first launch is NaN.
  CHECK_CUDA(cudaMemsetAsync(split.partials.ptr, 0xff, workspace + kWorkspaceGuard, stream));
  for (int r = 0; r < kRepeats; ++r) {
    args.out = d.outs.ptr + r * d.total + kGuard;
    const cudaError_t status = fusedrt::gpu::small_gemm(args, config, stream);
    if (status != cudaSuccess) {
      CHECK_CUDA(cudaStreamSynchronize(stream));
      tally.fail(config.splits, std::string("launch: ") + cudaGetErrorString(status));
      return;
    }
  }
  std::vector<__half> got(static_cast<size_t>(kRepeats * d.total));
  std::vector<unsigned char> after_workspace(kWorkspaceGuard);
  CHECK_CUDA(cudaStreamSynchronize(stream));
  CHECK_CUDA(cudaMemcpy(got.data(), d.outs.ptr, got.size() * sizeof(__half), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(after_workspace.data(), reinterpret_cast<unsigned char*>(split.partials.ptr) + workspace,
                        kWorkspaceGuard, cudaMemcpyDeviceToHost));

  for (int r = 1; r < kRepeats; ++r) {
    if (std::memcmp(got.data(), got.data() + r * d.total, bytes) != 0) {
      tally.fail(config.splits, "launch " + std::to_string(r + 1) + " differs from launch 1");
    }
  }
  if (!split.counters_zero()) tally.fail(config.splits, "tile counters left non-zero");
  if (std::any_of(after_workspace.begin(), after_workspace.end(), [](unsigned char b) { return b != 0xff; })) {
    tally.fail(config.splits, "wrote past the workspace");
  }
  int64_t overwritten = 0;
  for (int64_t i = 0; i < kRepeats * d.total; ++i) {
    const int64_t at = i % d.total;
    if ((at < kGuard || at >= kGuard + d.body) && bits_of(got[i]) != kSentinel) ++overwritten;
  }
  if (overwritten) tally.fail(config.splits, std::to_string(overwritten) + " halves written outside out");

  // The launches are bit-identical (or that failed above): the first stands for all.
  int64_t unwritten = 0;
  double other[kActivationCount] = {};
  for (int64_t i = 0; i < d.body; ++i) {
    const __half h = got[kGuard + i];
    if (bits_of(h) == kSentinel) {
      ++unwritten;
      continue;
    }
    const double g = __half2float(h);
    const double want = wants[own][i];
    const double error = std::fabs(g - want);
    const double ratio = std::isnan(g) ? std::numeric_limits<double>::infinity() : error / tolerance(want);
    tally.worst_error = std::max(tally.worst_error, error);
    if (ratio > 1 && tally.worst_ratio <= 1) {
      char where[128];
      std::snprintf(where, sizeof where, "out[%lld, %lld] = %.6g, want %.6g", static_cast<long long>(i / s.n),
                    static_cast<long long>(i % s.n), g, want);
      tally.fail(config.splits, where);
    }
    tally.worst_ratio = std::max(tally.worst_ratio, ratio);
    for (int a = 0; a < kActivationCount; ++a) {
      other[a] = std::max(other[a], std::fabs(g - wants[a][i]) / tolerance(wants[a][i]));
    }
  }
  if (unwritten) tally.fail(config.splits, std::to_string(unwritten) + " outputs not written");
  // The case must tell its activation from every other: an output within
  // tolerance of another activation's reference would hide a mix-up.
  if (s.activation != Activation::kNone) {
    for (int a = 0; a < kActivationCount; ++a) {
      if (a != own) tally.other_ratio = std::min(tally.other_ratio, other[a]);
    }
    if (tally.other_ratio <= 1) tally.fail(config.splits, "output also within tolerance of another activation");
  }
}

// in [rows, k] . weight[n, k]^T in double (products of fp16 values are exact).
std::vector<double> matmul(const std::vector<double>& in, const std::vector<double>& weight, int64_t rows, int64_t n,
                           int64_t k) {
  std::vector<double> out(static_cast<size_t>(rows * n));
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      const double* a = &in[r * k];
      const double* w = &weight[c * k];
      double sum[4] = {};  // k is a multiple of 8; four chains are quicker than one
      for (int64_t i = 0; i < k; i += 4) {
        for (int j = 0; j < 4; ++j) sum[j] += a[i + j] * w[i + j];
      }
      out[r * n + c] = (sum[0] + sum[1]) + (sum[2] + sum[3]);
    }
  }
  return out;
}

void check_shape(const Shape& s, SplitState& split, Rng& rng, cudaStream_t stream) {
  const Halves in = random_halves(rng, s.rows * s.k, s.in_range);
  const Halves weight = random_halves(rng, s.n * s.k, 0.05f);
  const Halves bias = random_halves(rng, s.n, 0.1f);
  std::vector<double> pre = matmul(in.values, weight.values, s.rows, s.n, s.k);
  if (s.bias) {
    for (size_t i = 0; i < pre.size(); ++i) pre[i] += bias.values[i % s.n];
  }
  std::vector<double> wants[kActivationCount];
  int own = 0;
  for (int a = 0; a < kActivationCount; ++a) {
    if (kActivations[a] == s.activation) own = a;
    wants[a].resize(pre.size());
    std::transform(pre.begin(), pre.end(), wants[a].begin(), [&](double x) { return activate(x, kActivations[a]); });
  }

  Operands d(s, in, weight, bias);
  const std::vector<int> splits = splits_for(s.k);
  std::string splits_text;
  for (int sp : splits) splits_text += (splits_text.empty() ? "" : ",") + std::to_string(sp);
  for (int tile_rows : kTileRows) {
    Tally tally;
    for (int sp : splits) check_config(s, SmallGemmConfig{tile_rows, sp}, d, split, wants, own, stream, tally);
    const bool ok = tally.failure.empty();
    if (!ok) ++failures;
    char other[16] = "-";
    if (s.activation != Activation::kNone) std::snprintf(other, sizeof other, "%.1f", tally.other_ratio);
    std::printf("| %3lld | %3lld | %4lld | %-4s | %-9s | %2d | %-15s | %8.2e | %5.3f | %6s | %s |\n",
                static_cast<long long>(s.rows), static_cast<long long>(s.n), static_cast<long long>(s.k),
                s.bias ? "bias" : "-", activation_name(s.activation), tile_rows, splits_text.c_str(),
                tally.worst_error, tally.worst_ratio, other, ok ? "ok" : ("FAIL " + tally.failure).c_str());
  }
}

void report(const std::string& label, bool ok) {
  if (!ok) ++failures;
  std::printf("| %-72s | %s |\n", label.c_str(), ok ? "ok" : "FAIL");
}

// Worst error / tolerance of got (fp16, on the host) against want.
double worst_ratio(const std::vector<__half>& got, const std::vector<double>& want) {
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = __half2float(got[i]);
    worst = std::max(worst, std::isnan(g) ? std::numeric_limits<double>::infinity()
                                          : std::fabs(g - want[i]) / tolerance(want[i]));
  }
  return worst;
}

// Two launches back to back, the second reading the first's out and
// overwriting the first's in, sharing the workspace: both must compute
// right.
void check_chain(const SmallGemmConfig& config, SplitState& split, Rng& rng, cudaStream_t stream) {
  constexpr int64_t kRows = 64, kWidth = 768;
  const size_t count = kRows * kWidth;
  const Halves x = random_halves(rng, kRows * kWidth, 1.f);
  const Halves w1 = random_halves(rng, kWidth * kWidth, 0.05f);
  const Halves w2 = random_halves(rng, kWidth * kWidth, 0.05f);
  DeviceBuffer<__half> x_d(count), y_d(count), w1_d(w1.stored.size()), w2_d(w2.stored.size());
  CHECK_CUDA(cudaMemcpy(x_d.ptr, x.stored.data(), count * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(w1_d.ptr, w1.stored.data(), w1.stored.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(w2_d.ptr, w2.stored.data(), w2.stored.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(y_d.ptr, kSentinelByte, count * sizeof(__half)));

  HalfArgs first{};
  first.rows = kRows;
  first.n = kWidth;
  first.k = kWidth;
  first.in = x_d.ptr;
  first.weight = w1_d.ptr;
  first.out = y_d.ptr;
  if (config.splits > 1) {
    first.partials = split.partials.ptr;
    first.tile_counters = split.counters.ptr;
  }
  HalfArgs second = first;
  second.in = y_d.ptr;
  second.weight = w2_d.ptr;
  second.out = x_d.ptr;
  CHECK_CUDA(fusedrt::gpu::small_gemm(first, config, stream));
  CHECK_CUDA(fusedrt::gpu::small_gemm(second, config, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<__half> y(count), x_after(count);
  CHECK_CUDA(cudaMemcpy(y.data(), y_d.ptr, count * sizeof(__half), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(x_after.data(), x_d.ptr, count * sizeof(__half), cudaMemcpyDeviceToHost));
  std::vector<double> y_values(count);
  std::transform(y.begin(), y.end(), y_values.begin(), [](__half h) { return static_cast<double>(__half2float(h)); });
  const double first_ratio = worst_ratio(y, matmul(x.values, w1.values, kRows, kWidth, kWidth));
  const double second_ratio = worst_ratio(x_after, matmul(y_values, w2.values, kRows, kWidth, kWidth));
  char label[128];
  std::snprintf(label, sizeof label, "back to back, 64 x 768 x 768, tile %d, splits %d: / tol %.3f, %.3f",
                config.tile_rows, config.splits, first_ratio, second_ratio);
  report(label, first_ratio <= 1 && second_ratio <= 1);
}

// fp32 out and bias (what logits use): every tile, no split and 3 splits,
// row, column and K tails; against the reference without fp16's rounding,
// twice (bit-identical), nothing written around out. out must then be
// 8-byte aligned: 4 is refused.
void check_float_out(SplitState& split, Rng& rng, cudaStream_t stream) {
  constexpr int64_t kRows = 37, kN = 130, kK = 776, kBody = kRows * kN;
  constexpr uint32_t kFloatSentinel = 0x5a5a5a5a;  // 1.5e16: no output comes near it
  const Halves in = random_halves(rng, kRows * kK, 1.f);
  const Halves weight = random_halves(rng, kN * kK, 0.05f);
  std::vector<float> bias(kN);
  for (float& b : bias) b = rng.uniform(-0.1f, 0.1f);
  std::vector<double> want = matmul(in.values, weight.values, kRows, kN, kK);
  for (size_t i = 0; i < want.size(); ++i) want[i] += bias[i % kN];
  // Sentinels before out and past it, as far as a whole last tile reaches.
  const int64_t total = kGuard + round_up(kRows, 64) * kN + kTileCols;
  DeviceBuffer<__half> in_d(in.stored.size()), weight_d(weight.stored.size());
  DeviceBuffer<float> bias_d(kN), out_d(2 * total);
  CHECK_CUDA(cudaMemcpy(in_d.ptr, in.stored.data(), in.stored.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(weight_d.ptr, weight.stored.data(), weight.stored.size() * sizeof(__half),
                        cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(bias_d.ptr, bias.data(), kN * sizeof(float), cudaMemcpyHostToDevice));
  SmallGemmArgs<float> args{};
  args.rows = kRows;
  args.n = kN;
  args.k = kK;
  args.in = in_d.ptr;
  args.weight = weight_d.ptr;
  args.bias = bias_d.ptr;
  args.partials = split.partials.ptr;
  args.tile_counters = split.counters.ptr;
  for (int tile_rows : kTileRows) {
    for (int splits : {1, 3}) {
      const SmallGemmConfig config{tile_rows, splits};
      CHECK_CUDA(cudaMemset(out_d.ptr, kSentinelByte, 2 * total * sizeof(float)));
      for (int launch = 0; launch < 2; ++launch) {
        args.out = out_d.ptr + launch * total + kGuard;
        CHECK_CUDA(fusedrt::gpu::small_gemm(args, config, stream));
      }
      CHECK_CUDA(cudaStreamSynchronize(stream));
      std::vector<float> got(2 * total);
      CHECK_CUDA(cudaMemcpy(got.data(), out_d.ptr, got.size() * sizeof(float), cudaMemcpyDeviceToHost));
      double worst = 0;
      for (int64_t i = 0; i < kBody; ++i) {
        const double g = got[kGuard + i];
        const double limit = kAccumTolerance * (1 + std::fabs(want[i]));
        worst = std::max(worst, std::isnan(g) ? std::numeric_limits<double>::infinity() : std::fabs(g - want[i]) / limit);
      }
      int64_t outside = 0;
      for (int64_t i = 0; i < 2 * total; ++i) {
        const int64_t at = i % total;
        uint32_t bits;
        std::memcpy(&bits, &got[i], sizeof bits);
        if ((at < kGuard || at >= kGuard + kBody) && bits != kFloatSentinel) ++outside;
      }
      const bool same = std::memcmp(got.data(), got.data() + total, total * sizeof(float)) == 0;
      char label[128];
      std::snprintf(label, sizeof label, "fp32 out, 37 x 130 x 776, bias, tile %d, splits %d: / tol %.3f%s%s",
                    tile_rows, splits, worst, same ? "" : ", launches differ", outside ? ", wrote outside out" : "");
      report(label, worst <= 1 && same && outside == 0);
    }
  }
  args.out = out_d.ptr + kGuard + 1;
  const cudaError_t status = fusedrt::gpu::small_gemm(args, SmallGemmConfig{16, 1}, stream);
  CHECK_CUDA(cudaStreamSynchronize(stream));
  report("refused: fp32 out 4-byte aligned (pairs are stored 8 bytes at a time)",
         status == cudaErrorInvalidValue && !fusedrt::gpu::small_gemm_supports(args, SmallGemmConfig{16, 1}));
}

// Each bad operand alone, on an otherwise good launch: refused, and nothing
// queued (out keeps its sentinels, no error left behind).
void check_refusals(SplitState& split, cudaStream_t stream) {
  constexpr int64_t kRows = 16, kN = 64, kK = 2 * kStageK;  // two K stages
  constexpr int64_t kLongK = (kMaxSplits + 1) * kStageK;  // 65 K stages
  DeviceBuffer<__half> in(kRows * kLongK + 8), weight(kN * kLongK + 8), bias(kN + 2), out(kRows * kN + 2);
  CHECK_CUDA(cudaMemset(in.ptr, 0, (kRows * kLongK + 8) * sizeof(__half)));
  CHECK_CUDA(cudaMemset(weight.ptr, 0, (kN * kLongK + 8) * sizeof(__half)));
  CHECK_CUDA(cudaMemset(bias.ptr, 0, (kN + 2) * sizeof(__half)));
  const size_t out_bytes = (kRows * kN + 2) * sizeof(__half);
  const auto out_written = [&](bool all) {
    std::vector<__half> host(kRows * kN + 2);
    CHECK_CUDA(cudaMemcpy(host.data(), out.ptr, out_bytes, cudaMemcpyDeviceToHost));
    const auto written = [](__half h) { return bits_of(h) != kSentinel; };
    return all ? std::all_of(host.begin(), host.begin() + kRows * kN, written)
               : std::any_of(host.begin(), host.end(), written);
  };

  HalfArgs good{};
  good.rows = kRows;
  good.n = kN;
  good.k = kK;
  good.in = in.ptr;
  good.weight = weight.ptr;
  good.bias = bias.ptr;
  good.out = out.ptr;
  good.partials = split.partials.ptr;
  good.tile_counters = split.counters.ptr;
  const SmallGemmConfig good_config{16, 2};

  struct Bad {
    const char* what;
    HalfArgs args;
    SmallGemmConfig config;
  };
  std::vector<Bad> bad(14, Bad{"", good, good_config});
  bad[0].what = "n odd (63)";
  bad[0].args.n = 63;
  bad[1].what = "k not a multiple of 8";
  bad[1].args.k = kK - 4;
  bad[2].what = "in not 16-byte aligned (one half on)";
  bad[2].args.in = in.ptr + 1;
  bad[3].what = "weight not 16-byte aligned (four halves on)";
  bad[3].args.weight = weight.ptr + 4;
  bad[4].what = "out not 4-byte aligned";
  bad[4].args.out = out.ptr + 1;
  bad[5].what = "bias not 4-byte aligned";
  bad[5].args.bias = bias.ptr + 1;
  bad[6].what = "splits 0";
  bad[6].config.splits = 0;
  bad[7].what = "splits 3 > K stages (2)";
  bad[7].config.splits = 3;
  bad[8].what = "splits 65 > 64 (k of 65 stages)";
  bad[8].args.k = kLongK;
  bad[8].config.splits = 65;
  bad[9].what = "tile_rows 48";
  bad[9].config.tile_rows = 48;
  bad[10].what = "splits 2, partials null";
  bad[10].args.partials = nullptr;
  bad[11].what = "splits 2, tile_counters null";
  bad[11].args.tile_counters = nullptr;
  bad[12].what = "partials not 16-byte aligned";
  bad[12].args.partials = split.partials.ptr + 1;
  bad[13].what = "rows 0";
  bad[13].args.rows = 0;

  // The good launch writes every output, so an untouched out means refused.
  CHECK_CUDA(cudaMemset(out.ptr, kSentinelByte, out_bytes));
  CHECK_CUDA(fusedrt::gpu::small_gemm(good, good_config, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  report("accepted: rows 16, n 64, k of two stages, tile 16, splits 2", out_written(true));
  for (const Bad& b : bad) {
    CHECK_CUDA(cudaMemset(out.ptr, kSentinelByte, out_bytes));
    const cudaError_t status = fusedrt::gpu::small_gemm(b.args, b.config, stream);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    const bool clean = cudaGetLastError() == cudaSuccess;
    const bool refused = status == cudaErrorInvalidValue && clean && !out_written(false);
    report(std::string("refused, nothing queued: ") + b.what, refused);
  }
  bool limits = true;
  for (int64_t k : {int64_t{8}, int64_t{40}, int64_t{776}, kLongK, int64_t{3072}}) {
    limits = limits && fusedrt::gpu::small_gemm_max_splits(k) == std::min(k_stages(k), kMaxSplits);
  }
  report("small_gemm_max_splits(k) = min(64, K stages), k 8 to 3072", limits);
  report("tile counters zero after all checks", split.counters_zero());
}

// Reads the buffer; writes only if its words XOR to a value they never do,
// so the loads stay. A read leaves L2 clean (a memset would leave dirty lines,
// whose write-back would share DRAM with the timed launches).
__global__ void read_through(const uint4* p, size_t count, uint4* sink) {
  uint4 x = make_uint4(0, 0, 0, 0);
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < count; i += size_t{gridDim.x} * blockDim.x) {
    const uint4 v = p[i];
    x.x ^= v.x;
    x.y ^= v.y;
    x.z ^= v.z;
    x.w ^= v.w;
  }
  if (x.x == 0x9e3779b9u && x.y == 0x7f4a7c15u) *sink = x;
}

struct TimedGemm {
  const char* name;
  int64_t rows, n, k;
  Activation activation;
};

// Every launch of a sample reads its own copy of the weight, and a read of
// three times the L2 comes before each sample: the weights come from DRAM,
// as in a BERT run (170 MB of them).
constexpr int kLaunchesPerGraph = 20;
constexpr int kSamples = 15;

void time_gemm(const TimedGemm& g, const cudaDeviceProp& prop, const DeviceBuffer<uint4>& flush, size_t flush_count,
               Rng& rng, cudaStream_t stream) {
  const int64_t weight_count = g.n * g.k;
  const Halves in = random_halves(rng, g.rows * g.k, 1.f);
  const Halves weight = random_halves(rng, weight_count, 0.05f);
  const Halves bias = random_halves(rng, g.n, 0.1f);
  DeviceBuffer<__half> in_d(in.stored.size()), weights(kLaunchesPerGraph * weight_count), bias_d(g.n),
      out(g.rows * g.n);
  DeviceBuffer<uint4> sink(1);
  CHECK_CUDA(cudaMemcpy(in_d.ptr, in.stored.data(), in.stored.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(bias_d.ptr, bias.stored.data(), bias.stored.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(weights.ptr, weight.stored.data(), weight_count * sizeof(__half), cudaMemcpyHostToDevice));
  for (int i = 1; i < kLaunchesPerGraph; ++i) {
    CHECK_CUDA(cudaMemcpy(weights.ptr + i * weight_count, weights.ptr, weight_count * sizeof(__half),
                          cudaMemcpyDeviceToDevice));
  }

  // Tiles up to the rows (16 always); splits 1, 2, 4 and the fewest that
  // give every SM a block.
  std::vector<SmallGemmConfig> configs;
  size_t workspace = 0;
  int64_t most_tiles = 0;
  for (int tile_rows : kTileRows) {
    if (tile_rows > std::max<int64_t>(16, g.rows)) continue;
    const SmallGemmConfig one{tile_rows, 1};
    const int64_t tiles = fusedrt::gpu::small_gemm_tiles(g.rows, g.n, one);
    most_tiles = std::max(most_tiles, tiles);
    const int64_t filling = std::min({(prop.multiProcessorCount + tiles - 1) / tiles, k_stages(g.k), kMaxSplits});
    std::vector<int64_t> splits = {1, 2, 4, filling};
    std::sort(splits.begin(), splits.end());
    splits.erase(std::unique(splits.begin(), splits.end()), splits.end());
    for (int64_t sp : splits) {
      const SmallGemmConfig config{tile_rows, static_cast<int>(sp)};
      configs.push_back(config);
      workspace = std::max(workspace, fusedrt::gpu::small_gemm_workspace_bytes(g.rows, g.n, config));
    }
  }
  DeviceBuffer<float> partials(workspace / sizeof(float));
  DeviceBuffer<int32_t> counters(most_tiles);
  CHECK_CUDA(cudaMemset(counters.ptr, 0, most_tiles * sizeof(int32_t)));

  HalfArgs args{};
  args.rows = g.rows;
  args.n = g.n;
  args.k = g.k;
  args.in = in_d.ptr;
  args.bias = bias_d.ptr;
  args.activation = g.activation;
  args.out = out.ptr;
  args.partials = partials.ptr;
  args.tile_counters = counters.ptr;

  std::vector<double> us;
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (const SmallGemmConfig& config : configs) {
    cudaGraph_t captured;
    cudaGraphExec_t graph;
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    for (int i = 0; i < kLaunchesPerGraph; ++i) {
      args.weight = weights.ptr + i * weight_count;
      CHECK_CUDA(fusedrt::gpu::small_gemm(args, config, stream));
    }
    CHECK_CUDA(cudaStreamEndCapture(stream, &captured));
    CHECK_CUDA(cudaGraphInstantiate(&graph, captured, 0));
    CHECK_CUDA(cudaGraphDestroy(captured));
    CHECK_CUDA(cudaGraphLaunch(graph, stream));  // warm-up: loads the kernel's module
    std::vector<float> ms(kSamples);
    for (float& sample : ms) {
      read_through<<<4 * prop.multiProcessorCount, 256, 0, stream>>>(flush.ptr, flush_count, sink.ptr);
      CHECK_CUDA(cudaGetLastError());
      CHECK_CUDA(cudaEventRecord(start, stream));
      CHECK_CUDA(cudaGraphLaunch(graph, stream));
      CHECK_CUDA(cudaEventRecord(stop, stream));
      CHECK_CUDA(cudaEventSynchronize(stop));
      CHECK_CUDA(cudaEventElapsedTime(&sample, start, stop));
    }
    CHECK_CUDA(cudaGraphExecDestroy(graph));
    std::sort(ms.begin(), ms.end());
    us.push_back(1e3 * ms[kSamples / 2] / kLaunchesPerGraph);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));

  const size_t fastest = std::min_element(us.begin(), us.end()) - us.begin();
  for (size_t i = 0; i < configs.size(); ++i) {
    const SmallGemmConfig& c = configs[i];
    const int64_t blocks = fusedrt::gpu::small_gemm_tiles(g.rows, g.n, c) * c.splits;
    std::printf("| %-5s | %3lld | %5lld | %4lld | %-9s | %2d | %2d | %5lld | %7.2f | %6.0f | %s |\n", g.name,
                static_cast<long long>(g.rows), static_cast<long long>(g.n), static_cast<long long>(g.k),
                activation_name(g.activation), c.tile_rows, c.splits, static_cast<long long>(blocks), us[i],
                2.0 * weight_count / (us[i] * 1e3), i == fastest ? "fastest" : "");
  }
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("small_gemm_test on %s (sm_%d%d, %d SMs, L2 %d MB)\n\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20);
  Rng rng{0x853c49e6748fea9bull};
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  // Inputs in [-4, 4] where an activation must be told apart from the others
  // (GELU's two forms differ by more than the tolerance only for x in about
  // [-3.3, -2.2], which needs sigma ~2 and many outputs); in [-1, 1] elsewhere.
  const Activation kNone = Activation::kNone, kGelu = Activation::kGelu, kGeluTanh = Activation::kGeluTanh,
                   kRelu = Activation::kRelu, kTanh = Activation::kTanh;
  const std::vector<Shape> shapes = {
      {1, 2, 8, false, kNone, 1},          {1, 768, 768, true, kNone, 1},       {1, 768, 1000, true, kGelu, 4},
      {1, 130, 3072, false, kNone, 1},     {1, 768, 776, false, kGeluTanh, 4},  {7, 62, 40, true, kRelu, 1},
      {7, 768, 8, true, kTanh, 4},         {7, 64, 3072, true, kNone, 1},       {16, 64, 64, false, kNone, 1},
      {16, 768, 40, false, kRelu, 1},      {16, 130, 1000, true, kTanh, 4},     {33, 130, 768, true, kGelu, 4},
      {33, 2, 3072, true, kNone, 1},       {64, 768, 3072, true, kNone, 1},     {64, 62, 768, false, kGelu, 4},
      {64, 2, 1000, true, kRelu, 1},       {100, 130, 1000, true, kTanh, 4},    {100, 2, 40, false, kNone, 1},
      {100, 768, 64, true, kNone, 1},      {128, 768, 768, true, kGeluTanh, 4}, {128, 64, 1000, true, kNone, 1},
      {128, 130, 3072, false, kTanh, 1},   {200, 62, 3072, false, kNone, 1},    {200, 768, 776, true, kGeluTanh, 4},
      {200, 768, 768, true, kRelu, 1},
  };
  size_t workspace = 0;
  int64_t most_tiles = 0;
  for (const Shape& s : shapes) {
    for (int tile_rows : kTileRows) {
      for (int sp : splits_for(s.k)) {
        const SmallGemmConfig config{tile_rows, sp};
        workspace = std::max(workspace, fusedrt::gpu::small_gemm_workspace_bytes(s.rows, s.n, config));
        most_tiles = std::max(most_tiles, fusedrt::gpu::small_gemm_tiles(s.rows, s.n, config));
      }
    }
  }
  SplitState split(workspace + kWorkspaceGuard, most_tiles);

  std::printf("Tolerance per element: %.0e * (1 + |want|) + 2^-11 |want|; each configuration run %d times.\n",
              kAccumTolerance, kRepeats);
  std::printf("other act: the worst error / tolerance against the nearest other activation (must be > 1).\n\n");
  std::printf("| rows | n | k | bias | activation | tile rows | splits | max abs err | / tol | other act | result |\n");
  std::printf("| ---: | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | --- |\n");
  for (const Shape& s : shapes) check_shape(s, split, rng, stream);
  std::printf("\n| check | result |\n| --- | --- |\n");
  for (const SmallGemmConfig& config : {SmallGemmConfig{16, 1}, SmallGemmConfig{16, 4}, SmallGemmConfig{64, 3}}) {
    check_chain(config, split, rng, stream);
  }
  check_float_out(split, rng, stream);
  check_refusals(split, stream);

  if (failures == 0) {
    const size_t flush_count = 3 * static_cast<size_t>(std::max(prop.l2CacheSize, 1 << 20)) / sizeof(uint4);
    DeviceBuffer<uint4> flush(flush_count);
    CHECK_CUDA(cudaMemset(flush.ptr, 0, flush_count * sizeof(uint4)));
    std::printf("\nTiming: per launch, median of %d CUDA graphs of %d launches, each launch with its own copy of\n",
                kSamples, kLaunchesPerGraph);
    std::printf("the weight, L2 emptied before each graph (weights from DRAM); GB/s: weight bytes / time; all with\n");
    std::printf("bias.\n\n");
    std::printf("| GEMM | rows | n | k | activation | tile rows | splits | blocks | us | GB/s | |\n");
    std::printf("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |\n");
    for (int64_t rows : {128, 32}) {
      const TimedGemm gemms[] = {{"QKV", rows, 2304, 768, kNone},
                                 {"O", rows, 768, 768, kNone},
                                 {"FFN1", rows, 3072, 768, kGelu},
                                 {"FFN2", rows, 768, 3072, kNone}};
      for (const TimedGemm& g : gemms) time_gemm(g, prop, flush, flush_count, rng, stream);
    }
    // The decoder at one [MASK] row and at a batch of 8 and 32 (8 x 128, 32 x 128 fill-mask).
    for (int64_t rows : {1, 8, 32}) time_gemm({"MLM", rows, 30522, 768, kNone}, prop, flush, flush_count, rng, stream);
  } else {
    std::printf("\nTiming skipped: a check failed.\n");
  }
  CHECK_CUDA(cudaStreamDestroy(stream));

  std::printf("\nsmall_gemm_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
