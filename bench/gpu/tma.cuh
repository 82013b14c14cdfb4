// What the Hopper probes (wgmma_gemm.cu, gemm_layernorm.cu, the tail probes
// persistent_tail.cu and mlm_tail.cu) share: mbarrier waits, TMA loads of
// 2-D tiles and bulk copies of contiguous bytes, and the host's tensor maps
// for a row-major fp16 matrix. Probe code only, for sm_90;
// cuTensorMapEncodeTiled comes from the runtime's driver entry point.
#pragma once

#include <cuda.h>
#include <cudaTypedefs.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA
#include "../../cuda/wgmma.cuh"               // shared_address

namespace fusedrt::probe {

using fusedrt::gpu::shared_address;

__device__ __forceinline__ void barrier_init(uint64_t* bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(count));
}

__device__ __forceinline__ void barrier_expect_bytes(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ bool barrier_try_wait(uint64_t* bar, uint32_t parity) {
  uint32_t done;
  asm volatile(
      "{\n.reg .pred ready;\nmbarrier.try_wait.parity.shared::cta.b64 ready, [%1], %2;\nselp.u32 %0, 1, 0, ready;\n}\n"
      : "=r"(done)
      : "r"(shared_address(bar)), "r"(parity)
      : "memory");
  return done != 0;
}

__device__ __forceinline__ void barrier_wait(uint64_t* bar, uint32_t parity) {
  while (!barrier_try_wait(bar, parity)) {
  }
}

// Box (x = column, y = row) of `map` into dst; completes on bar.
__device__ __forceinline__ void tma_load(void* dst, const CUtensorMap* map, uint64_t* bar, int x, int y) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4}], [%2];" ::"r"(
          shared_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(shared_address(bar)), "r"(x), "r"(y)
      : "memory");
}

// `bytes` (a multiple of 16, both ends 16-byte aligned) from global to
// shared memory, in copies of at most 32 KB so that several are in flight;
// completes on bar, which must expect them (barrier_expect_bytes, once for
// all of its copies).
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, int64_t bytes, uint64_t* bar) {
  for (int64_t done = 0; done < bytes; done += 32768) {
    const auto size = static_cast<uint32_t>(min(int64_t{32768}, bytes - done));
    asm volatile(
        "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
            shared_address(static_cast<char*>(dst) + done)),
        "l"(static_cast<const char*>(src) + done), "r"(size), "r"(shared_address(bar))
        : "memory");
  }
}

inline PFN_cuTensorMapEncodeTiled_v12000 encode_tiled() {
  static PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found{};
    CHECK_CUDA(cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found));
    if (found != cudaDriverEntryPointSuccess || f == nullptr) {
      std::fprintf(stderr, "cuTensorMapEncodeTiled not found\n");
      std::exit(2);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// A row-major fp16 matrix [rows, cols] read in boxes of box_rows x box_cols:
// 64 columns (one 128-byte row) with the 128-byte swizzle wgmma reads, any
// other width unswizzled.
inline CUtensorMap tile_map(const __half* base, int rows, int cols, int box_rows, int box_cols = 64) {
  CUtensorMap map;
  const cuuint64_t dims[2] = {static_cast<cuuint64_t>(cols), static_cast<cuuint64_t>(rows)};
  const cuuint64_t strides[1] = {static_cast<cuuint64_t>(cols) * sizeof(__half)};
  const cuuint32_t box[2] = {static_cast<cuuint32_t>(box_cols), static_cast<cuuint32_t>(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = encode_tiled()(
      &map, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 2, const_cast<__half*>(base), dims, strides, box, element_strides,
      CU_TENSOR_MAP_INTERLEAVE_NONE, box_cols == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_NONE,
      CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS) {
    std::fprintf(stderr, "cuTensorMapEncodeTiled failed: %d\n", static_cast<int>(r));
    std::exit(2);
  }
  return map;
}

}  // namespace fusedrt::probe
