// Does cuBLASLt have faster configurations for BERT-base's GEMMs than the (up
// to 16) its heuristic offers? The backend's tuner times only those
// (native/cuda_gemm.cpp; decision 0006 left a search beyond them untried).
// This probe enumerates, for each shape as the backend sets it up
// (workspace-free, fp16, bias or bias + GELU epilogue):
//   1. every algorithm id x tile x stages x cluster shape that
//      cublasLtMatmulAlgoCheck accepts without a workspace (split-K 1),
//      each timed warm (launches back to back in a graph, as the tuner does);
//   2. around the best five of those and the heuristic's best three: split-K
//      2-8 with each reduction scheme, CTA swizzling and every custom option;
// and prints the heuristic's best against the search's best, with the
// largest difference between their outputs, and the best five of the
// search timed again in-run (weight from DRAM, input just rewritten).
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90a,code=sm_90a bench/gpu/lt_config_search.cu -lcublasLt -o /tmp/lt_config_search
//   /tmp/lt_config_search [max timed per shape, default 5000]
#include <cublasLt.h>
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

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS, Rng, captured_graph_us
#include "lt_gemm.cuh"                         // the backend's cuBLASLt set-up, NamedShape, lt_algo_config

using namespace fusedrt::probe;  // lt_gemm.cuh
using fusedrt::test::captured_graph_us;
using fusedrt::test::Rng;

namespace {

constexpr int kLaunches = 10;  // per graph
constexpr int kSamples = 5;
constexpr int kRetimedSamples = 15;
constexpr uint16_t kClusterShapes[] = {CUBLASLT_CLUSTER_SHAPE_AUTO, CUBLASLT_CLUSTER_SHAPE_1x1x1,
                                       CUBLASLT_CLUSTER_SHAPE_2x1x1, CUBLASLT_CLUSTER_SHAPE_1x2x1,
                                       CUBLASLT_CLUSTER_SHAPE_4x1x1, CUBLASLT_CLUSTER_SHAPE_1x4x1,
                                       CUBLASLT_CLUSTER_SHAPE_2x2x1};
constexpr uint32_t kSplits[] = {2, 3, 4, 6, 8};
constexpr uint32_t kReductionSchemes[] = {CUBLASLT_REDUCTION_SCHEME_INPLACE, CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE,
                                          CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE};

template <class T>
void set_config(cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attribute, T value) {
  CHECK_CUBLAS(cublasLtMatmulAlgoConfigSetAttribute(&algo, attribute, &value, sizeof(value)));
}

template <class T>
std::vector<T> capability_list(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attribute) {
  size_t bytes = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&algo, attribute, nullptr, 0, &bytes) != CUBLAS_STATUS_SUCCESS) return {};
  std::vector<T> values(bytes / sizeof(T));
  if (!values.empty()) {
    CHECK_CUBLAS(cublasLtMatmulAlgoCapGetAttribute(&algo, attribute, values.data(), bytes, &bytes));
  }
  return values;
}

template <class T>
T capability(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attribute) {
  T value{};
  size_t bytes = 0;
  cublasLtMatmulAlgoCapGetAttribute(&algo, attribute, &value, sizeof(value), &bytes);
  return value;
}

std::string describe(const cublasLtMatmulAlgo_t& algo) {
  char text[160];
  std::snprintf(text, sizeof(text), "id %d tile %d stages %d inner %d cluster %d split %d/%d swz %d opt %d",
                lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_ID), lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_TILE_ID),
                lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID),
                lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_INNER_SHAPE_ID),
                lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID),
                lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM),
                lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME),
                lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING),
                lt_algo_config(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION));
  return text;
}

struct Timed {
  cublasLtMatmulAlgo_t algo;
  double warm;
};

struct Search {
  cublasLtHandle_t lt;
  cudaStream_t stream;
  const LtProblem& problem;
  const GemmOperands& g;
  int max_timed;
  int checked = 0, accepted = 0, failed = 0;
  std::vector<Timed> timed;

  bool accepts(const cublasLtMatmulAlgo_t& algo) {
    ++checked;
    cublasLtMatmulHeuristicResult_t result{};
    return cublasLtMatmulAlgoCheck(lt, problem.desc, problem.a, problem.b, problem.c, problem.c, &algo, &result) ==
               CUBLAS_STATUS_SUCCESS &&
           result.workspaceSize == 0;
  }

  void gemm(const cublasLtMatmulAlgo_t& algo) {
    run_lt_problem(lt, problem, algo, g.in, g.weight, g.bias, g.out, nullptr, 0, stream);
  }

  // Warm µs per launch, or a negative value where the launch fails.
  double warm_us(const cublasLtMatmulAlgo_t& algo, int samples) {
    const float one = 1.f, zero = 0.f;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(problem.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g.bias,
                                                sizeof(g.bias)));
    if (cublasLtMatmul(lt, problem.desc, &one, g.weight, problem.a, g.in, problem.b, &zero, g.out, problem.c, g.out,
                       problem.c, &algo, nullptr, 0, stream) != CUBLAS_STATUS_SUCCESS ||
        cudaStreamSynchronize(stream) != cudaSuccess) {
      ++failed;
      return -1;
    }
    return captured_graph_us(stream, [&] {
             for (int i = 0; i < kLaunches; ++i) gemm(algo);
           }, samples).us / kLaunches;
  }

  std::vector<cublasLtMatmulAlgo_t> pending;

  void consider(const cublasLtMatmulAlgo_t& algo) {
    if (!accepts(algo)) return;
    ++accepted;
    pending.push_back(algo);
  }

  // Times what was considered since the last call: all of it, or an even
  // spread of max_timed where there is more.
  void time_pending() {
    const size_t stride = (pending.size() + max_timed - 1) / max_timed;
    for (size_t i = 0; i < pending.size(); i += std::max<size_t>(stride, 1)) {
      const double us = warm_us(pending[i], kSamples);
      if (us > 0) timed.push_back({pending[i], us});
    }
    pending.clear();
    std::sort(timed.begin(), timed.end(), [](const Timed& x, const Timed& y) { return x.warm < y.warm; });
  }
};

std::vector<__half> output(const GemmOperands& g, const NamedShape& s) {
  std::vector<__half> host(static_cast<size_t>(s.rows) * s.n);
  CHECK_CUDA(cudaMemcpy(host.data(), g.out, host.size() * 2, cudaMemcpyDeviceToHost));
  return host;
}

}  // namespace

int main(int argc, char** argv) {
  const int max_timed = argc > 1 ? std::atoi(argv[1]) : 5000;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const size_t flush_bytes = 2 * static_cast<size_t>(prop.l2CacheSize);
  std::printf("lt_config_search on %s; cuBLASLt %zu; at most %d configurations timed per shape\n", prop.name,
              cublasLtGetVersion(), max_timed);
  cublasLtHandle_t lt;
  CHECK_CUBLAS(cublasLtCreate(&lt));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  void* flush = nullptr;
  CHECK_CUDA(cudaMalloc(&flush, flush_bytes));
  int ids[256];
  int id_count = 0;
  CHECK_CUBLAS(cublasLtMatmulAlgoGetIds(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F,
                                        CUDA_R_16F, 256, ids, &id_count));

  const NamedShape shapes[] = {
      {"QKV", 128, 2304, 768, false},   {"O", 128, 768, 768, false},     {"FFN1", 128, 3072, 768, true},
      {"FFN2", 128, 768, 3072, false},  {"QKV", 4096, 2304, 768, false}, {"O", 4096, 768, 768, false},
      {"FFN1", 4096, 3072, 768, true},  {"FFN2", 4096, 768, 3072, false},
  };
  struct Row {
    std::string shape;
    double heuristic, searched, heuristic_in_run, searched_in_run, difference;
    int accepted;
  };
  std::vector<Row> rows;
  Rng rng{20261123};
  for (const NamedShape& s : shapes) {
    GemmOperands g = make_gemm_operands(s, rng);
    const LtShape shape{s.rows, s.n, s.k, s.k, s.k, s.n, false,
                        s.gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS};
    LtProblem problem = make_lt_problem(lt, shape, 0, 16);
    Search search{lt, stream, problem, g, max_timed};

    Search heuristic{lt, stream, problem, g, 16};
    for (const auto& result : problem.candidates) heuristic.pending.push_back(result.algo);
    heuristic.time_pending();

    for (int i = 0; i < id_count; ++i) {
      cublasLtMatmulAlgo_t base{};
      if (cublasLtMatmulAlgoInit(lt, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F, CUDA_R_16F,
                                 ids[i], &base) != CUBLAS_STATUS_SUCCESS) {
        continue;
      }
      std::vector<uint32_t> tiles = capability_list<uint32_t>(base, CUBLASLT_ALGO_CAP_TILE_IDS);
      std::vector<uint32_t> stages = capability_list<uint32_t>(base, CUBLASLT_ALGO_CAP_STAGES_IDS);
      if (tiles.empty()) tiles.push_back(CUBLASLT_MATMUL_TILE_UNDEFINED);
      if (stages.empty()) stages.push_back(CUBLASLT_MATMUL_STAGES_UNDEFINED);
      for (uint32_t tile : tiles) {
        for (uint32_t stage : stages) {
          for (uint16_t cluster : kClusterShapes) {
            cublasLtMatmulAlgo_t algo = base;
            set_config(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, tile);
            set_config(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, stage);
            set_config(algo, CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID, cluster);
            search.consider(algo);
          }
        }
      }
    }
    search.time_pending();
    const size_t plain = std::min<size_t>(5, search.timed.size());
    std::vector<cublasLtMatmulAlgo_t> seeds;
    for (size_t i = 0; i < plain; ++i) seeds.push_back(search.timed[i].algo);
    for (size_t i = 0; i < std::min<size_t>(3, heuristic.timed.size()); ++i) seeds.push_back(heuristic.timed[i].algo);
    for (const cublasLtMatmulAlgo_t& seed : seeds) {
      const bool splits = capability<int32_t>(seed, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT) != 0;
      const bool swizzles = capability<uint32_t>(seed, CUBLASLT_ALGO_CAP_CTA_SWIZZLING_SUPPORT) != 0;
      const int32_t options = capability<int32_t>(seed, CUBLASLT_ALGO_CAP_CUSTOM_OPTION_MAX);
      for (uint32_t swizzle = 0; swizzle <= (swizzles ? 1u : 0u); ++swizzle) {
        for (int32_t option = 0; option <= options; ++option) {
          cublasLtMatmulAlgo_t algo = seed;
          set_config(algo, CUBLASLT_ALGO_CONFIG_CTA_SWIZZLING, swizzle);
          set_config(algo, CUBLASLT_ALGO_CONFIG_CUSTOM_OPTION, option);
          if (swizzle != 0 || option != 0) search.consider(algo);
          if (!splits) continue;
          for (uint32_t split : kSplits) {
            for (uint32_t scheme : kReductionSchemes) {
              cublasLtMatmulAlgo_t with_split = algo;
              set_config(with_split, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, split);
              set_config(with_split, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, scheme);
              search.consider(with_split);
            }
          }
        }
      }
    }
    search.time_pending();
    if (search.timed.empty() || heuristic.timed.empty()) {
      std::printf("\n%s %d x %d x %d: nothing timed\n", s.name, s.rows, s.n, s.k);
      continue;
    }

    // The output of the search's best against the heuristic's best.
    search.gemm(heuristic.timed.front().algo);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    const std::vector<__half> reference = output(g, s);
    search.gemm(search.timed.front().algo);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    const std::vector<__half> found = output(g, s);
    double difference = 0, scale = 0;
    for (size_t i = 0; i < found.size(); ++i) {
      difference = std::max(difference, std::fabs(double(__half2float(found[i])) - __half2float(reference[i])));
      scale = std::max(scale, std::fabs(double(__half2float(reference[i]))));
    }

    // Warm again with more samples, and in-run: the weight from DRAM.
    const auto prepare = [&] {
      queue_in_run_conditions(flush, flush_bytes, g.in, static_cast<size_t>(s.rows) * s.k, stream);
    };
    const double prepare_us = captured_graph_us(stream, [&] {
                                for (int i = 0; i < kLaunches; ++i) prepare();
                              }, kRetimedSamples).us;
    const auto in_run_us = [&](const cublasLtMatmulAlgo_t& algo) {
      return (captured_graph_us(stream, [&] {
                for (int i = 0; i < kLaunches; ++i) {
                  prepare();
                  search.gemm(algo);
                }
              }, kRetimedSamples).us - prepare_us) / kLaunches;
    };
    std::printf("\n%s %d x %d x %d%s: %d configurations checked, %d accepted without a workspace, %zu timed, %d "
                "failed to launch\n",
                s.name, s.rows, s.n, s.k, s.gelu ? " + GELU" : "", search.checked, search.accepted,
                search.timed.size(), search.failed);
    std::printf("| which | configuration | warm us | in-run us |\n| --- | --- | ---: | ---: |\n");
    const size_t shown = std::min<size_t>(5, search.timed.size());
    double best_search_in_run = 1e30;
    for (size_t i = 0; i < shown; ++i) {
      const auto& algo = search.timed[i].algo;
      const double in_run = in_run_us(algo);
      best_search_in_run = std::min(best_search_in_run, in_run);
      std::printf("| search %zu | %s | %.2f | %.2f |\n", i + 1, describe(algo).c_str(),
                  search.warm_us(algo, kRetimedSamples), in_run);
    }
    const auto& first = heuristic.timed.front().algo;
    const double heuristic_warm = heuristic.warm_us(first, kRetimedSamples);
    const double heuristic_in_run = in_run_us(first);
    std::printf("| heuristic's best of %zu | %s | %.2f | %.2f |\n", heuristic.timed.size(), describe(first).c_str(),
                heuristic_warm, heuristic_in_run);
    rows.push_back({std::string(s.name) + " " + std::to_string(s.rows), heuristic_warm,
                    search.warm_us(search.timed.front().algo, kRetimedSamples), heuristic_in_run, best_search_in_run,
                    difference / scale, search.accepted});
    destroy_lt_problem(problem);
    free_gemm_operands(g);
  }

  std::printf("\n| GEMM | configurations | heuristic warm us | search warm us | heuristic in-run us | search in-run "
              "us | max diff / max out |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
  for (const Row& r : rows) {
    std::printf("| %s | %d | %.2f | %.2f | %.2f | %.2f | %.1e |\n", r.shape.c_str(), r.accepted, r.heuristic,
                r.searched, r.heuristic_in_run, r.searched_in_run, r.difference);
  }
  return 0;
}
