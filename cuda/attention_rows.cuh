// CUDA attention_rows: attention for selected query rows only (the [MASK]
// rows, or the first token of each sequence, of BERT's last encoder layer).
// Query row r is token t = query_rows[r]; for each head h, out[r, h] =
// softmax(scale * q_t K^T) V over the keys and values of t's own sequence
// (the sequence b with cu_seqlens[b] <= t < cu_seqlens[b + 1]). A t outside
// [0, cu_seqlens[sequences]) gives a row of zeros: with query_rows =
// cu_seqlens, a bucket's empty padding sequences point at the token count.
// Same semantics as native/cpu/attention_rows.cpp.
#pragma once

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

namespace fusedrt::gpu {

template <class T>
struct AttentionRowsArgs {
  // [tokens, 3 * heads * head_dim]: Q | K | V, head h at columns h * head_dim of
  // each. Any alignment: 16-byte loads when qkv is 16-byte aligned and
  // head_dim a multiple of 16 / sizeof(T), element loads otherwise.
  const T* qkv;
  const int32_t* cu_seqlens;  // [sequences + 1], device memory: 0 = cu[0] <= ... <= cu[sequences] = tokens
  int64_t sequences;
  int64_t heads;     // 1 .. 65535
  int64_t head_dim;  // 1 .. 256
  float scale;
  const int32_t* query_rows;  // [rows], device memory: the token of each query row
  int64_t rows;
  T* out;  // [rows, heads * head_dim]; any alignment; must not alias qkv
  // Instead of out (then nullptr): the same values rounded to E4M3
  // (row_math.cuh, store_e4m3), for an fp8 GEMM that reads them.
  __nv_fp8_e4m3* out8 = nullptr;
};

// Queues the op on stream (fp32 scores, softmax and sums for both T: float,
// __half). Reads nothing back to the host, so it can be captured in a graph.
// Returns cudaErrorInvalidValue, queuing nothing, for head_dim outside
// 1..256, heads outside 1..65535, rows < 0 or rows past 2^31 - 1, or
// sequences < 0; cudaSuccess without a launch for rows == 0; else the launch
// error, if any.
template <class T>
cudaError_t attention_rows(const AttentionRowsArgs<T>& p, cudaStream_t stream);

}  // namespace fusedrt::gpu
