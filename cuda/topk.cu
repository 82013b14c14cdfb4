// Softmax top-k in one launch whose unit of work is a warp, not a block: a
// row of cols logits is cut into `splits` (at most 32) slices of whole
// 1024-column chunks, one warp per slice, so even one row runs on many SMs
// (BERT's 30522 columns: 30 warps over 15 blocks) instead of one block
// walking the row k + 2 times (26 us for 1 row on an H200).
//
// A warp loads a chunk into registers (32 columns a lane, 16-byte loads
// aligned to absolute 16-byte boundaries, so rows of any width and offset
// vectorise; only the two edge vectors of a row load element-wise), and
//  - its softmax part: the chunk's maximum (one redux on order-preserving
//    keys), the sum of exp(x - max), merged into the slice's (max, sum) by
//    rescaling (log-sum-exp); a part without numbers has max -inf and sums
//    around 0 instead, adding 0, or its NaN;
//  - its top-k: rounds of warp arg-max (two reduxes: largest key, then lowest
//    column among it), each winner inserted into a sorted running list of k
//    held two entries a lane; a round whose winner does not beat the list's
//    k-th ends the chunk, so later chunks of long slices cost a few rounds.
//    The first chunk's winners just append (the list is empty, and they
//    come best first): k rounds, each without the insertion's shuffles.
// The warp stores its (max, sum) and list in scratch and counts itself in
// its row's counter (one acquire-release atomic, topk_math.cuh's
// count_arrival, instead of a fence on each side); the last warp of the
// row merges: log-sum-exp over the parts, then exactly k rounds of arg-max
// over the parts' sorted lists (a lane per list, its next 8 entries in
// registers), and resets the counter to 0 for the next call.
//
// Keys (topk_math.cuh) make the order exact and total, so the ids are the
// CPU reference's bit for bit. The exponentials are
// expf (not __expf) in fp32; the sum differs from the reference's (double)
// by the fp32 rounding of partial sums and rescaling, ~1e-7 relative.
// The split depends on cols only, so a row's scores do not depend on the
// other rows of the call.
#include <math_constants.h>

#include <cstdint>

#include "topk.cuh"
#include "topk_math.cuh"

namespace fusedrt::gpu {

namespace {

constexpr int kMaxK = 64;  // the running list: entries lane and lane + 32
constexpr int kPerLane = 32;
constexpr int64_t kChunk = int64_t{kWarpSize} * kPerLane;
constexpr int64_t kMaxSplits = kWarpSize;  // the merge gives each lane one slice's list
constexpr int kWindow = 8;
// Small blocks (no shared memory, no block barrier) spread one row's warps over many SMs.
constexpr int kThreads = 64;
// A row of __half starts up to 7 elements after a 16-byte boundary; its
// aligned span is at most cols + 7 elements (cols + 3 for float).
constexpr int64_t kHeadroom = 7;

struct Split {
  int64_t chunks_per_warp;
  int64_t splits;
};

__host__ __device__ inline Split split_row(int64_t cols) {
  const int64_t chunks = (cols + kHeadroom + kChunk - 1) / kChunk;
  const int64_t per_warp = (chunks + kMaxSplits - 1) / kMaxSplits;
  return {per_warp, (chunks + per_warp - 1) / per_warp};
}

// The chunk whose slot 0 of lane 0 is column `first` (negative: before the
// row): lane's slot v * kVec + i holds column first + (v * 32 + lane) * kVec
// + i, so a lane's slots are in column order. Columns outside the row get
// key 0; `nan` is set when one inside is NaN.
template <class T>
__device__ __forceinline__ void load_chunk(const T* x, int64_t cols, int64_t first, int lane,
                                           uint32_t (&key)[kPerLane], bool& nan) {
  constexpr int kVec = kVector16<T>;
  constexpr int kLoads = kPerLane / kVec;
  // All loads are issued before any is used.
  uint4 raw[kLoads];
  bool whole[kLoads];
#pragma unroll
  for (int v = 0; v < kLoads; ++v) {
    const int64_t col = first + (int64_t{v} * kWarpSize + lane) * kVec;
    whole[v] = col >= 0 && col + kVec <= cols;
    raw[v] = whole[v] ? *reinterpret_cast<const uint4*>(x + col) : make_uint4(0, 0, 0, 0);
  }
#pragma unroll
  for (int v = 0; v < kLoads; ++v) {
    const int64_t col = first + (int64_t{v} * kWarpSize + lane) * kVec;
    float f[kVec];
    load_floats<kVec>(reinterpret_cast<const T*>(&raw[v]), f);
#pragma unroll
    for (int i = 0; i < kVec; ++i) {
      const bool inside = whole[v] || (col + i >= 0 && col + i < cols);
      if (!whole[v] && inside) f[i] = to_float(x[col + i]);
      key[v * kVec + i] = inside ? order_key(f[i]) : 0;
      nan |= inside && isnan(f[i]);
    }
  }
}

// A lane's best slot: the largest key, the lowest slot among equals. Kept
// per group of 8 slots, so taking the winner out rescans one group.
constexpr int kGroup = 8;
constexpr int kGroups = kPerLane / kGroup;

struct Best {
  uint32_t key;
  int slot;
};

// a holds the lower slots.
__device__ __forceinline__ Best pick(Best a, Best b) { return b.key > a.key ? b : a; }

template <int kFirst>
__device__ __forceinline__ Best group_best(const uint32_t (&key)[kPerLane]) {
  Best b[kGroup];
#pragma unroll
  for (int j = 0; j < kGroup; ++j) b[j] = {key[kFirst + j], kFirst + j};
#pragma unroll
  for (int level = 1; level < kGroup; level *= 2) {
#pragma unroll
    for (int j = 0; j < kGroup / (2 * level); ++j) b[j] = pick(b[2 * j], b[2 * j + 1]);
  }
  return b[0];
}

// Takes slot out of group kG (its group) and rescans the group.
template <int kG>
__device__ __forceinline__ void take(uint32_t (&key)[kPerLane], Best (&group)[kGroups], int slot) {
#pragma unroll
  for (int j = kG * kGroup; j < (kG + 1) * kGroup; ++j) key[j] = j == slot ? 0u : key[j];
  group[kG] = group_best<kG * kGroup>(key);
}

__device__ __forceinline__ Best lane_best(const Best (&group)[kGroups]) {
  Best best = group[0];
#pragma unroll
  for (int g = 1; g < kGroups; ++g) best = pick(best, group[g]);
  return best;
}

// Inserts e at position rank (< k) of the list held as entries lane and
// lane + 32; the entry at k - 1 falls off (slots past k are don't-cares).
__device__ __forceinline__ void insert(Entry (&list)[2], Entry e, int rank, int lane) {
  const uint32_t up0_key = __shfl_up_sync(kFullMask, list[0].key, 1);
  const uint32_t up0_id = __shfl_up_sync(kFullMask, list[0].id, 1);
  const uint32_t up1_key = __shfl_up_sync(kFullMask, list[1].key, 1);
  const uint32_t up1_id = __shfl_up_sync(kFullMask, list[1].id, 1);
  const uint32_t last0_key = __shfl_sync(kFullMask, list[0].key, kWarpSize - 1);
  const uint32_t last0_id = __shfl_sync(kFullMask, list[0].id, kWarpSize - 1);
  const Entry before0{up0_key, up0_id};  // unused by lane 0: rank >= 0
  const Entry before1 = lane == 0 ? Entry{last0_key, last0_id} : Entry{up1_key, up1_id};
  const int i0 = lane, i1 = lane + kWarpSize;
  list[0] = i0 < rank ? list[0] : (i0 == rank ? e : before0);
  list[1] = i1 < rank ? list[1] : (i1 == rank ? e : before1);
}

template <class T>
__global__ void __launch_bounds__(kThreads) softmax_topk_kernel(SoftmaxTopKArgs<T> p, int64_t chunks_per_warp,
                                                                 int splits) {
  const int64_t warp = (int64_t{blockIdx.x} * kThreads + threadIdx.x) / kWarpSize;
  if (warp >= p.rows * splits) return;  // the whole warp
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t row = warp / splits;
  const int64_t part = warp % splits;
  const int k = p.k;
  constexpr int kVec = kVector16<T>;

  const T* x = p.logits + row * p.cols;
  const auto head = static_cast<int64_t>((reinterpret_cast<uintptr_t>(x) % 16) / sizeof(T));
  Stats stats{-CUDART_INF_F, 0.f};
  Entry list[2] = {no_entry(), no_entry()};
  for (int64_t c = 0; c < chunks_per_warp; ++c) {
    const int64_t first = (part * chunks_per_warp + c) * kChunk - head;
    if (first >= p.cols) break;
    uint32_t key[kPerLane];
    bool nan = false;
    load_chunk(x, p.cols, first, lane, key, nan);

    uint32_t lane_max = 0;
#pragma unroll
    for (int b = 0; b < kPerLane; ++b) lane_max = max(lane_max, key[b]);
    const float chunk_max = warp_max_value(lane_max);
    const float around = chunk_max == -CUDART_INF_F ? 0.f : chunk_max;
    // Four interleaved partial sums: shorter rounding chains than one.
    float partial[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int b = 0; b < kPerLane; ++b) partial[b % 4] += key[b] == 0 ? 0.f : expf(key_value(key[b]) - around);
    const float lane_sum = nan ? CUDART_NAN_F : (partial[0] + partial[1]) + (partial[2] + partial[3]);
    stats = merge(stats, Stats{chunk_max, warp_sum(lane_sum)});

    static_assert(kGroups == 4, "the group calls below");
    Best group[kGroups] = {group_best<0>(key), group_best<kGroup>(key), group_best<2 * kGroup>(key),
                           group_best<3 * kGroup>(key)};
    const auto column = [&](int slot) {
      return static_cast<uint32_t>(first + (int64_t{slot / kVec} * kWarpSize + lane) * kVec + slot % kVec);
    };
    // The first chunk finds the list empty, and a chunk's winners come out
    // best first, so there the r-th winner simply takes rank r: no
    // ballots, no shifting, and no round to find that the list is full.
    const bool fresh = c == 0;
    for (int round = 0;; ++round) {
      const Best best = lane_best(group);
      const Entry mine{best.key, best.key == 0 ? kNoId : column(best.slot)};
      const Entry winner = warp_best(mine);
      if (winner.key == 0) break;
      if (fresh) {
        if (lane == round % kWarpSize) (round < kWarpSize ? list[0] : list[1]) = winner;
      } else {
        const int rank = __popc(__ballot_sync(kFullMask, lane < k && better(list[0], winner))) +
                         __popc(__ballot_sync(kFullMask, lane + kWarpSize < k && better(list[1], winner)));
        if (rank >= k) break;
        insert(list, winner, rank, lane);
      }
      if (fresh && round + 1 == k) break;
      if (mine.id == winner.id) {
        switch (best.slot / kGroup) {
          case 0: take<0>(key, group, best.slot); break;
          case 1: take<1>(key, group, best.slot); break;
          case 2: take<2>(key, group, best.slot); break;
          default: take<3>(key, group, best.slot); break;
        }
      }
    }
  }

  // The part's results, then the count; the last part of the row merges.
  auto* parts = static_cast<float2*>(p.scratch);
  auto* lists = reinterpret_cast<uint2*>(parts + p.rows * splits);
  if (lane == 0) __stcg(parts + warp, make_float2(stats.max, stats.sum));
  if (lane < k) __stcg(lists + warp * k + lane, make_uint2(list[0].key, list[0].id));
  if (lane + kWarpSize < k) __stcg(lists + warp * k + lane + kWarpSize, make_uint2(list[1].key, list[1].id));
  __syncwarp();
  unsigned arrived = 0;
  if (lane == 0) arrived = count_arrival(p.row_counters + row);
  if (__shfl_sync(kFullMask, arrived, 0) != static_cast<unsigned>(splits - 1)) return;
  __syncwarp();  // the lanes' loads below come after lane 0's acquire

  const int64_t first_part = row * splits;
  const bool owner = lane < splits;
  Stats mine{-CUDART_INF_F, 0.f};
  if (owner) {
    const float2 s = __ldcg(parts + first_part + lane);
    mine = {s.x, s.y};
  }
  const Stats whole = warp_merge(mine);

  // A lane's list is sorted: its head is window[0]; the window refills after kWindow wins.
  const uint2* own = lists + (first_part + lane) * k;
  Entry window[kWindow];
  int taken = 0;
  const auto refill = [&] {
#pragma unroll
    for (int j = 0; j < kWindow; ++j) {
      const uint2 e = owner && taken + j < k ? __ldcg(own + taken + j) : make_uint2(0, kNoId);
      window[j] = {e.x, e.y};
    }
  };
  refill();
  int found = 0;
  for (; found < k; ++found) {
    const Entry winner = warp_best(window[0]);
    if (winner.key == 0) break;
    if (lane == 0) {
      __stcs(p.top_ids + row * k + found, static_cast<int32_t>(winner.id));
      __stcs(p.top_scores + row * k + found, expf(key_value(winner.key) - whole.max) / whole.sum);
    }
    if (window[0].id == winner.id) {
#pragma unroll
      for (int j = 0; j + 1 < kWindow; ++j) window[j] = window[j + 1];
      window[kWindow - 1] = no_entry();
      if (++taken % kWindow == 0) refill();
    }
  }
  for (int i = found + lane; i < k; i += kWarpSize) {
    p.top_ids[row * k + i] = -1;
    p.top_scores[row * k + i] = 0.f;
  }
  if (lane == 0) p.row_counters[row] = 0;
}

}  // namespace

size_t softmax_topk_scratch_bytes(int64_t rows, int64_t cols, int k) {
  if (rows <= 0 || cols <= 0 || k <= 0) return 0;
  const auto parts = static_cast<size_t>(rows * split_row(cols).splits);
  return parts * (sizeof(float2) + static_cast<size_t>(k) * sizeof(uint2));
}

template <class T>
cudaError_t softmax_topk(const SoftmaxTopKArgs<T>& p, cudaStream_t stream) {
  if (p.rows <= 0) return cudaSuccess;
  if (p.k < 1 || p.k > kMaxK || p.cols < 1 || p.cols > INT32_MAX || p.row_counters == nullptr ||
      p.scratch == nullptr || reinterpret_cast<uintptr_t>(p.scratch) % 8 != 0) {
    return cudaErrorInvalidValue;
  }
  const Split split = split_row(p.cols);
  const int64_t blocks = (p.rows * split.splits * kWarpSize + kThreads - 1) / kThreads;
  if (blocks > INT32_MAX) return cudaErrorInvalidValue;
  softmax_topk_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, stream>>>(p, split.chunks_per_warp,
                                                                                 static_cast<int>(split.splits));
  return cudaGetLastError();
}

template cudaError_t softmax_topk<float>(const SoftmaxTopKArgs<float>&, cudaStream_t);
template cudaError_t softmax_topk<__half>(const SoftmaxTopKArgs<__half>&, cudaStream_t);

}  // namespace fusedrt::gpu
