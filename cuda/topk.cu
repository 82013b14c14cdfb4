// One block per row. Two block-wide reductions give the row's maximum and
// the sum of exp(x - max); then k selection rounds: in each, every thread
// finds its best column strictly after the previous winner in the order
// (logit descending, column ascending) and a block-wide arg-max picks the
// round's winner. k <= 64 rounds over a row that stays in L1/L2 (a 30522-wide
// fp16 row is 60 KB) cost less than keeping 64 candidates per thread in
// registers, and need no shared memory beyond one slot per warp.
#include <math_constants.h>

#include <climits>

#include "row_math.cuh"
#include "topk.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;

// The selection order; NaN is never better than anything.
__device__ __forceinline__ bool better(float a, int32_t a_id, float b, int32_t b_id) {
  return a > b || (a == b && a_id < b_id);
}

struct Candidate {
  float value;
  int32_t id;
};

// Block-wide: every thread gets the best candidate of the block.
__device__ __forceinline__ Candidate block_best(Candidate c, Candidate* slots) {
  for (int offset = kWarpSize / 2; offset > 0; offset >>= 1) {
    const float v = __shfl_xor_sync(kFullMask, c.value, offset);
    const int32_t id = __shfl_xor_sync(kFullMask, c.id, offset);
    if (better(v, id, c.value, c.id)) c = {v, id};
  }
  const int warp = threadIdx.x / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) slots[warp] = c;
  __syncthreads();
  Candidate best = slots[0];
  for (int w = 1; w < kWarps; ++w) {
    if (better(slots[w].value, slots[w].id, best.value, best.id)) best = slots[w];
  }
  __syncthreads();  // slots are reused by the next call
  return best;
}

// Block-wide sum (combine = add) or maximum (combine = fmaxf).
template <bool kMax>
__device__ __forceinline__ float block_reduce(float v, float* slots) {
  v = kMax ? warp_max(v) : warp_sum(v);
  const int warp = threadIdx.x / kWarpSize;
  if (threadIdx.x % kWarpSize == 0) slots[warp] = v;
  __syncthreads();
  float r = slots[0];
  for (int w = 1; w < kWarps; ++w) r = kMax ? fmaxf(r, slots[w]) : r + slots[w];
  __syncthreads();
  return r;
}

template <class T>
__global__ void __launch_bounds__(kThreads) softmax_topk_kernel(const T* logits, int64_t cols, int k, int32_t* top_ids,
                                                                 float* top_scores) {
  __shared__ float sums[kWarps];
  __shared__ Candidate candidates[kWarps];
  const T* x = logits + int64_t{blockIdx.x} * cols;

  float max = -CUDART_INF_F;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) max = fmaxf(max, to_float(x[c]));
  max = block_reduce<true>(max, sums);
  float sum = 0.f;
  for (int64_t c = threadIdx.x; c < cols; c += kThreads) sum += expf(to_float(x[c]) - max);
  sum = block_reduce<false>(sum, sums);

  // Before the first round every number comes after the bound (+inf, -1).
  Candidate previous{CUDART_INF_F, -1};
  for (int i = 0; i < k; ++i) {
    Candidate mine{-CUDART_INF_F, INT_MAX};  // the sentinel: after every number
    for (int64_t c = threadIdx.x; c < cols; c += kThreads) {
      const float v = to_float(x[c]);
      const auto id = static_cast<int32_t>(c);
      if (better(previous.value, previous.id, v, id) && better(v, id, mine.value, mine.id)) mine = {v, id};
    }
    previous = block_best(mine, candidates);
    if (threadIdx.x == 0) {
      const bool found = previous.id != INT_MAX;
      const int64_t slot = int64_t{blockIdx.x} * k + i;
      top_ids[slot] = found ? previous.id : -1;
      top_scores[slot] = found ? expf(previous.value - max) / sum : 0.f;
    }
  }
}

}  // namespace

template <class T>
cudaError_t softmax_topk(const SoftmaxTopKArgs<T>& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  softmax_topk_kernel<T><<<static_cast<unsigned>(p.rows), kThreads, 0, stream>>>(p.logits, p.cols, p.k, p.top_ids,
                                                                                  p.top_scores);
  return cudaGetLastError();
}

template cudaError_t softmax_topk<float>(const SoftmaxTopKArgs<float>&, cudaStream_t);
template cudaError_t softmax_topk<__half>(const SoftmaxTopKArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
