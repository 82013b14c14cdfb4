// Do cuBLASLt's kernels wait for a programmatic dependency, and what would
// programmatic edges save in a run? Decision 0008 found dependent launches
// useless because cuBLASLt's kernels "neither wait nor signal"; that was an
// earlier cuBLAS. A graph's edges can be made programmatic after capture
// (cudaGraphEdgeData), also those into kernels a library launched, so the
// question is whether those kernels call griddepcontrol.wait before they
// read. They do not (cuBLASLt 13.1 on an H100; bench/RESULTS.md, decision
// 0008's twenty-first-session addendum).
//
//   nvcc -std=c++17 -O3 -Inative -arch=native bench/gpu/lt_programmatic_edge.cu -lcublasLt -lcuda \
//     -o /tmp/lt_programmatic_edge && /tmp/lt_programmatic_edge
//
// 1. Waiting: a kernel writes a GEMM's input (ones over zeros) 20 µs after
//    it starts, letting its dependents launch at its start, after its
//    stores, or at its exit; then the GEMM (the heuristic's first algorithm
//    without a workspace, as the backend asks for fp16) at BERT-base shapes,
//    behind an edge made programmatic. A GEMM that does not wait reads the
//    zeros; one that waits gives the plain graph's result bit for bit. The
//    writer runs as 132 blocks, which keep the GEMM's blocks off every SM
//    until it ends (so even a GEMM that does not wait looks right), and as 8.
// 2. The same, 8 blocks letting the GEMM launch at once, for every
//    algorithm id cuBLASLt has, each as its heuristic configures it.
// 3. Saving: a chain of 12 BERT-base layers at 128 rows, its four GEMMs per
//    layer by cuBLASLt and three kernels of its own (a stand-in for
//    attention and two residual LayerNorms, each waiting with
//    griddepcontrol.wait and letting its dependents launch at its start, or
//    after its stores), replayed from a graph with plain edges, with
//    programmatic edges into its own kernels, into cuBLASLt's, and into both
//    (each compared with the plain graph's output bit for bit).
#include <cublasLt.h>
#include <cuda.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "layer_chain.cuh"

namespace {

using fusedrt::probe::Chain;
using fusedrt::probe::enqueue_chain;
using fusedrt::probe::make_chain;
using fusedrt::probe::kHidden;
using fusedrt::probe::LtProblem;
using fusedrt::probe::LtShape;
using fusedrt::test::Rng;

__device__ __forceinline__ long long globaltimer_ns() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Writes ones over `in` after delay_ns; lets its dependents launch at its
// start (trigger 0), after its stores and a fence (1) or at its exit (2).
__global__ void late_writer(__half* in, size_t count, long long delay_ns, int trigger) {
  if (trigger == 0) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  const long long start = globaltimer_ns();
  while (globaltimer_ns() - start < delay_ns) {
  }
  for (size_t i = blockIdx.x * size_t{blockDim.x} + threadIdx.x; i < count; i += size_t{gridDim.x} * blockDim.x) {
    in[i] = __float2half(1.f);
  }
  if (trigger == 1) {
    __threadfence();
    __syncthreads();
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  }
}

struct WriterMode {
  const char* name;
  int trigger;
  long long delay_ns;
  int blocks;
};

bool is_kernel(cudaGraphNode_t node) {
  cudaGraphNodeType type;
  CHECK_CUDA(cudaGraphNodeGetType(node, &type));
  return type == cudaGraphNodeTypeKernel;
}

std::string kernel_name(cudaGraphNode_t node) {
  CUDA_KERNEL_NODE_PARAMS params{};
  const char* name = nullptr;
  if (cuGraphKernelNodeGetParams(reinterpret_cast<CUgraphNode>(node), &params) != CUDA_SUCCESS ||
      cuFuncGetName(&name, params.func) != CUDA_SUCCESS || name == nullptr) {
    return "?";
  }
  return name;
}

// Makes every edge of graph between two kernel nodes for which want(from,
// to) holds programmatic: `to` may launch once every block of `from` has
// let it (griddepcontrol.launch_dependents) or exited. Returns how many.
int make_programmatic(cudaGraph_t graph, const std::function<bool(cudaGraphNode_t, cudaGraphNode_t)>& want) {
  size_t count = 0;
  CHECK_CUDA(cudaGraphGetEdges(graph, nullptr, nullptr, nullptr, &count));
  std::vector<cudaGraphNode_t> from(count), to(count);
  std::vector<cudaGraphEdgeData> data(count);
  CHECK_CUDA(cudaGraphGetEdges(graph, from.data(), to.data(), data.data(), &count));
  int changed = 0;
  for (size_t i = 0; i < count; ++i) {
    if (!is_kernel(from[i]) || !is_kernel(to[i]) || !want(from[i], to[i])) continue;
    CHECK_CUDA(cudaGraphRemoveDependencies(graph, &from[i], &to[i], &data[i], 1));
    cudaGraphEdgeData edge{};
    edge.from_port = cudaGraphKernelNodePortProgrammatic;
    edge.type = cudaGraphDependencyTypeProgrammatic;
    CHECK_CUDA(cudaGraphAddDependencies(graph, &from[i], &to[i], &edge, 1));
    ++changed;
  }
  return changed;
}

cudaGraph_t capture(cudaStream_t stream, const std::function<void()>& enqueue) {
  cudaGraph_t graph;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  enqueue();
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  return graph;
}

cudaGraphExec_t instantiate(cudaGraph_t graph) {
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  return exec;
}

std::vector<uint16_t> read_halves(const void* device, size_t count) {
  std::vector<uint16_t> host(count);
  CHECK_CUDA(cudaMemcpy(host.data(), device, count * 2, cudaMemcpyDeviceToHost));
  return host;
}

size_t differing(const std::vector<uint16_t>& a, const std::vector<uint16_t>& b) {
  size_t n = 0;
  for (size_t i = 0; i < a.size(); ++i) n += a[i] != b[i];
  return n;
}

const char* const kWaitingHeader =
    "| GEMM | writer | algorithm | edges made programmatic | same as plain | wrong replays | plain us | "
    "programmatic us | kernels |\n| --- | --- | ---: | ---: | --- | --- | ---: | ---: | --- |\n";

struct WaitCase {
  const char* name;
  LtShape shape;
};

// Every algorithm cuBLASLt has for the shape without a workspace: for each
// of its algorithm ids, the configuration its heuristic picks.
LtProblem every_algorithm(cublasLtHandle_t handle, const LtShape& s) {
  LtProblem p = fusedrt::probe::make_lt_problem(handle, s, 0, 1);
  const cudaDataType_t out_type = s.fp32_out ? CUDA_R_32F : CUDA_R_16F;
  int ids[256];
  int id_count = 0;
  CHECK_CUBLAS(cublasLtMatmulAlgoGetIds(handle, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, out_type,
                                        out_type, 256, ids, &id_count));
  cublasLtMatmulPreference_t preference;
  CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&preference));
  const uint32_t mode = CUBLASLT_SEARCH_LIMITED_BY_ALGO_ID;
  CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_SEARCH_MODE, &mode, sizeof(mode)));
  p.candidates.clear();
  for (int i = 0; i < id_count; ++i) {
    cublasLtMatmulHeuristicResult_t result{};
    if (cublasLtMatmulAlgoInit(handle, CUBLAS_COMPUTE_32F, CUDA_R_32F, CUDA_R_16F, CUDA_R_16F, out_type, out_type,
                               ids[i], &result.algo) != CUBLAS_STATUS_SUCCESS) {
      continue;
    }
    int found = 0;
    if (cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, preference, 1, &result, &found) ==
            CUBLAS_STATUS_SUCCESS &&
        found == 1 && result.state == CUBLAS_STATUS_SUCCESS) {
      p.candidates.push_back(result);
    }
  }
  cublasLtMatmulPreferenceDestroy(preference);
  std::printf("(%d x %d x %d: %d algorithm ids, %zu with a configuration for it)\n", s.rows, s.n, s.k, id_count,
              p.candidates.size());
  return p;
}

// Whether each of problem's candidates waits behind a programmatic edge
// from late_writer.
void check_waiting(cublasLtHandle_t handle, cudaStream_t stream, const WaitCase& c, const WriterMode& m,
                   LtProblem problem, Rng& rng) {
  const LtShape& s = c.shape;
  const size_t in_count = size_t{static_cast<size_t>(s.rows)} * s.k;
  const size_t out_count = size_t{static_cast<size_t>(s.rows)} * s.n;
  const size_t out_halves = s.fp32_out ? 2 * out_count : out_count;
  __half* in = nullptr;
  CHECK_CUDA(cudaMalloc(&in, in_count * 2));
  __half* weight = fusedrt::probe::random_device_halves(size_t{static_cast<size_t>(s.n)} * s.k, 0.05f, rng);
  __half* bias = fusedrt::probe::random_device_halves(s.n, 0.05f, rng);
  void* out = nullptr;
  CHECK_CUDA(cudaMalloc(&out, out_halves * 2));
  const bool has_bias = s.epilogue != CUBLASLT_EPILOGUE_DEFAULT;
  for (size_t a = 0; a < problem.candidates.size(); ++a) {
    const cublasLtMatmulAlgo_t& algo = problem.candidates[a].algo;
    cudaGraph_t plain = capture(stream, [&] {
      late_writer<<<m.blocks, 256, 0, stream>>>(in, in_count, m.delay_ns, m.trigger);
      fusedrt::probe::run_lt_problem(handle, problem, algo, in, weight, has_bias ? bias : nullptr, out, nullptr, 0,
                                     stream);
    });
    cudaGraph_t programmatic;
    CHECK_CUDA(cudaGraphClone(&programmatic, plain));
    size_t roots = 1;
    cudaGraphNode_t writer;
    CHECK_CUDA(cudaGraphGetRootNodes(programmatic, &writer, &roots));
    if (roots != 1 || kernel_name(writer).find("late_writer") == std::string::npos) {
      std::fprintf(stderr, "the graph's root is not late_writer\n");
      std::exit(2);
    }
    const int edges =
        make_programmatic(programmatic, [&](cudaGraphNode_t from, cudaGraphNode_t) { return from == writer; });
    // The kernels cuBLASLt queued, by name.
    std::set<std::string> names;
    size_t node_count = 0;
    CHECK_CUDA(cudaGraphGetNodes(plain, nullptr, &node_count));
    std::vector<cudaGraphNode_t> nodes(node_count);
    CHECK_CUDA(cudaGraphGetNodes(plain, nodes.data(), &node_count));
    for (cudaGraphNode_t node : nodes) {
      if (is_kernel(node)) {
        const std::string name = kernel_name(node);
        if (name.find("late_writer") == std::string::npos) names.insert(name.substr(0, 60));
      }
    }
    cudaGraphExec_t plain_exec = instantiate(plain), programmatic_exec = instantiate(programmatic);
    const auto result = [&](cudaGraphExec_t exec) {
      CHECK_CUDA(cudaMemsetAsync(in, 0, in_count * 2, stream));
      CHECK_CUDA(cudaMemsetAsync(out, 0xff, out_halves * 2, stream));
      CHECK_CUDA(cudaGraphLaunch(exec, stream));
      CHECK_CUDA(cudaStreamSynchronize(stream));
      return read_halves(out, out_halves);
    };
    const std::vector<uint16_t> expected = result(plain_exec);
    int wrong_replays = 0;
    size_t most_wrong = 0;
    for (int r = 0; r < 5; ++r) {
      const size_t wrong = differing(result(programmatic_exec), expected);
      wrong_replays += wrong > 0;
      most_wrong = std::max(most_wrong, wrong);
    }
    const double plain_us = fusedrt::test::median_graph_us(plain_exec, stream, 50);
    const double programmatic_us = fusedrt::test::median_graph_us(programmatic_exec, stream, 50);
    std::string joined;
    for (const std::string& name : names) joined += (joined.empty() ? "" : ", ") + name;
    std::printf("| %s | %s | %zu | %d | %s | %d of 5 (%zu of %zu values) | %.2f | %.2f | %s |\n", c.name, m.name, a,
                edges,
                wrong_replays == 0 ? "yes" : "NO", wrong_replays, most_wrong, out_halves, plain_us, programmatic_us,
                joined.c_str());
    CHECK_CUDA(cudaGraphExecDestroy(plain_exec));
    CHECK_CUDA(cudaGraphExecDestroy(programmatic_exec));
    CHECK_CUDA(cudaGraphDestroy(plain));
    CHECK_CUDA(cudaGraphDestroy(programmatic));
  }
  fusedrt::probe::destroy_lt_problem(problem);
  for (void* p : {static_cast<void*>(in), static_cast<void*>(weight), static_cast<void*>(bias), out}) {
    CHECK_CUDA(cudaFree(p));
  }
}

bool is_own_kernel(cudaGraphNode_t node) {
  const std::string name = kernel_name(node);
  return name.find("mix_rows") != std::string::npos || name.find("add_norm_rows") != std::string::npos;
}

bool is_nvjet(cudaGraphNode_t node) { return kernel_name(node).rfind("nvjet_", 0) == 0; }

void time_chain(cublasLtHandle_t handle, cudaStream_t stream, int rows, bool trigger_late, Rng& rng) {
  Chain c = make_chain(handle, rows, rng);
  c.trigger_late = trigger_late;
  const size_t x_count = size_t{static_cast<size_t>(rows)} * kHidden;
  __half* x0 = fusedrt::probe::random_device_halves(x_count, 1.f, rng);
  cudaGraph_t plain = capture(stream, [&] { enqueue_chain(c, stream); });
  {
    size_t node_count = 0;
    CHECK_CUDA(cudaGraphGetNodes(plain, nullptr, &node_count));
    std::vector<cudaGraphNode_t> nodes(node_count);
    CHECK_CUDA(cudaGraphGetNodes(plain, nodes.data(), &node_count));
    std::printf("%d rows: %zu nodes; the first layer's:", rows, node_count);
    for (size_t i = 0; i < node_count && i < 9; ++i) {
      std::printf(" %s", is_kernel(nodes[i]) ? kernel_name(nodes[i]).c_str() : "(not a kernel)");
    }
    std::printf("\n\n");
  }
  struct Variant {
    const char* name;
    std::function<bool(cudaGraphNode_t, cudaGraphNode_t)> want;
  };
  const Variant variants[] = {
      {"plain edges", [](cudaGraphNode_t, cudaGraphNode_t) { return false; }},
      {"programmatic into own kernels", [](cudaGraphNode_t, cudaGraphNode_t to) { return is_own_kernel(to); }},
      {"programmatic into nvjet kernels", [](cudaGraphNode_t, cudaGraphNode_t to) { return is_nvjet(to); }},
      {"programmatic into own and nvjet",
       [](cudaGraphNode_t, cudaGraphNode_t to) { return is_own_kernel(to) || is_nvjet(to); }},
  };
  constexpr int kVariants = sizeof(variants) / sizeof(variants[0]);
  int edges[kVariants];
  cudaGraphExec_t exec[kVariants];
  for (int v = 0; v < kVariants; ++v) {
    cudaGraph_t g;
    CHECK_CUDA(cudaGraphClone(&g, plain));
    edges[v] = make_programmatic(g, variants[v].want);
    exec[v] = instantiate(g);
    CHECK_CUDA(cudaGraphDestroy(g));
  }
  const auto output = [&](cudaGraphExec_t e) {
    CHECK_CUDA(cudaMemcpyAsync(c.x, x0, x_count * 2, cudaMemcpyDeviceToDevice, stream));
    CHECK_CUDA(cudaGraphLaunch(e, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    return read_halves(c.x, x_count);
  };
  const std::vector<uint16_t> expected = output(exec[0]);
  double us[kVariants][3];
  for (int round = 0; round < 3; ++round) {
    for (int v = 0; v < kVariants; ++v) us[v][round] = fusedrt::test::median_graph_us(exec[v], stream, 200);
  }
  for (int v = 0; v < kVariants; ++v) {
    size_t wrong = 0;
    for (int r = 0; r < 10; ++r) wrong = std::max(wrong, differing(output(exec[v]), expected));
    std::printf("| %d | %s | %s | %d | %.2f / %.2f / %.2f | %zu of %zu |\n", rows,
                trigger_late ? "after stores" : "at start", variants[v].name, edges[v], us[v][0],
                us[v][1], us[v][2], wrong, x_count);
  }
  for (cudaGraphExec_t e : exec) CHECK_CUDA(cudaGraphExecDestroy(e));
  CHECK_CUDA(cudaGraphDestroy(plain));
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  CHECK_CUDA(cudaFree(nullptr));
  cublasLtHandle_t handle;
  CHECK_CUBLAS(cublasLtCreate(&handle));
  std::printf("lt_programmatic_edge on %s, cuBLASLt %zu\n\n", prop.name, cublasLtGetVersion());
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  Rng rng{20261123};
  std::printf("1. Does the GEMM wait behind a programmatic edge? (the writer stores 20 us after it starts; "
              "graph us, median of 50)\n\n%s", kWaitingHeader);
  const WaitCase cases[] = {
      {"QKV 128 x 2304 x 768 +bias", {128, 2304, 768, 768, 768, 2304, false, CUBLASLT_EPILOGUE_BIAS}},
      {"FFN2 128 x 768 x 3072 fp32 out", {128, 768, 3072, 3072, 3072, 768, true, CUBLASLT_EPILOGUE_DEFAULT}},
      {"FFN1 128 x 3072 x 768 +gelu", {128, 3072, 768, 768, 768, 3072, false, CUBLASLT_EPILOGUE_GELU_BIAS}},
      {"QKV 4096 x 2304 x 768 +bias", {4096, 2304, 768, 768, 768, 2304, false, CUBLASLT_EPILOGUE_BIAS}},
      {"FFN2 4096 x 768 x 3072", {4096, 768, 3072, 3072, 3072, 768, false, CUBLASLT_EPILOGUE_DEFAULT}},
      {"O 128 x 768 x 768", {128, 768, 768, 768, 768, 768, false, CUBLASLT_EPILOGUE_DEFAULT}},
      {"FFN2 128 x 768 x 3072", {128, 768, 3072, 3072, 3072, 768, false, CUBLASLT_EPILOGUE_DEFAULT}},
      {"O 4096 x 768 x 768", {4096, 768, 768, 768, 768, 768, false, CUBLASLT_EPILOGUE_DEFAULT}},
      {"FFN1 4096 x 3072 x 768 +gelu", {4096, 3072, 768, 768, 768, 3072, false, CUBLASLT_EPILOGUE_GELU_BIAS}},
  };
  // With 132 writer blocks the GEMM's blocks cannot start beside them (the
  // GEMM takes nearly all of an SM's registers), so they start as the writer
  // ends whether they wait or not; with 8, most SMs are free.
  const WriterMode writers[] = {
      {"132 blocks, trigger at start", 0, 20000, 132},
      {"8 blocks, trigger at start", 0, 20000, 8},
      {"8 blocks, trigger after the stores", 1, 20000, 8},
      {"8 blocks, no trigger", 2, 20000, 8},
  };
  for (const WaitCase& c : cases) {
    for (const WriterMode& m : writers) {
      check_waiting(handle, stream, c, m, fusedrt::probe::make_lt_problem(handle, c.shape, 0, 1), rng);
    }
  }
  std::printf("\n2. Every algorithm cuBLASLt has for two shapes, each as its heuristic configures it, after the "
              "8-block writer\n\n%s", kWaitingHeader);
  for (const WaitCase* c : {&cases[0], &cases[5]}) {
    check_waiting(handle, stream, *c, writers[1], every_algorithm(handle, c->shape), rng);
  }
  std::printf("\n3. 12 BERT-base layers (4 cuBLASLt GEMMs and 3 own kernels each), graph us, median of 200, "
              "3 rounds\n\n");
  std::printf("| rows | own kernels trigger | edges | made programmatic | us | output differing from plain |\n"
              "| ---: | --- | --- | ---: | --- | --- |\n");
  for (bool late : {false, true}) time_chain(handle, stream, 128, late, rng);
  cublasLtDestroy(handle);
  std::printf("\nlt_programmatic_edge: done\n");
  return 0;
}
