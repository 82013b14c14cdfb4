// Attention for a few query rows: per (query row, head) a vector-matrix
// product against the keys and values of one sequence, so the op is bound by
// reading K and V (and, at BERT sizes, by the latency of a few dependent
// loads), not by arithmetic. No tensor cores: an mma tile of 16 query rows
// would be 15/16 padding. Measured on an H100 (cuda/tests/attention_rows_test.cu,
// fp16, 12 heads x 64, inside a graph): 2.6 us for one row of a 128-token
// sequence, 4.8 us for 32 rows of 32 x 128 (the full attention: 4.4 and
// 14.9), 47.6 us for one row of 8192 tokens. The estimates below are what
// the design aimed at.
//
// One block of 256 threads per (query row, head). The block's threads form
// lane groups of G lanes (G = head_dim / 8 rounded up to a power of two, at
// least 4: BERT's 64 gives 8 lanes, 32 groups); a lane owns 8 consecutive
// head dims (one 16-byte load in fp16, two in fp32) and a group owns one key
// at a time: q . k is 8 FMAs and log2(G) shuffles, and the same lanes then
// add p * v for their dims, so no score ever goes through shared memory.
// A step is 2 keys per group, 64 keys at head_dim 64; the next step's K and
// V are loaded into registers while this step's are scored, so a BERT
// sequence of 128 keys is one round of loads and a longer one about one
// load latency per step. (4 keys a step: 121 registers in fp16 instead of
// 79, so 2 blocks of 256 threads per SM instead of 3, and 32 rows x 12 heads
// = 384 blocks would no longer fit 132 SMs at once; sm_90, -Xptxas -v.
// fp32 spans are twice the registers: 112, 2 blocks per SM.) Each group keeps
// an online softmax in fp32, base 2 (q is pre-scaled by scale * log2 e, so
// any sign of scale works: the running max is of the scaled scores); the
// groups of a warp are merged by shuffles and the warps through shared
// memory, once, at the end.
//
// Why not split a long sequence's keys over several blocks (flash-decoding):
// the partial results would need a workspace and a second pass, and the op
// allocates nothing and is one launch in a captured graph. Cost: one block
// walks the whole sequence, 8192 keys at head_dim 64 being 128 steps of
// about one L2 latency each (~25-40 us) for a lone query row.
//
// Finding a row's sequence: a binary search over cu_seqlens would be
// log2(sequences) dependent loads (a few hundred ns each) before the
// first K load. Instead each warp probes 32 evenly spaced entries at once and
// narrows the range by the ballot: one round for up to 33 sequences, two up
// to 1089, and the probes also yield cu[b] and cu[b + 1]. So the chain
// before K and V is query_rows[r] -> (probes, q) -> K/V: at BERT-base, 1 row
// x 128 keys, about 3 load latencies plus the launch (~2-3 us); 32 rows x 128
// is 384 blocks reading 12.6 MB of K and V (from L2 when the QKV GEMM just
// wrote it), ~3 blocks and ~96 KB of loads in flight per SM (~4 us).
#include <climits>
#include <cmath>

#include "attention_rows.cuh"
#include "row_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kPerLane = 8;  // head dims per lane
constexpr int kKeys = 2;     // keys per lane group per step
constexpr int64_t kMaxHeadDim = 256;
static_assert(kMaxHeadDim <= kWarpSize * kPerLane, "a group of at most one warp covers a head");
constexpr float kLog2e = 1.4426950408889634f;

// kPerLane consecutive head dims of one Q, K or V row, as stored: kept raw so
// that a step's loads are all issued before any conversion waits on one.
template <class T>
struct alignas(16) Span {
  T v[kPerLane];
};

// Loads the lane's dims d0 .. d0 + kPerLane - 1 of a row from src (the
// address of dim d0); dims at or past head_dim, and every dim when !valid,
// read as zero without touching memory. kVector: 16-byte loads, src 16-byte
// aligned and head_dim a multiple of kVector16<T>, so a vector is wholly
// inside the row or wholly past head_dim.
template <class T, bool kVector>
__device__ __forceinline__ void load_span(const T* src, int d0, int head_dim, bool valid, Span<T>& s) {
  if constexpr (kVector) {
    constexpr int kPer16 = kVector16<T>;
#pragma unroll
    for (int i = 0; i < kPerLane / kPer16; ++i) {
      reinterpret_cast<uint4*>(s.v)[i] = valid && d0 + i * kPer16 < head_dim
                                             ? __ldg(reinterpret_cast<const uint4*>(src) + i)
                                             : make_uint4(0u, 0u, 0u, 0u);
    }
  } else {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) s.v[i] = valid && d0 + i < head_dim ? src[i] : from_float<T>(0.f);
  }
}

// The sequence holding token t, 0 <= t < tokens = cu[sequences]: [start, end)
// = [cu[b], cu[b + 1]) with cu[b] <= t < cu[b + 1] (so never an empty
// sequence). The whole warp calls it and gets the same answer. Invariant:
// cu[lo] = cu_lo <= t < cu_hi = cu[hi]; each round probes lo + step, lo +
// 2 step, ..., lo + 32 step (which reaches hi - 1) and keeps the stretch
// between the last probe <= t and the first > t.
__device__ __forceinline__ void find_sequence(const int32_t* cu, int64_t sequences, int32_t tokens, int32_t t,
                                              int32_t& start, int32_t& end) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  int64_t lo = 0;
  int64_t hi = sequences;
  int32_t cu_lo = 0;
  int32_t cu_hi = tokens;
  while (hi - lo > 1) {
    const int64_t step = (hi - lo - 1 + kWarpSize - 1) / kWarpSize;
    const int64_t probe = lo + (lane + 1) * step;
    const int32_t value = probe < hi ? __ldg(cu + probe) : INT_MAX;
    const int below = __popc(__ballot_sync(kFullMask, value <= t));  // a prefix of the lanes: cu is sorted
    const int32_t last_below = __shfl_sync(kFullMask, value, max(below - 1, 0));
    const int32_t first_above = __shfl_sync(kFullMask, value, below % kWarpSize);
    if (below > 0) cu_lo = last_below;
    // below == 32 implies lo + 33 step >= hi: hi stays.
    if (lo + (below + 1) * step < hi) {
      hi = lo + (below + 1) * step;
      cu_hi = first_above;
    }
    lo += below * step;
  }
  start = cu_lo;
  end = cu_hi;
}

// Running softmax state of one group (or, after merging, several) for the
// lane's dims: m the max of the scores seen (base 2, -inf before any), l the
// sum of 2^(s - m), acc the sum of 2^(s - m) v.
struct Partial {
  float m;
  float l;
  float acc[kPerLane];
};

// An all--inf state has m = -inf; measuring from 0 then keeps 2^(-inf - 0)
// = 0 instead of the NaN of -inf - -inf.
__device__ __forceinline__ float finite_or_zero(float m) { return m == -INFINITY ? 0.f : m; }

__device__ __forceinline__ void merge(Partial& a, float m_b, float l_b, const float (&acc_b)[kPerLane]) {
  const float m = fmaxf(a.m, m_b);
  const float base = finite_or_zero(m);
  const float fa = exp2f(a.m - base);
  const float fb = exp2f(m_b - base);
  a.m = m;
  a.l = a.l * fa + l_b * fb;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) a.acc[e] = a.acc[e] * fa + acc_b[e] * fb;
}

template <class T, bool kVector, int kGroups>
__device__ __forceinline__ void load_step(const T* k_src, const T* v_src, int64_t stride, int64_t key0, int64_t end,
                                          int d0, int head_dim, Span<T> (&k)[kKeys], Span<T> (&v)[kKeys]) {
#pragma unroll
  for (int i = 0; i < kKeys; ++i) {
    const int64_t key = key0 + i * kGroups;
    const bool valid = key < end;
    load_span<T, kVector>(k_src + key * stride, d0, head_dim, valid, k[i]);
    load_span<T, kVector>(v_src + key * stride, d0, head_dim, valid, v[i]);
  }
}

// One step of the group's online softmax over keys key0 + i * kGroups.
// Keys at or past end score -inf (their K and V were read as zeros).
template <class T, int kGroup, int kGroups>
__device__ __forceinline__ void attend_step(const float (&q)[kPerLane], const Span<T> (&k)[kKeys],
                                            const Span<T> (&v)[kKeys], int64_t key0, int64_t end, Partial& state) {
  float s[kKeys];
#pragma unroll
  for (int i = 0; i < kKeys; ++i) {
    s[i] = 0.f;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) s[i] += q[e] * to_float(k[i].v[e]);
  }
#pragma unroll
  for (int offset = kGroup / 2; offset > 0; offset >>= 1) {
#pragma unroll
    for (int i = 0; i < kKeys; ++i) s[i] += __shfl_xor_sync(kFullMask, s[i], offset);
  }
  float m = state.m;
#pragma unroll
  for (int i = 0; i < kKeys; ++i) {
    if (key0 + i * kGroups >= end) s[i] = -INFINITY;
    m = fmaxf(m, s[i]);
  }
  const float base = finite_or_zero(m);
  const float rescale = exp2f(state.m - base);
  state.m = m;
  state.l *= rescale;
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) state.acc[e] *= rescale;
#pragma unroll
  for (int i = 0; i < kKeys; ++i) {
    const float weight = exp2f(s[i] - base);
    state.l += weight;
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) state.acc[e] += weight * to_float(v[i].v[e]);
  }
}

template <class T, int kGroup, bool kVector>
__global__ void __launch_bounds__(kThreads) attention_rows_kernel(const AttentionRowsArgs<T> p) {
  constexpr int kGroups = kThreads / kGroup;
  constexpr int64_t kStep = int64_t{kGroups} * kKeys;
  const int head_dim = static_cast<int>(p.head_dim);
  const int64_t width = p.heads * p.head_dim;
  const int64_t head_offset = int64_t{blockIdx.y} * p.head_dim;
  const int64_t out_offset = int64_t{blockIdx.x} * width + head_offset;
  // Exactly one of the two is written (AttentionRowsArgs::out8).
  T* out = p.out8 == nullptr ? p.out + out_offset : nullptr;
  __nv_fp8_e4m3* out8 = p.out8 == nullptr ? nullptr : p.out8 + out_offset;
  const auto store = [&](int d, float value) {
    if (out8 != nullptr) {
      out8[d] = __nv_fp8_e4m3(value);
    } else {
      out[d] = from_float<T>(value);
    }
  };

  const int32_t t = p.query_rows[blockIdx.x];
  const int32_t tokens = p.cu_seqlens[p.sequences];
  if (t < 0 || t >= tokens) {
    for (int d = threadIdx.x; d < head_dim; d += kThreads) store(d, 0.f);
    return;  // the whole block, before any barrier
  }

  const int group = static_cast<int>(threadIdx.x) / kGroup;
  const int d0 = static_cast<int>(threadIdx.x) % kGroup * kPerLane;
  const int64_t stride = 3 * width;
  Span<T> q_raw;
  load_span<T, kVector>(p.qkv + t * stride + head_offset + d0, d0, head_dim, true, q_raw);
  int32_t start, end;
  find_sequence(p.cu_seqlens, p.sequences, tokens, t, start, end);

  const float q_scale = p.scale * kLog2e;
  float q[kPerLane];
#pragma unroll
  for (int e = 0; e < kPerLane; ++e) q[e] = to_float(q_raw.v[e]) * q_scale;

  const T* k_src = p.qkv + width + head_offset + d0;
  const T* v_src = k_src + width;
  Partial state{-INFINITY, 0.f, {}};
  Span<T> k[kKeys], v[kKeys], k_next[kKeys], v_next[kKeys];
  load_step<T, kVector, kGroups>(k_src, v_src, stride, start + group, end, d0, head_dim, k, v);
  for (int64_t base = start; base < end; base += kStep) {  // the same trips for the whole block
    const bool more = base + kStep < end;
    if (more) {
      load_step<T, kVector, kGroups>(k_src, v_src, stride, base + kStep + group, end, d0, head_dim, k_next, v_next);
    }
    attend_step<T, kGroup, kGroups>(q, k, v, base + group, end, state);
    if (more) {
#pragma unroll
      for (int i = 0; i < kKeys; ++i) {
        k[i] = k_next[i];
        v[i] = v_next[i];
      }
    }
  }

  // Lane l and lane l ^ offset (offset a multiple of G) own the same dims.
#pragma unroll
  for (int offset = kGroup; offset < kWarpSize; offset <<= 1) {
    const float m = __shfl_xor_sync(kFullMask, state.m, offset);
    const float l = __shfl_xor_sync(kFullMask, state.l, offset);
    float acc[kPerLane];
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) acc[e] = __shfl_xor_sync(kFullMask, state.acc[e], offset);
    merge(state, m, l, acc);
  }

  __shared__ float warp_acc[kWarps][kGroup * kPerLane];
  __shared__ float warp_m[kWarps];
  __shared__ float warp_l[kWarps];
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  if (lane < kGroup) {  // group 0 of the warp; d0 = lane * kPerLane
#pragma unroll
    for (int e = 0; e < kPerLane; ++e) warp_acc[warp][d0 + e] = state.acc[e];
    if (lane == 0) {
      warp_m[warp] = state.m;
      warp_l[warp] = state.l;
    }
  }
  __syncthreads();
  // Warp 0 saw key start, so m is finite and l >= 1; warps without keys
  // carry m = -inf, l = 0, acc = 0 and weigh 0.
  for (int d = threadIdx.x; d < head_dim; d += kThreads) {
    float m = -INFINITY;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) m = fmaxf(m, warp_m[w]);
    float l = 0.f;
    float o = 0.f;
#pragma unroll
    for (int w = 0; w < kWarps; ++w) {
      const float f = exp2f(warp_m[w] - m);
      l += warp_l[w] * f;
      o += warp_acc[w][d] * f;
    }
    store(d, o / l);
  }
}

template <class T, int kGroup>
cudaError_t launch(const AttentionRowsArgs<T>& p, bool vector, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(p.rows), static_cast<unsigned>(p.heads));
  if (vector) {
    attention_rows_kernel<T, kGroup, true><<<grid, kThreads, 0, stream>>>(p);
  } else {
    attention_rows_kernel<T, kGroup, false><<<grid, kThreads, 0, stream>>>(p);
  }
  return cudaGetLastError();
}

}  // namespace

template <class T>
cudaError_t attention_rows(const AttentionRowsArgs<T>& p, cudaStream_t stream) {
  if (p.head_dim < 1 || p.head_dim > kMaxHeadDim || p.heads < 1 || p.heads > 65535 || p.rows < 0 || p.rows > INT_MAX ||
      p.sequences < 0) {
    return cudaErrorInvalidValue;
  }
  if (p.rows == 0) return cudaSuccess;
  const bool vector = p.head_dim % kVector16<T> == 0 && aligned16(p.qkv);
  const int64_t lanes = (p.head_dim + kPerLane - 1) / kPerLane;
  // head_dim <= 24 runs on groups of 4 with idle lanes: no model we run has
  // such heads, so not worth four more kernels of 1 and 2 lanes.
  if (lanes <= 4) return launch<T, 4>(p, vector, stream);
  if (lanes <= 8) return launch<T, 8>(p, vector, stream);
  if (lanes <= 16) return launch<T, 16>(p, vector, stream);
  return launch<T, 32>(p, vector, stream);
}

template cudaError_t attention_rows<float>(const AttentionRowsArgs<float>&, cudaStream_t);
template cudaError_t attention_rows<__half>(const AttentionRowsArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
