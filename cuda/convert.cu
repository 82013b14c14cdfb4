// Grid-stride elementwise conversions; 8 elements a step (16-byte fp16 side)
// when both pointers are 16-byte aligned and count is a multiple of 8.
#include "convert.cuh"

#include <algorithm>

#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

template <class In, class Out, int kVec>
__global__ void __launch_bounds__(kThreads) convert_kernel(const In* in, Out* out, int64_t count) {
  const int64_t stride = int64_t{gridDim.x} * kThreads;
  for (int64_t v = int64_t{blockIdx.x} * kThreads + threadIdx.x; v < count / kVec; v += stride) {
    float x[kVec];
    load_floats<kVec>(in + v * kVec, x);
    store_floats<kVec>(out + v * kVec, x);
  }
}

template <class In, class Out>
cudaError_t convert(const In* in, Out* out, int64_t count, cudaStream_t stream) {
  if (count <= 0) return cudaSuccess;
  constexpr int kVec = 8;
  const bool vectorised = count % kVec == 0 && aligned16(in) && aligned16(out);
  const int64_t threads_needed = vectorised ? count / kVec : count;
  const auto blocks = static_cast<unsigned>(std::min<int64_t>((threads_needed + kThreads - 1) / kThreads, kMaxBlocks));
  if (vectorised) {
    convert_kernel<In, Out, kVec><<<blocks, kThreads, 0, stream>>>(in, out, count);
  } else {
    convert_kernel<In, Out, 1><<<blocks, kThreads, 0, stream>>>(in, out, count);
  }
  return cudaGetLastError();
}

}  // namespace

cudaError_t half_to_float(const __half* in, float* out, int64_t count, cudaStream_t stream) {
  return convert(in, out, count, stream);
}

cudaError_t float_to_half(const float* in, __half* out, int64_t count, cudaStream_t stream) {
  return convert(in, out, count, stream);
}

}  // namespace fusedrt::gpu
