// Whether page-locking memory on one thread stalls the CUDA calls another
// thread makes to replay a run: the question behind the addon's rare holds
// of the JS thread over 1 ms while its page-locked result pool grew on a
// helper thread with cudaHostAlloc (native/output_buffer.cpp; docs/runtime.md,
// "Outputs land in their result"). Its answer made the CUDA backend's pool
// allocator register written memory instead (decision 0011, thirteenth-session
// addendum).
//
//   nvcc -std=c++17 -O3 -arch=native -I native bench/gpu/pinned_alloc_stall.cu -o /tmp/pinned_alloc_stall
//   /tmp/pinned_alloc_stall
//
// The main thread replays a run the way the runtime does, 2000 times one
// after another: re-point the graph's device-to-host copy at this run's
// page-locked result buffer (cudaGraphExecMemcpyNodeSetParams1D), launch the
// graph (90 chained small kernels, then the copy), then poll its end event
// (cudaEventQuery) until it is done. It times each call on the host. Beside
// it, a second thread does nothing, or page-locks buffers of one size back
// to back (keeping them, as the pool does; at most 1 GB): with cudaHostAlloc,
// or by cudaHostRegister of memory it allocated and wrote first (so the pages
// exist before the driver pins them), or with cudaHostAlloc and frees them.
// The table gives, per case, the replays whose launch (re-point + launch) or
// one poll took over 1 ms, and the longest.
#include <cuda_runtime.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA

namespace {

constexpr int kKernels = 90;
constexpr int kReplays = 2000;
constexpr size_t kResultBytes = 128 << 10;  // a 98 KB result's class
constexpr size_t kMaxKept = size_t{1} << 30;

__global__ void step(float* x) { x[threadIdx.x] = x[threadIdx.x] * 0.5f + 1.f; }

double now_us() {
  return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

enum class Neighbour { kIdle, kAllocate, kRegister, kAllocateAndFree };

struct Stalls {
  int launches_over_1ms = 0;
  int polls_over_1ms = 0;
  double longest_launch_us = 0;
  double longest_poll_us = 0;
  int page_lockings = 0;
};

Stalls replay_beside(Neighbour neighbour, size_t neighbour_bytes) {
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  float* x = nullptr;
  CHECK_CUDA(cudaMalloc(&x, kResultBytes));
  CHECK_CUDA(cudaMemset(x, 0, kResultBytes));
  std::vector<void*> results(2);
  for (void*& r : results) CHECK_CUDA(cudaHostAlloc(&r, kResultBytes, cudaHostAllocDefault));
  void* staging = nullptr;
  CHECK_CUDA(cudaHostAlloc(&staging, kResultBytes, cudaHostAllocDefault));

  cudaGraph_t graph;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  for (int k = 0; k < kKernels; ++k) step<<<1, 128, 0, stream>>>(x);
  CHECK_CUDA(cudaMemcpyAsync(staging, x, kResultBytes, cudaMemcpyDeviceToHost, stream));
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  size_t count = 0;
  CHECK_CUDA(cudaGraphGetNodes(graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  CHECK_CUDA(cudaGraphGetNodes(graph, nodes.data(), &count));
  cudaGraphNode_t copy = nullptr;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type;
    CHECK_CUDA(cudaGraphNodeGetType(node, &type));
    if (type == cudaGraphNodeTypeMemcpy) copy = node;
  }
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t end;
  CHECK_CUDA(cudaEventCreateWithFlags(&end, cudaEventDisableTiming));

  std::atomic<bool> stop{false};
  Stalls stalls;
  std::thread helper([&] {
    if (neighbour == Neighbour::kIdle) return;
    const bool registered = neighbour == Neighbour::kRegister;
    const auto release = [registered](void* buffer) {
      if (registered) {
        CHECK_CUDA(cudaHostUnregister(buffer));
        std::free(buffer);
      } else {
        CHECK_CUDA(cudaFreeHost(buffer));
      }
    };
    std::vector<void*> kept;
    size_t kept_bytes = 0;
    while (!stop.load()) {
      void* buffer = nullptr;
      if (registered) {
        buffer = std::aligned_alloc(4096, neighbour_bytes);
        if (buffer == nullptr) break;
        std::memset(buffer, 0, neighbour_bytes);
        CHECK_CUDA(cudaHostRegister(buffer, neighbour_bytes, cudaHostRegisterDefault));
      } else {
        CHECK_CUDA(cudaHostAlloc(&buffer, neighbour_bytes, cudaHostAllocDefault));
      }
      ++stalls.page_lockings;
      if (neighbour == Neighbour::kAllocateAndFree || kept_bytes + neighbour_bytes > kMaxKept) {
        release(buffer);
      } else {
        kept.push_back(buffer);
        kept_bytes += neighbour_bytes;
      }
    }
    for (void* buffer : kept) release(buffer);
  });

  for (int i = 0; i < kReplays + 20; ++i) {
    const double t0 = now_us();
    CHECK_CUDA(cudaGraphExecMemcpyNodeSetParams1D(exec, copy, results[i % 2], x, kResultBytes, cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaEventRecord(end, stream));
    const double launch_us = now_us() - t0;
    double longest_poll_us = 0;
    for (;;) {
      const double p0 = now_us();
      const cudaError_t state = cudaEventQuery(end);
      longest_poll_us = std::max(longest_poll_us, now_us() - p0);
      if (state == cudaSuccess) break;
      if (state != cudaErrorNotReady) CHECK_CUDA(state);
    }
    if (i < 20) continue;  // warm-up
    stalls.launches_over_1ms += launch_us > 1000;
    stalls.polls_over_1ms += longest_poll_us > 1000;
    stalls.longest_launch_us = std::max(stalls.longest_launch_us, launch_us);
    stalls.longest_poll_us = std::max(stalls.longest_poll_us, longest_poll_us);
  }
  stop = true;
  helper.join();

  CHECK_CUDA(cudaEventDestroy(end));
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  for (void* r : results) CHECK_CUDA(cudaFreeHost(r));
  CHECK_CUDA(cudaFreeHost(staging));
  CHECK_CUDA(cudaFree(x));
  CHECK_CUDA(cudaStreamDestroy(stream));
  return stalls;
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("pinned_alloc_stall on %s: %d replays of %d kernels + a %zu KB copy into page-locked memory\n\n",
              prop.name, kReplays, kKernels, kResultBytes >> 10);
  std::printf("| the other thread | its page-lockings | launches over 1 ms | polls over 1 ms | longest launch us | longest poll us |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
  struct Case {
    const char* name;
    Neighbour neighbour;
    size_t bytes;
  };
  const Case cases[] = {
      {"idle", Neighbour::kIdle, 0},
      {"cudaHostAlloc of 128 KB buffers, kept", Neighbour::kAllocate, size_t{128} << 10},
      {"cudaHostRegister of written 128 KB buffers, kept", Neighbour::kRegister, size_t{128} << 10},
      {"cudaHostRegister of written 4 MB buffers, kept", Neighbour::kRegister, size_t{4} << 20},
      {"cudaHostAlloc of 4 MB buffers, kept", Neighbour::kAllocate, size_t{4} << 20},
      {"cudaHostAlloc of 4 MB buffers, freed", Neighbour::kAllocateAndFree, size_t{4} << 20},
      {"idle, again", Neighbour::kIdle, 0},
  };
  for (const Case& c : cases) {
    const Stalls s = replay_beside(c.neighbour, c.bytes);
    std::printf("| %s | %d | %d | %d | %.0f | %.0f |\n", c.name, s.page_lockings, s.launches_over_1ms, s.polls_over_1ms,
                s.longest_launch_us, s.longest_poll_us);
    std::fflush(stdout);  // the 4 MB cudaHostAlloc cases can take minutes
  }
  return 0;
}
