// One block per output row; a row is a few KB at most ([CLS] or [MASK] rows),
// so a strided copy (16 bytes a thread when rows allow it) is enough.
//
// Indices are clamped to in_rows - 1: the runtime validated every real index,
// but in a bucketed launch the "first token" index of a padding sequence is
// the real token count, which can equal in_rows (docs/cuda.md).
#include "gather_rows.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kThreads = 128;

template <class Unit>
__global__ void __launch_bounds__(kThreads) gather_rows_kernel(const Unit* in, int64_t in_rows, const int32_t* row_index,
                                                               int64_t units_per_row, Unit* out) {
  const int64_t r = blockIdx.x;
  const int64_t source = min(int64_t{row_index[r]}, in_rows - 1);
  const Unit* src = in + source * units_per_row;
  Unit* dst = out + r * units_per_row;
  for (int64_t c = threadIdx.x; c < units_per_row; c += kThreads) dst[c] = src[c];
}

}  // namespace

template <class T>
cudaError_t gather_rows(const GatherRowsArgs<T>& p, cudaStream_t stream) {
  if (p.rows_out <= 0 || p.in_rows <= 0) return cudaSuccess;
  const auto blocks = static_cast<unsigned>(p.rows_out);
  const int64_t row_bytes = p.cols * static_cast<int64_t>(sizeof(T));
  if (row_bytes % 16 == 0 && aligned16(p.in) && aligned16(p.out)) {
    gather_rows_kernel<uint4><<<blocks, kThreads, 0, stream>>>(reinterpret_cast<const uint4*>(p.in), p.in_rows, p.row_index,
                                                                row_bytes / 16, reinterpret_cast<uint4*>(p.out));
  } else {
    gather_rows_kernel<T><<<blocks, kThreads, 0, stream>>>(p.in, p.in_rows, p.row_index, p.cols, p.out);
  }
  return cudaGetLastError();
}

template cudaError_t gather_rows<float>(const GatherRowsArgs<float>&, cudaStream_t);
template cudaError_t gather_rows<__half>(const GatherRowsArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
