// Few-row fp16 GEMM as a streaming matrix-vector product (gemv.cuh).
//
// The grid is persistent (as many blocks as fit the GPU at once) and walks
// the output columns in groups of kCols: a warp takes a group, its lanes
// stride along K in 16-byte vectors of the group's kCols weight rows, and
// each weight vector meets every row of `in`, which the block keeps in
// shared memory as fp32 (converted once, so the inner loop is only FMAs).
// What sets the speed at batch 1 is DRAM bandwidth, so what matters is the
// bytes in flight: a lane issues kCols x kVecsPerPass 16-byte loads before
// it uses any (6 KB a warp; at one row, 86 registers on sm_90, two blocks of
// 8 warps an SM: 96 KB, above the ~23 KB per SM that Little's law asks for
// 3 TB/s at ~1 us of DRAM latency). The weight is read once, with the
// non-coherent, L1-bypassing load (it is streamed, never reused by the same
// block). Columns and vectors per pass were chosen on an H100
// (cuda/tests/gemv_test.cu, decoder 30522 x 768 from DRAM, us at 1 / 2 / 4 /
// 8 rows): 4 x 3: 18.0 / 18.5 / 20.4 / 26.6; 8 x 2: 19.4 / 18.6 / 22.0 /
// 29.4; 8 x 3: 18.4 / 19.8 / 21.4 / 28.8; 16 x 1: 18.5 / 19.0 / 21.9 /
// 28.8; 4 x 4: 18.1 / 18.7 / 20.2 / 32.5. At 1 row that is 2.6 TB/s.
//
// Then each of the group's kCols x kRows sums is reduced over the warp, and
// lane (c * kRows + r) % 32 stores column c of row r with bias and
// activation.
// Columns past n re-read the last real weight row (memory that exists) and
// are not stored; rows past `rows` are zeros in shared memory and are not
// stored either. Each output is summed in one fixed order (lane-strided
// vectors, then the warp's butterfly), so repeated launches are identical.
//
// With the softmax top-k (gemv_topk), a lane that stores an output also
// keeps it: each lane stores one row's outputs only (kRows divides 32), and
// keeps their best kGemvTopKMax in a sorted list in registers and their
// softmax part (max, sum) merged by rescaling (topk_math.cuh). When the
// block's warps are done, warp r merges row r of the block (its 32 lane
// lists, one a lane: k rounds of warp arg-max) into scratch, and the block
// counts itself; the last block merges the blocks' lists the same way, with
// kWarps / kRows warps a row, and writes ids and scores. Against gemv, then
// softmax_topk, that takes away a launch and the second kernel's reading of
// the logits (bench/RESULTS.md has the times). Lists and sums merge in an
// order fixed by columns and block indices, never by timing, so repeated
// launches agree bit for bit.
#include "gemv.cuh"

#include <algorithm>

#include "activation.cuh"
#include "row_math.cuh"
#include "topk_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kWarps = 8;
constexpr int kThreads = kWarps * kWarpSize;
constexpr int kCols = 4;         // weight rows per warp pass
constexpr int kVecsPerPass = 3;  // 16-byte vectors of each weight row per lane per pass
constexpr int kHalvesPerVec = 8;
constexpr size_t kSharedBudget = 48 * 1024;  // no opt-in on any architecture
// Bounds a top-k launch's grid, and so its scratch (gemv_topk_scratch_bytes).
constexpr int64_t kTopKMaxBlocks = 1024;

__device__ __forceinline__ uint4 load_streaming(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ void widen(const uint4& bits, float (&x)[kHalvesPerVec]) {
  const __half2* h = reinterpret_cast<const __half2*>(&bits);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = __half22float2(h[i]);
    x[2 * i] = f.x;
    x[2 * i + 1] = f.y;
  }
}

// A lane's best kGemvTopKMax outputs so far and their softmax part.
using LaneTopK = TopList<kGemvTopKMax>;

// Block b's softmax part and sorted list of one row (k entries, then none),
// read past L1: other blocks wrote them.
struct BlockTopK {
  float2 part;
  uint2 entries[kGemvTopKMax];
};

__device__ __forceinline__ BlockTopK load_block_top_k(const float2* parts, const uint2* lists, int64_t slot, int k) {
  BlockTopK b;
  b.part = __ldcg(parts + slot);
#pragma unroll
  for (int j = 0; j < kGemvTopKMax; ++j) b.entries[j] = j < k ? __ldcg(lists + slot * k + j) : make_uint2(0, kNoId);
  return b;
}

__device__ __forceinline__ void absorb(LaneTopK& gathered, const BlockTopK& b) {
  gathered.stats = merge(gathered.stats, Stats{b.part.x, b.part.y});
  // A block's list is sorted: past its first entry that misses this list, all do.
#pragma unroll
  for (int j = 0; j < kGemvTopKMax; ++j) {
    const Entry e{b.entries[j].x, b.entries[j].y};
    if (!better(e, gathered.list[kGemvTopKMax - 1])) break;
    insert(gathered, e);
  }
}

// After the block's product: its per-row top-k into scratch, and, in the
// block that counts last, the rows' top-k over all blocks into top_ids and
// top_scores. Every thread of the block calls it.
template <int kRows>
__device__ void finish_top_k(const LaneTopK& mine, int64_t rows, const GemvTopK& t) {
  constexpr int kOwners = kCols * kRows;  // lanes that store outputs
  static_assert(kWarps * kCols == kWarpSize, "a block's lists of one row: one per lane of the merging warp");
  static_assert(kWarps % kRows == 0, "the last block's warps split evenly over its rows");
  __shared__ Entry lists[kWarps][kOwners][kGemvTopKMax];
  __shared__ Stats parts[kWarps][kOwners];
  __shared__ bool last;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int k = t.k;
  auto* block_parts = static_cast<float2*>(t.scratch);                            // [blocks][kRows]
  auto* block_lists = reinterpret_cast<uint2*>(block_parts + gridDim.x * kRows);  // [blocks][kRows][k]

  if (lane < kOwners) {
#pragma unroll
    for (int j = 0; j < kGemvTopKMax; ++j) lists[warp][lane][j] = mine.list[j];
    parts[warp][lane] = mine.stats;
  }
  __syncthreads();
  // Warp r takes row r: lane l the list of output r + (l % kCols) * kRows of warp l / kCols.
  if (warp < kRows && warp < rows) {
    const int from = lane / kCols, owner = warp + (lane % kCols) * kRows;
    Entry list[kGemvTopKMax];
#pragma unroll
    for (int j = 0; j < kGemvTopKMax; ++j) list[j] = lists[from][owner][j];
    const Stats whole = warp_merge(parts[from][owner]);
    const int64_t slot = int64_t{blockIdx.x} * kRows + warp;
    if (lane == 0) __stcg(block_parts + slot, make_float2(whole.max, whole.sum));
    warp_top(list, k, [&](int i, Entry winner) {
      if (lane == 0) __stcg(block_lists + slot * k + i, make_uint2(winner.key, winner.id));
    });
  }
  __syncthreads();
  if (threadIdx.x == 0) last = count_arrival(t.counter) == gridDim.x - 1;
  __syncthreads();
  if (!last) return;

  // kWarps / kRows warps a row, each lane over every kWarpsPerRow * 32-th block.
  constexpr int kWarpsPerRow = kWarps / kRows;
  __shared__ Entry row_lists[kWarps][kGemvTopKMax];
  __shared__ Stats row_parts[kWarps];
  const int row = warp % kRows;
  if (row < rows) {
    LaneTopK gathered = empty_top_list<kGemvTopKMax>();
    // At one row, two blocks' lists a lane in flight at once: the 256 lanes
    // are fewer than the blocks (264 on an H100), and a second round of
    // loads would wait on L2 again (-0.3 us). With more rows a lane takes
    // more lists, and two at once measured slower (bench/RESULTS.md).
    constexpr int64_t kStride = kWarpsPerRow * kWarpSize;
    constexpr int64_t kPerPass = kRows == 1 ? 2 : 1;
    for (int64_t b = int64_t{warp / kRows} * kWarpSize + lane; b < gridDim.x; b += kPerPass * kStride) {
      const BlockTopK first = load_block_top_k(block_parts, block_lists, b * kRows + row, k);
      const bool second_exists = kPerPass == 2 && b + kStride < gridDim.x;
      BlockTopK second{};
      if (second_exists) second = load_block_top_k(block_parts, block_lists, (b + kStride) * kRows + row, k);
      absorb(gathered, first);
      if (second_exists) absorb(gathered, second);
    }
    const Stats whole = warp_merge(gathered.stats);
    if (lane == 0) row_parts[warp] = whole;
    warp_top(gathered.list, k, [&](int i, Entry winner) {
      if (lane == 0) row_lists[warp][i] = winner;
    });
  }
  __syncthreads();
  if (warp < kRows && warp < rows) {
    Entry list[kGemvTopKMax];
#pragma unroll
    for (int j = 0; j < kGemvTopKMax; ++j) {
      list[j] = lane < kWarpsPerRow && j < k ? row_lists[warp + lane * kRows][j] : no_entry();
    }
    const Stats whole = warp_merge(lane < kWarpsPerRow ? row_parts[warp + lane * kRows] : Stats{-CUDART_INF_F, 0.f});
    int32_t* ids = t.top_ids + int64_t{warp} * k;
    float* scores = t.top_scores + int64_t{warp} * k;
    warp_top(list, k, [&](int i, Entry winner) {
      if (lane != 0) return;
      __stcs(ids + i, winner.key == 0 ? -1 : static_cast<int32_t>(winner.id));
      __stcs(scores + i, winner.key == 0 ? 0.f : expf(key_value(winner.key) - whole.max) / whole.sum);
    });
  }
  if (threadIdx.x == 0) *t.counter = 0;
}

template <int kRows, class Out, bool kTopK>
__global__ void __launch_bounds__(kThreads) gemv_kernel(const GemvArgs<Out> p, const GemvTopK top_k) {
  extern __shared__ float4 x_shared[];  // [kRows][k / 4]
  const int64_t vecs = p.k / kHalvesPerVec;
  const int64_t quads = p.k / 4;
  for (int64_t i = threadIdx.x; i < kRows * vecs; i += kThreads) {
    const int64_t r = i / vecs;
    float x[kHalvesPerVec];
    widen(r < p.rows ? reinterpret_cast<const uint4*>(p.in)[i] : make_uint4(0u, 0u, 0u, 0u), x);
    x_shared[2 * i] = make_float4(x[0], x[1], x[2], x[3]);
    x_shared[2 * i + 1] = make_float4(x[4], x[5], x[6], x[7]);
  }
  __syncthreads();

  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t groups = (p.n + kCols - 1) / kCols;
  LaneTopK kept;
  if constexpr (kTopK) kept = empty_top_list<kGemvTopKMax>();
  for (int64_t g = int64_t{blockIdx.x} * kWarps + warp; g < groups; g += int64_t{gridDim.x} * kWarps) {
    const int64_t n0 = g * kCols;
    const uint4* rows_of_weight[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
      rows_of_weight[c] = reinterpret_cast<const uint4*>(p.weight) + (n0 + c < p.n ? n0 + c : p.n - 1) * vecs;
    }
    float acc[kCols][kRows] = {};
    for (int64_t v0 = lane; v0 < vecs; v0 += kVecsPerPass * kWarpSize) {
      uint4 w_bits[kVecsPerPass][kCols];
#pragma unroll
      for (int u = 0; u < kVecsPerPass; ++u) {
        const int64_t v = v0 + u * kWarpSize;
#pragma unroll
        for (int c = 0; c < kCols; ++c) {
          w_bits[u][c] = v < vecs ? load_streaming(rows_of_weight[c] + v) : make_uint4(0u, 0u, 0u, 0u);
        }
      }
#pragma unroll
      for (int u = 0; u < kVecsPerPass; ++u) {
        const int64_t v = v0 + u * kWarpSize;
        if (v >= vecs) break;
#pragma unroll
        for (int r = 0; r < kRows; ++r) {
          const float4 lo = x_shared[r * quads + 2 * v];
          const float4 hi = x_shared[r * quads + 2 * v + 1];
          const float x[kHalvesPerVec] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
#pragma unroll
          for (int c = 0; c < kCols; ++c) {
            float w[kHalvesPerVec];
            widen(w_bits[u][c], w);
#pragma unroll
            for (int e = 0; e < kHalvesPerVec; ++e) acc[c][r] = fmaf(w[e], x[e], acc[c][r]);
          }
        }
      }
    }
    // Output c * kRows + r goes to lane (c * kRows + r) % 32, in slot
    // (c * kRows + r) / 32 of its `mine`.
    constexpr int kOutputs = kCols * kRows;
    constexpr int kSlots = (kOutputs + kWarpSize - 1) / kWarpSize;
    float mine[kSlots] = {};
#pragma unroll
    for (int c = 0; c < kCols; ++c) {
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const float sum = warp_sum(acc[c][r]);
        if (lane == (c * kRows + r) % kWarpSize) mine[(c * kRows + r) / kWarpSize] = sum;
      }
    }
#pragma unroll
    for (int slot = 0; slot < kSlots; ++slot) {
      const int output = slot * kWarpSize + lane;
      const int64_t column = n0 + output / kRows;
      const int64_t row = output % kRows;
      if (output < kOutputs && column < p.n && row < p.rows) {
        const float biased = p.bias != nullptr ? mine[slot] + to_float(p.bias[column]) : mine[slot];
        const Out stored = from_float<Out>(activate(biased, p.activation));
        p.out[row * p.n + column] = stored;
        if constexpr (kTopK) keep(kept, to_float(stored), column);
      }
    }
  }
  if constexpr (kTopK) finish_top_k<kRows>(kept, p.rows, top_k);
}

// The kernel's row count: the smallest of 1, 2, 4, 8 that holds the call's.
int64_t kernel_rows(int64_t rows) {
  int64_t kernel = 1;
  while (kernel < rows) kernel *= 2;
  return kernel;
}

template <class Out>
size_t shared_bytes(const GemvArgs<Out>& a) {
  return static_cast<size_t>(kernel_rows(a.rows) * a.k) * sizeof(float);
}

template <int kRows, class Out, bool kTopK>
cudaError_t launch(const GemvArgs<Out>& a, const GemvTopK& top_k, cudaStream_t stream) {
  const size_t shared = shared_bytes(a);
  int device = 0, sms = 0, per_sm = 0;
  cudaError_t error = cudaGetDevice(&device);
  if (error == cudaSuccess) error = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (error == cudaSuccess) {
    error = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gemv_kernel<kRows, Out, kTopK>, kThreads, shared);
  }
  if (error != cudaSuccess) return error;
  const int64_t groups = (a.n + kCols - 1) / kCols;
  int64_t blocks = std::min<int64_t>((groups + kWarps - 1) / kWarps, int64_t{std::max(per_sm, 1)} * sms);
  if constexpr (kTopK) blocks = std::min(blocks, kTopKMaxBlocks);
  gemv_kernel<kRows, Out, kTopK><<<static_cast<unsigned>(blocks), kThreads, shared, stream>>>(a, top_k);
  return cudaGetLastError();
}

template <bool kTopK, class Out>
cudaError_t launch_for_rows(const GemvArgs<Out>& a, const GemvTopK& top_k, cudaStream_t stream) {
  switch (kernel_rows(a.rows)) {
    case 1: return launch<1, Out, kTopK>(a, top_k, stream);
    case 2: return launch<2, Out, kTopK>(a, top_k, stream);
    case 4: return launch<4, Out, kTopK>(a, top_k, stream);
    default:
      if constexpr (kTopK) {
        return cudaErrorInvalidValue;  // gemv_topk_supports refuses more than 4 rows
      } else {
        return launch<8, Out, false>(a, top_k, stream);
      }
  }
}

}  // namespace

template <class Out>
bool gemv_supports(const GemvArgs<Out>& a) {
  return a.rows >= 1 && a.rows <= kGemvMaxRows && a.n >= 1 && a.k >= kHalvesPerVec && a.k % kHalvesPerVec == 0 &&
         shared_bytes(a) <= kSharedBudget && a.in != nullptr && a.weight != nullptr && a.out != nullptr &&
         aligned16(a.in) && aligned16(a.weight);
}

template <class Out>
cudaError_t gemv(const GemvArgs<Out>& a, cudaStream_t stream) {
  if (!gemv_supports(a)) return cudaErrorInvalidValue;
  return launch_for_rows<false>(a, GemvTopK{}, stream);
}

size_t gemv_topk_scratch_bytes(int64_t rows, int k) {
  if (rows < 1 || rows > kGemvTopKMaxRows || k < 1 || k > kGemvTopKMax) return 0;
  return static_cast<size_t>(kTopKMaxBlocks * kernel_rows(rows) * (1 + k)) * sizeof(uint2);
}

template <class Out>
bool gemv_topk_supports(const GemvArgs<Out>& a, const GemvTopK& t) {
  // The kernel's static shared memory (the block's lists, under 10 KB)
  // comes on top of `in`'s rows.
  constexpr size_t kListBytes = kWarps * kCols * kGemvTopKMaxRows * (kGemvTopKMax + 1) * sizeof(Entry);
  return gemv_supports(a) && a.rows <= kGemvTopKMaxRows && shared_bytes(a) + kListBytes <= kSharedBudget &&
         a.n < kNoId && t.k >= 1 && t.k <= kGemvTopKMax && t.top_ids != nullptr && t.top_scores != nullptr &&
         t.counter != nullptr && t.scratch != nullptr && reinterpret_cast<uintptr_t>(t.scratch) % 8 == 0;
}

template <class Out>
cudaError_t gemv_topk(const GemvArgs<Out>& a, const GemvTopK& t, cudaStream_t stream) {
  if (!gemv_topk_supports(a, t)) return cudaErrorInvalidValue;
  return launch_for_rows<true>(a, t, stream);
}

template bool gemv_supports(const GemvArgs<__half>&);
template bool gemv_supports(const GemvArgs<float>&);
template cudaError_t gemv(const GemvArgs<__half>&, cudaStream_t);
template cudaError_t gemv(const GemvArgs<float>&, cudaStream_t);
template bool gemv_topk_supports(const GemvArgs<__half>&, const GemvTopK&);
template bool gemv_topk_supports(const GemvArgs<float>&, const GemvTopK&);
template cudaError_t gemv_topk(const GemvArgs<__half>&, const GemvTopK&, cudaStream_t);
template cudaError_t gemv_topk(const GemvArgs<float>&, const GemvTopK&, cudaStream_t);

}  // namespace fusedrt::gpu
