// Does the GEMM tuner time its candidates under the conditions of a run?
// It times each of cuBLASLt's candidates for a key as a graph of the same
// launch repeated back to back (native/cuda_gemm.cpp, Tuner): weight and
// input stay warm in L2. In a run the weight comes from DRAM (a run's 12
// layers hold more than L2) while the input was just written by the op
// before. The graph trace found near-ties of that timing far apart in a run
// (BERT-base QKV at 2560 rows: tuned 17.0 against 16.6 us, in the graph 17.8
// against 15.4; bench/RESULTS.md, fifteenth session). This probe times every
// candidate of BERT-base's GEMM shapes both ways:
//   warm   R launches back to back, per launch (the tuner's way);
//   in-run each launch after a write of 2x the L2 (so the weight comes from
//          DRAM) and a kernel that rewrites the input (so it is in L2, as
//          the op before leaves it); the same graph without the GEMM is
//          timed too and subtracted.
// and prints, per shape, each candidate's two times and the rank of each.
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90a,code=sm_90a bench/gpu/tuning_conditions.cu -lcublasLt -o /tmp/tuning_conditions
//   /tmp/tuning_conditions
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <vector>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS, Rng, captured_graph_us
#include "lt_gemm.cuh"                         // the backend's cuBLASLt set-up, its candidates, NamedShape, lt_algo_config

using namespace fusedrt::probe;  // lt_gemm.cuh
using fusedrt::test::captured_graph_us;
using fusedrt::test::Rng;

namespace {

constexpr size_t kWorkspaceBytes = 32 << 20;
constexpr int kLaunches = 10;  // per graph
constexpr int kSamples = 7;

double graph_us(cudaStream_t stream, const std::function<void()>& enqueue) {
  return captured_graph_us(stream, enqueue, kSamples).us;
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const size_t flush_bytes = 2 * static_cast<size_t>(prop.l2CacheSize);
  std::printf("tuning_conditions on %s, L2 %d MB; cuBLASLt %zu\n", prop.name, prop.l2CacheSize >> 20,
              cublasLtGetVersion());
  cublasLtHandle_t lt;
  CHECK_CUBLAS(cublasLtCreate(&lt));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  void* workspace = nullptr;
  void* flush = nullptr;
  CHECK_CUDA(cudaMalloc(&workspace, kWorkspaceBytes));
  CHECK_CUDA(cudaMalloc(&flush, flush_bytes));

  const NamedShape shapes[] = {
      {"QKV", 128, 2304, 768, false},   {"FFN1", 128, 3072, 768, true},  {"QKV", 2560, 2304, 768, false},
      {"FFN1", 2560, 3072, 768, true},  {"QKV", 4096, 2304, 768, false}, {"FFN1", 4096, 3072, 768, true},
      {"O", 4096, 768, 768, false},     {"FFN2", 4096, 768, 3072, false},
  };
  Rng rng{20261123};
  for (const NamedShape& s : shapes) {
    GemmOperands g = make_gemm_operands(s, rng);
    LtProblem problem = make_lt_problem(
        lt, {s.rows, s.n, s.k, s.k, s.k, s.n, false, s.gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS},
        kWorkspaceBytes, 16);
    const auto gemm = [&](const cublasLtMatmulAlgo_t& algo) {
      run_lt_problem(lt, problem, algo, g.in, g.weight, g.bias, g.out, workspace, kWorkspaceBytes, stream);
    };
    const auto prepare = [&] {
      queue_in_run_conditions(flush, flush_bytes, g.in, static_cast<size_t>(s.rows) * s.k, stream);
    };
    const double prepare_us = graph_us(stream, [&] {
      for (int i = 0; i < kLaunches; ++i) prepare();
    });
    struct Timed {
      int index, tile, stages, splits;
      double warm, in_run;
    };
    std::vector<Timed> timed;
    for (size_t i = 0; i < problem.candidates.size(); ++i) {
      const cublasLtMatmulAlgo_t& algo = problem.candidates[i].algo;
      if (problem.candidates[i].state != CUBLAS_STATUS_SUCCESS) continue;
      gemm(algo);  // loads the module outside the captures
      CHECK_CUDA(cudaStreamSynchronize(stream));
      Timed t{static_cast<int>(i), lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_TILE_ID), lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
              lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM), 0, 0};
      t.warm = graph_us(stream, [&] {
                 for (int r = 0; r < kLaunches; ++r) gemm(algo);
               }) / kLaunches;
      t.in_run = (graph_us(stream, [&] {
                    for (int r = 0; r < kLaunches; ++r) {
                      prepare();
                      gemm(algo);
                    }
                  }) - prepare_us) / kLaunches;
      timed.push_back(t);
    }
    std::vector<int> by_warm(timed.size()), by_run(timed.size());
    for (size_t i = 0; i < timed.size(); ++i) by_warm[i] = by_run[i] = static_cast<int>(i);
    std::sort(by_warm.begin(), by_warm.end(), [&](int x, int y) { return timed[x].warm < timed[y].warm; });
    std::sort(by_run.begin(), by_run.end(), [&](int x, int y) { return timed[x].in_run < timed[y].in_run; });
    std::printf("\n%s %d x %d x %d%s: %d candidates (flush + input rewrite alone %.2f us a launch)\n", s.name,
                s.rows, s.n, s.k, s.gelu ? " + GELU" : "", static_cast<int>(problem.candidates.size()), prepare_us / kLaunches);
    std::printf("| # | tile | stages | split-K | warm us | rank | in-run us | rank |\n");
    std::printf("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t i = 0; i < timed.size(); ++i) {
      const int warm_rank = static_cast<int>(std::find(by_warm.begin(), by_warm.end(), i) - by_warm.begin()) + 1;
      const int run_rank = static_cast<int>(std::find(by_run.begin(), by_run.end(), i) - by_run.begin()) + 1;
      std::printf("| %d | %d | %d | %d | %.2f | %d | %.2f | %d |\n", timed[i].index, timed[i].tile, timed[i].stages,
                  timed[i].splits, timed[i].warm, warm_rank, timed[i].in_run, run_rank);
    }
    destroy_lt_problem(problem);
    free_gemm_operands(g);
  }
  return 0;
}
