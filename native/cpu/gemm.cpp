// out[r, n] = act(sum_k in[r, k] · weight[n, k] + bias[n]).
//
// The output is cut into tiles (row block × column block) that the pool runs
// in parallel; each tile is multiplied (OpenBLAS, single-threaded, or the
// built-in kernel) and then gets its bias and activation while still in cache.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <mutex>

#include "fast_math.h"
#include "gemm_internal.h"
#include "ops.h"

#if FUSEDRT_HAVE_OPENBLAS
#include <cblas.h>
#endif

// The built-in kernel is compiled twice on x86-64 glibc with GCC, for AVX2+FMA
// and for the baseline, and the loader picks one (an ifunc) for the CPU it runs
// on, so a portable build still gets the wide registers. Not under
// ThreadSanitizer: its instrumented ifunc resolver runs before TSan is set up.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__) && \
    !defined(__SANITIZE_THREAD__)
#define FUSEDRT_GEMM_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FUSEDRT_GEMM_MULTIVERSION
#endif

namespace fusedrt::cpu {

namespace gemm_detail {

TileGrid plan_tiles(int64_t rows, int64_t n, int threads, int64_t max_tile_rows, int64_t row_granule,
                    int64_t col_granule, int64_t tiles_per_thread) {
  TileGrid grid{};
  grid.tile_rows = std::min(rows, ceil_div(ceil_div(rows, ceil_div(rows, max_tile_rows)), row_granule) * row_granule);
  grid.row_tiles = ceil_div(rows, grid.tile_rows);
  const int64_t wanted_col_tiles = std::max<int64_t>(1, ceil_div(threads * tiles_per_thread, grid.row_tiles));
  grid.tile_cols = std::min(n, ceil_div(ceil_div(n, wanted_col_tiles), col_granule) * col_granule);
  grid.col_tiles = ceil_div(n, grid.tile_cols);
  return grid;
}

namespace {

float gelu_tanh(float x) {
  constexpr float kSqrt2OverPi = 0.79788456080286536f;
  return 0.5f * x * (1.0f + std::tanh(kSqrt2OverPi * (x + 0.044715f * x * x * x)));
}

}  // namespace

// The bias and GELU (erf) loops vectorise (gelu_erf_fast has no libm call);
// the tanh activations stay scalar, they are rare (gelu_new, the pooler).
FUSEDRT_SIMD_CLONES
void epilogue(float* out, int64_t ld, int64_t rows, int64_t cols, const float* bias, Activation activation) {
  for (int64_t r = 0; r < rows; ++r) {
    float* row = out + r * ld;
    if (bias) {
      for (int64_t c = 0; c < cols; ++c) row[c] += bias[c];
    }
    switch (activation) {
      case Activation::kNone: break;
      case Activation::kGelu:
        for (int64_t c = 0; c < cols; ++c) row[c] = gelu_erf_fast(row[c]);
        break;
      case Activation::kGeluTanh:
        for (int64_t c = 0; c < cols; ++c) row[c] = gelu_tanh(row[c]);
        break;
      case Activation::kRelu:
        for (int64_t c = 0; c < cols; ++c) row[c] = row[c] > 0.0f ? row[c] : 0.0f;
        break;
      case Activation::kTanh:
        for (int64_t c = 0; c < cols; ++c) row[c] = std::tanh(row[c]);
        break;
    }
  }
}

}  // namespace gemm_detail

namespace {

using gemm_detail::epilogue;
using gemm_detail::plan_tiles;
using gemm_detail::run_tiles;
using gemm_detail::TileGrid;

#if FUSEDRT_HAVE_OPENBLAS

// Each tile is one single-threaded OpenBLAS call on a pool thread, so the
// pool size bounds the threads and concurrent engines do not oversubscribe.
// openblas_set_num_threads is process-wide: it also makes other OpenBLAS
// users in this process single-threaded.
constexpr int64_t kTileRows = 256;
constexpr int64_t kRowGranule = 16;
constexpr int64_t kColGranule = 16;
constexpr int64_t kTilesPerThread = 2;

void multiply_tile(const GemmParams& p, int64_t row0, int64_t rows, int64_t col0, int64_t cols) {
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(cols),
              static_cast<int>(p.k), 1.0f, p.in + row0 * p.k, static_cast<int>(p.k),
              p.weight + col0 * p.k, static_cast<int>(p.k), 0.0f, p.out + row0 * p.n + col0,
              static_cast<int>(p.n));
}

void prepare_implementation() {
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
}

#else

// Built-in kernel. Both operands are read along k, where they are contiguous
// (in is [rows, k], weight is [n, k]), so no packing is needed: a micro-tile
// of kMicroRows × kMicroCols outputs keeps one 8-wide accumulator per output
// (12 vector registers) and reduces them at the end of the k block.
constexpr int64_t kMicroRows = 4;
constexpr int64_t kMicroCols = 3;
// A k block of 256 keeps the weight rows of a micro-tile (3 KiB) in L1 while
// the tile's input rows (tile_rows × 1 KiB) stay in L2.
constexpr int64_t kBlockK = 256;
constexpr int64_t kTileRows = 128;
constexpr int64_t kRowGranule = kMicroRows;
constexpr int64_t kColGranule = kMicroCols;
constexpr int64_t kTilesPerThread = 3;

using Vec8 = float __attribute__((vector_size(32)));
// Loads through this type: unaligned, and allowed to alias float. (Helpers
// taking or returning Vec8 by value would change ABI between the clones.)
using UnalignedVec8 = float __attribute__((vector_size(32), aligned(4), may_alias));

inline const UnalignedVec8& load8(const float* p) { return *reinterpret_cast<const UnalignedVec8*>(p); }

inline float sum8(const Vec8& v) {
  return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

// out[rows, cols] (+)= in[rows, kc] · weight[cols, kc]ᵀ, where in and weight
// have row stride k and out has row stride ldo. Ragged edges reuse the last
// valid row/column pointer and drop the extra results, so one kernel covers
// every size.
FUSEDRT_GEMM_MULTIVERSION
void multiply_block(const float* in, const float* weight, int64_t k, int64_t kc, int64_t rows,
                    int64_t cols, float* out, int64_t ldo, bool accumulate) {
  for (int64_t c0 = 0; c0 < cols; c0 += kMicroCols) {
    const int64_t valid_cols = std::min(kMicroCols, cols - c0);
    const float* w[kMicroCols];
    for (int64_t j = 0; j < kMicroCols; ++j) w[j] = weight + (c0 + std::min(j, valid_cols - 1)) * k;
    for (int64_t r0 = 0; r0 < rows; r0 += kMicroRows) {
      const int64_t valid_rows = std::min(kMicroRows, rows - r0);
      const float* a[kMicroRows];
      for (int64_t i = 0; i < kMicroRows; ++i) a[i] = in + (r0 + std::min(i, valid_rows - 1)) * k;

      Vec8 acc[kMicroRows][kMicroCols] = {};
      int64_t q = 0;
      for (; q + 8 <= kc; q += 8) {
        const Vec8 w0 = load8(w[0] + q), w1 = load8(w[1] + q), w2 = load8(w[2] + q);
#pragma GCC unroll 4
        for (int64_t i = 0; i < kMicroRows; ++i) {
          const Vec8 x = load8(a[i] + q);
          acc[i][0] += x * w0;
          acc[i][1] += x * w1;
          acc[i][2] += x * w2;
        }
      }
      float sums[kMicroRows][kMicroCols];
      for (int64_t i = 0; i < kMicroRows; ++i) {
        for (int64_t j = 0; j < kMicroCols; ++j) sums[i][j] = sum8(acc[i][j]);
      }
      for (; q < kc; ++q) {
        for (int64_t i = 0; i < kMicroRows; ++i) {
          for (int64_t j = 0; j < kMicroCols; ++j) sums[i][j] += a[i][q] * w[j][q];
        }
      }
      for (int64_t i = 0; i < valid_rows; ++i) {
        float* row = out + (r0 + i) * ldo + c0;
        for (int64_t j = 0; j < valid_cols; ++j) row[j] = accumulate ? row[j] + sums[i][j] : sums[i][j];
      }
    }
  }
}

void multiply_tile(const GemmParams& p, int64_t row0, int64_t rows, int64_t col0, int64_t cols) {
  for (int64_t k0 = 0; k0 < p.k; k0 += kBlockK) {
    multiply_block(p.in + row0 * p.k + k0, p.weight + col0 * p.k + k0, p.k, std::min(kBlockK, p.k - k0),
                   rows, cols, p.out + row0 * p.n + col0, p.n, k0 > 0);
  }
}

void prepare_implementation() {}

#endif

}  // namespace

const char* gemm_implementation() {
#if FUSEDRT_HAVE_OPENBLAS
  return "openblas";
#else
  return "builtin";
#endif
}

void gemm(const GemmParams& p, ThreadPool& pool) {
  if (p.rows <= 0 || p.n <= 0) return;
  if (p.k <= 0) {
    // Empty sum: the result is act(bias), or act(0).
    for (int64_t r = 0; r < p.rows; ++r) std::fill(p.out + r * p.n, p.out + (r + 1) * p.n, 0.0f);
    epilogue(p.out, p.n, p.rows, p.n, p.bias, p.activation);
    return;
  }
  prepare_implementation();
  const TileGrid grid = plan_tiles(p.rows, p.n, pool.size(), kTileRows, kRowGranule, kColGranule, kTilesPerThread);
  run_tiles(p, grid, pool, [&](int64_t row0, int64_t rows, int64_t col0, int64_t cols) {
    multiply_tile(p, row0, rows, col0, cols);
  });
}

}  // namespace fusedrt::cpu
