// Pieces shared by the two GEMM sources (gemm.cpp: plain weights,
// gemm_packed.cpp: packed weights). Not part of the op API (ops.h).
#pragma once

#include <algorithm>
#include <cstdint>

#include "ops.h"

namespace fusedrt::cpu::gemm_detail {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct TileGrid {
  int64_t tile_rows;
  int64_t tile_cols;
  int64_t row_tiles;
  int64_t col_tiles;
};

// Even row blocks of at most max_tile_rows (in multiples of row_granule);
// the columns are split into even blocks (multiples of col_granule) until
// there are about tiles_per_thread tiles per thread.
TileGrid plan_tiles(int64_t rows, int64_t n, int threads, int64_t max_tile_rows, int64_t row_granule,
                    int64_t col_granule, int64_t tiles_per_thread);

// Bias and activation on a [rows, cols] tile with leading dimension ld.
void epilogue(float* out, int64_t ld, int64_t rows, int64_t cols, const float* bias, Activation activation);

// Runs every tile of the grid on the pool: multiply(row0, rows, col0, cols)
// fills that part of p.out, then the epilogue runs on it while it is in cache.
template <class Multiply>
void run_tiles(const GemmParams& p, const TileGrid& grid, ThreadPool& pool, const Multiply& multiply) {
  pool.parallel_for(grid.row_tiles * grid.col_tiles, 1, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t row0 = (tile / grid.col_tiles) * grid.tile_rows;
      const int64_t col0 = (tile % grid.col_tiles) * grid.tile_cols;
      const int64_t rows = std::min(grid.tile_rows, p.rows - row0);
      const int64_t cols = std::min(grid.tile_cols, p.n - col0);
      multiply(row0, rows, col0, cols);
      const float* bias = p.bias ? p.bias + col0 : nullptr;
      epilogue(p.out + row0 * p.n + col0, p.n, rows, cols, bias, p.activation);
    }
  });
}

}  // namespace fusedrt::cpu::gemm_detail
