// One warp per row (4 rows per block of 128 threads); float4 loads when every
// pointer is 16-byte aligned and cols is a multiple of 4.
#include "add_layernorm.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kRowsPerBlock = 4;

template <int kVec>
__global__ void __launch_bounds__(kRowsPerBlock * kWarpSize) add_layernorm_kernel(const cpu::AddLayerNormParams p) {
  const int64_t row = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= p.rows) return;
  const float* in = p.in + row * p.cols;
  const float* residual = p.residual != nullptr ? p.residual + row * p.cols : nullptr;
  const float* bias = p.bias;
  auto row_value = [=](int64_t c, float (&x)[kVec]) {
    load_floats<kVec>(in + c, x);
    if (bias != nullptr) {
      float b[kVec];
      load_floats<kVec>(bias + c, b);
#pragma unroll
      for (int i = 0; i < kVec; ++i) x[i] += b[i];
    }
    if (residual != nullptr) {
      float r[kVec];
      load_floats<kVec>(residual + c, r);
#pragma unroll
      for (int i = 0; i < kVec; ++i) x[i] += r[i];
    }
  };
  layernorm_row_warp<kVec>(row_value, p.gamma, p.beta, p.eps, p.cols, p.out + row * p.cols);
}

}  // namespace

cudaError_t add_layernorm(const cpu::AddLayerNormParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  const bool vec4 = p.cols % 4 == 0 && aligned16(p.in) && aligned16(p.out) && aligned16(p.gamma) &&
                    aligned16(p.beta) && (p.residual == nullptr || aligned16(p.residual)) &&
                    (p.bias == nullptr || aligned16(p.bias));
  const dim3 grid(static_cast<unsigned>((p.rows + kRowsPerBlock - 1) / kRowsPerBlock));
  const dim3 block(kRowsPerBlock * kWarpSize);
  if (vec4) {
    add_layernorm_kernel<4><<<grid, block, 0, stream>>>(p);
  } else {
    add_layernorm_kernel<1><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace fusedrt::gpu
