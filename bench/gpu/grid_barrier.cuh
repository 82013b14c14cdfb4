// What the persistent-kernel probes (persistent_layer.cu, persistent_tail.cu,
// mlm_tail.cu) share: a barrier across the whole grid on a global counter,
// for launches whose blocks are all resident at once, and leaving the
// counters zero for the next launch. Probe code only.
#pragma once

namespace fusedrt::probe {

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}

// Every block of the grid arrives before any leaves; what a block wrote
// before is visible to every block after. `counter` starts at 0 for the
// launch and only grows: the n-th barrier waits for n * gridDim.x arrivals.
__device__ inline void grid_barrier(unsigned* counter, unsigned target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;\n" ::"l"(counter) : "memory");
    // A back-off (__nanosleep of 50-1000 ns per poll) was measured: no gain.
    while (load_acquire(counter) < target) {
    }
  }
  __syncthreads();
}

// At the end of a launch: the last block out sets `arrived` (the barrier's
// counter) and `exited` (this count) back to 0, so the next launch, queued
// behind this one, needs no memset.
__device__ inline void leave_counters_zero(unsigned* arrived, unsigned* exited) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    if (atomicAdd(exited, 1u) == gridDim.x - 1) {
      *arrived = 0;
      *exited = 0;
      __threadfence();
    }
  }
}

}  // namespace fusedrt::probe
