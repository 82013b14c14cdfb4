// What the standalone kernel tests (cuda/tests/*_test.cu) share: a CUDA
// status check that ends the test, a small seeded generator, and an owning
// device buffer. Test code only.
#pragma once

#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

// Exit status 2: the test could not run (a failed check is status 1).
#define CHECK_CUDA(call)                                                                              \
  do {                                                                                                \
    const cudaError_t error_ = (call);                                                                \
    if (error_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(error_)); \
      std::exit(2);                                                                                   \
    }                                                                                                 \
  } while (0)

namespace fusedrt::test {

// xorshift64: reproducible inputs from a seed.
struct Rng {
  uint64_t state;
  uint32_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<uint32_t>(state >> 32);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * (next() >> 8) * (1.f / 16777216.f); }
  int between(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<uint32_t>(hi - lo + 1)); }
  int64_t below(int64_t n) { return static_cast<int64_t>(next() % static_cast<uint32_t>(n)); }
};

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t count) { CHECK_CUDA(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace fusedrt::test
