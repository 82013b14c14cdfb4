// The split-K Hopper GEMM of 128 rows that bench/gpu/wgmma_gemm.cu times
// against cuBLASLt (its header says what it found), shared with
// pdl_gemm_chain.cu, which runs it in a chain of layers with programmatic
// dependent launches. Probe code only, for sm_90a.
//
// out[rows, n] = act(in[rows, k] . weight[n, k]^T + bias), fp32
// accumulation, act GELU (erf) or none. Grid (n / kBlockN, 1, splits),
// clusters of (1, 1, splits): the CTAs of a cluster share an output tile and
// split its K blocks; CTA q then sums rows slice q of the tile: every other
// CTA pushes its partial sums of those rows into q's receive buffer with one
// bulk copy.
//
// kDependent: launched as a programmatic dependent of the kernel before it.
// Its first stages' weight tiles (never written by a kernel) are asked for
// at once; the input's only after griddepcontrol.wait, which returns when
// the kernel before has finished and its writes are visible. It lets the
// kernel after it launch at its start (that one waits the same way).
#pragma once

#include <cooperative_groups.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "../../cuda/wgmma.cuh"  // the swizzled tile descriptor, wgmma fence/commit/wait
#include "tma.cuh"               // shared_address, mbarrier waits, TMA loads, tensor maps

namespace fusedrt::probe {

namespace cg = cooperative_groups;

constexpr int kBlockM = 128;   // every row of the batch: two m64 wgmmas
constexpr int kBlockK = 64;    // 128 bytes of fp16, one swizzle row
constexpr int kThreads = 128;  // one warpgroup
constexpr int kStages = 3;  // 3 x 24 KB + the receive buffer: two CTAs of tile width 64 per SM
constexpr int kABytes = kBlockM * kBlockK * 2;

using fusedrt::gpu::wgmma_commit;
using fusedrt::gpu::wgmma_fence;
using fusedrt::gpu::wgmma_wait;
// A K-major tile as TMA writes it with the 128-byte swizzle; moving 16 K
// elements (32 bytes) along a row adds 2 to the descriptor.
using fusedrt::gpu::swizzled_tile_descriptor;

__device__ __forceinline__ uint64_t global_ns() {
  uint64_t ns;
  asm volatile("mov.u64 %0, %globaltimer;" : "=l"(ns));
  return ns;
}

// Where a CTA's time goes: thread 0 stamps entry, first stage landed, last
// MMA done, partial sums received, exit.
constexpr int kStamps = 5;
__device__ __forceinline__ void stamp(uint64_t* stamps, int which) {
  if (stamps != nullptr && threadIdx.x == 0) {
    const int cta = blockIdx.x + gridDim.x * blockIdx.z;
    stamps[cta * kStamps + which] = global_ns();
  }
}

// D[64 x 64] += A[64 x 16] . B[64 x 16]^T, both K-major in shared memory.
__device__ __forceinline__ void wgmma_m64n64k16(float (&d)[32], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred accumulate;\nsetp.ne.b32 accumulate, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, %32, %33, accumulate, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(a), "l"(b));
}

// D[64 x 128] += A[64 x 16] . B[128 x 16]^T, both K-major in shared memory.
__device__ __forceinline__ void wgmma_m64n128k16(float (&d)[64], uint64_t a, uint64_t b) {
  asm volatile(
      "{\n.reg .pred accumulate;\nsetp.ne.b32 accumulate, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 "
      "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, %64, %65, accumulate, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(a), "l"(b));
}

template <int kBlockN>
__device__ __forceinline__ void wgmma_tile(float (&d)[kBlockN / 2], uint64_t a, uint64_t b) {
  if constexpr (kBlockN == 64) {
    wgmma_m64n64k16(d, a, b);
  } else {
    wgmma_m64n128k16(d, a, b);
  }
}

template <int kBlockN>
__host__ __device__ constexpr int stage_bytes() {
  return kABytes + kBlockN * kBlockK * 2;
}

// The split-K receive buffer: the other CTAs' partial sums of this CTA's
// rows, fp32, at most (splits - 1) * ceil(128 / splits) <= 112 rows of
// kBlockN. Apart from the stages, so that a CTA may receive while it still
// computes.
template <int kBlockN>
__host__ __device__ constexpr int receive_bytes() {
  return 112 * kBlockN * 4;
}

template <int kBlockN>
__host__ __device__ constexpr int shared_bytes() {
  return kStages * stage_bytes<kBlockN>() + receive_bytes<kBlockN>() + 1024;  // + alignment slack
}
// The CTA's own partial tile, fp32 [128][kBlockN], reuses the stages.
static_assert(kBlockM * 128 * 4 <= kStages * stage_bytes<128>(), "partial tile fits the stages");
static_assert(kBlockM * 64 * 4 <= kStages * stage_bytes<64>(), "partial tile fits the stages");

// Rows [begin, end) of the tile are reduced by CTA `owner` of the cluster.
__device__ __forceinline__ int slice_begin(int owner, int splits) {
  const int slice = (kBlockM + splits - 1) / splits;
  return min(owner * slice, kBlockM);
}

// Bulk copy of `bytes` from this CTA's shared memory into CTA `rank`'s, at
// the same offsets as dst and bar have here; completes on that CTA's bar.
__device__ __forceinline__ void push_to(const void* src, void* dst, uint64_t* bar, int rank, uint32_t bytes) {
  uint32_t remote_dst, remote_bar;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote_dst) : "r"(shared_address(dst)), "r"(rank));
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote_bar) : "r"(shared_address(bar)), "r"(rank));
  asm volatile(
      "cp.async.bulk.shared::cluster.shared::cta.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(remote_dst),
      "r"(shared_address(src)), "r"(bytes), "r"(remote_bar)
      : "memory");
}

// The kernel the header describes.
template <int kBlockN, bool kDependent = false>
__global__ void __launch_bounds__(kThreads) split_k_gemm(const __grid_constant__ CUtensorMap in_map,
                                                          const __grid_constant__ CUtensorMap weight_map,
                                                          const __half* bias, __half* out, int rows, int n,
                                                          int k_blocks, bool gelu, uint64_t* stamps) {
  extern __shared__ uint8_t shared_raw[];
  __shared__ uint64_t full[kStages];
  __shared__ uint64_t received;
  uint8_t* shared = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(shared_raw) + 1023) & ~uintptr_t{1023});
  float* receive = reinterpret_cast<float*>(shared + kStages * stage_bytes<kBlockN>());
  cg::cluster_group cluster = cg::this_cluster();
  const int splits = static_cast<int>(cluster.num_blocks());
  const int split = static_cast<int>(cluster.block_rank());
  const int n0 = blockIdx.x * kBlockN;
  const int first = split * k_blocks / splits;
  const int count = (split + 1) * k_blocks / splits - first;
  const int my_begin = slice_begin(split, splits);
  const int my_rows = slice_begin(split + 1, splits) - my_begin;

  stamp(stamps, 0);
  if (threadIdx.x == 0) {
    // The tensor maps are kernel parameters: fetch them while the barriers are set up.
    asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(&in_map)) : "memory");
    asm volatile("prefetch.tensormap [%0];" ::"l"(reinterpret_cast<uint64_t>(&weight_map)) : "memory");
    for (int s = 0; s < kStages; ++s) barrier_init(&full[s], 1);
    barrier_init(&received, 1);
    barrier_expect_bytes(&received, static_cast<uint32_t>((splits - 1) * my_rows * kBlockN * 4));
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();
  auto load = [&](int i) {
    uint8_t* stage = shared + (i % kStages) * stage_bytes<kBlockN>();
    uint64_t* bar = &full[i % kStages];
    barrier_expect_bytes(bar, stage_bytes<kBlockN>());
    tma_load(stage, &in_map, bar, (first + i) * kBlockK, 0);
    tma_load(stage + kABytes, &weight_map, bar, (first + i) * kBlockK, n0);
  };
  if constexpr (kDependent) {
    if (threadIdx.x == 0) {
      for (int i = 0; i < min(kStages, count); ++i) {
        barrier_expect_bytes(&full[i], stage_bytes<kBlockN>());
        tma_load(shared + i * stage_bytes<kBlockN>() + kABytes, &weight_map, &full[i], (first + i) * kBlockK, n0);
      }
    }
    asm volatile("griddepcontrol.wait;" ::: "memory");
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
    if (threadIdx.x == 0) {
      for (int i = 0; i < min(kStages, count); ++i) {
        tma_load(shared + i * stage_bytes<kBlockN>(), &in_map, &full[i], (first + i) * kBlockK, 0);
      }
    }
  } else if (threadIdx.x == 0) {
    for (int i = 0; i < min(kStages, count); ++i) load(i);
  }

  float top[kBlockN / 2] = {};
  float bottom[kBlockN / 2] = {};
  for (int i = 0; i < count; ++i) {
    while (!barrier_try_wait(&full[i % kStages], (i / kStages) & 1)) {
    }
    if (i == 0) stamp(stamps, 1);
    const uint8_t* stage = shared + (i % kStages) * stage_bytes<kBlockN>();
    const uint64_t a_top = swizzled_tile_descriptor(stage);
    const uint64_t a_bottom = swizzled_tile_descriptor(stage + 64 * 128);
    const uint64_t b = swizzled_tile_descriptor(stage + kABytes);
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kBlockK / 16; ++kk) {
      wgmma_tile<kBlockN>(top, a_top + 2 * kk, b + 2 * kk);
      wgmma_tile<kBlockN>(bottom, a_bottom + 2 * kk, b + 2 * kk);
    }
    wgmma_commit();
    wgmma_wait<0>();
    __syncthreads();  // every warp's reads of the stage are done before it is refilled
    if (threadIdx.x == 0 && i + kStages < count) load(i + kStages);
  }
  stamp(stamps, 2);

  // The partial tile into the (consumed) stages, row-major [128][kBlockN]:
  // fragment element (half h, pair j, i) is row h*64 + warp*16 + lane/4 (+8
  // for i = 1), columns 8j + 2(lane % 4) (+1).
  float* partial = reinterpret_cast<float*>(shared);
  const int warp = threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
#pragma unroll
  for (int j = 0; j < kBlockN / 8; ++j) {
    const int col = 8 * j + (lane % 4) * 2;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int row = h * 64 + warp * 16 + lane / 4 + 8 * i;
        const float* acc = h == 0 ? top : bottom;
        *reinterpret_cast<float2*>(partial + row * kBlockN + col) =
            make_float2(acc[4 * j + 2 * i], acc[4 * j + 2 * i + 1]);
      }
    }
  }
  if (splits > 1) {
    // The bulk copies read the tile through the async proxy; and every
    // CTA's receive barrier must be armed before another pushes to it (a
    // CTA arms its own at entry, so one cluster barrier here covers both).
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    cluster.sync();
    if (threadIdx.x == 0) {
      for (int owner = 0; owner < splits; ++owner) {
        if (owner == split) continue;
        const int begin = slice_begin(owner, splits);
        const int owner_rows = slice_begin(owner + 1, splits) - begin;
        const int slot = split < owner ? split : split - 1;
        push_to(partial + begin * kBlockN, receive + slot * owner_rows * kBlockN, &received, owner,
                static_cast<uint32_t>(owner_rows * kBlockN * 4));
      }
      asm volatile("cp.async.bulk.commit_group;" ::: "memory");
    }
    while (!barrier_try_wait(&received, 0)) {
    }
  } else {
    __syncthreads();
  }
  stamp(stamps, 3);

  // Each thread keeps one 4-column group (kThreads is a multiple of
  // kBlockN / 4), so its bias is loaded once.
  constexpr int kQuads = kBlockN / 4;
  constexpr int kRowsPerPass = kThreads / kQuads;
  static_assert(kThreads % kQuads == 0, "a pass covers whole rows");
  const int col = 4 * (threadIdx.x % kQuads);
  const __half2 b01 = *reinterpret_cast<const __half2*>(bias + n0 + col);
  const __half2 b23 = *reinterpret_cast<const __half2*>(bias + n0 + col + 2);
  const int store_rows = min(my_rows, rows - my_begin);
#pragma unroll 4
  for (int r = threadIdx.x / kQuads; r < store_rows; r += kRowsPerPass) {
    float4 sum = *reinterpret_cast<const float4*>(partial + (my_begin + r) * kBlockN + col);
    for (int slot = 0; slot < splits - 1; ++slot) {
      const float4 v = *reinterpret_cast<const float4*>(receive + (slot * my_rows + r) * kBlockN + col);
      sum.x += v.x;
      sum.y += v.y;
      sum.z += v.z;
      sum.w += v.w;
    }
    float4 biased = make_float4(sum.x + __low2float(b01), sum.y + __high2float(b01), sum.z + __low2float(b23),
                                sum.w + __high2float(b23));
    if (gelu) {
      for (float* v : {&biased.x, &biased.y, &biased.z, &biased.w}) *v = 0.5f * *v * (1.f + erff(*v * 0.70710678f));
    }
    __half2 pair[2] = {__floats2half2_rn(biased.x, biased.y), __floats2half2_rn(biased.z, biased.w)};
    *reinterpret_cast<uint2*>(out + static_cast<size_t>(my_begin + r) * n + n0 + col) =
        *reinterpret_cast<const uint2*>(pair);
  }
  // This CTA's pushes must have read its tile before the CTA ends.
  if (splits > 1 && threadIdx.x == 0) asm volatile("cp.async.bulk.wait_group.read 0;" ::: "memory");
  stamp(stamps, 4);
}

}  // namespace fusedrt::probe
