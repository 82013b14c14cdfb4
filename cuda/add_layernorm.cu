// One warp per row (4 rows per block of 128 threads); 16-byte loads when
// every pointer is 16-byte aligned and cols is a multiple of the vector width.
// Rows are independent, so padding rows of a bucket (docs/cuda.md) cost time
// but never touch real rows.
#include "add_layernorm.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kRowsPerBlock = 4;

template <class T, int kVec>
__global__ void __launch_bounds__(kRowsPerBlock * kWarpSize) add_layernorm_kernel(const AddLayerNormArgs<T> p) {
  const int64_t row = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (row >= p.rows) return;
  const T* in = p.in + row * p.cols;
  const T* residual = p.residual != nullptr ? p.residual + row * p.cols : nullptr;
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

template <class T>
cudaError_t add_layernorm(const AddLayerNormArgs<T>& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  constexpr int kVec = kVector16<T>;
  const bool vectorised = p.cols % kVec == 0 && aligned16(p.in) && aligned16(p.out) && aligned16(p.gamma) &&
                          aligned16(p.beta) && (p.residual == nullptr || aligned16(p.residual)) &&
                          (p.bias == nullptr || aligned16(p.bias));
  const dim3 grid(static_cast<unsigned>((p.rows + kRowsPerBlock - 1) / kRowsPerBlock));
  const dim3 block(kRowsPerBlock * kWarpSize);
  if (vectorised) {
    add_layernorm_kernel<T, kVec><<<grid, block, 0, stream>>>(p);
  } else {
    add_layernorm_kernel<T, 1><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template cudaError_t add_layernorm<float>(const AddLayerNormArgs<float>&, cudaStream_t);
template cudaError_t add_layernorm<__half>(const AddLayerNormArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
