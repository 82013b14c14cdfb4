// Does a cuBLASLt GEMM cost more in a run than back to back, and why? The
// graph trace of BERT-base at 32 x 128 (tools/device/graph-profile.sh;
// bench/RESULTS.md, sixteenth session, "cuBLASLt's workspace") found the
// GPU idle 3.3-4.2 us before each launch of some cuBLASLt kernels (the
// 128 x 128 tile, after a LayerNorm), where the tuner, timing candidates
// back to back (native/cuda_gemm.cpp, Tuner), saw nothing. This probe times
// every heuristic candidate of the shapes concerned as graphs of kLaunches
// (predecessor, GEMM) pairs, minus the predecessors alone, with
// predecessors:
//   none       the GEMM back to back (the tuner's way)
//   one block  an empty kernel of one 32-thread block
//   wide       an empty kernel of 2048 32-thread blocks
//   layernorm  cuda/add_layernorm.cu over the GEMM's input (rows x k)
// and counts the memset nodes one launch of each candidate captures; also
// what a bare 4-byte memset node costs after each predecessor. The
// workspace offered to the heuristic and to the launches is argv[1]: with
// 32 MiB most candidates of the larger shapes capture a memset, with 0 none
// do, and the same tiles run faster.
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90a,code=sm_90a bench/gpu/gemm_predecessor.cu cuda/add_layernorm.cu -lcublasLt -o /tmp/gemm_predecessor
//   /tmp/gemm_predecessor [workspace bytes offered to the heuristic; default 32 MiB]
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "../../cuda/add_layernorm.cuh"
#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS, Rng, captured_graph_us
#include "lt_gemm.cuh"                         // the backend's cuBLASLt set-up, its candidates, NamedShape, lt_algo_config

using namespace fusedrt::probe;  // lt_gemm.cuh
using fusedrt::test::captured_graph_us;
using fusedrt::test::Rng;

namespace {

constexpr size_t kWorkspaceBytes = 32 << 20;  // allocated; the heuristic may be offered less (argv[1], bytes)
constexpr int kLaunches = 10;  // pairs per graph
constexpr int kSamples = 7;

double graph_us(cudaStream_t stream, const std::function<void()>& enqueue) {
  return captured_graph_us(stream, enqueue, kSamples).us;
}

__global__ void empty_kernel(int* sink) {
  if (sink != nullptr && threadIdx.x == 0 && blockIdx.x == 0) *sink = 0;
}

}  // namespace

int main(int argc, char** argv) {
  const size_t offered = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : kWorkspaceBytes;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("gemm_predecessor on %s; cuBLASLt %zu; workspace offered %zu bytes\n", prop.name, cublasLtGetVersion(),
              offered);
  cublasLtHandle_t lt;
  CHECK_CUBLAS(cublasLtCreate(&lt));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  void* workspace = nullptr;
  int* sink = nullptr;
  CHECK_CUDA(cudaMalloc(&workspace, kWorkspaceBytes));
  CHECK_CUDA(cudaMalloc(&sink, sizeof(int)));

  const NamedShape shapes[] = {
      {"QKV", 2560, 2304, 768, false}, {"FFN1", 2560, 3072, 768, true}, {"QKV", 4096, 2304, 768, false},
      {"FFN1", 4096, 3072, 768, true}, {"QKV", 128, 2304, 768, false},
  };
  Rng rng{20261123};
  for (const NamedShape& s : shapes) {
    GemmOperands g = make_gemm_operands(s, rng);
    const std::vector<float> ones(static_cast<size_t>(s.k), 1.f);
    float* gamma;
    CHECK_CUDA(cudaMalloc(&gamma, ones.size() * sizeof(float)));
    CHECK_CUDA(cudaMemcpy(gamma, ones.data(), ones.size() * sizeof(float), cudaMemcpyHostToDevice));

    // The LayerNorm rewrites the GEMM's input in place, as a run's leaves it.
    fusedrt::gpu::AddLayerNormArgs<__half> norm{g.in, nullptr, nullptr, gamma, gamma, 1e-12f, s.rows, s.k, g.in};
    const std::vector<std::pair<const char*, std::function<void()>>> predecessors = {
        {"none", [] {}},
        {"one block", [&] { empty_kernel<<<1, 32, 0, stream>>>(sink); }},
        {"wide", [&] { empty_kernel<<<2048, 32, 0, stream>>>(sink); }},
        {"layernorm", [&] { CHECK_CUDA(fusedrt::gpu::add_layernorm(norm, stream)); }},
    };
    std::vector<double> alone, memset_after;
    for (const auto& predecessor : predecessors) {
      alone.push_back(graph_us(stream, [&] {
                        for (int i = 0; i < kLaunches; ++i) predecessor.second();
                      }) / kLaunches);
      memset_after.push_back(graph_us(stream, [&] {
                               for (int i = 0; i < kLaunches; ++i) {
                                 predecessor.second();
                                 CHECK_CUDA(cudaMemsetAsync(sink, 0, sizeof(int), stream));
                               }
                             }) / kLaunches - alone.back());
    }

    LtProblem problem = make_lt_problem(
        lt, {s.rows, s.n, s.k, s.k, s.k, s.n, false, s.gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS},
        offered, 16);
    std::printf("\n%s %d x %d x %d%s: %zu candidates; predecessors alone (us):", s.name, s.rows, s.n, s.k,
                s.gelu ? " + GELU" : "", problem.candidates.size());
    for (size_t p = 0; p < predecessors.size(); ++p) std::printf(" %s %.2f", predecessors[p].first, alone[p]);
    std::printf("; a 4-byte memset after each:");
    for (size_t p = 0; p < predecessors.size(); ++p) std::printf(" %.2f", memset_after[p]);
    std::printf("\n| # | tile | stages | cluster | split-K | memsets |");
    for (const auto& predecessor : predecessors) std::printf(" after %s |", predecessor.first);
    std::printf("\n| ---: | ---: | ---: | ---: | ---: | ---: |");
    for (size_t p = 0; p < predecessors.size(); ++p) std::printf(" ---: |");
    std::printf("\n");
    for (size_t i = 0; i < problem.candidates.size(); ++i) {
      const cublasLtMatmulAlgo_t& algo = problem.candidates[i].algo;
      if (problem.candidates[i].state != CUBLAS_STATUS_SUCCESS) continue;
      const auto gemm = [&] {
        run_lt_problem(lt, problem, algo, g.in, g.weight, g.bias, g.out, workspace, offered, stream);
      };
      gemm();  // loads the module outside the captures
      CHECK_CUDA(cudaStreamSynchronize(stream));
      const int memsets = captured_graph_us(stream, gemm, 1).memset_nodes;
      std::printf("| %zu | %d | %d | %d | %d | %d |", i, lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                  lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID), lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID),
                  lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM), memsets);
      for (size_t p = 0; p < predecessors.size(); ++p) {
        const double pair_us = graph_us(stream, [&] {
                                 for (int r = 0; r < kLaunches; ++r) {
                                   predecessors[p].second();
                                   gemm();
                                 }
                               }) / kLaunches;
        std::printf(" %.2f |", pair_us - alone[p]);
      }
      std::printf("\n");
    }
    destroy_lt_problem(problem);
    free_gemm_operands(g);
    CHECK_CUDA(cudaFree(gamma));
  }
  return 0;
}
