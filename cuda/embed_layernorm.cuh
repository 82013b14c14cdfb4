// CUDA embed_layernorm: out[t] = LN((word[id[t]] + token_type[type[t]]) +
// position[t - cu_seqlens[b]]), the semantics of native/cpu/README.md, with
// tables and output in T (float or __half) and fp32 statistics.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fusedrt::gpu {

template <class T>
struct EmbedLayerNormArgs {
  const int32_t* input_ids;       // [tokens]
  const int32_t* token_type_ids;  // [tokens], or nullptr for all zeros
  const int32_t* cu_seqlens;      // [sequences + 1]; cu_seqlens[sequences] is the real token count
  int64_t tokens;                 // rows of out; rows at or past the real token count are set to 0
  int64_t sequences;
  int64_t hidden;
  const T* word;        // [vocab, hidden]
  const T* position;    // [max_positions, hidden]
  const T* token_type;  // [type_vocab, hidden]
  const float* gamma;   // [hidden]
  const float* beta;    // [hidden]
  float eps;
  T* out;  // [tokens, hidden]
  // [tokens, hidden] or nullptr: also gets out's values (before rounding to
  // T) rounded to E4M3 (row_math.cuh, store_e4m3).
  __nv_fp8_e4m3* out8 = nullptr;
};

// Queues the op on stream; returns the launch error, if any. T: float, __half.
template <class T>
cudaError_t embed_layernorm(const EmbedLayerNormArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
