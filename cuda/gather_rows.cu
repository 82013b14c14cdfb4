// One block per output row; a row is a few KB at most ([CLS] or [MASK] rows),
// so a plain strided copy is enough.
#include "gather_rows.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) gather_rows_kernel(const cpu::GatherRowsParams p) {
  const int64_t r = blockIdx.x;
  const float* src = p.in + int64_t{p.row_index[r]} * p.cols;
  float* dst = p.out + r * p.cols;
  for (int64_t c = threadIdx.x; c < p.cols; c += kThreads) dst[c] = src[c];
}

}  // namespace

cudaError_t gather_rows(const cpu::GatherRowsParams& p, cudaStream_t stream) {
  if (p.rows_out <= 0) return cudaSuccess;
  gather_rows_kernel<<<static_cast<unsigned>(p.rows_out), kThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace fusedrt::gpu
