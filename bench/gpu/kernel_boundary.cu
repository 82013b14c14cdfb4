// What a kernel boundary costs the GPU inside a CUDA graph: the time a run
// of BERT-base at batch 1 spends between its ~90 kernels rather than in
// them, which only fewer kernels (fusion, a persistent kernel) or overlapped
// launches (programmatic dependent launch) can recover. docs/cuda.md,
// "Where the time goes", weighs those levers with it.
//
//   nvcc -std=c++17 -O3 -arch=native bench/gpu/kernel_boundary.cu -o /tmp/kernel_boundary
//   /tmp/kernel_boundary
//
// A graph of 96 kernels in a chain, each reading what the one before wrote
// (so none may start early), timed with events around the graph (median of
// 50 launches after warm-up, test_support's median_us), per kernel; for
// grids of 1, 132 and 528 blocks of 128 threads, each kernel doing almost
// nothing (a few loads and stores)
// or about 2 µs of dependent arithmetic. Then the same chains with
// programmatic dependent launch: each kernel may start while the previous
// one finishes and waits for it with griddepcontrol.wait, and the previous
// one signals with griddepcontrol.launch_dependents once its blocks are past
// their reads.
#include <cuda_runtime.h>

#include <cstdio>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, median_us

namespace {

constexpr int kKernels = 96;
constexpr int kThreads = 128;

// x[i] = f(x[i]) over the grid; `spin` rounds of dependent arithmetic make
// the kernel last; with kDependent it waits for the previous kernel's
// memory (griddepcontrol.wait) before reading and lets the next launch early.
template <bool kDependent>
__global__ void step(float* x, int n, int spin) {
  if constexpr (kDependent) asm volatile("griddepcontrol.wait;" ::: "memory");
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) {
    float v = x[i];
    for (int r = 0; r < spin; ++r) v = v * 0.999f + 0.001f;
    x[i] = v + 1.f;
  }
  if constexpr (kDependent) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

double per_kernel_us(int blocks, int spin, bool dependent, float* x) {
  const int n = blocks * kThreads;
  const auto launch = [&](cudaStream_t stream) {
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(blocks);
    config.blockDim = dim3(kThreads);
    config.stream = stream;
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    config.attrs = &attribute;
    config.numAttrs = dependent ? 1 : 0;
    if (dependent) {
      CHECK_CUDA(cudaLaunchKernelEx(&config, step<true>, x, n, spin));
    } else {
      CHECK_CUDA(cudaLaunchKernelEx(&config, step<false>, x, n, spin));
    }
  };
  return fusedrt::test::median_us(launch, kKernels, 50);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("kernel_boundary on %s (%d SMs): %d chained kernels per graph, per-kernel GPU time, median of 50 graphs\n\n",
              prop.name, prop.multiProcessorCount, kKernels);
  float* x;
  CHECK_CUDA(cudaMalloc(&x, sizeof(float) * 528 * kThreads));
  CHECK_CUDA(cudaMemset(x, 0, sizeof(float) * 528 * kThreads));
  std::printf("| blocks | work per kernel | plain us | dependent launch us |\n| ---: | --- | ---: | ---: |\n");
  for (int blocks : {1, 132, 528}) {
    for (int spin : {0, 1000}) {
      const double plain = per_kernel_us(blocks, spin, false, x);
      const double dependent = per_kernel_us(blocks, spin, true, x);
      std::printf("| %d | %s | %.2f | %.2f |\n", blocks, spin == 0 ? "a load and a store" : "1000 dependent FMAs", plain,
                  dependent);
    }
  }
  CHECK_CUDA(cudaFree(x));
  std::printf("\nkernel_boundary: done\n");
  return 0;
}
