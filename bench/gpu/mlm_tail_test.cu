// mlm_tail (bench/gpu/mlm_tail.cu, a probe: the fill-mask tail in one
// cooperative launch) against a double-precision host reference of the
// eight ops it replaces, rounded to fp16 where the ops store fp16 (output
// projection, LN1, FFN1 + activation, FFN2, LN2, the head's transform +
// activation, its LayerNorm, the decoder into fp32 logits), and its top-k
// against the CPU reference top-k (native/cpu/topk.cpp, linked as is) over
// the logits the same launch stored: rows 1-4, BERT-base's sizes and small
// ones, k 0 (logits only), 1, 5 and 8, biases present and absent, gelu and
// gelu_tanh. Logits and the layer output within fp16 rounding of the
// reference (a product's sum in another order can round an intermediate one
// fp16 step the other way), ids equal, scores within 1e-6 relative; a
// second launch gives the same bits and leaves the counters zero, a CUDA
// graph replays the launch, and bad arguments are refused. Then BERT-base's
// tail at 1, 2 and 4 rows, with top-5 and with logits only, is timed against
// the backend's eight kernels (gemv, add_layernorm, gemv_topk or gemv),
// weights from DRAM, and again with cold instruction caches (as in a run:
// test_support.cuh, L2Filler). Exit status 0 only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/mlm_tail_test bench/gpu/mlm_tail_test.cu bench/gpu/mlm_tail.cu \
//     cuda/gemv.cu cuda/add_layernorm.cu native/cpu/topk.cpp native/cpu/thread_pool.cpp
//   /tmp/mlm_tail_test
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "../../cuda/add_layernorm.cuh"
#include "../../cuda/gemv.cuh"
#include "../../cuda/tests/test_support.cuh"
#include "cpu/topk.h"
#include "mlm_tail.cuh"

namespace {

using fusedrt::Activation;
using fusedrt::probe::MlmTailArgs;
using fusedrt::probe::MlmTailTopK;
using fusedrt::test::DeviceBuffer;
using fusedrt::test::Rng;

constexpr double kScoreTolerance = 1e-6;  // relative
constexpr float kEps = 1e-12f;

int failures = 0;

void report(const std::string& label, bool ok, const std::string& detail) {
  if (!ok) ++failures;
  std::printf("| %s | %s | %s |\n", label.c_str(), detail.c_str(), ok ? "ok" : "FAIL");
}

double half_round(double v) { return __half2float(__float2half_rn(static_cast<float>(v))); }

template <class T>
std::vector<T> download(const T* device, size_t count) {
  std::vector<T> host(count);
  CHECK_CUDA(cudaMemcpy(host.data(), device, count * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

template <class T>
T* upload(const std::vector<T>& host, std::vector<void*>& owned) {
  T* device = nullptr;
  CHECK_CUDA(cudaMalloc(&device, std::max<size_t>(host.size(), 1) * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  owned.push_back(device);
  return device;
}

// One tail's operands on the host (fp16 values kept as float) and the device.
struct Tail {
  int64_t rows, hidden, inter, vocab;
  Activation act_up, act_t;
  std::vector<float> ctx, x, w_out, b_out, g1, be1, w_up, b_up, w_down, b_down, g2, be2, w_t, b_t, g_t, be_t, w_dec, b_dec;
  MlmTailArgs args;
  std::vector<void*> owned;

  Tail(const Tail&) = delete;
  Tail& operator=(const Tail&) = delete;
  ~Tail() {
    for (void* p : owned) cudaFree(p);
  }

  Tail(Rng& rng, int64_t rows_, int64_t hidden_, int64_t inter_, int64_t vocab_, Activation act, bool biases)
      : rows(rows_), hidden(hidden_), inter(inter_), vocab(vocab_), act_up(act), act_t(act) {
    const auto halves = [&](int64_t count, float scale) {
      std::vector<float> v(static_cast<size_t>(count));
      for (float& e : v) e = __half2float(__float2half(rng.uniform(-scale, scale)));
      return v;
    };
    const auto floats = [&](int64_t count, float lo, float hi) {
      std::vector<float> v(static_cast<size_t>(count));
      for (float& e : v) e = rng.uniform(lo, hi);
      return v;
    };
    const float scale_h = 1.f / std::sqrt(static_cast<float>(hidden)), scale_i = 1.f / std::sqrt(static_cast<float>(inter));
    ctx = halves(rows * hidden, 1.f);
    x = halves(rows * hidden, 1.f);
    w_out = halves(hidden * hidden, scale_h);
    b_out = biases ? floats(hidden, -0.1f, 0.1f) : std::vector<float>();
    g1 = floats(hidden, 0.8f, 1.2f);
    be1 = floats(hidden, -0.1f, 0.1f);
    w_up = halves(inter * hidden, scale_h);
    b_up = biases ? halves(inter, 0.1f) : std::vector<float>();
    w_down = halves(hidden * inter, scale_i);
    b_down = biases ? floats(hidden, -0.1f, 0.1f) : std::vector<float>();
    g2 = floats(hidden, 0.8f, 1.2f);
    be2 = floats(hidden, -0.1f, 0.1f);
    w_t = halves(hidden * hidden, scale_h);
    b_t = biases ? halves(hidden, 0.1f) : std::vector<float>();
    g_t = floats(hidden, 0.8f, 1.2f);
    be_t = floats(hidden, -0.1f, 0.1f);
    w_dec = halves(vocab * hidden, 2.f * scale_h);
    b_dec = biases ? floats(vocab, -0.5f, 0.5f) : std::vector<float>();

    const auto as_halves = [&](const std::vector<float>& v) -> const __half* {
      if (v.empty()) return nullptr;
      std::vector<__half> h(v.size());
      for (size_t i = 0; i < v.size(); ++i) h[i] = __float2half(v[i]);
      return upload(h, owned);
    };
    const auto as_floats = [&](const std::vector<float>& v) -> const float* { return v.empty() ? nullptr : upload(v, owned); };
    const auto scratch_halves = [&](int64_t count) { return upload(std::vector<__half>(static_cast<size_t>(count)), owned); };
    args.rows = rows, args.hidden = hidden, args.inter = inter, args.vocab = vocab;
    args.ctx = as_halves(ctx);
    args.x = const_cast<__half*>(as_halves(x));
    args.proj = scratch_halves(rows * hidden);
    args.inter_out = scratch_halves(rows * inter);
    args.t = scratch_halves(rows * hidden);
    args.w_out = as_halves(w_out), args.b_out = as_floats(b_out), args.g1 = as_floats(g1), args.be1 = as_floats(be1);
    args.eps1 = kEps;
    args.w_up = as_halves(w_up), args.b_up = as_halves(b_up), args.act_up = act_up;
    args.w_down = as_halves(w_down), args.b_down = as_floats(b_down), args.g2 = as_floats(g2), args.be2 = as_floats(be2);
    args.eps2 = kEps;
    args.w_t = as_halves(w_t), args.b_t = as_halves(b_t), args.act_t = act_t, args.g_t = as_floats(g_t);
    args.be_t = as_floats(be_t), args.eps_t = kEps;
    args.w_dec = as_halves(w_dec), args.b_dec = as_floats(b_dec);
    args.logits = upload(std::vector<float>(static_cast<size_t>(rows * vocab)), owned);
  }

  // out[r][n] = sum over k of in[r][k] w[n][k] (+ bias[n]), in double.
  static std::vector<double> product(const std::vector<double>& in, const std::vector<float>& w,
                                     const std::vector<float>& bias, int64_t rows, int64_t n, int64_t k) {
    std::vector<double> out(static_cast<size_t>(rows * n));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        double sum = bias.empty() ? 0 : bias[j];
        for (int64_t c = 0; c < k; ++c) sum += in[r * k + c] * w[j * k + c];
        out[r * n + j] = sum;
      }
    }
    return out;
  }

  // LN((in + bias) + residual) per row, double statistics, rounded to fp16.
  std::vector<double> layernorm(const std::vector<double>& in, const std::vector<float>& bias,
                                const std::vector<double>* residual, const std::vector<float>& gamma,
                                const std::vector<float>& beta) const {
    std::vector<double> out(in.size());
    for (int64_t r = 0; r < rows; ++r) {
      std::vector<double> v(static_cast<size_t>(hidden));
      double mean = 0;
      for (int64_t c = 0; c < hidden; ++c) {
        v[c] = in[r * hidden + c] + (bias.empty() ? 0 : bias[c]) + (residual ? (*residual)[r * hidden + c] : 0);
        mean += v[c];
      }
      mean /= hidden;
      double var = 0;
      for (double e : v) var += (e - mean) * (e - mean);
      const double rstd = 1 / std::sqrt(var / hidden + kEps);
      for (int64_t c = 0; c < hidden; ++c) out[r * hidden + c] = half_round((v[c] - mean) * rstd * gamma[c] + beta[c]);
    }
    return out;
  }

  // The eight ops in double, fp16 where the plan stores fp16: x's new rows and the logits.
  void reference(std::vector<double>& x_out, std::vector<double>& logits) const {
    const auto rounded = [](std::vector<double> v, Activation a) {
      for (double& e : v) e = half_round(fusedrt::test::activate(e, a));
      return v;
    };
    const std::vector<double> ctx_d(ctx.begin(), ctx.end()), x_d(x.begin(), x.end());
    const auto proj = rounded(product(ctx_d, w_out, {}, rows, hidden, hidden), Activation::kNone);
    const auto x1 = layernorm(proj, b_out, &x_d, g1, be1);
    const auto up = rounded(product(x1, w_up, b_up, rows, inter, hidden), act_up);
    const auto down = rounded(product(up, w_down, {}, rows, hidden, inter), Activation::kNone);
    x_out = layernorm(down, b_down, &x1, g2, be2);
    const auto t = rounded(product(x_out, w_t, b_t, rows, hidden, hidden), act_t);
    logits = product(layernorm(t, {}, nullptr, g_t, be_t), w_dec, b_dec, rows, vocab, hidden);
  }
};

struct Scratch {
  DeviceBuffer<unsigned char> memory{fusedrt::probe::mlm_tail_scratch_bytes()};
  Scratch() { CHECK_CUDA(cudaMemset(memory.ptr, 0, fusedrt::probe::mlm_tail_scratch_bytes())); }
  bool counters_zero() const {
    const auto counters = download(reinterpret_cast<const unsigned*>(memory.ptr), 2);
    return counters[0] == 0 && counters[1] == 0;
  }
};

void check_case(Rng& rng, Scratch& scratch, fusedrt::cpu::ThreadPool& pool, int64_t rows, int64_t hidden,
                int64_t inter, int64_t vocab, int k, Activation act, bool biases) {
  Tail tail(rng, rows, hidden, inter, vocab, act, biases);
  DeviceBuffer<int32_t> ids(static_cast<size_t>(rows * std::max(k, 1)));
  DeviceBuffer<float> scores(static_cast<size_t>(rows * std::max(k, 1)));
  const MlmTailTopK top{k, k > 0 ? ids.ptr : nullptr, k > 0 ? scores.ptr : nullptr};
  const std::vector<__half> x_in = download(tail.args.x, static_cast<size_t>(rows * hidden));
  char label[160];
  std::snprintf(label, sizeof label, "%lld rows, %lld / %lld / %lld, k %d, %s%s", static_cast<long long>(rows),
                static_cast<long long>(hidden), static_cast<long long>(inter), static_cast<long long>(vocab), k,
                act == Activation::kGelu ? "gelu" : "gelu_tanh", biases ? "" : ", no biases");
  if (!fusedrt::probe::mlm_tail_supports(tail.args, top)) {
    report(label, false, "refused");
    return;
  }
  CHECK_CUDA(fusedrt::probe::mlm_tail(tail.args, top, scratch.memory.ptr, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto logits = download(tail.args.logits, static_cast<size_t>(rows * vocab));
  const auto x_out = download(tail.args.x, static_cast<size_t>(rows * hidden));
  std::vector<int32_t> got_ids;
  std::vector<float> got_scores;
  if (k > 0) {
    got_ids = download(ids.ptr, static_cast<size_t>(rows * k));
    got_scores = download(scores.ptr, static_cast<size_t>(rows * k));
  }

  std::vector<double> want_x, want_logits;
  tail.reference(want_x, want_logits);
  // An intermediate rounded one fp16 step the other way moves a logit by
  // about its step times a weight row's sum: 1e-2 of the logits' scale.
  double logit_scale = 1, logit_error = 0, x_error = 0;
  for (double v : want_logits) logit_scale = std::max(logit_scale, std::fabs(v));
  for (size_t i = 0; i < logits.size(); ++i) logit_error = std::max(logit_error, std::fabs(logits[i] - want_logits[i]));
  for (size_t i = 0; i < x_out.size(); ++i) x_error = std::max(x_error, std::fabs(__half2float(x_out[i]) - want_x[i]));
  bool ok = logit_error <= 1e-2 * logit_scale && x_error <= 2e-2;
  char detail[256];
  std::snprintf(detail, sizeof detail, "logits max error %.2e (scale %.2f), layer output %.2e", logit_error,
                logit_scale, x_error);
  std::string detail_s = detail;
  if (k > 0) {
    std::vector<int32_t> want_ids(static_cast<size_t>(rows * k));
    std::vector<float> want_scores(static_cast<size_t>(rows * k));
    fusedrt::cpu::softmax_topk({logits.data(), rows, vocab, k, want_ids.data(), want_scores.data()}, pool);
    double worst = 0;
    const std::string mismatch = fusedrt::test::topk_mismatch(got_ids, got_scores, want_ids, want_scores, k,
                                                              kScoreTolerance, worst);
    ok = ok && mismatch.empty();
    detail_s += mismatch.empty() ? "; top-k as the CPU's over these logits" : "; top-k: " + mismatch;
  }
  // Again from the same inputs: the same bits, counters left zero.
  CHECK_CUDA(cudaMemcpy(tail.args.x, x_in.data(), x_in.size() * sizeof(__half), cudaMemcpyHostToDevice));
  CHECK_CUDA(fusedrt::probe::mlm_tail(tail.args, top, scratch.memory.ptr, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto again = download(tail.args.logits, logits.size());
  const bool same = std::memcmp(again.data(), logits.data(), logits.size() * sizeof(float)) == 0 &&
                    (k == 0 || download(ids.ptr, got_ids.size()) == got_ids);
  if (!same) detail_s += "; a second launch differs";
  if (!scratch.counters_zero()) detail_s += "; counters left non-zero";
  report(label, ok && same && scratch.counters_zero(), detail_s);
}

// The launch captured in a CUDA graph and replayed gives the eager launch's logits.
void check_graph(Rng& rng, Scratch& scratch) {
  Tail tail(rng, 1, 64, 128, 1000, Activation::kGelu, true);
  DeviceBuffer<int32_t> ids(5);
  DeviceBuffer<float> scores(5);
  const MlmTailTopK top{5, ids.ptr, scores.ptr};
  const std::vector<__half> x_in = download(tail.args.x, 64);
  CHECK_CUDA(fusedrt::probe::mlm_tail(tail.args, top, scratch.memory.ptr, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const auto eager = download(tail.args.logits, 1000);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const cudaError_t launched = fusedrt::probe::mlm_tail(tail.args, top, scratch.memory.ptr, stream);
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(launched);
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  CHECK_CUDA(cudaMemset(tail.args.logits, 0, 1000 * sizeof(float)));
  for (int i = 0; i < 3; ++i) {
    CHECK_CUDA(cudaMemcpyAsync(tail.args.x, x_in.data(), 64 * sizeof(__half), cudaMemcpyHostToDevice, stream));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));
  const auto replayed = download(tail.args.logits, 1000);
  report("replayed from a CUDA graph, 3 times", replayed == eager && scratch.counters_zero(),
         replayed == eager ? "the eager launch's logits" : "logits differ");
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaStreamDestroy(stream));
}

void check_refusals(Rng& rng, Scratch& scratch) {
  Tail tail(rng, 1, 64, 128, 1000, Activation::kGelu, true);
  DeviceBuffer<int32_t> ids(9);
  DeviceBuffer<float> scores(9);
  struct Bad {
    const char* what;
    MlmTailArgs args;
    MlmTailTopK top;
  };
  std::vector<Bad> bad;
  const MlmTailTopK top5{5, ids.ptr, scores.ptr};
  const auto with = [&](const char* what, auto change) {
    Bad b{what, tail.args, top5};
    change(b.args);
    bad.push_back(b);
  };
  with("no rows", [](MlmTailArgs& a) { a.rows = 0; });
  with("5 rows", [](MlmTailArgs& a) { a.rows = 5; });
  with("hidden not a multiple of 8", [](MlmTailArgs& a) { a.hidden = 60; });
  with("no decoder weight", [](MlmTailArgs& a) { a.w_dec = nullptr; });
  with("a weight off 16-byte alignment", [](MlmTailArgs& a) { a.w_up = a.w_up + 1; });
  bad.push_back({"k 9", tail.args, MlmTailTopK{9, ids.ptr, scores.ptr}});
  bad.push_back({"k 5 without ids", tail.args, MlmTailTopK{5, nullptr, scores.ptr}});
  for (const Bad& b : bad) {
    const cudaError_t error = fusedrt::probe::mlm_tail(b.args, b.top, scratch.memory.ptr, nullptr);
    report(std::string("refused: ") + b.what, error == cudaErrorInvalidValue, cudaGetErrorName(error));
  }
  const cudaError_t good = fusedrt::probe::mlm_tail(tail.args, top5, scratch.memory.ptr, nullptr);
  CHECK_CUDA(cudaDeviceSynchronize());
  report("the good call runs", good == cudaSuccess, cudaGetErrorName(good));
}

// BERT-base's tail: the backend's eight kernels against the one launch,
// each replayed from a graph after 256 MB were read (the weights come from
// DRAM, and L2 holds clean lines, as after the layers of a run), then also
// with the SMs' instruction caches given other code first.
void time_tail(Rng& rng, Scratch& scratch, int64_t rows, int k) {
  constexpr int64_t kHidden = 768, kInter = 3072, kVocab = 30522;
  Tail tail(rng, rows, kHidden, kInter, kVocab, Activation::kGelu, true);
  const MlmTailArgs& a = tail.args;
  DeviceBuffer<int32_t> ids(static_cast<size_t>(rows * 5));
  DeviceBuffer<float> scores(static_cast<size_t>(rows * 5));
  const MlmTailTopK top{k, k > 0 ? ids.ptr : nullptr, k > 0 ? scores.ptr : nullptr};
  DeviceBuffer<__half> x1(static_cast<size_t>(rows * kHidden));
  DeviceBuffer<unsigned char> topk_scratch(fusedrt::gpu::gemv_topk_scratch_bytes(rows, 5));
  DeviceBuffer<uint32_t> counter(1);
  CHECK_CUDA(cudaMemset(counter.ptr, 0, sizeof(uint32_t)));
  const auto kernels = [&](cudaStream_t stream) {
    const auto gemv = [&](const __half* in, const __half* w, const __half* bias, int64_t n, int64_t k, Activation act, __half* out) {
      fusedrt::gpu::GemvArgs<__half> g;
      g.rows = rows, g.n = n, g.k = k, g.in = in, g.weight = w, g.bias = bias, g.activation = act, g.out = out;
      CHECK_CUDA(fusedrt::gpu::gemv(g, stream));
    };
    const auto layernorm = [&](const __half* in, const __half* residual, const float* bias, const float* g,
                               const float* b, __half* out) {
      fusedrt::gpu::AddLayerNormArgs<__half> l{in, residual, bias, g, b, kEps, rows, kHidden, out};
      CHECK_CUDA(fusedrt::gpu::add_layernorm(l, stream));
    };
    gemv(a.ctx, a.w_out, nullptr, kHidden, kHidden, Activation::kNone, a.proj);
    layernorm(a.proj, a.x, a.b_out, a.g1, a.be1, x1.ptr);
    gemv(x1.ptr, a.w_up, a.b_up, kInter, kHidden, Activation::kGelu, a.inter_out);
    gemv(a.inter_out, a.w_down, nullptr, kHidden, kInter, Activation::kNone, a.proj);
    layernorm(a.proj, x1.ptr, a.b_down, a.g2, a.be2, x1.ptr);
    gemv(x1.ptr, a.w_t, a.b_t, kHidden, kHidden, Activation::kGelu, a.t);
    layernorm(a.t, nullptr, nullptr, a.g_t, a.be_t, a.t);
    fusedrt::gpu::GemvArgs<float> d;
    d.rows = rows, d.n = kVocab, d.k = kHidden, d.in = a.t, d.weight = a.w_dec, d.bias = a.b_dec, d.out = a.logits;
    if (k > 0) {
      CHECK_CUDA(fusedrt::gpu::gemv_topk(d, fusedrt::gpu::GemvTopK{k, ids.ptr, scores.ptr, counter.ptr, topk_scratch.ptr}, stream));
    } else {
      CHECK_CUDA(fusedrt::gpu::gemv(d, stream));
    }
  };
  const auto fused = [&](cudaStream_t stream) {
    CHECK_CUDA(fusedrt::probe::mlm_tail(a, top, scratch.memory.ptr, stream));
  };
  const fusedrt::test::L2Filler warm_code, cold_code(true);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  double us[2][2];  // [warm, cold code][kernels, mlm_tail]
  int which = 0;
  for (const auto& enqueue : {std::function<void(cudaStream_t)>(kernels), std::function<void(cudaStream_t)>(fused)}) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    enqueue(stream);
    CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
    CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
    us[0][which] = fusedrt::test::median_replay_us(exec, stream, &warm_code, 40);
    us[1][which] = fusedrt::test::median_replay_us(exec, stream, &cold_code, 40);
    ++which;
    CHECK_CUDA(cudaGraphExecDestroy(exec));
    CHECK_CUDA(cudaGraphDestroy(graph));
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::printf("| %lld | %s | %.2f | %.2f | %.2f | %.2f |\n", static_cast<long long>(rows), k > 0 ? "top-5" : "logits",
              us[0][0], us[0][1], us[1][0], us[1][1]);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("mlm_tail_test on %s (sm_%d%d, %d SMs)\n\n| case | result | |\n| --- | --- | --- |\n", prop.name,
              prop.major, prop.minor, prop.multiProcessorCount);
  Rng rng{20261123};
  Scratch scratch;
  fusedrt::cpu::ThreadPool pool(4);
  for (int64_t rows = 1; rows <= fusedrt::probe::kMlmTailMaxRows; ++rows) {
    check_case(rng, scratch, pool, rows, 32, 64, 120, rows == 3 ? 8 : 5, Activation::kGelu, true);
    check_case(rng, scratch, pool, rows, 768, 3072, 30522, rows == 2 ? 0 : 5, Activation::kGelu, true);
  }
  check_case(rng, scratch, pool, 1, 64, 128, 1000, 1, Activation::kGeluTanh, false);
  check_case(rng, scratch, pool, 2, 384, 1536, 30522, 8, Activation::kGelu, true);
  check_graph(rng, scratch);
  check_refusals(rng, scratch);

  std::printf("\nBERT-base's tail, weights from DRAM, median of 40 graph replays, us; the SMs' instruction\n"
              "caches warm (the graph's own code from the replay before) or cold (other code ran first, as in a run):\n\n"
              "| rows | output | backend kernels (8 launches), warm | mlm_tail, warm | kernels, cold | mlm_tail, cold |\n"
              "| --- | --- | ---: | ---: | ---: | ---: |\n");
  for (int64_t rows : {1, 2, 4}) {
    for (int k : {5, 0}) time_tail(rng, scratch, rows, k);
  }
  std::printf("\nmlm_tail_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
