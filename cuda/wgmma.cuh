// Hopper warpgroup MMA (wgmma, sm_90a) helpers for cuda/attention_hopper.cu
// (and the probe bench/gpu/wgmma_gemm.cu).
// Internal to cuda/*.cu. A warpgroup is 4 consecutive warps (128 threads);
// every wgmma instruction is issued by all of them together.
//
// Register layout of an m64nN fp32 accumulator d[N / 2] (PTX ISA, "Register
// fragment of matrix D", wgmma .m64nNk16): warp w of the group holds rows
// 16 w .. 16 w + 15, and in each 8-column block j the mma.m16n8k16 C
// fragment (tensor_core.cuh) as d[4 j .. 4 j + 3]. An A operand in registers
// uses the mma.m16n8k16 A fragment layout, again per warp for its 16 rows.
//
// Shared-memory operands are described by a 64-bit descriptor. Every tile
// here is rows of exactly 128 bytes (64 halves) stored with the 128-byte
// swizzle: 16-byte chunk c of row r at r * 128 + ((c ^ (r % 8)) * 16), from a
// 1024-byte aligned base. Read as
//   K-major (each row one M/N index, K along the row): 8-row groups 1024
//     bytes apart (the stride byte offset); a k16 step moves the start 32 bytes;
//   MN-major (each row one K index): 8 K rows per 1024-byte group, the
//     groups 1024 bytes apart; a k16 step moves the start 2048 bytes.
// With one 128-byte row per index the leading byte offset is not used.
#pragma once

#include <cstdint>

#include "tensor_core.cuh"

namespace fusedrt::gpu {

__device__ __forceinline__ uint64_t swizzled_tile_descriptor(const void* tile) {
  uint64_t desc = (shared_address(tile) & 0x3FFFF) >> 4;
  desc |= uint64_t{1} << 16;          // leading byte offset, unused
  desc |= uint64_t{1024 >> 4} << 32;  // stride byte offset: one 8-row group
  desc |= uint64_t{1} << 62;          // 128-byte swizzle
  return desc;
}

// Byte offset of 16-byte chunk `chunk` of row `row` in a swizzled tile.
__device__ __forceinline__ int swizzled_offset(int row, int chunk) { return row * 128 + ((chunk ^ (row & 7)) << 4); }

// Makes this thread's generic-proxy writes of shared memory (cp.async
// included, once waited for) visible to the async proxy wgmma reads through.
__device__ __forceinline__ void fence_shared_for_async_proxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// Before the first wgmma that reads or writes registers other instructions
// have touched since the last one.
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
// Waits until at most kPending of this warpgroup's committed wgmma groups
// are in flight.
template <int kPending>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(kPending) : "memory");
}

// Pins registers an in-flight wgmma reads or writes: the compiler may not
// move or reuse them across this point (it cannot see the asynchrony).
template <int kCount>
__device__ __forceinline__ void wgmma_hold(float (&r)[kCount]) {
#pragma unroll
  for (int i = 0; i < kCount; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

template <int kRows>
__device__ __forceinline__ void wgmma_hold(uint32_t (&r)[kRows][4]) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
#pragma unroll
    for (int k = 0; k < 4; ++k) asm volatile("" : "+r"(r[i][k])::"memory");
  }
}

// d[64 x 64] (+)= A[64 x 16] B[64 x 16]^T: A in registers, B K-major in
// shared memory; accumulate false overwrites d.
__device__ __forceinline__ void wgmma_m64n64k16_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t b,
                                                   bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(static_cast<int>(accumulate)));
}

// d[64 x 64] += A[64 x 16] B[16 x 64]: A in registers (each warp its 16
// rows, as an mma.m16n8k16 A fragment), B MN-major in shared memory.
__device__ __forceinline__ void wgmma_m64n64k16_rs_mn(float (&d)[32], const uint32_t (&a)[4], uint64_t b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b));
}

}  // namespace fusedrt::gpu
