// What the probes that time chains of BERT-base layers with programmatic
// dependent launches share (lt_programmatic_edge.cu, pdl_gemm_chain.cu): the
// layer's sizes and two stand-ins for its own kernels, attention and the
// residual LayerNorm, each a warp per row of 768 that waits for the kernel
// before it first (griddepcontrol.wait, which returns at once when it was
// not launched as a programmatic dependent) and lets the next one launch at
// its start or, with trigger_late, after its stores. Probe code only, sm_90.
#pragma once

#include <cuda_fp16.h>

#include <cstddef>

namespace fusedrt::probe {

constexpr int kHidden = 768;
constexpr int kInter = 3072;
constexpr int kLayers = 12;

inline __device__ void dependent_prologue(bool trigger_late) {
  asm volatile("griddepcontrol.wait;" ::: "memory");
  if (!trigger_late) asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
}

inline __device__ void dependent_epilogue(bool trigger_late) {
  if (trigger_late) {
    __syncthreads();
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  }
}

// Attention's stand-in: out = q + k + v of each row (qkv is [rows, 3 * 768]).
__global__ void mix_rows(const __half* qkv, __half* out, int rows, bool trigger_late) {
  dependent_prologue(trigger_late);
  const int row = blockIdx.x * 4 + threadIdx.x / 32;
  if (row < rows) {
    const __half* q = qkv + size_t{static_cast<size_t>(row)} * 3 * kHidden;
    for (int c = threadIdx.x % 32; c < kHidden; c += 32) {
      out[size_t{static_cast<size_t>(row)} * kHidden + c] =
          __float2half(__half2float(q[c]) + __half2float(q[kHidden + c]) + __half2float(q[2 * kHidden + c]));
    }
  }
  dependent_epilogue(trigger_late);
}

// out = LayerNorm(a + b) of row `row`, without gamma and beta; a warp.
inline __device__ void add_norm_row(const __half* a, const __half* b, __half* out, int row) {
  const int lane = threadIdx.x % 32;
  float v[kHidden / 32];
  float sum = 0.f;
  for (int i = 0; i < kHidden / 32; ++i) {
    const size_t at = size_t{static_cast<size_t>(row)} * kHidden + lane + 32 * i;
    v[i] = __half2float(a[at]) + __half2float(b[at]);
    sum += v[i];
  }
  for (int m = 16; m > 0; m /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, m);
  const float mean = sum / kHidden;
  float squares = 0.f;
  for (float x : v) squares += (x - mean) * (x - mean);
  for (int m = 16; m > 0; m /= 2) squares += __shfl_xor_sync(0xffffffffu, squares, m);
  const float rstd = rsqrtf(squares / kHidden + 1e-12f);
  for (int i = 0; i < kHidden / 32; ++i) {
    out[size_t{static_cast<size_t>(row)} * kHidden + lane + 32 * i] = __float2half((v[i] - mean) * rstd);
  }
}

// out = LayerNorm(a + b) of each row; out may be b.
__global__ void add_norm_rows(const __half* a, const __half* b, __half* out, int rows, bool trigger_late) {
  dependent_prologue(trigger_late);
  const int row = blockIdx.x * 4 + threadIdx.x / 32;
  if (row < rows) add_norm_row(a, b, out, row);
  dependent_epilogue(trigger_late);
}

}  // namespace fusedrt::probe
