// Can the MLM tail of a batch-1 fill-mask run go faster as one kernel?
//
// The tail is what follows the last layer's attention on the [MASK] row:
//   output projection -> add_layernorm -> FFN1 + GELU -> FFN2 -> add_layernorm
//   -> head transform + GELU -> layernorm -> decoder (30522 logits, fp32).
// The backend runs it as 8 dependent kernels on one row: each a few
// microseconds of latency over a floor under one, then the decoder's 47 MB
// (about 18 us at the 2.6 TB/s the gemv reaches).
//
// Here it is one launch of one block an SM (all resident at once: its
// shared memory allows one an SM, and nothing runs beside it here; the
// backend would launch it cooperatively). At its start each block copies
// into shared memory (bulk copies on mbarriers) the rows of the four chain
// weights it will multiply and the chain's biases and LayerNorm parameters,
// so no phase waits on DRAM for them. The four GEMM phases meet at grid
// barriers; the LayerNorms between them run redundantly in every block (one
// row: cheaper than another barrier). The decoder phase streams its rows
// from global memory, 4 rows a warp in flight. Two more variants start the
// decoder's weight early: some of each block's rows copied into shared
// memory at the start, the rest asked of L2 (cp.async.bulk.prefetch.L2);
// they were slower (bench/RESULTS.md, nineteenth session): with the chain
// and the decoder reading DRAM together, the total rate fell.
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90a,code=sm_90a \
//     bench/gpu/persistent_tail.cu cuda/gemv.cu cuda/add_layernorm.cu -o /tmp/persistent_tail
//   /tmp/persistent_tail
//
// It prints the check of the fused tail against the backend's kernels
// (cuda/gemv.cu, cuda/add_layernorm.cu) on the same weights, then the GPU
// time of both (CUDA events around a CUDA graph, median of 50) with the
// weights cold (L2 filled by reading 256 MB before each sample, as the 170
// MB of the layers before leave it in a run) and warm, then, for one cold
// launch of each fused variant, when each phase ended (%globaltimer stamps
// of every block). A probe of the schedule, not a backend op: one row,
// BERT-base sizes, no top-k.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "../../cuda/add_layernorm.cuh"
#include "../../cuda/gemv.cuh"
#include "../../cuda/row_math.cuh"  // warp_sum
#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, Rng
#include "grid_barrier.cuh"
#include "tma.cuh"  // barrier_init, barrier_expect_bytes, barrier_wait, bulk_copy

using namespace fusedrt::gpu;
using namespace fusedrt::probe;
using fusedrt::Activation;
using fusedrt::test::Rng;

namespace {

constexpr int kHidden = 768;
constexpr int kInter = 3072;
constexpr int kVocab = 30522;
constexpr float kEps = 1e-12f;
constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxBlocks = 160;
constexpr int kStamps = 7;
const char* const kStampNames[kStamps] = {"start", "out-proj", "FFN1", "FFN2", "transform", "decoder from global",
                                          "decoder from shared"};  // the slices' shared-memory sizes assume at least 132 blocks

// Most weight rows a block gets of an n-row weight split over `blocks`.
__host__ __device__ constexpr int rows_per_block(int n, int blocks) { return (n + blocks - 1) / blocks; }

struct TailParams {
  const __half* ctx;  // [768]: the [MASK] row's attention output
  const __half* x0;   // [768]: the [MASK] row's hidden state before it (the residual)
  const __half* w_out;  // [768, 768]
  const float* b_out;   // added by the add_layernorm, as in the backend
  const float *g1, *be1;
  const __half *w_up, *b_up;  // [3072, 768], [3072]
  const __half* w_down;       // [768, 3072]
  const float* b_down;
  const float *g2, *be2;
  const __half *w_t, *b_t;  // head transform [768, 768]
  const float *gt, *bet;
  const __half* w_dec;  // [30522, 768]
  const float* b_dec;
  __half *proj, *inter, *proj2, *t;  // [768], [3072], [768], [768]: phase outputs other blocks read
  float* logits;                     // [30522]
  unsigned* arrived;  // grid barrier arrivals, zero at launch; left zero
  unsigned* exited;
  long long* stamps;      // [gridDim.x][kStamps] or nullptr: %globaltimer at each phase's end
  int decoder_smem_rows;  // decoder rows a block preloads into shared memory
  int prefetch_rest;      // ask L2 for the block's other decoder rows at the start
};

__device__ void prefetch_l2(const void* src, uint32_t bytes) {
  for (uint32_t done = 0; done < bytes; done += 32768) {
    asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(static_cast<const char*>(src) + done),
                 "r"(min(32768u, bytes - done))
                 : "memory");
  }
}

__device__ __forceinline__ void stamp(long long* stamps, int i) {
  if (stamps != nullptr && threadIdx.x == 0) {
    long long t;
    asm volatile("mov.u64 %0, %globaltimer;" : "=l"(t));
    stamps[blockIdx.x * kStamps + i] = t;
  }
}

__device__ __forceinline__ float gelu(float v) { return 0.5f * v * (1.f + erff(v * 0.70710678118654752f)); }

// Rows [first, first + count) of an n-row split over the grid.
struct Slice {
  int first;
  int count;
};
__device__ Slice block_slice(int n) {
  const int first = static_cast<int>(int64_t{n} * blockIdx.x / gridDim.x);
  return {first, static_cast<int>(int64_t{n} * (blockIdx.x + 1) / gridDim.x) - first};
}

// Sum over the warp of weight_row . vec, K = 32 * 8 * kVecs, fp32: each lane
// its kVecs 16-byte vectors, strided by the warp.
template <int kVecs>
__device__ __forceinline__ float warp_dot(const uint4* weight_row, const float* vec) {
  const int lane = threadIdx.x % 32;
  float sum = 0.f;
#pragma unroll
  for (int v = 0; v < kVecs; ++v) {
    const uint4 bits = weight_row[v * 32 + lane];
    const __half2* w = reinterpret_cast<const __half2*>(&bits);
    const float* x = vec + (v * 32 + lane) * 8;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 f = __half22float2(w[i]);
      sum = fmaf(f.x, x[2 * i], fmaf(f.y, x[2 * i + 1], sum));
    }
  }
  return warp_sum(sum);
}

// One warp: out = LN((in + bias) + residual) over 768 values, fp32 statistics
// (two passes over the registers), rounded to fp16 as the backend stores it,
// then kept as float for the next GEMM. bias and residual may be null.
__device__ void layernorm_768(const __half* in, const float* bias, const float* residual, const float* gamma,
                              const float* beta, float* out) {
  const int lane = threadIdx.x % 32;
  float v[24];
  float sum = 0.f;
#pragma unroll
  for (int i = 0; i < 24; ++i) {
    const int c = i * 32 + lane;
    v[i] = __half2float(__ldcg(in + c));  // written by other blocks: not from L1
    if (bias != nullptr) v[i] += bias[c];
    if (residual != nullptr) v[i] += residual[c];
    sum += v[i];
  }
  const float mean = warp_sum(sum) / kHidden;
  float squares = 0.f;
#pragma unroll
  for (int i = 0; i < 24; ++i) squares += (v[i] - mean) * (v[i] - mean);
  const float rstd = rsqrtf(warp_sum(squares) / kHidden + kEps);
#pragma unroll
  for (int i = 0; i < 24; ++i) {
    const int c = i * 32 + lane;
    out[c] = __half2float(__float2half_rn((v[i] - mean) * rstd * gamma[c] + beta[c]));
  }
}

// The chain's biases and LayerNorm parameters, copied in at the start:
// read from global memory in their phases, each cost a DRAM round trip.
enum FloatParam { kBOut, kG1, kBe1, kBDown, kG2, kBe2, kGt, kBet, kFloatParams };
constexpr int kBarriers = 6;  // one per weight slice, one for the parameters
constexpr int kParamBarrier = 5;

struct SharedLayout {
  size_t params, b_up, b_t, w_out, w_up, w_down, w_t, w_dec, total;
};

__host__ __device__ SharedLayout shared_layout(int blocks, int decoder_smem_rows) {
  SharedLayout s{};
  size_t at = 0;
  const auto take = [&](size_t bytes) {
    const size_t here = at;
    at += (bytes + 127) / 128 * 128;
    return here;
  };
  take(kBarriers * sizeof(uint64_t));
  take((kInter + 3 * kHidden) * sizeof(float));  // vec, x1, x2, ctx/h
  s.params = take(kFloatParams * kHidden * sizeof(float));
  s.b_up = take(kInter * 2);
  s.b_t = take(kHidden * 2);
  s.w_out = take(size_t(rows_per_block(kHidden, blocks)) * kHidden * 2);
  s.w_up = take(size_t(rows_per_block(kInter, blocks)) * kHidden * 2);
  s.w_down = take(size_t(rows_per_block(kHidden, blocks)) * kInter * 2);
  s.w_t = take(size_t(rows_per_block(kHidden, blocks)) * kHidden * 2);
  s.w_dec = take(size_t(decoder_smem_rows) * kHidden * 2);
  s.total = at;
  return s;
}

__global__ void __launch_bounds__(kThreads, 1) fused_tail_kernel(TailParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const SharedLayout layout = shared_layout(gridDim.x, p.decoder_smem_rows);
  uint64_t* bars = reinterpret_cast<uint64_t*>(smem);
  float* vec = reinterpret_cast<float*>(smem + 128);  // [3072]: the input of the current GEMM
  float* x1 = vec + kInter;
  float* x2 = x1 + kHidden;
  float* xh = x2 + kHidden;  // ctx first, then the head's LayerNorm output
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  const float* param = reinterpret_cast<const float*>(smem + layout.params);
  const auto param_of = [&](FloatParam i) { return param + i * kHidden; };
  const __half* b_up = reinterpret_cast<const __half*>(smem + layout.b_up);
  const __half* b_t = reinterpret_cast<const __half*>(smem + layout.b_t);
  const Slice s_out = block_slice(kHidden), s_up = block_slice(kInter), s_dec = block_slice(kVocab);
  const int dec_smem = min(p.decoder_smem_rows, s_dec.count);

  if (threadIdx.x == 0) {
    for (int i = 0; i < kBarriers; ++i) barrier_init(&bars[i], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    const float* float_params[kFloatParams] = {p.b_out, p.g1, p.be1, p.b_down, p.g2, p.be2, p.gt, p.bet};
    barrier_expect_bytes(&bars[kParamBarrier], kFloatParams * kHidden * 4 + (kInter + kHidden) * 2);
    for (int i = 0; i < kFloatParams; ++i) {
      bulk_copy(smem + layout.params + i * kHidden * 4, float_params[i], kHidden * 4, &bars[kParamBarrier]);
    }
    bulk_copy(smem + layout.b_up, p.b_up, kInter * 2, &bars[kParamBarrier]);
    bulk_copy(smem + layout.b_t, p.b_t, kHidden * 2, &bars[kParamBarrier]);
    barrier_expect_bytes(&bars[0], s_out.count * kHidden * 2);
    bulk_copy(smem + layout.w_out, p.w_out + size_t(s_out.first) * kHidden, s_out.count * kHidden * 2, &bars[0]);
    barrier_expect_bytes(&bars[1], s_up.count * kHidden * 2);
    bulk_copy(smem + layout.w_up, p.w_up + size_t(s_up.first) * kHidden, s_up.count * kHidden * 2, &bars[1]);
    barrier_expect_bytes(&bars[2], s_out.count * kInter * 2);
    bulk_copy(smem + layout.w_down, p.w_down + size_t(s_out.first) * kInter, s_out.count * kInter * 2, &bars[2]);
    barrier_expect_bytes(&bars[3], s_out.count * kHidden * 2);
    bulk_copy(smem + layout.w_t, p.w_t + size_t(s_out.first) * kHidden, s_out.count * kHidden * 2, &bars[3]);
    if (dec_smem > 0) {
      barrier_expect_bytes(&bars[4], dec_smem * kHidden * 2);
      bulk_copy(smem + layout.w_dec, p.w_dec + size_t(s_dec.first) * kHidden, dec_smem * kHidden * 2, &bars[4]);
    }
    if (p.prefetch_rest && dec_smem < s_dec.count) {
      prefetch_l2(p.w_dec + size_t(s_dec.first + dec_smem) * kHidden, (s_dec.count - dec_smem) * kHidden * 2);
    }
  }
  for (int c = threadIdx.x; c < kHidden; c += kThreads) {
    xh[c] = __half2float(p.ctx[c]);
    x2[c] = __half2float(p.x0[c]);  // the residual until LN1 needs it
  }
  __syncthreads();
  stamp(p.stamps, 0);
  unsigned barriers = 0;

  // Output projection (no bias: the LayerNorm adds it).
  barrier_wait(&bars[0], 0);
  for (int r = warp; r < s_out.count; r += kWarps) {
    const float sum = warp_dot<3>(reinterpret_cast<const uint4*>(smem + layout.w_out) + r * (kHidden / 8), xh);
    if (lane == 0) p.proj[s_out.first + r] = __float2half_rn(sum);
  }
  grid_barrier(p.arrived, ++barriers * gridDim.x);
  stamp(p.stamps, 1);
  barrier_wait(&bars[kParamBarrier], 0);
  if (warp == 0) layernorm_768(p.proj, param_of(kBOut), x2, param_of(kG1), param_of(kBe1), x1);
  __syncthreads();

  // FFN1 + bias + GELU.
  barrier_wait(&bars[1], 0);
  for (int r = warp; r < s_up.count; r += kWarps) {
    const float sum = warp_dot<3>(reinterpret_cast<const uint4*>(smem + layout.w_up) + r * (kHidden / 8), x1);
    const int n = s_up.first + r;
    if (lane == 0) p.inter[n] = __float2half_rn(gelu(sum + __half2float(b_up[n])));
  }
  grid_barrier(p.arrived, ++barriers * gridDim.x);
  stamp(p.stamps, 2);
  for (int c = threadIdx.x; c < kInter; c += kThreads) vec[c] = __half2float(__ldcg(p.inter + c));
  __syncthreads();

  // FFN2 (no bias), then LN2 over it, x1 and its bias.
  barrier_wait(&bars[2], 0);
  for (int r = warp; r < s_out.count; r += kWarps) {
    const float sum = warp_dot<12>(reinterpret_cast<const uint4*>(smem + layout.w_down) + r * (kInter / 8), vec);
    if (lane == 0) p.proj2[s_out.first + r] = __float2half_rn(sum);
  }
  grid_barrier(p.arrived, ++barriers * gridDim.x);
  stamp(p.stamps, 3);
  if (warp == 0) layernorm_768(p.proj2, param_of(kBDown), x1, param_of(kG2), param_of(kBe2), x2);
  __syncthreads();

  // Head transform + bias + GELU, then its LayerNorm.
  barrier_wait(&bars[3], 0);
  for (int r = warp; r < s_out.count; r += kWarps) {
    const float sum = warp_dot<3>(reinterpret_cast<const uint4*>(smem + layout.w_t) + r * (kHidden / 8), x2);
    const int n = s_out.first + r;
    if (lane == 0) p.t[n] = __float2half_rn(gelu(sum + __half2float(b_t[n])));
  }
  grid_barrier(p.arrived, ++barriers * gridDim.x);
  stamp(p.stamps, 4);
  if (warp == 0) layernorm_768(p.t, nullptr, nullptr, param_of(kGt), param_of(kBet), xh);
  __syncthreads();

  // Decoder: the rows past the preloaded ones first (their loads, from L2 or
  // DRAM, take longest), four a warp at a time; then the preloaded rows.
  const uint4* dec_global = reinterpret_cast<const uint4*>(p.w_dec);
  for (int r0 = dec_smem + warp * 4; r0 < s_dec.count; r0 += kWarps * 4) {
    uint4 bits[4][3];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int r = min(r0 + j, s_dec.count - 1);
#pragma unroll
      for (int v = 0; v < 3; ++v) bits[j][v] = __ldg(dec_global + size_t(s_dec.first + r) * (kHidden / 8) + v * 32 + lane);
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      float sum = 0.f;
#pragma unroll
      for (int v = 0; v < 3; ++v) {
        const __half2* w = reinterpret_cast<const __half2*>(&bits[j][v]);
        const float* x = xh + (v * 32 + lane) * 8;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
          const float2 f = __half22float2(w[i]);
          sum = fmaf(f.x, x[2 * i], fmaf(f.y, x[2 * i + 1], sum));
        }
      }
      sum = warp_sum(sum);
      const int n = s_dec.first + r0 + j;
      if (lane == 0 && r0 + j < s_dec.count) p.logits[n] = sum + p.b_dec[n];
    }
  }
  if (p.stamps != nullptr) __syncthreads();
  stamp(p.stamps, 5);
  if (dec_smem > 0) {
    barrier_wait(&bars[4], 0);
    for (int r = warp; r < dec_smem; r += kWarps) {
      const float sum = warp_dot<3>(reinterpret_cast<const uint4*>(smem + layout.w_dec) + r * (kHidden / 8), xh);
      if (lane == 0) p.logits[s_dec.first + r] = sum + p.b_dec[s_dec.first + r];
    }
  }

  __syncthreads();
  stamp(p.stamps, 6);
  leave_counters_zero(p.arrived, p.exited);
}

template <class T>
T* device_copy(const std::vector<T>& host) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, host.size() * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(d, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

template <class T>
T* device_zeros(size_t count) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, count * sizeof(T)));
  CHECK_CUDA(cudaMemset(d, 0, count * sizeof(T)));
  return d;
}

std::vector<__half> random_halves(Rng& rng, size_t count, float scale) {
  std::vector<__half> v(count);
  for (auto& x : v) x = __float2half(rng.uniform(-scale, scale));
  return v;
}

std::vector<float> random_floats(Rng& rng, size_t count, float lo, float hi) {
  std::vector<float> v(count);
  for (auto& x : v) x = rng.uniform(lo, hi);
  return v;
}

// The backend's kernels for the same tail, on buffers of their own.
struct BackendTail {
  TailParams p;
  __half *x1, *x2, *h;
  void enqueue(cudaStream_t stream) const {
    const auto gemv_half = [&](const __half* in, const __half* w, const __half* bias, int64_t n, int64_t k,
                               Activation act, __half* out) {
      GemvArgs<__half> a;
      a.rows = 1, a.n = n, a.k = k, a.in = in, a.weight = w, a.bias = bias, a.activation = act, a.out = out;
      CHECK_CUDA(gemv(a, stream));
    };
    const auto layernorm = [&](const __half* in, const __half* residual, const float* bias, const float* g,
                               const float* b, __half* out) {
      AddLayerNormArgs<__half> a{in, residual, bias, g, b, kEps, 1, kHidden, out};
      CHECK_CUDA(add_layernorm(a, stream));
    };
    gemv_half(p.ctx, p.w_out, nullptr, kHidden, kHidden, Activation::kNone, p.proj);
    layernorm(p.proj, p.x0, p.b_out, p.g1, p.be1, x1);
    gemv_half(x1, p.w_up, p.b_up, kInter, kHidden, Activation::kGelu, p.inter);
    gemv_half(p.inter, p.w_down, nullptr, kHidden, kInter, Activation::kNone, p.proj2);
    layernorm(p.proj2, x1, p.b_down, p.g2, p.be2, x2);
    gemv_half(x2, p.w_t, p.b_t, kHidden, kHidden, Activation::kGelu, p.t);
    layernorm(p.t, nullptr, nullptr, p.gt, p.bet, h);
    GemvArgs<float> d;
    d.rows = 1, d.n = kVocab, d.k = kHidden, d.in = h, d.weight = p.w_dec, d.bias = p.b_dec, d.out = p.logits;
    CHECK_CUDA(gemv(d, stream));
  }
};

}  // namespace

int main() {
  int device = 0, sms = 0, max_smem = 0;
  CHECK_CUDA(cudaGetDevice(&device));
  CHECK_CUDA(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CHECK_CUDA(cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  if (sms < 132 || sms > kMaxBlocks) {
    std::printf("persistent_tail: sized for 132-%d SMs, this GPU has %d\n", kMaxBlocks, sms);
    return 2;
  }
  const size_t chain_bytes = shared_layout(sms, 0).total;
  const int max_decoder_rows = static_cast<int>((max_smem - chain_bytes) / (kHidden * 2));
  int resident = 0;
  CHECK_CUDA(cudaFuncSetAttribute(fused_tail_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem));
  CHECK_CUDA(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, fused_tail_kernel, kThreads, chain_bytes));
  if (resident < 1) {
    std::printf("persistent_tail: a block does not fit an SM\n");
    return 2;
  }

  Rng rng{20261123};
  const float w_scale = 0.035f;  // about the std 0.02 of BERT's initialisation
  TailParams p{};
  p.ctx = device_copy(random_halves(rng, kHidden, 1.f));
  p.x0 = device_copy(random_halves(rng, kHidden, 1.f));
  p.w_out = device_copy(random_halves(rng, size_t{kHidden} * kHidden, w_scale));
  p.b_out = device_copy(random_floats(rng, kHidden, -0.1f, 0.1f));
  p.g1 = device_copy(random_floats(rng, kHidden, 0.8f, 1.2f));
  p.be1 = device_copy(random_floats(rng, kHidden, -0.1f, 0.1f));
  p.w_up = device_copy(random_halves(rng, size_t{kInter} * kHidden, w_scale));
  p.b_up = device_copy(random_halves(rng, kInter, 0.1f));
  p.w_down = device_copy(random_halves(rng, size_t{kHidden} * kInter, w_scale));
  p.b_down = device_copy(random_floats(rng, kHidden, -0.1f, 0.1f));
  p.g2 = device_copy(random_floats(rng, kHidden, 0.8f, 1.2f));
  p.be2 = device_copy(random_floats(rng, kHidden, -0.1f, 0.1f));
  p.w_t = device_copy(random_halves(rng, size_t{kHidden} * kHidden, w_scale));
  p.b_t = device_copy(random_halves(rng, kHidden, 0.1f));
  p.gt = device_copy(random_floats(rng, kHidden, 0.8f, 1.2f));
  p.bet = device_copy(random_floats(rng, kHidden, -0.1f, 0.1f));
  p.w_dec = device_copy(random_halves(rng, size_t{kVocab} * kHidden, w_scale));
  p.b_dec = device_copy(random_floats(rng, kVocab, -0.1f, 0.1f));
  p.proj = device_zeros<__half>(kHidden);
  p.inter = device_zeros<__half>(kInter);
  p.proj2 = device_zeros<__half>(kHidden);
  p.t = device_zeros<__half>(kHidden);
  p.logits = device_zeros<float>(kVocab);
  p.arrived = device_zeros<unsigned>(1);
  p.exited = device_zeros<unsigned>(1);

  BackendTail backend{p, device_zeros<__half>(kHidden), device_zeros<__half>(kHidden), device_zeros<__half>(kHidden)};
  backend.p.proj = device_zeros<__half>(kHidden);
  backend.p.inter = device_zeros<__half>(kInter);
  backend.p.proj2 = device_zeros<__half>(kHidden);
  backend.p.t = device_zeros<__half>(kHidden);
  backend.p.logits = device_zeros<float>(kVocab);

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const auto launch_fused = [&](int decoder_rows, int prefetch, long long* stamps = nullptr) {
    TailParams q = p;
    q.stamps = stamps;
    q.decoder_smem_rows = decoder_rows;
    q.prefetch_rest = prefetch;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(sms);
    config.blockDim = dim3(kThreads);
    config.dynamicSmemBytes = shared_layout(sms, decoder_rows).total;
    config.stream = stream;
    CHECK_CUDA(cudaLaunchKernelEx(&config, fused_tail_kernel, q));
  };

  // The check: the fused tail's logits against the backend kernels'.
  backend.enqueue(stream);
  launch_fused(max_decoder_rows, 1);
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<float> want(kVocab), got(kVocab);
  CHECK_CUDA(cudaMemcpy(want.data(), backend.p.logits, kVocab * sizeof(float), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(got.data(), p.logits, kVocab * sizeof(float), cudaMemcpyDeviceToHost));
  double max_abs = 0, max_logit = 0;
  for (int i = 0; i < kVocab; ++i) {
    max_abs = std::max(max_abs, std::fabs(double(got[i]) - want[i]));
    max_logit = std::max(max_logit, std::fabs(double(want[i])));
  }
  const int want_top = static_cast<int>(std::max_element(want.begin(), want.end()) - want.begin());
  const int got_top = static_cast<int>(std::max_element(got.begin(), got.end()) - got.begin());
  const bool ok = max_abs <= 2e-2 * std::max(1.0, max_logit) && want_top == got_top;
  std::printf("check: max abs difference %.3g (largest logit %.3g), top-1 %d / %d: %s\n", max_abs, max_logit,
              got_top, want_top, ok ? "ok" : "FAILED");

  const fusedrt::test::L2Filler filler;
  struct Variant {
    const char* name;
    std::function<void()> enqueue;
  };
  const Variant variants[] = {
      {"backend kernels (8 launches)", [&] { backend.enqueue(stream); }},
      {"fused, decoder rows in shared memory + rest asked of L2", [&] { launch_fused(max_decoder_rows, 1); }},
      {"fused, decoder rows in shared memory", [&] { launch_fused(max_decoder_rows, 0); }},
      {"fused, decoder asked of L2 only", [&] { launch_fused(0, 1); }},
      {"fused, decoder read in its phase", [&] { launch_fused(0, 0); }},
  };
  std::printf("\n%d blocks of %d threads; %d decoder rows a block in shared memory (%zu bytes a block)\n", sms,
              kThreads, max_decoder_rows, shared_layout(sms, max_decoder_rows).total);
  std::printf("| tail at 1 row, us (median of 50) | cold | warm |\n| --- | ---: | ---: |\n");
  for (const Variant& v : variants) {
    const cudaGraphExec_t exec = fusedrt::test::captured_graph_exec(stream, v.enqueue);
    const double cold = fusedrt::test::median_replay_us(exec, stream, &filler, 50);
    const double warm = fusedrt::test::median_replay_us(exec, stream, nullptr, 50);
    std::printf("| %s | %.2f | %.2f |\n", v.name, cold, warm);
    CHECK_CUDA(cudaGraphExecDestroy(exec));
  }

  // Where a cold launch's time goes: each phase's end, from the first
  // block's start, median and last block (µs).
  long long* stamps = device_zeros<long long>(size_t{kStamps} * sms);
  std::vector<long long> host(size_t{kStamps} * sms);
  const std::pair<const char*, std::pair<int, int>> stamped[] = {
      {"smem + L2", {max_decoder_rows, 1}}, {"smem", {max_decoder_rows, 0}}, {"L2 only", {0, 1}},
      {"in its phase", {0, 0}}};
  std::printf("\n| cold launch, phase ends (us from the first start: median block / last block) |");
  for (const auto& v : stamped) std::printf(" %s |", v.first);
  std::printf("\n| --- | ---: | ---: | ---: | ---: |\n");
  std::vector<std::vector<std::pair<double, double>>> ends;
  for (const auto& v : stamped) {
    filler.enqueue(stream);
    launch_fused(v.second.first, v.second.second, stamps);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    CHECK_CUDA(cudaMemcpy(host.data(), stamps, host.size() * sizeof(long long), cudaMemcpyDeviceToHost));
    long long first = host[0];
    for (int b = 0; b < sms; ++b) first = std::min(first, host[size_t(b) * kStamps]);
    std::vector<std::pair<double, double>> column;
    for (int i = 0; i < kStamps; ++i) {
      std::vector<double> t(sms);
      for (int b = 0; b < sms; ++b) t[b] = 1e-3 * double(host[size_t(b) * kStamps + i] - first);
      std::sort(t.begin(), t.end());
      column.push_back({t[sms / 2], t.back()});
    }
    ends.push_back(column);
  }
  for (int i = 0; i < kStamps; ++i) {
    std::printf("| %s |", kStampNames[i]);
    for (const auto& column : ends) std::printf(" %.2f / %.2f |", column[i].first, column[i].second);
    std::printf("\n");
  }
  return ok ? 0 : 1;
}
