// Can BERT-base's encoder layers at batch 1 x 128 run as one persistent
// kernel, faster than the ~7 kernels per layer the CUDA backend launches?
// (issue 3's 0.30 ms at 1 x 128; decision 0008 and its addenda say the run's
// time there is kernel latency and boundaries, not bandwidth or FLOPs.)
// Measured on an H100 (bench/RESULTS.md; decision 0008, ninth addendum):
// no. A grid barrier costs 1.0 us, what a kernel boundary costs in a CUDA
// graph, so the barriers save nothing, and these phases are slower than the
// backend's kernels: 48-51 us per layer against about 29.
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90,code=sm_90 bench/gpu/persistent_layer.cu -o /tmp/persistent_layer
//   /tmp/persistent_layer [layers]
//
// One cooperative launch, one block of 256 threads per SM, runs every layer
// as seven phases separated by a grid barrier:
//   QKV GEMM (+bias) -> attention -> output projection (split-K partials)
//   -> residual + LayerNorm -> FFN1 (+bias, GELU) -> FFN2 (split-K partials)
//   -> residual + LayerNorm.
// GEMMs are mma.sync tiles of 64 x 64 over the whole K (or a split of it);
// each block fetches the weight of its tile of the next GEMM into shared
// memory as soon as its current GEMM is done, so the weight's latency hides
// behind the barrier and the phase between, and a GEMM phase waits only for
// its activations, which the phase before left in L2.
//
// It prints: the check against the same layers by plain reference kernels
// (fp32 arithmetic, fp16 where the persistent kernel stores fp16); a grid
// barrier's own cost (1000 in a row); three phases alone, repeated with warm
// data; the GPU time of all layers in one launch (CUDA events, median of 50
// after warm-up); and per phase, from %globaltimer stamps of every block
// leaving and reaching each barrier, the work (first block out to last block
// in) and the barrier (last in to first out). One sequence of 128 tokens, no
// padding: a probe of the schedule, not a backend op.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <vector>

#include "../../cuda/tensor_core.cuh"  // cp.async, ldmatrix, mma_16816, pack_half2
#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, Rng
#include "grid_barrier.cuh"

using namespace fusedrt::gpu;
using fusedrt::probe::grid_barrier;

namespace {

constexpr int kRows = 128;
constexpr int kHidden = 768;
constexpr int kHeads = 12;
constexpr int kHeadDim = 64;
constexpr int kInter = 3072;
constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kTile = 64;                // GEMM tiles are 64 rows x 64 columns
constexpr int kMaxSliceK = 768;          // the K one GEMM tile covers at most
constexpr int kStride = kMaxSliceK + 8;  // halves per shared row: 16-byte skew against bank conflicts
constexpr int kRegionHalves = kTile * kStride;
constexpr int kPhases = 7;
constexpr float kEps = 1e-12f;

struct LayerWeights {
  const __half* qkv;  // [3 * hidden][hidden]: Q, K, V rows, head by head within each
  const float* qkv_bias;
  const __half* out;  // [hidden][hidden]
  const float* out_bias;
  const float* ln1_gamma;
  const float* ln1_beta;
  const __half* ffn1;  // [inter][hidden]
  const float* ffn1_bias;
  const __half* ffn2;  // [hidden][inter]
  const float* ffn2_bias;
  const float* ln2_gamma;
  const float* ln2_beta;
};

struct Buffers {
  __half* x;          // [rows][hidden]: the layer's input, then its output
  __half* qkv;        // [rows][3 * hidden]
  __half* context;    // [rows][hidden]
  float* partials;    // [splits][rows][hidden]
  __half* x1;         // [rows][hidden]: after the first LayerNorm
  __half* ffn;        // [rows][inter]
};

// One GEMM of a phase: out = act(a . w^T + bias) in fp16 with one split, or
// fp32 partial sums (no bias) per split.
struct Gemm {
  const __half* a;  // [rows][k]
  const __half* w;  // [n][k]
  const float* bias;
  int n, k, splits;
  bool gelu;
  __half* out;
  float* partials;
  __device__ int items() const { return (kRows / kTile) * (n / kTile) * splits; }
  __device__ int slice_k() const { return k / splits; }
  // item = (split * n tiles + n tile) * row tiles + row tile
  __device__ int row0(int item) const { return (item % (kRows / kTile)) * kTile; }
  __device__ int col0(int item) const { return (item / (kRows / kTile)) % (n / kTile) * kTile; }
  __device__ int split(int item) const { return item / (kRows / kTile) / (n / kTile); }
};

constexpr int kMaxLayers = 24;

// By value: the kernel reads its weight pointers from the constant bank, not
// with a round trip to global memory at each phase.
struct Params {
  LayerWeights layers[kMaxLayers];
  int layer_count;
  Buffers buf;
  unsigned* barrier;      // arrivals at grid barriers, zero at launch
  long long* stamps;      // [layer_count * kPhases + 1][blocks] or nullptr: each block leaving each barrier (first: starting)
  long long* arrivals;    // [layer_count * kPhases][blocks] or nullptr: each block reaching each barrier
};

__device__ __forceinline__ long long global_ns() {
  long long t;
  asm volatile("mov.u64 %0, %globaltimer;\n" : "=l"(t));
  return t;
}

__device__ float gelu(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678f)); }

constexpr int kChunkK = 64;

// cp.async.wait_group with a count known only at run time (at most 11).
__device__ __forceinline__ void cp_async_wait_at_most(int pending) {
  switch (pending) {
    case 0: cp_async_wait<0>(); break;
    case 1: cp_async_wait<1>(); break;
    case 2: cp_async_wait<2>(); break;
    case 3: cp_async_wait<3>(); break;
    case 4: cp_async_wait<4>(); break;
    case 5: cp_async_wait<5>(); break;
    case 6: cp_async_wait<6>(); break;
    case 7: cp_async_wait<7>(); break;
    case 8: cp_async_wait<8>(); break;
    case 9: cp_async_wait<9>(); break;
    case 10: cp_async_wait<10>(); break;
    default: cp_async_wait<11>(); break;
  }
}

// cp.async of a 64-row block of a row-major fp16 matrix, columns [c0, c0 + width).
__device__ void copy_rows(__half* shared, const __half* global, int ld, int r0, int c0, int width) {
  const int chunks = width / 8;
  for (int i = threadIdx.x; i < kTile * chunks; i += kThreads) {
    const int r = i / chunks, c = (i % chunks) * 8;
    cp_async_16(shared + r * kStride + c, global + int64_t(r0 + r) * ld + c0 + c, true);
  }
}

__device__ void fetch_weight(const Gemm& g, int item, __half* w_tile) {
  copy_rows(w_tile, g.w, g.k, g.col0(item), g.split(item) * g.slice_k(), g.slice_k());
  cp_async_commit();
}

// The block's GEMM items; the first one's weight may already be in w_tile.
__device__ void gemm_phase(const Gemm& g, __half* a_tile, __half* w_tile, bool weight_fetched) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int wm = warp % 4, wn = warp / 4;  // 16 rows x 32 columns per warp
  const int g4 = lane / 4, t4 = lane % 4;
  for (int item = blockIdx.x; item < g.items(); item += gridDim.x) {
    if (!(weight_fetched && item == blockIdx.x)) fetch_weight(g, item, w_tile);
    const int ks = g.slice_k(), k0 = g.split(item) * ks;
    // A in chunks of kChunkK, each its own group, so the MMAs of the first
    // chunk start while the later ones are still on their way.
    const int chunks = ks / kChunkK;
    for (int c = 0; c < chunks; ++c) {
      copy_rows(a_tile + c * kChunkK, g.a, g.k, g.row0(item), k0 + c * kChunkK, kChunkK);
      cp_async_commit();
    }
    // The bias now, so that its load is not a round trip after the MMAs.
    float2 bias[4] = {};
    if (g.splits == 1) {
#pragma unroll
      for (int j = 0; j < 4; ++j) bias[j] = *reinterpret_cast<const float2*>(g.bias + g.col0(item) + wn * 32 + j * 8 + 2 * t4);
    }
    float acc[4][4] = {};
    for (int c = 0; c < chunks; ++c) {
      cp_async_wait_at_most(chunks - 1 - c);
      __syncthreads();
#pragma unroll
    for (int kk = c * kChunkK; kk < (c + 1) * kChunkK; kk += 16) {
      uint32_t a[4];
      ldmatrix_x4(a, a_tile + (wm * 16 + lane % 16) * kStride + kk + (lane / 16) * 8);
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        uint32_t b[4];
        ldmatrix_x4(b, w_tile + (wn * 32 + nj * 16 + (lane / 16) * 8 + lane % 8) * kStride + kk + ((lane / 8) % 2) * 8);
        mma_16816(acc[2 * nj], a, b[0], b[1]);
        mma_16816(acc[2 * nj + 1], a, b[2], b[3]);
      }
    }
    }
    __syncthreads();  // the tiles are free for the next fetch
    const int row = g.row0(item) + wm * 16 + g4;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int col = g.col0(item) + wn * 32 + j * 8 + 2 * t4;
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float v0 = acc[j][2 * h], v1 = acc[j][2 * h + 1];
        const int r = row + 8 * h;
        if (g.splits == 1) {
          v0 += bias[j].x;
          v1 += bias[j].y;
          if (g.gelu) v0 = gelu(v0), v1 = gelu(v1);
          *reinterpret_cast<__half2*>(g.out + int64_t(r) * g.n + col) = __floats2half2_rn(v0, v1);
        } else {
          *reinterpret_cast<float2*>(g.partials + (int64_t(g.split(item)) * kRows + r) * g.n + col) = make_float2(v0, v1);
        }
      }
    }
  }
}

// Attention of one head over 64 query rows (items: heads x 2), four warps of
// 16 rows each; the whole row of 128 scores stays in registers.
__device__ void attention_phase(const Buffers& buf, __half* smem) {
  constexpr int kS = kHeadDim + 8;
  __half* q = smem;
  __half* k = q + 64 * kS;
  __half* v = k + kRows * kS;
  constexpr int ld = 3 * kHidden;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g4 = lane / 4, t4 = lane % 4;
  for (int item = blockIdx.x; item < kHeads * 2; item += gridDim.x) {
    const int head = item / 2, q0 = (item % 2) * 64;
    // Plain loads, not cp.async: a wait for these would also wait for the
    // next GEMM's weight, fetched before this phase.
    auto copy16 = [](__half* to, const __half* from) {
      *reinterpret_cast<uint4*>(to) = __ldcg(reinterpret_cast<const uint4*>(from));
    };
    for (int i = threadIdx.x; i < kRows * 8; i += kThreads) {
      const int r = i / 8, c = (i % 8) * 8;
      copy16(k + r * kS + c, buf.qkv + int64_t(r) * ld + kHidden + head * kHeadDim + c);
      copy16(v + r * kS + c, buf.qkv + int64_t(r) * ld + 2 * kHidden + head * kHeadDim + c);
      if (r < 64) copy16(q + r * kS + c, buf.qkv + int64_t(q0 + r) * ld + head * kHeadDim + c);
    }
    __syncthreads();
    if (warp < 4) {
      float s[16][4] = {};
#pragma unroll
      for (int kk = 0; kk < kHeadDim; kk += 16) {
        uint32_t a[4];
        ldmatrix_x4(a, q + (warp * 16 + lane % 16) * kS + kk + (lane / 16) * 8);
#pragma unroll
        for (int np = 0; np < 8; ++np) {
          uint32_t b[4];
          ldmatrix_x4(b, k + (np * 16 + (lane / 16) * 8 + lane % 8) * kS + kk + ((lane / 8) % 2) * 8);
          mma_16816(s[2 * np], a, b[0], b[1]);
          mma_16816(s[2 * np + 1], a, b[2], b[3]);
        }
      }
      constexpr float kScaleLog2 = 0.125f * 1.44269504f;
      float sum[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        float m = -INFINITY;
#pragma unroll
        for (int j = 0; j < 16; ++j) m = fmaxf(m, fmaxf(s[j][2 * h], s[j][2 * h + 1]));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 1));
        m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, 2));
        float total = 0.f;
#pragma unroll
        for (int j = 0; j < 16; ++j) {
          s[j][2 * h] = exp2_ftz((s[j][2 * h] - m) * kScaleLog2);
          s[j][2 * h + 1] = exp2_ftz((s[j][2 * h + 1] - m) * kScaleLog2);
          total += s[j][2 * h] + s[j][2 * h + 1];
        }
        total += __shfl_xor_sync(0xffffffffu, total, 1);
        total += __shfl_xor_sync(0xffffffffu, total, 2);
        sum[h] = total;
      }
      float o[8][4] = {};
#pragma unroll
      for (int kb = 0; kb < kRows / 16; ++kb) {
        const uint32_t a[4] = {pack_half2(s[2 * kb][0], s[2 * kb][1]), pack_half2(s[2 * kb][2], s[2 * kb][3]),
                               pack_half2(s[2 * kb + 1][0], s[2 * kb + 1][1]),
                               pack_half2(s[2 * kb + 1][2], s[2 * kb + 1][3])};
#pragma unroll
        for (int dp = 0; dp < 4; ++dp) {
          uint32_t b[4];
          ldmatrix_x4_trans(b, v + (kb * 16 + ((lane / 8) % 2) * 8 + lane % 8) * kS + dp * 16 + (lane / 16) * 8);
          mma_16816(o[2 * dp], a, b[0], b[1]);
          mma_16816(o[2 * dp + 1], a, b[2], b[3]);
        }
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int r = q0 + warp * 16 + g4 + 8 * h;
        const float inv = 1.f / sum[h];
#pragma unroll
        for (int j = 0; j < 8; ++j) {
          const int c = head * kHeadDim + j * 8 + 2 * t4;
          *reinterpret_cast<__half2*>(buf.context + int64_t(r) * kHidden + c) =
              __floats2half2_rn(o[j][2 * h] * inv, o[j][2 * h + 1] * inv);
        }
      }
    }
    __syncthreads();
  }
}

// out = LN(sum of partials + bias + residual), one warp per row.
template <int kSplits>
__device__ void layernorm_phase(const float* partials, const float* bias, const __half* residual,
                                const float* gamma, const float* beta, __half* out) {
  constexpr int kPer = kHidden / 32;  // 24 columns per lane, as 3 runs of 8
  const int row = blockIdx.x * kWarps + threadIdx.x / 32, lane = threadIdx.x % 32;
  if (row >= kRows) return;
  float x[kPer], gamma_v[kPer], beta_v[kPer];
#pragma unroll
  for (int c8 = 0; c8 < 3; ++c8) {
    const int c = (c8 * 32 + lane) * 8;
    float* xs = x + c8 * 8;
#pragma unroll
    for (int i = 0; i < 8; ++i) gamma_v[c8 * 8 + i] = gamma[c + i], beta_v[c8 * 8 + i] = beta[c + i];
    const uint4 rbits = __ldcg(reinterpret_cast<const uint4*>(residual + int64_t(row) * kHidden + c));
    const __half2* rh = reinterpret_cast<const __half2*>(&rbits);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(rh[i]);
      xs[2 * i] = f.x, xs[2 * i + 1] = f.y;
    }
    float acc[8];
#pragma unroll
    for (int i = 0; i < 8; ++i) acc[i] = bias[c + i];
#pragma unroll
    for (int s = 0; s < kSplits; ++s) {
      const float4* p = reinterpret_cast<const float4*>(partials + (int64_t(s) * kRows + row) * kHidden + c);
      const float4 a = __ldcg(p), b = __ldcg(p + 1);
      acc[0] += a.x, acc[1] += a.y, acc[2] += a.z, acc[3] += a.w;
      acc[4] += b.x, acc[5] += b.y, acc[6] += b.z, acc[7] += b.w;
    }
#pragma unroll
    for (int i = 0; i < 8; ++i) xs[i] += acc[i];
  }
  float mean = 0.f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) mean += x[i];
  for (int o = 16; o > 0; o /= 2) mean += __shfl_xor_sync(0xffffffffu, mean, o);
  mean /= kHidden;
  float var = 0.f;
#pragma unroll
  for (int i = 0; i < kPer; ++i) var += (x[i] - mean) * (x[i] - mean);
  for (int o = 16; o > 0; o /= 2) var += __shfl_xor_sync(0xffffffffu, var, o);
  const float inv_std = rsqrtf(var / kHidden + kEps);
#pragma unroll
  for (int c8 = 0; c8 < 3; ++c8) {
    const int c = (c8 * 32 + lane) * 8;
    uint4 bits;
    __half2* h = reinterpret_cast<__half2*>(&bits);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int j = c8 * 8 + 2 * i;
      h[i] = __floats2half2_rn((x[j] - mean) * inv_std * gamma_v[j] + beta_v[j],
                               (x[j + 1] - mean) * inv_std * gamma_v[j + 1] + beta_v[j + 1]);
    }
    *reinterpret_cast<uint4*>(out + int64_t(row) * kHidden + c) = bits;
  }
}

constexpr int kOutSplits = 4;   // 12 column tiles x 2 row tiles x 4 = 96 items of K 192
constexpr int kFfn2Splits = 4;  // 96 items of K 768

__device__ Gemm qkv_gemm(const LayerWeights& w, const Buffers& b) {
  return {b.x, w.qkv, w.qkv_bias, 3 * kHidden, kHidden, 1, false, b.qkv, nullptr};
}
__device__ Gemm out_gemm(const LayerWeights& w, const Buffers& b) {
  return {b.context, w.out, nullptr, kHidden, kHidden, kOutSplits, false, nullptr, b.partials};
}
__device__ Gemm ffn1_gemm(const LayerWeights& w, const Buffers& b) {
  return {b.x1, w.ffn1, w.ffn1_bias, kInter, kHidden, 1, true, b.ffn, nullptr};
}
__device__ Gemm ffn2_gemm(const LayerWeights& w, const Buffers& b) {
  return {b.ffn, w.ffn2, nullptr, kHidden, kInter, kFfn2Splits, false, nullptr, b.partials};
}

__global__ void __launch_bounds__(kThreads, 1) encoder_kernel(const __grid_constant__ Params p) {
  extern __shared__ __align__(16) __half smem[];
  __half* w_tile = smem;
  __half* a_tile = smem + kRegionHalves;
  const Buffers& b = p.buf;
  int phase = 0;
  auto barrier = [&] {
    __syncthreads();
    if (p.arrivals != nullptr && threadIdx.x == 0) p.arrivals[int64_t(phase) * gridDim.x + blockIdx.x] = global_ns();
    grid_barrier(p.barrier, (phase + 1) * gridDim.x);
    ++phase;
    if (p.stamps != nullptr && threadIdx.x == 0) p.stamps[int64_t(phase) * gridDim.x + blockIdx.x] = global_ns();
  };
  if (p.stamps != nullptr && threadIdx.x == 0) p.stamps[blockIdx.x] = global_ns();
  {
    const Gemm first = qkv_gemm(p.layers[0], b);
    if (blockIdx.x < first.items()) fetch_weight(first, blockIdx.x, w_tile);
  }
  for (int l = 0; l < p.layer_count; ++l) {
    const LayerWeights& w = p.layers[l];
    const Gemm qkv = qkv_gemm(w, b), out = out_gemm(w, b), ffn1 = ffn1_gemm(w, b), ffn2 = ffn2_gemm(w, b);
    gemm_phase(qkv, a_tile, w_tile, true);
    if (blockIdx.x < out.items()) fetch_weight(out, blockIdx.x, w_tile);
    barrier();
    attention_phase(b, a_tile);
    barrier();
    gemm_phase(out, a_tile, w_tile, true);
    if (blockIdx.x < ffn1.items()) fetch_weight(ffn1, blockIdx.x, w_tile);
    barrier();
    layernorm_phase<kOutSplits>(b.partials, w.out_bias, b.x, w.ln1_gamma, w.ln1_beta, b.x1);
    barrier();
    gemm_phase(ffn1, a_tile, w_tile, true);
    if (blockIdx.x < ffn2.items()) fetch_weight(ffn2, blockIdx.x, w_tile);
    barrier();
    gemm_phase(ffn2, a_tile, w_tile, true);
    if (l + 1 < p.layer_count) {
      const Gemm next = qkv_gemm(p.layers[l + 1], b);
      if (blockIdx.x < next.items()) fetch_weight(next, blockIdx.x, w_tile);
    }
    barrier();
    layernorm_phase<kFfn2Splits>(b.partials, w.ffn2_bias, b.x1, w.ln2_gamma, w.ln2_beta, b.x);
    barrier();
  }
  cp_async_wait<0>();
}

// The barrier alone, `count` times in a row: its floor.
__global__ void __launch_bounds__(kThreads, 1) barriers_kernel(unsigned* counter, int count) {
  for (int i = 1; i <= count; ++i) grid_barrier(counter, i * gridDim.x);
}

// One phase of layer 0 and a barrier, `count` times in a row: the phase with
// its data and weights warm (what the encoder's phases would cost if
// nothing were cold). which: 0 QKV GEMM, 1 attention, 2 LayerNorm 1.
__global__ void __launch_bounds__(kThreads, 1) phase_kernel(const __grid_constant__ Params p, int which, int count) {
  extern __shared__ __align__(16) __half smem[];
  __half* w_tile = smem;
  __half* a_tile = smem + kRegionHalves;
  const LayerWeights& w = p.layers[0];
  for (int i = 1; i <= count; ++i) {
    if (which == 0) gemm_phase(qkv_gemm(w, p.buf), a_tile, w_tile, false);
    if (which == 1) attention_phase(p.buf, a_tile);
    if (which == 2) layernorm_phase<kOutSplits>(p.buf.partials, w.out_bias, p.buf.x, w.ln1_gamma, w.ln1_beta, p.buf.x1);
    grid_barrier(p.barrier, i * gridDim.x);
  }
}

// ---- reference: plain kernels, fp32 arithmetic, fp16 where the kernel above stores fp16 ----

__global__ void reference_gemm(const __half* a, const __half* w, const float* bias, int n, int k, bool gelu_act,
                               __half* out_half, float* out_float) {
  const int col = blockIdx.x * blockDim.x + threadIdx.x, row = blockIdx.y;
  if (col >= n) return;
  float acc = 0.f;
  for (int i = 0; i < k; ++i) acc += __half2float(a[int64_t(row) * k + i]) * __half2float(w[int64_t(col) * k + i]);
  if (out_float != nullptr) {
    out_float[int64_t(row) * n + col] = acc;
    return;
  }
  acc += bias[col];
  if (gelu_act) acc = gelu(acc);
  out_half[int64_t(row) * n + col] = __float2half(acc);
}

__global__ void reference_attention(const __half* qkv, __half* context) {
  const int row = threadIdx.x, head = blockIdx.x;
  constexpr int ld = 3 * kHidden;
  float s[kRows];
  float m = -INFINITY;
  for (int j = 0; j < kRows; ++j) {
    float dot = 0.f;
    for (int d = 0; d < kHeadDim; ++d) {
      dot += __half2float(qkv[row * ld + head * kHeadDim + d]) * __half2float(qkv[j * ld + kHidden + head * kHeadDim + d]);
    }
    s[j] = dot * 0.125f;
    m = fmaxf(m, s[j]);
  }
  float total = 0.f;
  for (int j = 0; j < kRows; ++j) total += (s[j] = expf(s[j] - m));
  for (int d = 0; d < kHeadDim; ++d) {
    float acc = 0.f;
    for (int j = 0; j < kRows; ++j) acc += s[j] * __half2float(qkv[j * ld + 2 * kHidden + head * kHeadDim + d]);
    context[row * kHidden + head * kHeadDim + d] = __float2half(acc / total);
  }
}

__global__ void reference_layernorm(const float* sum, const float* bias, const __half* residual, const float* gamma,
                                    const float* beta, __half* out) {
  const int row = blockIdx.x * blockDim.x + threadIdx.x;
  if (row >= kRows) return;
  float mean = 0.f, var = 0.f;
  for (int c = 0; c < kHidden; ++c) mean += sum[row * kHidden + c] + bias[c] + __half2float(residual[row * kHidden + c]);
  mean /= kHidden;
  for (int c = 0; c < kHidden; ++c) {
    const float d = sum[row * kHidden + c] + bias[c] + __half2float(residual[row * kHidden + c]) - mean;
    var += d * d;
  }
  const float inv_std = rsqrtf(var / kHidden + kEps);
  for (int c = 0; c < kHidden; ++c) {
    const float v = sum[row * kHidden + c] + bias[c] + __half2float(residual[row * kHidden + c]);
    out[row * kHidden + c] = __float2half((v - mean) * inv_std * gamma[c] + beta[c]);
  }
}

void reference_encoder(const std::vector<LayerWeights>& layers, const Buffers& b, float* sum) {
  for (const LayerWeights& w : layers) {
    reference_gemm<<<dim3(3 * kHidden / 128, kRows), 128>>>(b.x, w.qkv, w.qkv_bias, 3 * kHidden, kHidden, false, b.qkv,
                                                            nullptr);
    reference_attention<<<kHeads, kRows>>>(b.qkv, b.context);
    reference_gemm<<<dim3(kHidden / 128, kRows), 128>>>(b.context, w.out, nullptr, kHidden, kHidden, false, nullptr, sum);
    reference_layernorm<<<1, kRows>>>(sum, w.out_bias, b.x, w.ln1_gamma, w.ln1_beta, b.x1);
    reference_gemm<<<dim3(kInter / 128, kRows), 128>>>(b.x1, w.ffn1, w.ffn1_bias, kInter, kHidden, true, b.ffn, nullptr);
    reference_gemm<<<dim3(kHidden / 128, kRows), 128>>>(b.ffn, w.ffn2, nullptr, kHidden, kInter, false, nullptr, sum);
    reference_layernorm<<<1, kRows>>>(sum, w.ffn2_bias, b.x1, w.ln2_gamma, w.ln2_beta, b.x);
  }
  CHECK_CUDA(cudaGetLastError());
}

// ---- set-up ----

template <class T>
T* upload(const std::vector<T>& host) {
  T* device = nullptr;
  CHECK_CUDA(cudaMalloc(&device, host.size() * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(device, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return device;
}

std::vector<__half> random_halves(fusedrt::test::Rng& rng, size_t n, float scale) {
  std::vector<__half> v(n);
  for (auto& x : v) x = __float2half(rng.uniform(-scale, scale));
  return v;
}

std::vector<float> random_floats(fusedrt::test::Rng& rng, size_t n, float lo, float hi) {
  std::vector<float> v(n);
  for (auto& x : v) x = rng.uniform(lo, hi);
  return v;
}

LayerWeights random_layer(fusedrt::test::Rng& rng) {
  // Uniform in +-0.035: the standard deviation (0.02) of BERT's initialisation.
  const float w = 0.035f;
  return {upload(random_halves(rng, size_t(3) * kHidden * kHidden, w)), upload(random_floats(rng, 3 * kHidden, -0.1f, 0.1f)),
          upload(random_halves(rng, size_t(kHidden) * kHidden, w)),     upload(random_floats(rng, kHidden, -0.1f, 0.1f)),
          upload(random_floats(rng, kHidden, 0.8f, 1.2f)),              upload(random_floats(rng, kHidden, -0.1f, 0.1f)),
          upload(random_halves(rng, size_t(kInter) * kHidden, w)),      upload(random_floats(rng, kInter, -0.1f, 0.1f)),
          upload(random_halves(rng, size_t(kHidden) * kInter, w)),      upload(random_floats(rng, kHidden, -0.1f, 0.1f)),
          upload(random_floats(rng, kHidden, 0.8f, 1.2f)),              upload(random_floats(rng, kHidden, -0.1f, 0.1f))};
}

Buffers allocate_buffers() {
  Buffers b{};
  CHECK_CUDA(cudaMalloc(&b.x, kRows * kHidden * sizeof(__half)));
  CHECK_CUDA(cudaMalloc(&b.qkv, kRows * 3 * kHidden * sizeof(__half)));
  CHECK_CUDA(cudaMalloc(&b.context, kRows * kHidden * sizeof(__half)));
  CHECK_CUDA(cudaMalloc(&b.partials, size_t(std::max(kOutSplits, kFfn2Splits)) * kRows * kHidden * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&b.x1, kRows * kHidden * sizeof(__half)));
  CHECK_CUDA(cudaMalloc(&b.ffn, kRows * kInter * sizeof(__half)));
  return b;
}

// One cooperative launch of `kernel` over every SM, its barrier counter zeroed first.
void launch_cooperative(const void* kernel, void** args, int sms, size_t smem, unsigned* barrier) {
  CHECK_CUDA(cudaMemsetAsync(barrier, 0, sizeof(unsigned)));
  CHECK_CUDA(cudaLaunchCooperativeKernel(kernel, dim3(sms), dim3(kThreads), args, smem, nullptr));
}

// Median GPU time of `launch`, ms: CUDA events around each of `samples`
// calls, after `warmup` more.
double median_ms(const std::function<void()>& launch, int warmup, int samples) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  std::vector<float> ms;
  for (int i = 0; i < warmup + samples; ++i) {
    CHECK_CUDA(cudaEventRecord(start));
    launch();
    CHECK_CUDA(cudaEventRecord(stop));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, start, stop));
    if (i >= warmup) ms.push_back(t);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int layer_count = std::clamp(argc > 1 ? std::atoi(argv[1]) : 12, 1, kMaxLayers);
  int sms = 0, device = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const size_t smem = 2 * kRegionHalves * sizeof(__half);
  CHECK_CUDA(cudaFuncSetAttribute(encoder_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));

  fusedrt::test::Rng rng{20261122};
  std::vector<LayerWeights> layers;
  for (int l = 0; l < layer_count; ++l) layers.push_back(random_layer(rng));
  const std::vector<__half> input = random_halves(rng, size_t(kRows) * kHidden, 1.7f);
  const Buffers mine = allocate_buffers(), ref = allocate_buffers();
  float* ref_sum = nullptr;
  unsigned* barrier = nullptr;
  CHECK_CUDA(cudaMalloc(&ref_sum, kRows * kHidden * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&barrier, sizeof(unsigned)));
  CHECK_CUDA(cudaMemset(barrier, 0, sizeof(unsigned)));

  Params params{};
  std::copy(layers.begin(), layers.end(), params.layers);
  params.layer_count = layer_count;
  params.buf = mine;
  params.barrier = barrier;
  auto launch = [&] {
    void* args[] = {&params};
    launch_cooperative(reinterpret_cast<const void*>(encoder_kernel), args, sms, smem, barrier);
  };
  auto load_input = [&](const Buffers& b) {
    CHECK_CUDA(cudaMemcpy(b.x, input.data(), input.size() * sizeof(__half), cudaMemcpyHostToDevice));
  };

  // Check.
  load_input(mine);
  load_input(ref);
  launch();
  reference_encoder(layers, ref, ref_sum);
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<__half> got(input.size()), want(input.size());
  CHECK_CUDA(cudaMemcpy(got.data(), mine.x, got.size() * sizeof(__half), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(want.data(), ref.x, want.size() * sizeof(__half), cudaMemcpyDeviceToHost));
  double max_error = 0, max_ref = 0, dot = 0, got_sq = 0, want_sq = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = __half2float(got[i]), w = __half2float(want[i]);
    max_error = std::max(max_error, std::fabs(g - w));
    max_ref = std::max(max_ref, std::fabs(w));
    dot += g * w, got_sq += g * g, want_sq += w * w;
  }
  const double cosine = dot / std::sqrt(got_sq * want_sq);
  const bool ok = std::isfinite(max_error) && max_error <= 3e-2 * max_ref && cosine >= 0.9999;
  std::printf("check after %d layers: max |error| %.3g (largest |value| %.3g), cosine %.6f: %s\n", layer_count, max_error,
              max_ref, cosine, ok ? "ok" : "WRONG");

  // Time: one launch runs every layer.
  const double encoder_ms = median_ms(launch, 20, 50);

  // Phases, from the stamps of 20 launches: every block leaving each
  // barrier (or starting) and reaching the next. Work: from the first block
  // leaving to the last one arriving; barrier: from that arrival to the
  // first block leaving; skew: first to last block leaving; slowest: the
  // longest a block took from leaving to arriving.
  long long *stamps = nullptr, *arrivals = nullptr;
  const size_t stamp_count = size_t(layer_count) * kPhases * sms;
  CHECK_CUDA(cudaMalloc(&stamps, stamp_count * sizeof(long long) + sms * sizeof(long long)));
  CHECK_CUDA(cudaMalloc(&arrivals, stamp_count * sizeof(long long)));
  params.stamps = stamps;
  params.arrivals = arrivals;
  std::vector<std::vector<double>> phase_us(kPhases), work_us(kPhases), barrier_us(kPhases), skew_us(kPhases),
      slowest_us(kPhases);
  std::vector<long long> leave(stamp_count + sms), reach(stamp_count);
  for (int i = 0; i < 20; ++i) {
    launch();
    CHECK_CUDA(cudaMemcpy(leave.data(), stamps, leave.size() * sizeof(long long), cudaMemcpyDeviceToHost));
    CHECK_CUDA(cudaMemcpy(reach.data(), arrivals, reach.size() * sizeof(long long), cudaMemcpyDeviceToHost));
    for (int j = 0; j < layer_count * kPhases; ++j) {
      const auto from = leave.begin() + int64_t(j) * sms, next = leave.begin() + int64_t(j + 1) * sms;
      const auto arrive = reach.begin() + int64_t(j) * sms;
      const long long first_out = *std::min_element(from, from + sms), last_out = *std::max_element(from, from + sms);
      const long long last_in = *std::max_element(arrive, arrive + sms), next_out = *std::min_element(next, next + sms);
      long long slowest = 0;
      for (int b = 0; b < sms; ++b) slowest = std::max(slowest, arrive[b] - from[b]);
      phase_us[j % kPhases].push_back((next_out - first_out) * 1e-3);
      work_us[j % kPhases].push_back((last_in - first_out) * 1e-3);
      barrier_us[j % kPhases].push_back((next_out - last_in) * 1e-3);
      skew_us[j % kPhases].push_back((last_out - first_out) * 1e-3);
      slowest_us[j % kPhases].push_back(slowest * 1e-3);
    }
  }
  static const char* kNames[kPhases] = {"QKV GEMM (72 tiles)", "attention (24 items)", "output projection (96 tiles, 4 splits)",
                                        "LayerNorm 1", "FFN1 + GELU (96 tiles)", "FFN2 (96 tiles, 4 splits)", "LayerNorm 2"};
  // The barrier's floor: 1000 in one launch against 10.
  CHECK_CUDA(cudaFuncSetAttribute(barriers_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  auto barriers_ms = [&](int count) {
    return median_ms([&] {
      void* args[] = {&barrier, &count};
      launch_cooperative(reinterpret_cast<const void*>(barriers_kernel), args, sms, smem, barrier);
    }, 3, 30);
  };
  const double per_barrier_us = (barriers_ms(1010) - barriers_ms(10)) * 1e3 / 1000;
  std::printf("\na grid barrier alone (%d blocks): %.2f us\n", sms, per_barrier_us);
  CHECK_CUDA(cudaFuncSetAttribute(phase_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  auto phase_ms = [&](int which, int count) {
    return median_ms([&] {
      void* args[] = {&params, &which, &count};
      launch_cooperative(reinterpret_cast<const void*>(phase_kernel), args, sms, smem, barrier);
    }, 3, 30);
  };
  static const char* kWarmNames[3] = {"QKV GEMM, weight fetched in the phase", "attention", "LayerNorm 1"};
  for (int which = 0; which < 3; ++which) {
    std::printf("warm %s, with its barrier: %.2f us\n", kWarmNames[which],
                (phase_ms(which, 210) - phase_ms(which, 10)) * 1e3 / 200);
  }
  std::printf("\n%d SMs, %d layers in one launch: median %.4f ms, %.2f us per layer\n\n", sms, layer_count, encoder_ms,
              encoder_ms * 1e3 / layer_count);
  std::printf("| phase | us, with its barrier | work | barrier | skew leaving the barrier before | slowest block |\n"
              "| --- | ---: | ---: | ---: | ---: | ---: |\n");
  auto median = [](std::vector<double>& v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  for (int j = 0; j < kPhases; ++j) {
    std::printf("| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", kNames[j], median(phase_us[j]), median(work_us[j]),
                median(barrier_us[j]), median(skew_us[j]), median(slowest_us[j]));
  }
  return ok ? 0 : 1;
}
