// gemv (cuda/gemv.cu) against a double-precision host reference computed
// from the same fp16 inputs: rows 1 to 8 (every kernel row count, with rows
// it leaves unused), n from 1 to past a block's columns, k from one vector
// to 3072 (vector loop tails included), with and without bias, under every
// activation, writing fp16 and (for logits) fp32. Each call is queued twice: both outputs must be bit-identical,
// and the sentinels around out untouched. Operands the kernel cannot take
// must be refused with cudaErrorInvalidValue. Then the MLM decoder at 1-8
// rows and BERT-base's other GEMMs at one row are timed in CUDA graphs with
// the weight read from DRAM. Exit status 0 only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/gemv_test cuda/tests/gemv_test.cu cuda/gemv.cu
//   /tmp/gemv_test
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "test_support.cuh"
#include "../gemv.cuh"

namespace {

using fusedrt::Activation;
using fusedrt::gpu::GemvArgs;
using fusedrt::test::DeviceBuffer;
using fusedrt::test::median_us;
using fusedrt::test::activate;
using fusedrt::test::kActivations;
using fusedrt::test::Rng;
using fusedrt::test::WeightCopies;

// Per element, against the reference from the same fp16 inputs: fp32 FMA
// chains of k / 256 terms per lane and a 32-way butterfly, each rounding at
// most an ulp of sums below ~16 here (inputs in [-1, 1], k <= 3072), so well
// under kAccumTolerance * (1 + |want|); an fp16 output adds half an ulp.
constexpr double kAccumTolerance = 2e-4;
constexpr int64_t kGuard = 64;  // elements of sentinel before and after out

// What a test needs of an output type: its bits (to compare launches and
// spot writes outside out), a sentinel, its rounding.
template <class Out>
struct OutputType;
template <>
struct OutputType<__half> {
  using Bits = uint16_t;
  static constexpr Bits kSentinel = 0x5a5a;
  static constexpr double kHalfUlp = 1.0 / 2048;
  static constexpr const char* kName = "fp16";
  static __half round(float x) { return __float2half_rn(x); }
  static double value(Bits bits) {
    __half h;
    std::memcpy(&h, &bits, sizeof(bits));
    return __half2float(h);
  }
};
template <>
struct OutputType<float> {
  using Bits = uint32_t;
  static constexpr Bits kSentinel = 0x5a5a5a5a;
  static constexpr double kHalfUlp = 0;  // within kAccumTolerance
  static constexpr const char* kName = "fp32";
  static float round(float x) { return x; }
  static double value(Bits bits) {
    float f;
    std::memcpy(&f, &bits, sizeof(bits));
    return f;
  }
};


std::vector<__half> random_halves(Rng& rng, int64_t count, float amplitude) {
  std::vector<__half> v(static_cast<size_t>(count));
  for (__half& h : v) h = __float2half_rn(rng.uniform(-amplitude, amplitude));
  return v;
}

template <class T>
void upload(T* dst, const std::vector<T>& src) {
  CHECK_CUDA(cudaMemcpy(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice));
}

int failures = 0;

template <class Out>
void check_case(Rng& rng, int64_t rows, int64_t n, int64_t k, bool with_bias, Activation activation) {
  using Type = OutputType<Out>;
  using Bits = typename Type::Bits;
  const std::vector<__half> in = random_halves(rng, rows * k, 1.f);
  const std::vector<__half> weight = random_halves(rng, n * k, 1.f);
  std::vector<Out> bias(static_cast<size_t>(n));
  for (Out& b : bias) b = Type::round(rng.uniform(-1.f, 1.f));
  DeviceBuffer<__half> in_d(in.size()), weight_d(weight.size());
  DeviceBuffer<Out> bias_d(bias.size()), out_d(static_cast<size_t>(rows * n + 2 * kGuard));
  upload(in_d.ptr, in);
  upload(weight_d.ptr, weight);
  upload(bias_d.ptr, bias);

  GemvArgs<Out> a;
  a.rows = rows;
  a.n = n;
  a.k = k;
  a.in = in_d.ptr;
  a.weight = weight_d.ptr;
  a.bias = with_bias ? bias_d.ptr : nullptr;
  a.activation = activation;
  a.out = out_d.ptr + kGuard;

  std::vector<std::vector<Bits>> outputs;
  for (int launch = 0; launch < 2; ++launch) {
    std::vector<Bits> fill(static_cast<size_t>(rows * n + 2 * kGuard), Type::kSentinel);
    CHECK_CUDA(cudaMemcpy(out_d.ptr, fill.data(), fill.size() * sizeof(Bits), cudaMemcpyHostToDevice));
    CHECK_CUDA(fusedrt::gpu::gemv(a, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    CHECK_CUDA(cudaMemcpy(fill.data(), out_d.ptr, fill.size() * sizeof(Bits), cudaMemcpyDeviceToHost));
    outputs.push_back(fill);
  }

  const std::vector<Bits>& got = outputs[0];
  double worst_ratio = 0;
  int64_t guards_touched = 0;
  for (int64_t i = 0; i < kGuard; ++i) {
    guards_touched += got[static_cast<size_t>(i)] != Type::kSentinel;
    guards_touched += got[static_cast<size_t>(kGuard + rows * n + i)] != Type::kSentinel;
  }
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      double sum = with_bias ? static_cast<double>(static_cast<float>(bias[static_cast<size_t>(c)])) : 0.0;
      for (int64_t e = 0; e < k; ++e) {
        sum += static_cast<double>(__half2float(in[static_cast<size_t>(r * k + e)])) *
               __half2float(weight[static_cast<size_t>(c * k + e)]);
      }
      const double want = activate(sum, activation);
      const double error = std::fabs(Type::value(got[static_cast<size_t>(kGuard + r * n + c)]) - want);
      const double tolerance = kAccumTolerance * (1 + std::fabs(want)) + Type::kHalfUlp * std::fabs(want);
      worst_ratio = std::max(worst_ratio, std::isnan(error) ? 1e9 : error / tolerance);
    }
  }
  const bool repeatable = outputs[0] == outputs[1];
  const bool ok = worst_ratio <= 1.0 && guards_touched == 0 && repeatable;
  if (!ok) ++failures;
  std::printf("| %lld x %lld x %lld | %s | %s | %s | %.3f | %s%s%s |\n", static_cast<long long>(rows),
              static_cast<long long>(n), static_cast<long long>(k), Type::kName, with_bias ? "bias" : "none",
              activation_name(activation), worst_ratio, ok ? "ok" : "FAIL",
              guards_touched ? " (wrote outside out)" : "", repeatable ? "" : " (launches differ)");
}

void check_refusals() {
  DeviceBuffer<__half> buffer(4096);
  GemvArgs<__half> good;
  good.rows = 1;
  good.n = 8;
  good.k = 64;
  good.in = buffer.ptr;
  good.weight = buffer.ptr + 512;
  good.out = buffer.ptr + 1024;
  struct Refusal {
    const char* what;
    GemvArgs<__half> args;
  };
  std::vector<Refusal> refusals;
  auto add = [&](const char* what, auto change) {
    GemvArgs<__half> a = good;
    change(a);
    refusals.push_back({what, a});
  };
  add("0 rows", [](GemvArgs<__half>& a) { a.rows = 0; });
  add("9 rows", [](GemvArgs<__half>& a) { a.rows = 9; });
  add("k not a multiple of 8", [](GemvArgs<__half>& a) { a.k = 60; });
  add("8 rows of 3072 (shared memory)", [](GemvArgs<__half>& a) { a.rows = 8; a.k = 3072; });
  add("in unaligned", [&](GemvArgs<__half>& a) { a.in = buffer.ptr + 1; });
  add("weight unaligned", [&](GemvArgs<__half>& a) { a.weight = buffer.ptr + 513; });
  add("no out", [](GemvArgs<__half>& a) { a.out = nullptr; });
  for (const Refusal& r : refusals) {
    const bool refused = !fusedrt::gpu::gemv_supports(r.args) &&
                         fusedrt::gpu::gemv(r.args, nullptr) == cudaErrorInvalidValue;
    if (!refused) ++failures;
    std::printf("| refused: %s | | | | | %s |\n", r.what, refused ? "ok" : "FAIL");
  }
  if (!fusedrt::gpu::gemv_supports(good)) {
    ++failures;
    std::printf("| the good call is refused | | | | | FAIL |\n");
  }
}

// A shape with the weight read from DRAM.
void time_shape(int64_t rows, int64_t n, int64_t k, size_t l2_bytes) {
  const size_t weight_bytes = static_cast<size_t>(n * k) * sizeof(__half);
  WeightCopies<__half> weights(static_cast<size_t>(n * k), l2_bytes);
  DeviceBuffer<__half> in(static_cast<size_t>(rows * k)), out(static_cast<size_t>(rows * n)), bias(n);
  CHECK_CUDA(cudaMemset(in.ptr, 0, static_cast<size_t>(rows * k) * sizeof(__half)));
  CHECK_CUDA(cudaMemset(bias.ptr, 0, n * sizeof(__half)));
  const double us = median_us(
      [&](cudaStream_t stream) {
        GemvArgs<__half> a;
        a.rows = rows;
        a.n = n;
        a.k = k;
        a.in = in.ptr;
        a.weight = weights.next();
        a.bias = bias.ptr;
        a.out = out.ptr;
        CHECK_CUDA(fusedrt::gpu::gemv(a, stream));
      },
      weights.copies, 20);
  std::printf("| %lld x %lld x %lld | %.2f | %.0f |\n", static_cast<long long>(rows), static_cast<long long>(n),
              static_cast<long long>(k), us, static_cast<double>(weight_bytes) / (us * 1e3));
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("gemv_test on %s (sm_%d%d, %d SMs)\n\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  std::printf("| rows x n x k | out | bias | activation | worst error / tolerance | result |\n");
  std::printf("| --- | --- | --- | --- | ---: | --- |\n");
  Rng rng{0x6a09e667f3bcc909ull};
  for (int64_t rows : {1, 2, 3, 4, 5, 8}) {
    for (int64_t n : {1, 7, 64, 1000}) {
      for (int64_t k : {8, 40, 264, 768}) check_case<__half>(rng, rows, n, k, n % 2 == 1, Activation::kNone);
    }
    check_case<__half>(rng, rows, 3000, 1024, true, Activation::kNone);
    check_case<float>(rng, rows, 3000, 1024, true, Activation::kNone);
  }
  for (int64_t rows : {1, 4}) check_case<__half>(rng, rows, 768, 3072, true, Activation::kNone);
  for (int64_t n : {1, 7, 1000}) check_case<float>(rng, 5, n, 264, n % 2 == 1, Activation::kNone);
  for (Activation a : kActivations) {
    check_case<__half>(rng, 3, 129, 768, true, a);
    check_case<float>(rng, 3, 129, 768, true, a);
  }
  check_refusals();

  std::printf("\nTiming (fp16, bias), weight from DRAM, median of 20 graphs cycling weight copies, us per launch;\n");
  std::printf("GB/s of the weight. The MLM decoder, then BERT-base's other GEMMs on one [MASK] row:\n\n");
  std::printf("| rows x n x k | us | GB/s |\n| --- | ---: | ---: |\n");
  const auto l2_bytes = static_cast<size_t>(prop.l2CacheSize);
  for (int64_t rows : {1, 2, 4, 8}) time_shape(rows, 30522, 768, l2_bytes);
  for (const auto& [n, k] : {std::pair<int64_t, int64_t>{768, 768}, {3072, 768}, {768, 3072}}) {
    time_shape(1, n, k, l2_bytes);
  }

  std::printf("\ngemv_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
