// gemm on a weight packed once at load (pack_gemm_weight): per k block, each
// packed weight panel block (kBlockK × 32 floats, 32 KiB) stays in L1 while
// the micro-kernel walks down the tile's rows. Unlike cblas_sgemm on the
// plain weight, nothing is repacked per call. The input rows are read where
// they are (one broadcast per row and k step): packing them as well measured
// slower, most of all for n = 384, where each tile has few panels to share
// the packing cost.
#include <algorithm>

#include "gemm_internal.h"
#include "ops.h"

#if (defined(__GNUC__) || defined(__clang__)) && defined(__x86_64__)
#define FUSEDRT_GEMM_X86 1
#include <immintrin.h>
#define FUSEDRT_TARGET_AVX512 __attribute__((target("avx512f")))
#define FUSEDRT_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define FUSEDRT_GEMM_X86 0
#endif

namespace fusedrt::cpu {

namespace {

constexpr int64_t kPanel = kGemmPanelWidth;
// 256 k steps: the weight panel block (32 KiB) fits L1 next to the micro-
// kernel's input rows (12 KiB with 12 rows).
constexpr int64_t kBlockK = 256;
// Up to 192 rows per tile: a 128-token sequence is one row tile, so the pool
// splits the columns and each thread streams only its share of the weight.
constexpr int64_t kRowBlocksPerTile = 16;
constexpr int64_t kTilesPerThread = 2;

// Rows per micro-kernel call.
int64_t kernel_rows(GemmKernel kernel) {
  switch (kernel) {
    case GemmKernel::kAvx512: return 12;  // 24 accumulators of 16 floats
    case GemmKernel::kAvx2: return 6;     // 12 accumulators of 8 floats per half panel
    default: return 4;
  }
}

// Micro-kernel contract: c[i, j] (+)= Σ_q a[i · lda + q] · b[q · width + j]
// for i < rows, j < width, q < kc; c has row stride ldc. a is the input
// rows at the k block, b a packed weight panel block.
struct MicroTile {
  const float* a;
  int64_t lda;
  const float* b;
  int64_t width;
  int64_t kc;
  int64_t rows;
  float* c;
  int64_t ldc;
  bool accumulate;
};

// Any width and row count; the inner loop over the panel's columns
// vectorises in whatever ISA the build targets.
template <bool kFullPanel>
void micro_generic(const MicroTile& t) {
  const int64_t width = kFullPanel ? kPanel : t.width;
  for (int64_t i = 0; i < t.rows; ++i) {
    float acc[kPanel] = {};
    for (int64_t q = 0; q < t.kc; ++q) {
      const float a = t.a[i * t.lda + q];
      const float* b = t.b + q * width;
      for (int64_t j = 0; j < width; ++j) acc[j] += a * b[j];
    }
    float* c = t.c + i * t.ldc;
    for (int64_t j = 0; j < width; ++j) c[j] = t.accumulate ? c[j] + acc[j] : acc[j];
  }
}

#if FUSEDRT_GEMM_X86

// 12 rows × 32 columns in 24 zmm accumulators; per k step two panel loads
// and one broadcast per row (a load, no shuffle uop).
template <int kRows>
FUSEDRT_TARGET_AVX512 void micro_avx512(const MicroTile& t) {
  __m512 acc0[kRows], acc1[kRows];
#pragma GCC unroll 12
  for (int i = 0; i < kRows; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();
  const float* a = t.a;
  const float* b = t.b;
  for (int64_t q = 0; q < t.kc; ++q, ++a, b += kPanel) {
    const __m512 b0 = _mm512_loadu_ps(b);
    const __m512 b1 = _mm512_loadu_ps(b + 16);
#pragma GCC unroll 12
    for (int i = 0; i < kRows; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * t.lda]);
      acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < kRows; ++i) {
    float* c = t.c + i * t.ldc;
    if (t.accumulate) {
      acc0[i] = _mm512_add_ps(acc0[i], _mm512_loadu_ps(c));
      acc1[i] = _mm512_add_ps(acc1[i], _mm512_loadu_ps(c + 16));
    }
    _mm512_storeu_ps(c, acc0[i]);
    _mm512_storeu_ps(c + 16, acc1[i]);
  }
}

// 6 rows × 16 columns in 12 ymm accumulators, once per half panel.
template <int kRows>
FUSEDRT_TARGET_AVX2 void micro_avx2(const MicroTile& t) {
  for (int64_t half = 0; half < kPanel; half += 16) {
    __m256 acc0[kRows], acc1[kRows];
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) acc0[i] = acc1[i] = _mm256_setzero_ps();
    const float* a = t.a;
    const float* b = t.b + half;
    for (int64_t q = 0; q < t.kc; ++q, ++a, b += kPanel) {
      const __m256 b0 = _mm256_loadu_ps(b);
      const __m256 b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
      for (int i = 0; i < kRows; ++i) {
        const __m256 ai = _mm256_broadcast_ss(a + i * t.lda);
        acc0[i] = _mm256_fmadd_ps(ai, b0, acc0[i]);
        acc1[i] = _mm256_fmadd_ps(ai, b1, acc1[i]);
      }
    }
#pragma GCC unroll 6
    for (int i = 0; i < kRows; ++i) {
      float* c = t.c + i * t.ldc + half;
      if (t.accumulate) {
        acc0[i] = _mm256_add_ps(acc0[i], _mm256_loadu_ps(c));
        acc1[i] = _mm256_add_ps(acc1[i], _mm256_loadu_ps(c + 8));
      }
      _mm256_storeu_ps(c, acc0[i]);
      _mm256_storeu_ps(c + 8, acc1[i]);
    }
  }
}

// The row count is a template argument so that the accumulators stay in
// registers; entry r - 1 handles r rows.
using MicroFn = void (*)(const MicroTile&);
constexpr MicroFn kAvx512ByRows[] = {micro_avx512<1>, micro_avx512<2>,  micro_avx512<3>,  micro_avx512<4>,
                                     micro_avx512<5>, micro_avx512<6>,  micro_avx512<7>,  micro_avx512<8>,
                                     micro_avx512<9>, micro_avx512<10>, micro_avx512<11>, micro_avx512<12>};
constexpr MicroFn kAvx2ByRows[] = {micro_avx2<1>, micro_avx2<2>, micro_avx2<3>,
                                   micro_avx2<4>, micro_avx2<5>, micro_avx2<6>};

#endif

void run_micro(GemmKernel kernel, const MicroTile& t) {
  if (t.width != kPanel) return micro_generic<false>(t);
#if FUSEDRT_GEMM_X86
  if (kernel == GemmKernel::kAvx512) return kAvx512ByRows[t.rows - 1](t);
  if (kernel == GemmKernel::kAvx2) return kAvx2ByRows[t.rows - 1](t);
#endif
  micro_generic<true>(t);
}

void multiply_tile(const GemmParams& p, const PackedWeight& w, GemmKernel kernel, int64_t row0, int64_t rows,
                   int64_t col0, int64_t cols) {
  const int64_t block_rows = kernel_rows(kernel);
  for (int64_t k0 = 0; k0 < p.k; k0 += kBlockK) {
    const int64_t kc = std::min(kBlockK, p.k - k0);
    // col0 is a multiple of the panel width (the tile column granule).
    for (int64_t c0 = col0; c0 < col0 + cols; c0 += kPanel) {
      const int64_t width = std::min(kPanel, p.n - c0);
      MicroTile t{};
      t.lda = p.k;
      t.b = w.data + c0 * p.k + k0 * width;
      t.width = width;
      t.kc = kc;
      t.ldc = p.n;
      t.accumulate = k0 > 0;
      for (int64_t r0 = 0; r0 < rows; r0 += block_rows) {
        t.a = p.in + (row0 + r0) * p.k + k0;
        t.rows = std::min(block_rows, rows - r0);
        t.c = p.out + (row0 + r0) * p.n + c0;
        run_micro(kernel, t);
      }
    }
  }
}

}  // namespace

PackedWeight pack_gemm_weight(const float* weight, int64_t n, int64_t k, float* packed) {
  for (int64_t c0 = 0; c0 < n; c0 += kPanel) {
    const int64_t width = std::min(kPanel, n - c0);
    float* panel = packed + c0 * k;
    for (int64_t j = 0; j < width; ++j) {
      const float* row = weight + (c0 + j) * k;
      for (int64_t q = 0; q < k; ++q) panel[q * width + j] = row[q];
    }
  }
  return PackedWeight{packed, n, k};
}

GemmKernel gemm_best_kernel() {
#if FUSEDRT_GEMM_X86
  static const GemmKernel best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return GemmKernel::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GemmKernel::kAvx2;
    return GemmKernel::kBaseline;
  }();
  return best;
#else
  return GemmKernel::kBaseline;
#endif
}

const char* gemm_kernel_name(GemmKernel kernel) {
  switch (kernel) {
    case GemmKernel::kBaseline: return "baseline";
    case GemmKernel::kAvx2: return "avx2";
    case GemmKernel::kAvx512: return "avx512";
    case GemmKernel::kBest: return gemm_kernel_name(gemm_best_kernel());
  }
  return "unknown";
}

void gemm_packed(const GemmParams& p, const PackedWeight& w, ThreadPool& pool, GemmKernel kernel) {
  if (p.rows <= 0 || p.n <= 0) return;
  if (p.k <= 0) {
    for (int64_t r = 0; r < p.rows; ++r) std::fill(p.out + r * p.n, p.out + (r + 1) * p.n, 0.0f);
    gemm_detail::epilogue(p.out, p.n, p.rows, p.n, p.bias, p.activation);
    return;
  }
  if (kernel == GemmKernel::kBest) kernel = gemm_best_kernel();
  const int64_t block_rows = kernel_rows(kernel);
  const gemm_detail::TileGrid grid = gemm_detail::plan_tiles(
      p.rows, p.n, pool.size(), block_rows * kRowBlocksPerTile, block_rows, kPanel, kTilesPerThread);
  gemm_detail::run_tiles(p, grid, pool, [&](int64_t row0, int64_t rows, int64_t col0, int64_t cols) {
    multiply_tile(p, w, kernel, row0, rows, col0, cols);
  });
}

}  // namespace fusedrt::cpu
