// One warp per token (4 per block of 128 threads). The token's position in
// its sequence comes from a binary search of cu_seqlens, so no per-token
// position array is needed. 16-byte loads when hidden is a multiple of the
// vector width and every table is 16-byte aligned.
//
// The grid covers p.tokens rows, which on CUDA is the launch (bucket) size;
// the real token count is read from cu_seqlens[sequences] on the device, so
// one captured launch serves every batch of its bucket (docs/cuda.md).
#include "embed_layernorm.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kRowsPerBlock = 4;

// The sequence holding token t: the last b with cu_seqlens[b] <= t.
__device__ int64_t sequence_of(const int32_t* cu_seqlens, int64_t sequences, int64_t t) {
  int64_t lo = 0;
  int64_t hi = sequences;  // cu_seqlens[sequences] = real tokens > t
  while (hi - lo > 1) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (cu_seqlens[mid] <= t) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <class T, int kVec>
__global__ void __launch_bounds__(kRowsPerBlock * kWarpSize) embed_layernorm_kernel(const EmbedLayerNormArgs<T> p) {
  const int64_t t = int64_t{blockIdx.x} * kRowsPerBlock + threadIdx.x / kWarpSize;
  if (t >= p.tokens) return;
  T* out = p.out + t * p.hidden;
  if (t >= p.cu_seqlens[p.sequences]) {  // padding row of a bucket: deterministic zeros
    for (int64_t c = threadIdx.x % kWarpSize; c < p.hidden; c += kWarpSize) out[c] = from_float<T>(0.f);
    return;
  }
  const int64_t position = t - p.cu_seqlens[sequence_of(p.cu_seqlens, p.sequences, t)];
  const int64_t type = p.token_type_ids != nullptr ? p.token_type_ids[t] : 0;
  const T* word = p.word + int64_t{p.input_ids[t]} * p.hidden;
  const T* token_type = p.token_type + type * p.hidden;
  const T* pos = p.position + position * p.hidden;
  auto row_value = [=](int64_t c, float (&x)[kVec]) {
    float tt[kVec], ps[kVec];
    load_floats<kVec>(word + c, x);
    load_floats<kVec>(token_type + c, tt);
    load_floats<kVec>(pos + c, ps);
#pragma unroll
    for (int i = 0; i < kVec; ++i) x[i] = (x[i] + tt[i]) + ps[i];
  };
  layernorm_row_warp<kVec>(row_value, p.gamma, p.beta, p.eps, p.hidden, out);
}

}  // namespace

template <class T>
cudaError_t embed_layernorm(const EmbedLayerNormArgs<T>& p, cudaStream_t stream) {
  if (p.tokens <= 0) return cudaSuccess;
  constexpr int kVec = kVector16<T>;
  const bool vectorised = p.hidden % kVec == 0 && aligned16(p.word) && aligned16(p.position) &&
                          aligned16(p.token_type) && aligned16(p.gamma) && aligned16(p.beta) && aligned16(p.out);
  const dim3 grid(static_cast<unsigned>((p.tokens + kRowsPerBlock - 1) / kRowsPerBlock));
  const dim3 block(kRowsPerBlock * kWarpSize);
  if (vectorised) {
    embed_layernorm_kernel<T, kVec><<<grid, block, 0, stream>>>(p);
  } else {
    embed_layernorm_kernel<T, 1><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template cudaError_t embed_layernorm<float>(const EmbedLayerNormArgs<float>&, cudaStream_t);
template cudaError_t embed_layernorm<__half>(const EmbedLayerNormArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
