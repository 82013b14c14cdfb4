// The fill-mask tail in one cooperative launch (probe; mlm_tail.cuh).
//
// At batch 1 the tail is a chain of eight dependent kernels on one row, each
// a few microseconds of launch and memory latency over a floor under one,
// then the decoder's weight stream (47 MB for BERT). Here one block runs on
// every SM. One thread of each block asks, by bulk copies, for the chain's
// biases and LayerNorm parameters and for its share (a contiguous range of
// rows) of each layer weight, each group completing on its own mbarrier.
// The four GEMM phases are matrix-vector products over the block's weight
// rows (a warp a row, fp32 sums), each ending at a grid barrier, after which
// every block runs the LayerNorm of the few rows itself (cheaper than
// another barrier) from the products the others left in global memory. The
// decoder then streams its weight rows from global memory, four a warp at a
// time, and with a top-k each lane keeps the best of the logits it writes;
// a block merges its lanes' lists per row into scratch, and after a last
// barrier block 0 merges the blocks' lists. bench/gpu/persistent_tail.cu,
// the first probe (one row, no top-k, BERT-base's sizes as constants), took
// the tail from 45.4 to 36.7 us on an H100; this general form does not keep
// all of that (bench/RESULTS.md, nineteenth session, says where it went).
//
// In a run it is no faster than the eight kernels (bench/RESULTS.md,
// twentieth session): it was put into the CUDA backend and taken out
// again. After a layer's GEMM kernels the SMs' instruction caches no longer
// hold its code, and fetching a kernel this large cost it about 8 us
// (mlm_tail_test.cu times it so, "cold instruction caches"). Hence:
// - the product, the LayerNorm and the loads are functions called from
//   every phase, not inlined four or three times: one copy of their code
//   to fetch (cold 59.4 -> 56.6 us, warm unchanged). Rolling the prologue's
//   loops as well put its arrays in local memory and cost 9 us;
// - each layer weight is asked for when the one before it has arrived:
//   asked for all at once, the DRAM interleaved them and the first phase's
//   rows came last (cold 56.6 -> 54.9-55.9 us).
// The weights and parameters come in by bulk copies (Hopper's copy engine
// in the SM, cp.async.bulk; tma.cuh): per-thread 16-byte cp.async of the
// same 124 KB a block left the phases waiting (bench/RESULTS.md, nineteenth
// session). The grid barriers (grid_barrier.cuh) need every block resident
// at once, which the cooperative launch guarantees.
#include "mlm_tail.cuh"

#include <algorithm>
#include <iterator>

#include "../../cuda/activation.cuh"
#include "../../cuda/row_math.cuh"
#include "../../cuda/topk_math.cuh"
#include "grid_barrier.cuh"
#include "tma.cuh"  // barrier_init, barrier_expect_bytes, barrier_wait, bulk_copy

namespace fusedrt::probe {

using namespace fusedrt::gpu;

namespace {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kMaxBlocks = 256;           // bounds the scratch
constexpr int kDecoderRowsPerWarp = 4;    // weight rows a warp streams at once
constexpr int kVecsPerPass = 3;           // 16-byte vectors of each of them per lane
constexpr int kHalvesPerVec = 8;
constexpr int kMaxHidden = 1024;  // bounds the LayerNorms' values a thread holds

// The chain's fp32 parameters, copied in at the start (zeros for an absent bias).
enum FloatParam { kBOut, kG1, kBe1, kBDown, kG2, kBe2, kGT, kBeT, kFloatParams };
constexpr int kBarriers = 5;  // the parameters, then each phase's weight rows

using List = TopList<kMlmTailMaxK>;

struct Scratch {
  unsigned* arrived;
  unsigned* exited;
  List* lists;  // [kMaxBlocks][kMlmTailMaxRows]: each block's best of each row, and its softmax part
};

Scratch scratch_of(void* memory) {
  auto* counters = static_cast<unsigned*>(memory);
  return {counters, counters + 1, reinterpret_cast<List*>(counters + 4)};
}

// Byte offsets of a block's shared memory regions.
struct Layout {
  size_t barriers;  // kBarriers mbarriers
  size_t inputs;  // [kRows][max(hidden, inter)] floats: the current product's input rows
  size_t x1, x2, xt;  // [kRows][hidden] floats: LN1's, LN2's and LN_t's outputs (LN2's first holds the residual)
  size_t params;  // [kFloatParams][hidden] floats
  size_t b_up;    // [inter] halves
  size_t b_t;     // [hidden] halves
  size_t lists;   // [kRows][kWarps][kDecoderRowsPerWarp] TopLists: the decoder lanes' best logits
  size_t sums;    // [kRows][kWarps] floats: the LayerNorms' block sums
  size_t w_out, w_up, w_down, w_t;  // the block's weight rows
  size_t total;
};

__host__ __device__ inline int64_t most_rows_of_block(int64_t n, int blocks) { return (n + blocks - 1) / blocks; }

__host__ __device__ inline Layout layout_of(int rows, int64_t hidden, int64_t inter, int blocks) {
  Layout l{};
  size_t at = 0;
  const auto take = [&](size_t bytes) {
    const size_t here = at;
    at += (bytes + 15) / 16 * 16;
    return here;
  };
  const auto h = static_cast<size_t>(hidden), i = static_cast<size_t>(inter);
  l.barriers = take(kBarriers * sizeof(uint64_t));
  l.inputs = take(rows * (h > i ? h : i) * sizeof(float));
  l.x1 = take(rows * h * sizeof(float));
  l.x2 = take(rows * h * sizeof(float));
  l.xt = take(rows * h * sizeof(float));
  l.params = take(kFloatParams * h * sizeof(float));
  l.b_up = take(i * sizeof(__half));
  l.b_t = take(h * sizeof(__half));
  l.lists = take(size_t{kWarps} * kDecoderRowsPerWarp * rows * sizeof(TopList<kMlmTailMaxK>));
  l.sums = take(size_t{kWarps} * rows * sizeof(float));
  l.w_out = take(most_rows_of_block(hidden, blocks) * h * sizeof(__half));
  l.w_up = take(most_rows_of_block(inter, blocks) * h * sizeof(__half));
  l.w_down = take(most_rows_of_block(hidden, blocks) * i * sizeof(__half));
  l.w_t = take(most_rows_of_block(hidden, blocks) * h * sizeof(__half));
  l.total = at;
  return l;
}

// Rows [first, first + count) of an n-row weight: this block's share.
struct Share {
  int first;
  int count;
};

__device__ inline Share share_of(int64_t n) {
  const auto first = static_cast<int>(n * blockIdx.x / gridDim.x);
  return {first, static_cast<int>(n * (blockIdx.x + 1) / gridDim.x) - first};
}

__device__ __forceinline__ float round_half(float v) { return __half2float(__float2half_rn(v)); }

// dst[i] = src[i] for i < count (a multiple of 8) as floats, by threads
// `thread` and every `threads`-th after it: 16-byte loads, kBatch of them a
// thread in flight before any is used (one at a time, each would wait its
// own L2 round trip). src was written by other blocks: read past L1.
// Elements from `real` on are zeros, not read.
__device__ __noinline__ void load_to_floats(const __half* src, float* dst, int64_t count, int64_t real, int thread,
                                            int threads) {
  constexpr int kBatch = 4;
  const auto* vectors = reinterpret_cast<const uint4*>(src);
  const int64_t vecs = count / kHalvesPerVec, real_vecs = real / kHalvesPerVec;
  for (int64_t v0 = thread; v0 < vecs; v0 += int64_t{threads} * kBatch) {
    uint4 bits[kBatch];
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int64_t v = v0 + int64_t{b} * threads;
      bits[b] = v < real_vecs ? __ldcg(vectors + v) : make_uint4(0u, 0u, 0u, 0u);
    }
#pragma unroll
    for (int b = 0; b < kBatch; ++b) {
      const int64_t v = v0 + int64_t{b} * threads;
      if (v >= vecs) break;
      const __half2* h = reinterpret_cast<const __half2*>(&bits[b]);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float2 f = __half22float2(h[e]);
        dst[v * kHalvesPerVec + 2 * e] = f.x;
        dst[v * kHalvesPerVec + 2 * e + 1] = f.y;
      }
    }
  }
}

// The block's product rows of one phase: for its weight rows j (share
// first + j of the weight) and the real rows r < rows,
//   out[r * out_stride + first + j] = fp16(act(sum_k weight[j][k] * in[r][k] + bias[first + j]))
// a warp a row; `in` holds kRows rows of k floats in shared memory, bias
// (fp16, shared memory) may be null.
template <int kRows>
__device__ __noinline__ void product_rows(const __half* __restrict__ weight, Share share, int k,
                                          const float* __restrict__ in, int rows, const __half* bias, Activation act,
                                          __half* out, int out_stride) {
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int vecs = k / kHalvesPerVec;
  for (int j = warp; j < share.count; j += kWarps) {
    const uint4* __restrict__ row = reinterpret_cast<const uint4*>(weight + j * k);
    float acc[kRows] = {};
#pragma unroll 4
    for (int v = lane; v < vecs; v += kWarpSize) {
      const uint4 bits = row[v];
      const __half2* w = reinterpret_cast<const __half2*>(&bits);
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float4 lo = *reinterpret_cast<const float4*>(in + r * k + v * kHalvesPerVec);
        const float4 hi = *reinterpret_cast<const float4*>(in + r * k + v * kHalvesPerVec + 4);
        const float x[kHalvesPerVec] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const float2 f = __half22float2(w[e]);
          acc[r] = fmaf(f.x, x[2 * e], fmaf(f.y, x[2 * e + 1], acc[r]));
        }
      }
    }
    const int n = share.first + j;
    const float b = bias != nullptr ? __half2float(bias[n]) : 0.f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float sum = warp_sum(acc[r]);
      if (lane == 0 && r < rows) out[r * out_stride + n] = __float2half_rn(activate(sum + b, act));
    }
  }
}

// The block: out[r] = LN((in[r] + bias) + residual[r]) for rows r < kRows
// of n values (bias and residual may be null; rows from `rows` on are
// zeros), fp32 statistics, rounded to fp16 as the backend's add_layernorm
// stores them, kept as float. in is the other blocks' product in global
// memory; the rest is shared memory, `sums` kWarps * kRows floats of it.
// The whole block takes part, each thread's values in registers with all
// their loads in flight: one warp walking a row, or holding it in
// registers, made the phase 2-10 us longer (bench/RESULTS.md).
template <int kRows>
__device__ __noinline__ void layernorm_rows(const __half* in, const float* bias, const float* residual,
                                            const float* gamma, const float* beta, float eps, int n, int rows, float* out,
                                            float* sums) {
  // Thread t holds elements t + j * kThreads of the rows laid end to end:
  // all of its loads are in flight at once.
  constexpr int kPerThread = kRows * ((kMaxHidden + kThreads - 1) / kThreads);
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  // The block's sum over every thread's part of each row, in every thread.
  const auto block_sums = [&](float (&part)[kRows]) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const float warp_part = warp_sum(part[r]);
      if (lane == 0) sums[r * kWarps + warp] = warp_part;
    }
    __syncthreads();
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      part[r] = 0.f;
      for (int w = 0; w < kWarps; ++w) part[r] += sums[r * kWarps + w];
    }
    __syncthreads();
  };
  float v[kPerThread];
  int row_of[kPerThread];
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * kThreads;
    row_of[j] = i / n;
    v[j] = i < rows * n ? __half2float(__ldcg(in + i)) : 0.f;
  }
  float part[kRows] = {};
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * kThreads, c = i - row_of[j] * n;
    if (i < kRows * n) {
      if (bias != nullptr) v[j] += bias[c];
      if (residual != nullptr) v[j] += residual[i];
#pragma unroll
      for (int r = 0; r < kRows; ++r) part[r] += row_of[j] == r ? v[j] : 0.f;
    }
  }
  block_sums(part);
  float mean[kRows], squares[kRows] = {};
#pragma unroll
  for (int r = 0; r < kRows; ++r) mean[r] = part[r] / static_cast<float>(n);
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * kThreads;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (i < kRows * n && row_of[j] == r) squares[r] += (v[j] - mean[r]) * (v[j] - mean[r]);
    }
  }
  block_sums(squares);
#pragma unroll
  for (int j = 0; j < kPerThread; ++j) {
    const int i = threadIdx.x + j * kThreads, c = i - row_of[j] * n;
    if (i >= kRows * n) continue;
    float m = 0.f, var = 0.f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (row_of[j] == r) m = mean[r], var = squares[r];
    }
    out[i] = round_half((v[j] - m) * rsqrtf(var / static_cast<float>(n) + eps) * gamma[c] + beta[c]);
  }
  __syncthreads();
}

// A warp merges the sorted lists lists[i * stride], i < count (lane l
// taking i = l, l + 32, ...), into the best k of them and their softmax
// part, which every lane gets. One copy of this code (not inlined) serves
// the three merges of a launch, so the code the last two run was fetched
// by the first: with two levels and this, block 0's merge after the last
// barrier took 4.3 us where one warp over every block's list took 9.8.
__device__ __noinline__ List merge_lists(const List* lists, int stride, int count, int k) {
  const int lane = threadIdx.x % kWarpSize;
  List gathered = empty_top_list<kMlmTailMaxK>();
  for (int i = lane; i < count; i += kWarpSize) {
    const List& from = lists[i * stride];
    gathered.stats = merge(gathered.stats, from.stats);
#pragma unroll 1
    for (int j = 0; j < kMlmTailMaxK; ++j) {
      const Entry e = from.list[j];
      if (!better(e, gathered.list[kMlmTailMaxK - 1])) break;  // the rest of a sorted list misses too
      insert(gathered, e);
    }
  }
  List best = empty_top_list<kMlmTailMaxK>();
  best.stats = warp_merge(gathered.stats);
#pragma unroll
  for (int i = 0; i < kMlmTailMaxK; ++i) {
    if (i >= k) break;
    const Entry winner = warp_best(gathered.list[0]);
    best.list[i] = winner;
    if (winner.key != 0 && gathered.list[0].id == winner.id) pop(gathered.list);
  }
  return best;
}

template <int kRows>
__global__ void __launch_bounds__(kThreads, 1) mlm_tail_kernel(const MlmTailArgs a, const MlmTailTopK top, const Scratch s) {
  extern __shared__ __align__(16) unsigned char shared[];
  const Layout l = layout_of(kRows, a.hidden, a.inter, gridDim.x);
  const int h = static_cast<int>(a.hidden), inter = static_cast<int>(a.inter);  // mlm_tail_supports bounds them
  float* inputs = reinterpret_cast<float*>(shared + l.inputs);
  float* x1 = reinterpret_cast<float*>(shared + l.x1);
  float* x2 = reinterpret_cast<float*>(shared + l.x2);
  float* xt = reinterpret_cast<float*>(shared + l.xt);
  float* sums = reinterpret_cast<float*>(shared + l.sums);
  const float* params = reinterpret_cast<const float*>(shared + l.params);
  const auto param = [&](FloatParam p) { return params + p * h; };
  const __half* b_up = reinterpret_cast<const __half*>(shared + l.b_up);
  const __half* b_t = reinterpret_cast<const __half*>(shared + l.b_t);
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const Share hidden_share = share_of(h), inter_share = share_of(inter), vocab_share = share_of(a.vocab);

  // Barrier 0: the parameters; 1-4: the weight rows of each phase, each
  // asked for (by thread 0) once the one before it has arrived. An absent
  // bias is zeros, written here instead of copied.
  uint64_t* bars = reinterpret_cast<uint64_t*>(shared + l.barriers);
  const void* param_sources[kFloatParams + 2] = {a.b_out, a.g1, a.be1, a.b_down, a.g2, a.be2, a.g_t, a.be_t, a.b_up, a.b_t};
  const size_t param_offsets[kFloatParams + 2] = {
      l.params + kBOut * h * 4, l.params + kG1 * h * 4, l.params + kBe1 * h * 4, l.params + kBDown * h * 4,
      l.params + kG2 * h * 4, l.params + kBe2 * h * 4, l.params + kGT * h * 4, l.params + kBeT * h * 4, l.b_up, l.b_t};
  const int64_t param_bytes[kFloatParams + 2] = {h * 4, h * 4, h * 4, h * 4, h * 4, h * 4, h * 4, h * 4, inter * 2, h * 2};
  const auto weight_rows = [&](int bar, size_t offset, const __half* w, Share share, int64_t k) {
    barrier_expect_bytes(&bars[bar], static_cast<uint32_t>(share.count * k * 2));
    bulk_copy(shared + offset, w + share.first * k, share.count * k * 2, &bars[bar]);
  };
  if (threadIdx.x == 0) {
    for (int i = 0; i < kBarriers; ++i) barrier_init(&bars[i], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    uint32_t bytes = 0;
    for (int i = 0; i < kFloatParams + 2; ++i) bytes += param_sources[i] != nullptr ? param_bytes[i] : 0;
    barrier_expect_bytes(&bars[0], bytes);
    for (int i = 0; i < kFloatParams + 2; ++i) {
      if (param_sources[i] != nullptr) bulk_copy(shared + param_offsets[i], param_sources[i], param_bytes[i], &bars[0]);
    }
    weight_rows(1, l.w_out, a.w_out, hidden_share, h);
  }
  for (int i = 0; i < kFloatParams + 2; ++i) {
    if (param_sources[i] != nullptr) continue;
    for (int64_t at = threadIdx.x; at < param_bytes[i] / 4; at += kThreads) {
      reinterpret_cast<float*>(shared + param_offsets[i])[at] = 0.f;
    }
  }
  // ctx and the residual; rows past a.rows are zeros.
  load_to_floats(a.ctx, inputs, kRows * h, a.rows * h, threadIdx.x, kThreads);
  load_to_floats(a.x, x2, kRows * h, a.rows * h, threadIdx.x, kThreads);
  unsigned passed = 0;

  // Output projection (its bias rides in LN1, as in the plan).
  __syncthreads();  // the barriers' initialisation and the zeros, before any wait
  barrier_wait(&bars[0], 0);
  barrier_wait(&bars[1], 0);
  if (threadIdx.x == 0) weight_rows(2, l.w_up, a.w_up, inter_share, h);
  product_rows<kRows>(reinterpret_cast<const __half*>(shared + l.w_out), hidden_share, h, inputs, a.rows, nullptr,
                      Activation::kNone, a.proj, h);
  grid_barrier(s.arrived, ++passed * gridDim.x);
  layernorm_rows<kRows>(a.proj, param(kBOut), x2, param(kG1), param(kBe1), a.eps1, h, a.rows, x1, sums);
  barrier_wait(&bars[2], 0);
  if (threadIdx.x == 0) weight_rows(3, l.w_down, a.w_down, hidden_share, inter);
  __syncthreads();

  product_rows<kRows>(reinterpret_cast<const __half*>(shared + l.w_up), inter_share, h, x1, a.rows,
                      b_up, a.act_up, a.inter_out, inter);
  grid_barrier(s.arrived, ++passed * gridDim.x);
  load_to_floats(a.inter_out, inputs, kRows * inter, a.rows * inter, threadIdx.x, kThreads);
  barrier_wait(&bars[3], 0);
  if (threadIdx.x == 0) weight_rows(4, l.w_t, a.w_t, hidden_share, h);
  __syncthreads();

  product_rows<kRows>(reinterpret_cast<const __half*>(shared + l.w_down), hidden_share, inter, inputs, a.rows,
                      nullptr, Activation::kNone, a.proj, h);
  grid_barrier(s.arrived, ++passed * gridDim.x);
  layernorm_rows<kRows>(a.proj, param(kBDown), x1, param(kG2), param(kBe2), a.eps2, h, a.rows, x2, sums);
  // Every block read the residual before the first barrier: the layer's output may replace it now.
  if (blockIdx.x == 0) {
    for (int i = threadIdx.x; i < a.rows * h; i += kThreads) a.x[i] = __float2half_rn(x2[i]);
  }
  barrier_wait(&bars[4], 0);
  __syncthreads();

  product_rows<kRows>(reinterpret_cast<const __half*>(shared + l.w_t), hidden_share, h, x2, a.rows,
                      b_t, a.act_t, a.t, h);
  grid_barrier(s.arrived, ++passed * gridDim.x);
  layernorm_rows<kRows>(a.t, nullptr, nullptr, param(kGT), param(kBeT), a.eps_t, h, a.rows, xt, sums);

  // Decoder: kDecoderRowsPerWarp weight rows a warp at a time, streamed.
  // Output (c, r) of a group is summed by every lane and kept by lane
  // c * kRows + r, which writes it and, with a top-k, keeps it in its list
  // (shared memory: in registers it would cost the weight loads in flight).
  constexpr int kOutputs = kDecoderRowsPerWarp * kRows;
  // [kRows][kWarps][kDecoderRowsPerWarp]: row r's lists side by side.
  constexpr int kListsPerRow = kWarps * kDecoderRowsPerWarp;
  auto* lists = reinterpret_cast<List*>(shared + l.lists);
  const int owned_row = lane % kRows, owned_col = min(lane / kRows, kDecoderRowsPerWarp - 1);
  List& mine = lists[owned_row * kListsPerRow + warp * kDecoderRowsPerWarp + owned_col];
  if (lane < kOutputs) mine = empty_top_list<kMlmTailMaxK>();
  const int64_t vecs = h / kHalvesPerVec;
  const int64_t share_end = vocab_share.first + vocab_share.count;
  const int64_t groups = (vocab_share.count + kDecoderRowsPerWarp - 1) / kDecoderRowsPerWarp;
  for (int64_t g = warp; g < groups; g += kWarps) {
    const int64_t n0 = vocab_share.first + g * kDecoderRowsPerWarp;
    const uint4* rows[kDecoderRowsPerWarp];
#pragma unroll
    for (int c = 0; c < kDecoderRowsPerWarp; ++c) {
      rows[c] = reinterpret_cast<const uint4*>(a.w_dec) + min(n0 + c, share_end - 1) * vecs;
    }
    // The owner lane's bias, asked for beside the weight rows.
    const int64_t owned = n0 + lane / kRows;
    const float bias = lane < kOutputs && a.b_dec != nullptr && owned < share_end ? __ldg(a.b_dec + owned) : 0.f;
    float acc[kDecoderRowsPerWarp][kRows] = {};
    for (int64_t v0 = lane; v0 < vecs; v0 += kVecsPerPass * kWarpSize) {
      uint4 bits[kVecsPerPass][kDecoderRowsPerWarp];
#pragma unroll
      for (int u = 0; u < kVecsPerPass; ++u) {
#pragma unroll
        for (int c = 0; c < kDecoderRowsPerWarp; ++c) {
          const int64_t v = v0 + u * kWarpSize;
          bits[u][c] = v < vecs ? __ldg(rows[c] + v) : make_uint4(0u, 0u, 0u, 0u);
        }
      }
#pragma unroll
      for (int u = 0; u < kVecsPerPass; ++u) {
        const int64_t v = v0 + u * kWarpSize;
        if (v >= vecs) break;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          // 16-byte loads, once per row for the four weight rows: lanes 32
          // bytes apart, as 4-byte loads, would meet 8 to a bank.
          const float4 lo = *reinterpret_cast<const float4*>(xt + r * h + v * kHalvesPerVec);
          const float4 hi = *reinterpret_cast<const float4*>(xt + r * h + v * kHalvesPerVec + 4);
          const float x[kHalvesPerVec] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
          for (int c = 0; c < kDecoderRowsPerWarp; ++c) {
            const __half2* w = reinterpret_cast<const __half2*>(&bits[u][c]);
#pragma unroll
            for (int e = 0; e < 4; ++e) {
              const float2 f = __half22float2(w[e]);
              acc[c][r] = fmaf(f.x, x[2 * e], fmaf(f.y, x[2 * e + 1], acc[c][r]));
            }
          }
        }
      }
    }
    float owned_sum = 0.f;
#pragma unroll
    for (int c = 0; c < kDecoderRowsPerWarp; ++c) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float sum = warp_sum(acc[c][r]);
        if (lane == c * kRows + r) owned_sum = sum;
      }
    }
    // One call site for the store and the top-k (inlined once, not per output).
    if (lane < kOutputs && owned < share_end && owned_row < a.rows) {
      const float logit = owned_sum + bias;
      a.logits[owned_row * a.vocab + owned] = logit;
      if (top.k > 0) keep(mine, logit, owned);
    }
  }

  if (top.k > 0) {
    // The block's best of each row, then, after the barrier, block 0 merges
    // the blocks': kWarps / kRows warps a row, an equal share of the blocks
    // each, then a warp a row.
    __syncthreads();
    if (warp < a.rows) {
      const List best = merge_lists(lists + warp * kListsPerRow, 1, kListsPerRow, top.k);
      if (lane == 0) s.lists[blockIdx.x * kMlmTailMaxRows + warp] = best;
    }
    grid_barrier(s.arrived, ++passed * gridDim.x);
    if (blockIdx.x == 0) {
      constexpr int kWarpsPerRow = kWarps / kRows;
      const int per_warp = (static_cast<int>(gridDim.x) + kWarpsPerRow - 1) / kWarpsPerRow;
      const int r = warp % kRows, first_block = (warp / kRows) * per_warp;
      List* partial = lists;  // [kWarpsPerRow][kRows]: the block's own lists are merged already
      if (r < a.rows) {
        const int count = max(0, min(per_warp, static_cast<int>(gridDim.x) - first_block));
        const List best = merge_lists(s.lists + first_block * kMlmTailMaxRows + r, kMlmTailMaxRows, count, top.k);
        if (lane == 0) partial[warp] = best;
      }
      __syncthreads();
      if (warp < a.rows) {
        const List best = merge_lists(partial + warp, kRows, kWarpsPerRow, top.k);
        if (lane < top.k) {
          const Entry w = best.list[min(lane, kMlmTailMaxK - 1)];
          __stcs(top.top_ids + warp * top.k + lane, w.key == 0 ? -1 : static_cast<int32_t>(w.id));
          __stcs(top.top_scores + warp * top.k + lane,
                 w.key == 0 ? 0.f : expf(key_value(w.key) - best.stats.max) / best.stats.sum);
        }
      }
    }
  }

  leave_counters_zero(s.arrived, s.exited);
}

template <int kRows>
const void* kernel_for() {
  return reinterpret_cast<const void*>(&mlm_tail_kernel<kRows>);
}

const void* kernel_of(int64_t rows) {
  switch (rows) {
    case 1: return kernel_for<1>();
    case 2: return kernel_for<2>();
    default: return kernel_for<4>();
  }
}

int kernel_rows(int64_t rows) { return rows <= 2 ? static_cast<int>(rows) : 4; }

struct DeviceLimits {
  int blocks = 0;     // SMs
  size_t shared = 0;  // opt-in dynamic shared memory of a block
  bool hopper = false;  // compute capability 9.0 or newer: bulk copies and mbarrier waits
  bool cooperative = false;
};

cudaError_t device_limits(DeviceLimits& limits) {
  int device = 0, sms = 0, shared = 0, major = 0, cooperative = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&shared, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&cooperative, cudaDevAttrCooperativeLaunch, device);
  limits = {sms, static_cast<size_t>(shared), major >= 9, cooperative != 0};
  return error;
}

}  // namespace

size_t mlm_tail_scratch_bytes() {
  return 4 * sizeof(unsigned) + size_t{kMaxBlocks} * kMlmTailMaxRows * sizeof(List);
}

bool mlm_tail_supports(const MlmTailArgs& a, const MlmTailTopK& top) {
  DeviceLimits limits;
  if (device_limits(limits) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  const bool vectors = a.hidden >= kHalvesPerVec && a.hidden <= kMaxHidden && a.hidden % kHalvesPerVec == 0 &&
                       a.inter >= kHalvesPerVec && a.inter % kHalvesPerVec == 0 && a.vocab >= 1 && a.vocab < kNoId;
  const bool pointers = a.ctx && a.x && a.proj && a.inter_out && a.t && a.w_out && a.g1 && a.be1 && a.w_up &&
                        a.w_down && a.g2 && a.be2 && a.w_t && a.g_t && a.be_t && a.w_dec && a.logits;
  const void* copied[] = {a.w_out, a.w_up, a.w_down, a.w_t, a.w_dec, a.b_out, a.g1, a.be1, a.b_up,
                          a.b_down, a.g2, a.be2, a.b_t, a.g_t, a.be_t};
  const bool aligned = std::all_of(std::begin(copied), std::end(copied), [](const void* p) { return aligned16(p); });
  const bool top_ok = top.k == 0 || (top.k >= 1 && top.k <= kMlmTailMaxK && top.top_ids && top.top_scores);
  if (!(a.rows >= 1 && a.rows <= kMlmTailMaxRows && vectors && pointers && aligned && top_ok && limits.hopper &&
        limits.cooperative && limits.blocks >= 1 && limits.blocks <= kMaxBlocks)) {
    return false;
  }
  const int rows = kernel_rows(a.rows);
  if (layout_of(rows, a.hidden, a.inter, limits.blocks).total > limits.shared) return false;
  int per_sm = 0;
  const void* kernel = kernel_of(a.rows);
  cudaError_t error = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(limits.shared));
  const size_t shared = layout_of(rows, a.hidden, a.inter, limits.blocks).total;
  if (error == cudaSuccess) error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, shared);
  if (error != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return per_sm >= 1;
}

cudaError_t mlm_tail(const MlmTailArgs& a, const MlmTailTopK& top, void* scratch, cudaStream_t stream) {
  if (scratch == nullptr || reinterpret_cast<uintptr_t>(scratch) % 16 != 0 || !mlm_tail_supports(a, top)) {
    return cudaErrorInvalidValue;
  }
  DeviceLimits limits;
  cudaError_t error = device_limits(limits);
  if (error != cudaSuccess) return error;
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(static_cast<unsigned>(limits.blocks));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = layout_of(kernel_rows(a.rows), a.hidden, a.inter, limits.blocks).total;
  config.stream = stream;
  cudaLaunchAttribute cooperative{};
  cooperative.id = cudaLaunchAttributeCooperative;
  cooperative.val.cooperative = 1;
  config.attrs = &cooperative;
  config.numAttrs = 1;
  const Scratch s = scratch_of(scratch);
  switch (kernel_rows(a.rows)) {
    case 1: return cudaLaunchKernelEx(&config, mlm_tail_kernel<1>, a, top, s);
    case 2: return cudaLaunchKernelEx(&config, mlm_tail_kernel<2>, a, top, s);
    default: return cudaLaunchKernelEx(&config, mlm_tail_kernel<4>, a, top, s);
  }
}

}  // namespace fusedrt::probe
