#include <cstring>

#include "ops.h"

namespace fusedrt::cpu {

void gather_rows(const GatherRowsParams& p, ThreadPool& pool) {
  const size_t row_bytes = static_cast<size_t>(p.cols) * sizeof(float);
  pool.parallel_for(p.rows_out, 32, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      std::memcpy(p.out + r * p.cols, p.in + static_cast<int64_t>(p.row_index[r]) * p.cols, row_bytes);
    }
  });
}

}  // namespace fusedrt::cpu
