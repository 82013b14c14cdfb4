// Pieces shared by the two GEMM sources (gemm.cpp: plain weights,
// gemm_packed.cpp: packed weights). Not part of the op API (ops.h).
#pragma once

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

}  // namespace fusedrt::cpu::gemm_detail
