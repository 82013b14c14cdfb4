// Device pieces of the softmax top-k shared by its kernels (topk.cu, gemv.cu's
// top-k epilogue, and the probe bench/gpu/mlm_tail.cu): order keys that make
// the float order exact and total, list entries compared by key then column,
// warp arg-max, the softmax's (max, sum) parts merged by rescaling, and a
// lane's sorted list of its best outputs. Internal to cuda/*.cu and probes.
//
// Keys: NaN maps to 0 (never selected, as fmax ignores it), -0 to +0's key
// (they tie, lower column first), every other float to bits that compare as
// the floats do, and a column id breaks ties, so the ids are the CPU
// reference's (native/cpu/topk.h) bit for bit.
#pragma once

#include <math_constants.h>

#include <cstdint>

#include "row_math.cuh"

namespace fusedrt::gpu {

constexpr uint32_t kNoId = 0xffffffffu;

struct Entry {
  uint32_t key;  // order_key of the logit; 0: no entry
  uint32_t id;   // the column; kNoId with key 0
};

__device__ __forceinline__ Entry no_entry() { return {0, kNoId}; }

__device__ __forceinline__ uint32_t order_key(float x) {
  if (isnan(x)) return 0;
  const uint32_t bits = x == 0.f ? 0u : __float_as_uint(x);
  return (bits & 0x80000000u) ? ~bits : bits | 0x80000000u;
}

// key != 0. The smallest, -inf's, is 0x007fffff.
__device__ __forceinline__ float key_value(uint32_t key) {
  return __uint_as_float((key & 0x80000000u) ? key & 0x7fffffffu : ~key);
}

__device__ __forceinline__ bool better(Entry a, Entry b) { return a.key > b.key || (a.key == b.key && a.id < b.id); }

// Every lane gets the warp's best entry.
__device__ __forceinline__ Entry warp_best(Entry mine) {
  const uint32_t key = __reduce_max_sync(kFullMask, mine.key);
  return {key, __reduce_min_sync(kFullMask, mine.key == key ? mine.id : kNoId)};
}

__device__ __forceinline__ float warp_max_value(uint32_t lane_key) {
  const uint32_t key = __reduce_max_sync(kFullMask, lane_key);
  return key == 0 ? -CUDART_INF_F : key_value(key);
}

// counter + 1, returning the count before, as one atomic with release
// (what this thread wrote, and what the threads that met it at a barrier
// before wrote) and acquire (what the threads that counted before it
// wrote): how the parts of a top-k hand their results to the last one to
// count, with no fence on either side.
__device__ __forceinline__ unsigned count_arrival(unsigned* counter) {
  unsigned before;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;" : "=r"(before) : "l"(counter) : "memory");
  return before;
}

// A softmax part: its maximum (-inf when it holds no number) and the sum of
// exp(x - max), or of exp(x) when max is -inf (0, or NaN from a NaN), so a
// part without numbers never turns the row's sum into -inf - -inf.
struct Stats {
  float max;
  float sum;
};

__device__ __forceinline__ float sum_around(const Stats& s, float max) {
  return s.max == -CUDART_INF_F ? s.sum : s.sum * expf(s.max - max);
}

__device__ __forceinline__ Stats merge(const Stats& a, const Stats& b) {
  const float max = fmaxf(a.max, b.max);
  return {max, sum_around(a, max) + sum_around(b, max)};
}

// The row's (max, sum) from the warp's lanes' parts (every lane gets them).
__device__ __forceinline__ Stats warp_merge(const Stats& mine) {
  const float max = warp_max_value(order_key(mine.max));
  return {max, warp_sum(sum_around(mine, max))};
}

// A lane's best kLen outputs so far (best first; unused slots are
// no_entry()) and their softmax part.
template <int kLen>
struct TopList {
  Entry list[kLen];
  Stats stats;
};

template <int kLen>
__device__ __forceinline__ TopList<kLen> empty_top_list() {
  TopList<kLen> t;
#pragma unroll
  for (int j = 0; j < kLen; ++j) t.list[j] = no_entry();
  t.stats = {-CUDART_INF_F, 0.f};
  return t;
}

// Inserting no_entry() changes nothing.
template <int kLen>
__device__ __forceinline__ void insert(TopList<kLen>& t, Entry e) {
#pragma unroll
  for (int j = 0; j < kLen; ++j) {
    if (better(e, t.list[j])) {
      const Entry out = t.list[j];
      t.list[j] = e;
      e = out;
    }
  }
}

template <int kLen>
__device__ __forceinline__ void keep(TopList<kLen>& t, float value, int64_t column) {
  // A NaN part sums to NaN (every score of the row is NaN, as in the
  // reference); -inf adds nothing.
  const bool nan = isnan(value);
  const bool none = nan || value == -CUDART_INF_F;
  t.stats = merge(t.stats, Stats{none ? -CUDART_INF_F : value, nan ? CUDART_NAN_F : (none ? 0.f : 1.f)});
  const Entry e{order_key(value), static_cast<uint32_t>(column)};
  if (better(e, t.list[kLen - 1])) insert(t, e);
}

// Drops the head of a sorted list.
template <int kLen>
__device__ __forceinline__ void pop(Entry (&list)[kLen]) {
#pragma unroll
  for (int j = 0; j + 1 < kLen; ++j) list[j] = list[j + 1];
  list[kLen - 1] = no_entry();
}

// k rounds of warp arg-max over the lanes' sorted lists (consumed); round i
// calls emit(i, winner) on every lane, winner.key 0 once the lists are empty.
template <int kLen, class Emit>
__device__ __forceinline__ void warp_top(Entry (&list)[kLen], int k, Emit&& emit) {
  for (int i = 0; i < k; ++i) {
    const Entry winner = warp_best(list[0]);
    emit(i, winner);
    if (winner.key != 0 && list[0].id == winner.id) pop(list);
  }
}

}  // namespace fusedrt::gpu
