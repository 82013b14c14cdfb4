// Elementwise over rows * n with a grid-stride loop; formulas as in
// native/cpu/README.md ("gemm"), in fp32 with the precise erff/tanhf.
#include "gemm_epilogue.cuh"

#include <algorithm>

namespace fusedrt::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

__device__ __forceinline__ float activate(float x, cpu::Activation activation) {
  switch (activation) {
    case cpu::Activation::kNone: return x;
    case cpu::Activation::kGelu: return 0.5f * x * (1.f + erff(x * 0.70710678118654752f));
    case cpu::Activation::kGeluTanh:
      return 0.5f * x * (1.f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case cpu::Activation::kRelu: return fmaxf(x, 0.f);
    case cpu::Activation::kTanh: return tanhf(x);
  }
  return x;
}

__global__ void __launch_bounds__(kThreads) bias_activation_kernel(const BiasActivationParams p) {
  const int64_t total = p.rows * p.n;
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t i = int64_t{blockIdx.x} * kThreads + threadIdx.x; i < total; i += stride) {
    float x = p.out[i];
    if (p.bias != nullptr) x += p.bias[i % p.n];
    p.out[i] = activate(x, p.activation);
  }
}

}  // namespace

cudaError_t bias_activation(const BiasActivationParams& p, cudaStream_t stream) {
  const int64_t total = p.rows * p.n;
  if (total <= 0) return cudaSuccess;
  const int64_t blocks = std::min<int64_t>((total + kThreads - 1) / kThreads, kMaxBlocks);
  bias_activation_kernel<<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace fusedrt::gpu
