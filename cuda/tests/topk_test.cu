// The CUDA softmax top-k (cuda/topk.cu) against the CPU reference
// (native/cpu/topk.cpp, linked as is) on random logits with ties, -0/+0,
// -inf, +inf and NaN, fp16 and fp32, widths that split a row over one to 32
// warps and over several chunks a warp, misaligned rows; ids must be equal,
// scores within 1e-6 relative (NaN where the reference has NaN). Also: the
// row counters are left zero, scratch needs no initialisation, a CUDA graph
// replays the launch, and bad arguments are refused. Then CUDA-event timings
// (BERT-base MLM: 30522 columns). Exit status 0 only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o topk_test cuda/tests/topk_test.cu cuda/topk.cu native/cpu/topk.cpp native/cpu/thread_pool.cpp
//   ./topk_test
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
#include "../topk.cuh"
#include "cpu/topk.h"

namespace {

using fusedrt::test::DeviceBuffer;
using fusedrt::test::Rng;

constexpr double kScoreTolerance = 1e-6;  // relative
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

enum class Pattern { kUniform, kFewValues, kSpecials, kPeaked, kIncreasing, kDecreasing, kZeros, kNoNumbers };
constexpr int kPatterns = 8;

// One row of logits of a pattern; rows cycle through the patterns.
void fill_row(Pattern pattern, float* x, int64_t cols, Rng& rng) {
  switch (pattern) {
    case Pattern::kUniform:
      for (int64_t c = 0; c < cols; ++c) x[c] = rng.uniform(-12.f, 12.f);
      break;
    case Pattern::kFewValues:  // ties everywhere, also for the maximum
      for (int64_t c = 0; c < cols; ++c) x[c] = static_cast<float>(rng.below(4)) - 1.f;
      break;
    case Pattern::kSpecials:  // -inf, a NaN (all scores NaN), -0/+0, maybe +inf
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t r = rng.below(16);
        x[c] = r == 0 ? -kInf : r == 1 ? -0.f : r == 2 ? 0.f : rng.uniform(-8.f, 8.f);
      }
      x[rng.below(cols)] = kNaN;
      if (rng.below(2) == 0) x[rng.below(cols)] = kInf;
      break;
    case Pattern::kPeaked:  // an MLM row: a few clear winners over a low floor
      for (int64_t c = 0; c < cols; ++c) x[c] = rng.uniform(-12.f, 2.f);
      for (int i = 0; i < 8; ++i) x[rng.below(cols)] = rng.uniform(10.f, 20.f);
      break;
    case Pattern::kIncreasing:  // every later chunk beats the earlier ones
      for (int64_t c = 0; c < cols; ++c) x[c] = -8.f + 16.f * static_cast<float>(c) / static_cast<float>(cols);
      break;
    case Pattern::kDecreasing:
      for (int64_t c = 0; c < cols; ++c) x[c] = 8.f - 16.f * static_cast<float>(c) / static_cast<float>(cols);
      break;
    case Pattern::kZeros:  // -0 and +0 tie: lowest columns first
      for (int64_t c = 0; c < cols; ++c) x[c] = rng.below(2) ? 0.f : -0.f;
      break;
    case Pattern::kNoNumbers:  // mostly NaN and -inf, fewer numbers than k: id -1 slots
      for (int64_t c = 0; c < cols; ++c) x[c] = rng.below(2) ? kNaN : -kInf;
      for (int i = 0; i < 3; ++i) x[rng.below(cols)] = rng.uniform(-1.f, 1.f);
      if (rng.below(3) == 0) std::fill(x, x + cols, kNaN);
      break;
  }
}

struct Case {
  bool half;
  int64_t rows, cols;
  int k;
  int64_t offset;  // elements between the allocation's start and row 0
};

std::string describe(const Case& c) {
  return std::string(c.half ? "fp16" : "fp32") + " rows " + std::to_string(c.rows) + " cols " +
         std::to_string(c.cols) + " k " + std::to_string(c.k) +
         (c.offset ? " offset " + std::to_string(c.offset) : "");
}

// Reusable device state: the counters are zeroed once, as the runtime must.
struct Shared {
  DeviceBuffer<uint32_t> counters;
  DeviceBuffer<uint8_t> scratch;
  Shared(int64_t max_rows, size_t bytes) : counters(max_rows), scratch(bytes) {
    CHECK_CUDA(cudaMemset(counters.ptr, 0, max_rows * sizeof(uint32_t)));
  }
};

// The logits of a case on the device (T) and as the reference sees them (float).
template <class T>
struct Logits {
  std::vector<float> host;
  DeviceBuffer<T> device;
  Logits(const Case& c, Rng& rng) : host(c.rows * c.cols), device(c.offset + c.rows * c.cols) {
    for (int64_t r = 0; r < c.rows; ++r) fill_row(static_cast<Pattern>(r % kPatterns), &host[r * c.cols], c.cols, rng);
    std::vector<T> stored(host.size());
    for (size_t i = 0; i < host.size(); ++i) {
      if constexpr (sizeof(T) == 2) {
        stored[i] = __float2half_rn(host[i]);
        host[i] = __half2float(stored[i]);
      } else {
        stored[i] = host[i];
      }
    }
    CHECK_CUDA(cudaMemcpy(device.ptr + c.offset, stored.data(), stored.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
};

template <class T>
fusedrt::gpu::SoftmaxTopKArgs<T> args_for(const Case& c, const T* logits, int32_t* ids, float* scores, Shared& s) {
  return {logits, c.rows, c.cols, c.k, ids, scores, s.counters.ptr, s.scratch.ptr};
}

int failures = 0;

void report(const std::string& label, bool ok, const std::string& detail) {
  if (!ok) ++failures;
  std::printf("| %-52s | %-22s | %s |\n", label.c_str(), detail.c_str(), ok ? "ok" : "FAIL");
}

// Runs the kernel twice (scratch poisoned before each, outputs poisoned) and
// compares both results with the reference.
template <class T>
void check(const Case& c, Shared& shared, fusedrt::cpu::ThreadPool& pool, Rng& rng) {
  const Logits<T> logits(c, rng);
  const size_t slots = static_cast<size_t>(c.rows * c.k);
  std::vector<int32_t> want_ids(slots);
  std::vector<float> want_scores(slots);
  fusedrt::cpu::softmax_topk({logits.host.data(), c.rows, c.cols, c.k, want_ids.data(), want_scores.data()}, pool);

  DeviceBuffer<int32_t> ids(slots);
  DeviceBuffer<float> scores(slots);
  const size_t need = fusedrt::gpu::softmax_topk_scratch_bytes(c.rows, c.cols, c.k);  // <= shared's: main sizes it
  bool ok = true;
  double worst = 0;
  std::string detail;
  for (int run = 0; run < 2 && ok; ++run) {
    CHECK_CUDA(cudaMemset(shared.scratch.ptr, run ? 0x00 : 0xff, need));
    CHECK_CUDA(cudaMemset(ids.ptr, 0x7f, slots * sizeof(int32_t)));
    CHECK_CUDA(cudaMemset(scores.ptr, 0x7f, slots * sizeof(float)));
    const auto args = args_for(c, logits.device.ptr + c.offset, ids.ptr, scores.ptr, shared);
    CHECK_CUDA(fusedrt::gpu::softmax_topk(args, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    std::vector<int32_t> got_ids(slots);
    std::vector<float> got_scores(slots);
    CHECK_CUDA(cudaMemcpy(got_ids.data(), ids.ptr, slots * sizeof(int32_t), cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(got_scores.data(), scores.ptr, slots * sizeof(float), cudaMemcpyDeviceToHost));
    const std::string mismatch =
        fusedrt::test::topk_mismatch(got_ids, got_scores, want_ids, want_scores, c.k, kScoreTolerance, worst);
    if (!mismatch.empty()) {
      ok = false;
      detail = "run " + std::to_string(run) + " " + mismatch;
    }
  }
  if (ok) {
    char buffer[64];
    std::snprintf(buffer, sizeof buffer, "max rel err %.2e", worst);
    detail = buffer;
  }
  report(describe(c), ok, detail);
}

void check_counters_zero(Shared& shared, int64_t rows) {
  std::vector<uint32_t> counters(rows);
  CHECK_CUDA(cudaMemcpy(counters.data(), shared.counters.ptr, rows * sizeof(uint32_t), cudaMemcpyDeviceToHost));
  const bool ok = std::all_of(counters.begin(), counters.end(), [](uint32_t v) { return v == 0; });
  report("row counters are zero after every call", ok, std::to_string(rows) + " counters");
}

// Captured once, replayed three times: the same results as a direct launch.
void check_graph(Shared& shared, Rng& rng) {
  const Case c{true, 8, 30522, 5, 0};
  const Logits<__half> logits(c, rng);
  const size_t slots = static_cast<size_t>(c.rows * c.k);
  DeviceBuffer<int32_t> ids(slots);
  DeviceBuffer<float> scores(slots);
  const auto args = args_for(c, logits.device.ptr, ids.ptr, scores.ptr, shared);
  CHECK_CUDA(fusedrt::gpu::softmax_topk(args, nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<int32_t> direct_ids(slots), graph_ids(slots);
  std::vector<float> direct_scores(slots), graph_scores(slots);
  CHECK_CUDA(cudaMemcpy(direct_ids.data(), ids.ptr, slots * sizeof(int32_t), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(direct_scores.data(), scores.ptr, slots * sizeof(float), cudaMemcpyDeviceToHost));

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  CHECK_CUDA(fusedrt::gpu::softmax_topk(args, stream));
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  bool ok = true;
  for (int replay = 0; replay < 3; ++replay) {
    CHECK_CUDA(cudaMemsetAsync(ids.ptr, 0x7f, slots * sizeof(int32_t), stream));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    CHECK_CUDA(cudaMemcpy(graph_ids.data(), ids.ptr, slots * sizeof(int32_t), cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(graph_scores.data(), scores.ptr, slots * sizeof(float), cudaMemcpyDeviceToHost));
    ok = ok && graph_ids == direct_ids &&
         std::memcmp(graph_scores.data(), direct_scores.data(), slots * sizeof(float)) == 0;
  }
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  CHECK_CUDA(cudaStreamDestroy(stream));
  report("CUDA graph replays = direct launch (bitwise)", ok, "fp16 rows 8 cols 30522 k 5");
}

void check_refusals(Shared& shared) {
  DeviceBuffer<float> logits(64);
  DeviceBuffer<int32_t> ids(64);
  DeviceBuffer<float> scores(64);
  const Case c{false, 1, 64, 5, 0};
  const auto good = args_for(c, logits.ptr, ids.ptr, scores.ptr, shared);
  struct Bad {
    const char* what;
    fusedrt::gpu::SoftmaxTopKArgs<float> args;
  };
  std::vector<Bad> bad(5, Bad{"", good});
  bad[0].what = "k 0";
  bad[0].args.k = 0;
  bad[1].what = "k 65";
  bad[1].args.k = 65;
  bad[2].what = "no counters";
  bad[2].args.row_counters = nullptr;
  bad[3].what = "no scratch";
  bad[3].args.scratch = nullptr;
  bad[4].what = "scratch not 8-byte aligned";
  bad[4].args.scratch = shared.scratch.ptr + 4;
  for (const Bad& b : bad) {
    const bool refused = fusedrt::gpu::softmax_topk(b.args, nullptr) == cudaErrorInvalidValue;
    report(std::string("refused: ") + b.what, refused, "cudaErrorInvalidValue");
  }
  CHECK_CUDA(cudaGetLastError());
}

template <class T>
void time_case(const Case& c, Shared& shared, Rng& rng) {
  const Logits<T> logits(c, rng);
  DeviceBuffer<int32_t> ids(c.rows * c.k);
  DeviceBuffer<float> scores(c.rows * c.k);
  const auto args = args_for(c, logits.device.ptr, ids.ptr, scores.ptr, shared);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int i = 0; i < 20; ++i) CHECK_CUDA(fusedrt::gpu::softmax_topk(args, stream));

  // One launch between two events.
  constexpr int kRuns = 200;
  std::vector<cudaEvent_t> events(2 * kRuns);
  for (auto& e : events) CHECK_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < kRuns; ++i) {
    CHECK_CUDA(cudaEventRecord(events[2 * i], stream));
    CHECK_CUDA(fusedrt::gpu::softmax_topk(args, stream));
    CHECK_CUDA(cudaEventRecord(events[2 * i + 1], stream));
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> single(kRuns);
  for (int i = 0; i < kRuns; ++i) CHECK_CUDA(cudaEventElapsedTime(&single[i], events[2 * i], events[2 * i + 1]));

  // 100 launches in one graph, as in a run: per launch, including the gaps.
  constexpr int kInGraph = 100;
  constexpr int kReplays = 20;
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < kInGraph; ++i) CHECK_CUDA(fusedrt::gpu::softmax_topk(args, stream));
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  CHECK_CUDA(cudaGraphLaunch(exec, stream));
  std::vector<float> graphed(kReplays);
  for (int i = 0; i < kReplays; ++i) {
    CHECK_CUDA(cudaEventRecord(events[0], stream));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaEventRecord(events[1], stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    CHECK_CUDA(cudaEventElapsedTime(&graphed[i], events[0], events[1]));
  }
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  for (auto& e : events) CHECK_CUDA(cudaEventDestroy(e));
  CHECK_CUDA(cudaStreamDestroy(stream));
  std::sort(single.begin(), single.end());
  std::sort(graphed.begin(), graphed.end());
  std::printf("| %s | %lld | %lld | %d | %.1f | %.1f |\n", c.half ? "fp16" : "fp32", static_cast<long long>(c.rows),
              static_cast<long long>(c.cols), c.k, single[kRuns / 2] * 1e3, graphed[kReplays / 2] * 1e3 / kInGraph);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("topk_test on %s (sm_%d%d, %d SMs)\n\n", prop.name, prop.major, prop.minor, prop.multiProcessorCount);
  Rng rng{0x2545f4914f6cdd1dull};
  fusedrt::cpu::ThreadPool pool(0);

  std::vector<Case> cases;
  for (bool half : {true, false}) {
    for (int64_t cols : {30522, 1000, 64}) {
      for (int k : {1, 5, 64}) {
        for (int64_t rows : {1, 32, 256}) cases.push_back({half, rows, cols, k, 0});
      }
    }
    // Several chunks a warp (the running list), rows over 32 warps, odd starts.
    for (int64_t cols : {50265, 250002}) {
      for (int k : {1, 5, 64}) cases.push_back({half, 9, cols, k, 0});
    }
    for (int64_t offset : {1, 3, 5}) cases.push_back({half, 17, 4099, 7, offset});
    cases.push_back({half, 16, 33, 64, 1});  // k > numbers in most rows
  }
  int64_t max_rows = 0;
  size_t max_scratch = 0;
  for (const Case& c : cases) {
    max_rows = std::max(max_rows, c.rows);
    max_scratch = std::max(max_scratch, fusedrt::gpu::softmax_topk_scratch_bytes(c.rows, c.cols, c.k));
  }
  Shared shared(max_rows, max_scratch);

  std::printf("| check | result detail | |\n| --- | --- | --- |\n");
  for (const Case& c : cases) {
    if (c.half) {
      check<__half>(c, shared, pool, rng);
    } else {
      check<float>(c, shared, pool, rng);
    }
  }
  check_counters_zero(shared, max_rows);
  check_graph(shared, rng);
  check_refusals(shared);
  check_counters_zero(shared, max_rows);

  std::printf("\nTiming (CUDA events, median; graph: 100 launches in one CUDA graph, per launch):\n\n");
  std::printf("| dtype | rows | cols | k | one launch us | in a graph us |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (bool half : {true, false}) {
    for (int k : {5, 64}) {
      for (int64_t rows : {1, 32, 128}) {
        const Case c{half, rows, 30522, k, 0};
        if (half) {
          time_case<__half>(c, shared, rng);
        } else {
          time_case<float>(c, shared, rng);
        }
      }
    }
  }
  std::printf("\ntopk_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
