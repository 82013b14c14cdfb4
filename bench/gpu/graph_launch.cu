// What launching a recorded run costs the host: a BERT-layer-like CUDA graph
// (cuBLASLt fp16 GEMMs of 128 rows, or as many as asked, and small kernels
// between them, as the backend records for batch 1) launched from the host,
// against the same graph launched from the device (CUDA 12+ device graph
// launch: the host launches a one-kernel graph whose kernel tail-launches
// the whole graph).
// The questions it answers (bench/RESULTS.md): what does the launch of such
// a graph cost the host, with and without the memcpy nodes of a run's
// inputs and outputs, and does a device launch take it off the host?
//
//   nvcc -std=c++17 -O2 -rdc=true -arch=native -Inative bench/gpu/graph_launch.cu -lcublasLt -lcudadevrt -o /tmp/graph_launch
//   /tmp/graph_launch [layers [rows]]
//
// Each mode runs its graph 300 times, one at a time (the host waits for the
// end event before the next launch, as one request after another does), and
// prints medians: the host's time in the launch call and in the whole issue
// as the backend does it (cudaSetDevice, an event, the launch, an event),
// launch to the end event seen, and the GPU time between the events. The last
// kernel of the graph counts its runs in host-mapped memory; every run checks
// that the count moved before its end event completed, i.e. that the stream
// waited for the tail-launched graph.
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS

namespace {

constexpr int kHidden = 768;
constexpr int kRuns = 300;

// Stands in for the LayerNorm, attention and top-k kernels: a pass over the
// activations.
__global__ void scale_rows(__half* x, int n, float factor) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    x[i] = __float2half(__half2float(x[i]) * factor);
  }
}

__global__ void count_run(unsigned* runs) { atomicAdd(runs, 1u); }

// error: host-mapped, where a failed device launch leaves its code.
__global__ void tail_launch(cudaGraphExec_t exec, int* error) {
  const cudaError_t launched = cudaGraphLaunch(exec, cudaStreamGraphTailLaunch);
  if (launched != cudaSuccess) *error = static_cast<int>(launched);
}

struct Gemm {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, c;
  cublasLtMatmulAlgo_t algo;
};

Gemm make_gemm(cublasLtHandle_t lt, int rows, int n, int k) {
  Gemm g{};
  CHECK_CUBLAS(cublasLtMatmulDescCreate(&g.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&g.a, CUDA_R_16F, k, n, k));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&g.b, CUDA_R_16F, k, rows, k));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&g.c, CUDA_R_16F, n, rows, n));
  cublasLtMatmulPreference_t preference;
  CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&preference));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  CHECK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(lt, g.desc, g.a, g.b, g.c, g.c, preference, 1, &result, &found));
  cublasLtMatmulPreferenceDestroy(preference);
  if (found == 0) {
    std::fprintf(stderr, "no cuBLASLt algorithm for %dx%dx%d\n", rows, n, k);
    std::exit(1);
  }
  g.algo = result.algo;
  return g;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

double us_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count();
}

// Runs `exec` kRuns times on stream; returns false (after printing why) if a
// launch fails or a run ended before the graph's last kernel.
bool time_mode(const char* name, cudaGraphExec_t exec, cudaStream_t stream, volatile unsigned* runs) {
  cudaEvent_t start, end;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&end));
  std::vector<double> launch_us, issue_us, wall_us, gpu_us;
  for (int i = 0; i < kRuns + 20; ++i) {
    const unsigned before = *runs;
    // As the backend issues a replay: select the device, then the launch
    // between the two events that time it.
    const auto t0 = std::chrono::steady_clock::now();
    CHECK_CUDA(cudaSetDevice(0));
    CHECK_CUDA(cudaEventRecord(start, stream));
    const auto t1 = std::chrono::steady_clock::now();
    const cudaError_t launched = cudaGraphLaunch(exec, stream);
    const double launch = us_since(t1);
    if (launched != cudaSuccess) {
      std::printf("%s: cudaGraphLaunch failed: %s\n", name, cudaGetErrorString(launched));
      return false;
    }
    CHECK_CUDA(cudaEventRecord(end, stream));
    const double issue = us_since(t0);
    while (cudaEventQuery(end) == cudaErrorNotReady) {
    }
    const double wall = us_since(t0);
    const cudaError_t ran = cudaGetLastError();
    if (ran != cudaSuccess || *runs != before + 1) {
      std::printf("%s: run %d: %s, graph's last kernel ran %u times (want 1) before the end event\n", name, i,
                  cudaGetErrorString(ran), *runs - before);
      return false;
    }
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, end));
    if (i >= 20) {
      launch_us.push_back(launch);
      issue_us.push_back(issue);
      wall_us.push_back(wall);
      gpu_us.push_back(1e3 * ms);
    }
  }
  std::printf("| %s | %.1f | %.1f | %.1f | %.1f |\n", name, median(launch_us), median(issue_us), median(wall_us),
              median(gpu_us));
  cudaEventDestroy(start);
  cudaEventDestroy(end);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  const int layers = argc > 1 ? std::atoi(argv[1]) : 12;
  const int rows = argc > 2 ? std::atoi(argv[2]) : 128;
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasLtHandle_t lt;
  CHECK_CUBLAS(cublasLtCreate(&lt));

  // A BERT-base layer's GEMM shapes (n, k) at `rows` rows, and a buffer for
  // each operand; values do not matter for timing, so the buffers are zeroed.
  const int shapes[4][2] = {{3 * kHidden, kHidden}, {kHidden, kHidden}, {4 * kHidden, kHidden}, {kHidden, 4 * kHidden}};
  std::vector<Gemm> gemms;
  for (const auto& s : shapes) gemms.push_back(make_gemm(lt, rows, s[0], s[1]));
  __half *in, *out, *weight;
  const size_t activation_bytes = sizeof(__half) * rows * 4 * kHidden;
  CHECK_CUDA(cudaMalloc(&in, activation_bytes));
  CHECK_CUDA(cudaMalloc(&out, activation_bytes));
  CHECK_CUDA(cudaMalloc(&weight, sizeof(__half) * 4 * kHidden * kHidden));
  CHECK_CUDA(cudaMemset(in, 0, activation_bytes));
  CHECK_CUDA(cudaMemset(weight, 0, sizeof(__half) * 4 * kHidden * kHidden));
  unsigned* runs = nullptr;
  CHECK_CUDA(cudaHostAlloc(&runs, sizeof(unsigned), cudaHostAllocMapped));
  *runs = 0;
  unsigned* runs_on_device = nullptr;
  CHECK_CUDA(cudaHostGetDevicePointer(&runs_on_device, runs, 0));
  int* launch_error = nullptr;
  CHECK_CUDA(cudaHostAlloc(&launch_error, sizeof(int), cudaHostAllocMapped));
  *launch_error = 0;
  int* launch_error_on_device = nullptr;
  CHECK_CUDA(cudaHostGetDevicePointer(&launch_error_on_device, launch_error, 0));

  // Per layer: 4 GEMMs and 3 small kernels, as the backend's 7 launches.
  // With copies, the graph also moves what a fill-mask run moves: four input
  // arrays in from pinned host memory first, the top-k ids and scores out
  // last.
  int32_t *staging = nullptr, *device_inputs = nullptr;
  CHECK_CUDA(cudaHostAlloc(&staging, 4 * 4096, cudaHostAllocMapped));
  CHECK_CUDA(cudaMalloc(&device_inputs, 4 * 4096));
  const float one = 1.f, zero = 0.f;
  const auto record = [&](bool copies) {
    CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    if (copies) {
      for (int i = 0; i < 4; ++i) {
        CHECK_CUDA(cudaMemcpyAsync(device_inputs + 1024 * i, staging + 1024 * i, 512, cudaMemcpyHostToDevice, stream));
      }
    }
    for (int l = 0; l < layers; ++l) {
      for (size_t g = 0; g < gemms.size(); ++g) {
        CHECK_CUBLAS(cublasLtMatmul(lt, gemms[g].desc, &one, weight, gemms[g].a, in, gemms[g].b, &zero, out,
                                    gemms[g].c, out, gemms[g].c, &gemms[g].algo, nullptr, 0, stream));
        if (g != 2) scale_rows<<<24, 256, 0, stream>>>(out, rows * kHidden, 1.f);
      }
    }
    if (copies) CHECK_CUDA(cudaMemcpyAsync(staging, device_inputs, 40, cudaMemcpyDeviceToHost, stream));
    count_run<<<1, 1, 0, stream>>>(runs_on_device);
    cudaGraph_t graph;
    CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
    return graph;
  };
  cudaGraph_t graph = record(false);
  cudaGraph_t graph_with_copies = record(true);
  size_t nodes = 0;
  CHECK_CUDA(cudaGraphGetNodes(graph, nullptr, &nodes));

  cudaGraphExec_t host_exec, host_exec_with_copies, device_exec;
  CHECK_CUDA(cudaGraphInstantiate(&host_exec, graph, 0));
  CHECK_CUDA(cudaGraphInstantiate(&host_exec_with_copies, graph_with_copies, 0));
  const cudaError_t device_instantiated =
      cudaGraphInstantiateWithFlags(&device_exec, graph, cudaGraphInstantiateFlagDeviceLaunch);

  std::printf("graph_launch on %s: %d layers, %d rows, %zu nodes (%d GEMMs), %d runs each, medians\n\n", prop.name,
              layers, rows, nodes, layers * 4, kRuns);
  std::printf("| launch | host in the launch call, us | host issuing it as the backend does, us | launch to end event "
              "seen, us | GPU, events around it, us |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: |\n");
  bool ok = time_mode("host: cudaGraphLaunch of the graph", host_exec, stream, runs);
  ok = time_mode("host: the same with 4 copies in and 1 out (5 memcpy nodes)", host_exec_with_copies, stream, runs) && ok;
  if (device_instantiated != cudaSuccess) {
    std::printf("\nthe graph cannot be instantiated for device launch: %s\n", cudaGetErrorString(device_instantiated));
    return 1;
  }
  CHECK_CUDA(cudaGraphUpload(device_exec, stream));
  ok = time_mode("host: cudaGraphLaunch of the device-launchable graph", device_exec, stream, runs) && ok;

  // The launcher: one kernel that tail-launches the graph, itself recorded
  // as a graph (device launches are made from kernels running in graphs).
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  tail_launch<<<1, 1, 0, stream>>>(device_exec, launch_error_on_device);
  cudaGraph_t launcher_graph;
  CHECK_CUDA(cudaStreamEndCapture(stream, &launcher_graph));
  for (const unsigned long long flags : {0ull, static_cast<unsigned long long>(cudaGraphInstantiateFlagDeviceLaunch)}) {
    cudaGraphExec_t launcher;
    const cudaError_t made = cudaGraphInstantiateWithFlags(&launcher, launcher_graph, flags);
    if (made != cudaSuccess) {
      std::printf("| device: launcher instantiated with flags %llu | %s | | | |\n", flags, cudaGetErrorString(made));
      continue;
    }
    CHECK_CUDA(cudaGraphUpload(launcher, stream));
    ok = time_mode(flags == 0 ? "device: tail launch from a one-kernel graph"
                              : "device: tail launch from a device-launchable one-kernel graph",
                   launcher, stream, runs) &&
         ok;
    if (*launch_error != 0) {
      std::printf("  (the device-side cudaGraphLaunch returned %s)\n",
                  cudaGetErrorString(static_cast<cudaError_t>(*launch_error)));
      *launch_error = 0;
    }
    cudaGraphExecDestroy(launcher);
  }
  std::printf("\ngraph_launch: %s\n", ok ? "every run waited for the whole graph" : "FAILED");
  return ok ? 0 : 1;
}
