// Hidden sizes of at most 4 * kRowThreadsMax 16-byte vectors (fp16: 4096)
// with every table 16-byte aligned are LayerNormed in registers: a block of
// whole warps holds one token (or, from kManyRows tokens on, several; a
// warp two tokens of hidden size 768 or less in fp16),
// gathers its word, token-type and position rows and loads gamma and beta
// once and all before the first use, takes mean and variance in two passes
// over the registers and stores. The layout and the reasons for it are at
// launch_rows_in_registers (row_math.cuh). Wider or unaligned rows take the
// multi-pass path: one warp per token (4 per block of 128 threads), the
// rows gathered again in each of three passes.
//
// The token's position in its sequence comes from a binary search of
// cu_seqlens, so no per-token position array is needed. The ids, the search
// and the real token count are loaded independently of each other, so their
// latencies overlap before the gather that needs them.
//
// The grid covers p.tokens rows, which on CUDA is the launch (bucket) size;
// the real token count is read from cu_seqlens[sequences] on the device, so
// one captured launch serves every batch of its bucket (docs/cuda.md).
// Padding rows (at or past the real count) are written as zeros, and their
// ids, which may be stale, are never used to gather.
#include "embed_layernorm.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

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

template <class T, int kVecs, int kRows>
__global__ void __launch_bounds__(kRowThreadsMax) embed_layernorm_registers_kernel(const EmbedLayerNormArgs<T> p) {
  constexpr int kPer = kVector16<T>;
  const int64_t vectors = p.hidden / kPer;
  const int64_t first = int64_t{blockIdx.x} * kRows;
  const int64_t real = p.cu_seqlens[p.sequences];
  int64_t word_row[kRows], type_row[kRows], position[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t t = first + r;
    const bool in_grid = t < p.tokens;
    word_row[r] = in_grid ? p.input_ids[t] : 0;
    type_row[r] = in_grid && p.token_type_ids != nullptr ? p.token_type_ids[t] : 0;
    position[r] = in_grid ? t - p.cu_seqlens[sequence_of(p.cu_seqlens, p.sequences, t)] : 0;
  }
  float gamma[kVecs][kPer], beta[kVecs][kPer];
  load_share_floats(p.gamma, vectors, gamma);
  load_share_floats(p.beta, vectors, beta);
  bool gathered[kRows];
  uint4 word_bits[kRows][kVecs], type_bits[kRows][kVecs], position_bits[kRows][kVecs];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    gathered[r] = first + r < real && first + r < p.tokens;
    if (!gathered[r]) word_row[r] = type_row[r] = position[r] = 0;
    const int64_t n = gathered[r] ? vectors : 0;
    load_share_bits(p.word + word_row[r] * p.hidden, n, word_bits[r]);
    load_share_bits(p.token_type + type_row[r] * p.hidden, n, type_bits[r]);
    load_share_bits(p.position + position[r] * p.hidden, n, position_bits[r]);
  }

  // Same order of float additions as the CPU op: (word + token type) + position.
  float x[kRows][kVecs][kPer];
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
#pragma unroll
    for (int i = 0; i < kVecs; ++i) {
      float type[kPer], pos[kPer];
      bits_to_floats<T>(word_bits[r][i], x[r][i]);
      bits_to_floats<T>(type_bits[r][i], type);
      bits_to_floats<T>(position_bits[r][i], pos);
#pragma unroll
      for (int k = 0; k < kPer; ++k) x[r][i][k] = (x[r][i][k] + type[k]) + pos[k];
    }
  }
  float mean[kRows], inv_std[kRows];
  share_statistics(x, vectors, p.hidden, p.eps, mean, inv_std);
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    const int64_t t = first + r;
    T* out = p.out + t * p.hidden;
    __nv_fp8_e4m3* out8 = p.out8 != nullptr ? p.out8 + t * p.hidden : nullptr;
    if (gathered[r]) {
      store_share_normalised(x[r], mean[r], inv_std[r], gamma, beta, vectors, out, out8);
    } else if (t < p.tokens) {  // padding row of a bucket: deterministic zeros
      const float zeros[kPer] = {};
#pragma unroll
      for (int i = 0; i < kVecs; ++i) {
        if (share_vector(i) >= vectors) continue;
        store_floats<kPer>(out + share_vector(i) * kPer, zeros);
        if (out8 != nullptr) store_e4m3<kPer>(out8 + share_vector(i) * kPer, zeros);
      }
    }
  }
}

constexpr int kRowsPerWarpBlock = 4;

template <class T, int kVec>
__global__ void __launch_bounds__(kRowsPerWarpBlock * kWarpSize) embed_layernorm_multipass_kernel(
    const EmbedLayerNormArgs<T> p) {
  const int64_t t = int64_t{blockIdx.x} * kRowsPerWarpBlock + threadIdx.x / kWarpSize;
  if (t >= p.tokens) return;
  T* out = p.out + t * p.hidden;
  __nv_fp8_e4m3* out8 = p.out8 != nullptr ? p.out8 + t * p.hidden : nullptr;
  if (t >= p.cu_seqlens[p.sequences]) {  // padding row of a bucket: deterministic zeros
    for (int64_t c = threadIdx.x % kWarpSize; c < p.hidden; c += kWarpSize) {
      out[c] = from_float<T>(0.f);
      if (out8 != nullptr) out8[c] = __nv_fp8_e4m3(0.f);
    }
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
  layernorm_row_warp<kVec>(row_value, p.gamma, p.beta, p.eps, p.hidden, out, out8);
}

}  // namespace

template <class T>
cudaError_t embed_layernorm(const EmbedLayerNormArgs<T>& p, cudaStream_t stream) {
  if (p.tokens <= 0 || p.hidden <= 0) return cudaSuccess;
  constexpr int kVec = kVector16<T>;
  const bool vectorised = p.hidden % kVec == 0 && aligned16(p.word) && aligned16(p.position) &&
                          aligned16(p.token_type) && aligned16(p.gamma) && aligned16(p.beta) && aligned16(p.out) &&
                          aligned16(p.out8);
  if (vectorised &&
      launch_rows_in_registers(p.hidden / kVec, p.tokens, [&](auto vecs, auto rows, dim3 grid, dim3 block) {
        embed_layernorm_registers_kernel<T, decltype(vecs)::value, decltype(rows)::value>
            <<<grid, block, 0, stream>>>(p);
      })) {
    return cudaGetLastError();
  }
  const dim3 grid(static_cast<unsigned>((p.tokens + kRowsPerWarpBlock - 1) / kRowsPerWarpBlock));
  const dim3 block(kRowsPerWarpBlock * kWarpSize);
  if (vectorised) {
    embed_layernorm_multipass_kernel<T, kVec><<<grid, block, 0, stream>>>(p);
  } else {
    embed_layernorm_multipass_kernel<T, 1><<<grid, block, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

template cudaError_t embed_layernorm<float>(const EmbedLayerNormArgs<float>&, cudaStream_t);
template cudaError_t embed_layernorm<__half>(const EmbedLayerNormArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
