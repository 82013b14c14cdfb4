// gemv_topk (cuda/gemv.cu: the gemv with the softmax top-k of its rows in
// the same launch) against the CPU reference top-k (native/cpu/topk.cpp,
// linked as is) over the logits the same launch stored, and against gemv:
// rows 1-4, widths from one column to BERT's 30522 (k may exceed them), k 1
// to 8, fp16 and fp32 logits. Logits from random weights, and from zero
// weights with the bias alone (exact values: ties everywhere, -0/+0, -inf,
// +inf, NaN). Ids must be equal, scores within 1e-6 relative (NaN where the
// reference has NaN), the stored logits bit-identical to gemv's; a second
// launch gives the same bits, the counter is left zero, scratch needs no
// initialisation, a CUDA graph replays the launch, and bad arguments are
// refused. Then the MLM decoder's time with top-5: gemv then softmax_topk
// against gemv_topk. Exit status 0 only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/gemv_topk_test cuda/tests/gemv_topk_test.cu cuda/gemv.cu cuda/topk.cu native/cpu/topk.cpp native/cpu/thread_pool.cpp
//   /tmp/gemv_topk_test
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "test_support.cuh"
#include "../gemv.cuh"
#include "../topk.cuh"
#include "cpu/topk.h"

namespace {

using fusedrt::gpu::GemvArgs;
using fusedrt::gpu::GemvTopK;
using fusedrt::test::DeviceBuffer;
using fusedrt::test::median_us;
using fusedrt::test::Rng;
using fusedrt::test::WeightCopies;

constexpr double kScoreTolerance = 1e-6;  // relative
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int kMaxRows = static_cast<int>(fusedrt::gpu::kGemvTopKMaxRows);
constexpr int kMaxK = fusedrt::gpu::kGemvTopKMax;

// kRandom: random weights and bias. The others have zero weights, so each
// logit is its bias as stored: kTies draws from four values, kSpecials adds
// -inf, -0, +0, one NaN a row and maybe +inf, kNoNumbers is -inf and NaN only.
enum class Logits { kRandom, kTies, kSpecials, kNoNumbers };

const char* logits_name(Logits l) {
  switch (l) {
    case Logits::kRandom: return "random";
    case Logits::kTies: return "ties";
    case Logits::kSpecials: return "specials";
    default: return "no numbers";
  }
}

template <class Out>
Out stored(float x) {
  if constexpr (sizeof(Out) == 2) {
    return __float2half_rn(x);
  } else {
    return x;
  }
}

template <class Out>
float value(Out x) {
  if constexpr (sizeof(Out) == 2) {
    return __half2float(x);
  } else {
    return x;
  }
}

// One bias row of a pattern: every row of out then equals it plus in . weight^T.
std::vector<float> bias_pattern(Logits logits, int64_t n, Rng& rng) {
  std::vector<float> bias(static_cast<size_t>(n));
  for (int64_t c = 0; c < n; ++c) {
    switch (logits) {
      case Logits::kRandom: bias[c] = rng.uniform(-2.f, 2.f); break;
      case Logits::kTies: bias[c] = static_cast<float>(rng.below(4)) - 1.f; break;
      case Logits::kSpecials: {
        const int64_t r = rng.below(16);
        bias[c] = r == 0 ? -kInf : r == 1 ? -0.f : r == 2 ? 0.f : rng.uniform(-8.f, 8.f);
        break;
      }
      default: bias[c] = rng.below(3) == 0 ? kNaN : -kInf; break;
    }
  }
  if (logits == Logits::kSpecials) {
    bias[rng.below(n)] = kNaN;
    if (rng.below(2) == 0) bias[rng.below(n)] = kInf;
  }
  if (logits == Logits::kRandom) {  // a few clear winners, as an MLM row has
    for (int i = 0; i < 4; ++i) bias[rng.below(n)] = rng.uniform(6.f, 9.f);
  }
  return bias;
}

int failures = 0;

void report(const std::string& label, bool ok, const std::string& detail) {
  if (!ok) ++failures;
  std::printf("| %-44s | %-40s | %s |\n", label.c_str(), detail.c_str(), ok ? "ok" : "FAIL");
}

// Device memory for one call's top-k, sized for the largest.
struct TopKMemory {
  const size_t scratch_bytes = fusedrt::gpu::gemv_topk_scratch_bytes(kMaxRows, kMaxK);
  DeviceBuffer<uint32_t> counter{1};
  DeviceBuffer<uint8_t> scratch{scratch_bytes};
  DeviceBuffer<int32_t> ids{static_cast<size_t>(kMaxRows * kMaxK)};
  DeviceBuffer<float> scores{static_cast<size_t>(kMaxRows * kMaxK)};
  TopKMemory() { CHECK_CUDA(cudaMemset(counter.ptr, 0, sizeof(uint32_t))); }
  GemvTopK args(int k) { return {k, ids.ptr, scores.ptr, counter.ptr, scratch.ptr}; }
};

template <class T>
std::vector<T> download(const T* device, size_t count) {
  std::vector<T> host(count);
  CHECK_CUDA(cudaMemcpy(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

template <class Out>
void check_case(Rng& rng, TopKMemory& memory, fusedrt::cpu::ThreadPool& pool, int64_t rows, int64_t n, int64_t k_dim,
                int k, Logits logits) {
  const bool zero_weights = logits != Logits::kRandom;
  std::vector<__half> in(static_cast<size_t>(rows * k_dim)), weight(static_cast<size_t>(n * k_dim));
  for (__half& h : in) h = __float2half_rn(rng.uniform(-1.f, 1.f));
  for (__half& h : weight) h = __float2half_rn(zero_weights ? 0.f : rng.uniform(-1.f, 1.f));
  std::vector<Out> bias;
  for (float b : bias_pattern(logits, n, rng)) bias.push_back(stored<Out>(b));
  DeviceBuffer<__half> in_d(in.size()), weight_d(weight.size());
  DeviceBuffer<Out> bias_d(bias.size()), out_d(static_cast<size_t>(rows * n)), plain_d(static_cast<size_t>(rows * n));
  CHECK_CUDA(cudaMemcpy(in_d.ptr, in.data(), in.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(weight_d.ptr, weight.data(), weight.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(bias_d.ptr, bias.data(), bias.size() * sizeof(Out), cudaMemcpyHostToDevice));

  GemvArgs<Out> a;
  a.rows = rows;
  a.n = n;
  a.k = k_dim;
  a.in = in_d.ptr;
  a.weight = weight_d.ptr;
  a.bias = bias_d.ptr;
  a.out = plain_d.ptr;
  CHECK_CUDA(fusedrt::gpu::gemv(a, nullptr));
  a.out = out_d.ptr;

  const size_t slots = static_cast<size_t>(rows * k);
  std::vector<std::vector<int32_t>> ids;
  std::vector<std::vector<float>> scores;
  for (int launch = 0; launch < 2; ++launch) {
    CHECK_CUDA(cudaMemset(memory.scratch.ptr, launch ? 0x00 : 0xff, memory.scratch_bytes));
    CHECK_CUDA(cudaMemset(memory.ids.ptr, 0x7f, slots * sizeof(int32_t)));
    CHECK_CUDA(cudaMemset(memory.scores.ptr, 0x7f, slots * sizeof(float)));
    CHECK_CUDA(fusedrt::gpu::gemv_topk(a, memory.args(k), nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    ids.push_back(download(memory.ids.ptr, slots));
    scores.push_back(download(memory.scores.ptr, slots));
  }
  const std::vector<Out> out = download(out_d.ptr, static_cast<size_t>(rows * n));
  const std::vector<Out> plain = download(plain_d.ptr, static_cast<size_t>(rows * n));
  const bool same_logits = std::memcmp(out.data(), plain.data(), out.size() * sizeof(Out)) == 0;
  const bool repeatable = ids[0] == ids[1] && std::memcmp(scores[0].data(), scores[1].data(), slots * sizeof(float)) == 0;
  const bool counter_zero = download(memory.counter.ptr, 1)[0] == 0;

  std::vector<float> logits_f(out.size());
  for (size_t i = 0; i < out.size(); ++i) logits_f[i] = value(out[i]);
  std::vector<int32_t> want_ids(slots);
  std::vector<float> want_scores(slots);
  fusedrt::cpu::softmax_topk({logits_f.data(), rows, n, k, want_ids.data(), want_scores.data()}, pool);

  double worst = 0;
  std::string detail =
      fusedrt::test::topk_mismatch(ids[0], scores[0], want_ids, want_scores, k, kScoreTolerance, worst);
  const bool ok = detail.empty() && same_logits && repeatable && counter_zero;
  if (detail.empty()) {
    char buffer[32];
    std::snprintf(buffer, sizeof buffer, "max rel err %.2e", worst);
    detail = buffer;
  }
  if (!same_logits) detail = "logits differ from gemv's";
  if (!repeatable) detail = "launches differ";
  if (!counter_zero) detail = "counter left non-zero";
  char label[96];
  std::snprintf(label, sizeof label, "%lld x %lld x %lld %s, k %d, %s", static_cast<long long>(rows),
                static_cast<long long>(n), static_cast<long long>(k_dim), sizeof(Out) == 2 ? "fp16" : "fp32", k,
                logits_name(logits));
  report(label, ok, detail);
}

// Captured once, replayed three times: the same ids and scores as a direct launch.
void check_graph(TopKMemory& memory) {
  const int64_t n = 30522, k_dim = 768;
  const int k = 5;
  DeviceBuffer<__half> in(k_dim), weight(static_cast<size_t>(n * k_dim));
  DeviceBuffer<float> out(n);
  std::vector<__half> ramp(static_cast<size_t>(n * k_dim));
  for (size_t i = 0; i < ramp.size(); ++i) ramp[i] = __float2half_rn(static_cast<float>((i * 2654435761u) % 1000) / 1000.f - 0.5f);
  CHECK_CUDA(cudaMemcpy(weight.ptr, ramp.data(), ramp.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(in.ptr, ramp.data(), k_dim * sizeof(__half), cudaMemcpyHostToDevice));
  GemvArgs<float> a;
  a.rows = 1;
  a.n = n;
  a.k = k_dim;
  a.in = in.ptr;
  a.weight = weight.ptr;
  a.out = out.ptr;
  CHECK_CUDA(fusedrt::gpu::gemv_topk(a, memory.args(k), nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<int32_t> direct_ids = download(memory.ids.ptr, k);
  const std::vector<float> direct_scores = download(memory.scores.ptr, k);

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  CHECK_CUDA(fusedrt::gpu::gemv_topk(a, memory.args(k), stream));
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  bool ok = true;
  for (int replay = 0; replay < 3; ++replay) {
    CHECK_CUDA(cudaMemset(memory.ids.ptr, 0x7f, k * sizeof(int32_t)));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    ok = ok && download(memory.ids.ptr, k) == direct_ids && download(memory.scores.ptr, k) == direct_scores;
  }
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaStreamDestroy(stream));
  report("a graph replays the launch (3 replays)", ok, "1 x 30522 x 768 fp32, k 5");
}

void check_refusals(TopKMemory& memory) {
  DeviceBuffer<__half> buffer(4096);
  GemvArgs<float> good;
  good.rows = 1;
  good.n = 8;
  good.k = 64;
  good.in = buffer.ptr;
  good.weight = buffer.ptr + 512;
  good.out = reinterpret_cast<float*>(buffer.ptr + 1024);
  struct Refusal {
    const char* what;
    GemvArgs<float> args;
    GemvTopK top;
  };
  std::vector<Refusal> refusals;
  auto add = [&](const char* what, auto change) {
    Refusal r{what, good, memory.args(5)};
    change(r.args, r.top);
    refusals.push_back(r);
  };
  add("k 0", [](GemvArgs<float>&, GemvTopK& t) { t.k = 0; });
  add("k 9", [](GemvArgs<float>&, GemvTopK& t) { t.k = 9; });
  add("5 rows", [](GemvArgs<float>& a, GemvTopK&) { a.rows = 5; });
  add("no counter", [](GemvArgs<float>&, GemvTopK& t) { t.counter = nullptr; });
  add("no scratch", [](GemvArgs<float>&, GemvTopK& t) { t.scratch = nullptr; });
  add("scratch unaligned", [](GemvArgs<float>&, GemvTopK& t) { t.scratch = static_cast<uint8_t*>(t.scratch) + 4; });
  add("no ids", [](GemvArgs<float>&, GemvTopK& t) { t.top_ids = nullptr; });
  add("a gemv it refuses (k not a multiple of 8)", [](GemvArgs<float>& a, GemvTopK&) { a.k = 60; });
  for (const Refusal& r : refusals) {
    const bool refused = !fusedrt::gpu::gemv_topk_supports(r.args, r.top) &&
                         fusedrt::gpu::gemv_topk(r.args, r.top, nullptr) == cudaErrorInvalidValue;
    report(std::string("refused: ") + r.what, refused, "");
  }
  report("the good call is taken", fusedrt::gpu::gemv_topk_supports(good, memory.args(5)), "");
}

// The decoder with the weight read from DRAM, top-5 of fp32 logits.
void time_decoder(int64_t rows, size_t l2_bytes, TopKMemory& memory) {
  const int64_t n = 30522, k_dim = 768;
  const int k = 5;
  WeightCopies<__half> weights(static_cast<size_t>(n * k_dim), l2_bytes);
  DeviceBuffer<__half> in(static_cast<size_t>(rows * k_dim));
  DeviceBuffer<float> out(static_cast<size_t>(rows * n)), bias(n);
  CHECK_CUDA(cudaMemset(in.ptr, 0, static_cast<size_t>(rows * k_dim) * sizeof(__half)));
  CHECK_CUDA(cudaMemset(bias.ptr, 0, n * sizeof(float)));
  const size_t topk_scratch = fusedrt::gpu::softmax_topk_scratch_bytes(rows, n, k);
  DeviceBuffer<uint32_t> row_counters(static_cast<size_t>(rows));
  DeviceBuffer<uint8_t> scratch(topk_scratch);
  CHECK_CUDA(cudaMemset(row_counters.ptr, 0, static_cast<size_t>(rows) * sizeof(uint32_t)));
  const auto args = [&] {
    GemvArgs<float> a;
    a.rows = rows;
    a.n = n;
    a.k = k_dim;
    a.in = in.ptr;
    a.weight = weights.next();
    a.bias = bias.ptr;
    a.out = out.ptr;
    return a;
  };
  const double two_kernels = median_us(
      [&](cudaStream_t stream) {
        CHECK_CUDA(fusedrt::gpu::gemv(args(), stream));
        const fusedrt::gpu::SoftmaxTopKArgs<float> t{out.ptr, rows, n, k, memory.ids.ptr, memory.scores.ptr,
                                                     row_counters.ptr, scratch.ptr};
        CHECK_CUDA(fusedrt::gpu::softmax_topk(t, stream));
      },
      weights.copies, 20);
  const double fused = median_us(
      [&](cudaStream_t stream) { CHECK_CUDA(fusedrt::gpu::gemv_topk(args(), memory.args(k), stream)); },
      weights.copies, 20);
  std::printf("| %lld x %lld x %lld | %.2f | %.2f |\n", static_cast<long long>(rows), static_cast<long long>(n),
              static_cast<long long>(k_dim), two_kernels, fused);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("gemv_topk_test on %s (sm_%d%d, %d SMs)\n\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  std::printf("| case | detail | result |\n| --- | --- | --- |\n");
  fusedrt::cpu::ThreadPool pool(4);
  TopKMemory memory;
  Rng rng{0x510e527fade682d1ull};
  for (int64_t rows = 1; rows <= kMaxRows; ++rows) {
    for (const int64_t n : {1, 5, 7, 64, 1000, 30522}) {
      for (const int k : {1, 5, 8}) {
        check_case<float>(rng, memory, pool, rows, n, 768, k, Logits::kRandom);
        check_case<__half>(rng, memory, pool, rows, n, 40, k, Logits::kRandom);
      }
    }
    for (const Logits l : {Logits::kTies, Logits::kSpecials, Logits::kNoNumbers}) {
      for (const int64_t n : {7, 1000, 30522}) {
        check_case<float>(rng, memory, pool, rows, n, 64, 8, l);
        check_case<__half>(rng, memory, pool, rows, n, 64, 5, l);
      }
    }
  }
  check_graph(memory);
  check_refusals(memory);

  std::printf("\nThe MLM decoder with top-5 (fp32 logits, bias), weight from DRAM, median of 20 graphs cycling\n");
  std::printf("weight copies, us per call:\n\n| rows x n x k | gemv, then softmax_topk | gemv_topk |\n| --- | ---: | ---: |\n");
  for (int64_t rows = 1; rows <= kMaxRows; ++rows) time_decoder(rows, static_cast<size_t>(prop.l2CacheSize), memory);

  std::printf("\ngemv_topk_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
