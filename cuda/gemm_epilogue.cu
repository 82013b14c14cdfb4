// Elementwise over rows * n with a grid-stride loop, kVec elements (16 bytes)
// per step when n and the pointers allow it; formulas as in
// native/cpu/README.md ("gemm") (cuda/activation.cuh).
#include "gemm_epilogue.cuh"

#include <algorithm>

#include "activation.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

template <class T, int kVec>
__global__ void __launch_bounds__(kThreads) bias_activation_kernel(const BiasActivationArgs<T> p) {
  const int64_t vectors = p.rows * p.n / kVec;
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t v = int64_t{blockIdx.x} * kThreads + threadIdx.x; v < vectors; v += stride) {
    const int64_t i = v * kVec;
    float x[kVec];
    load_floats<kVec>(p.out + i, x);
    if (p.bias != nullptr) {
      float b[kVec];
      load_floats<kVec>(p.bias + i % p.n, b);
#pragma unroll
      for (int j = 0; j < kVec; ++j) x[j] += b[j];
    }
#pragma unroll
    for (int j = 0; j < kVec; ++j) x[j] = activate(x[j], p.activation);
    store_floats<kVec>(p.out + i, x);
  }
}

}  // namespace

template <class T>
cudaError_t bias_activation(const BiasActivationArgs<T>& p, cudaStream_t stream) {
  const int64_t total = p.rows * p.n;
  if (total <= 0) return cudaSuccess;
  constexpr int kVec = kVector16<T>;
  const bool vectorised = p.n % kVec == 0 && aligned16(p.out) && (p.bias == nullptr || aligned16(p.bias));
  const int64_t threads_needed = vectorised ? total / kVec : total;
  const int64_t blocks = std::min<int64_t>((threads_needed + kThreads - 1) / kThreads, kMaxBlocks);
  if (vectorised) {
    bias_activation_kernel<T, kVec><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  } else {
    bias_activation_kernel<T, 1><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template cudaError_t bias_activation<float>(const BiasActivationArgs<float>&, cudaStream_t);
template cudaError_t bias_activation<__half>(const BiasActivationArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
