// mean_rows (cuda/mean_rows.cu) against the CPU op (native/cpu/mean_rows.cpp)
// on the same inputs (fp16 ones rounded first), fp32 and fp16: sequences of
// 1 to 300 rows and empty ones (a bucket's padding sequences, which must
// come out as zeros), widths of one block's columns, more, and an odd one,
// and 70,000 short sequences (more than a grid's y dimension holds).
// Then BERT-base's 32 x 128 x 768 (fp16) is timed in a CUDA graph. Exit
// status 0 only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/mean_rows_test cuda/tests/mean_rows_test.cu cuda/mean_rows.cu native/cpu/mean_rows.cpp native/cpu/thread_pool.cpp
//   /tmp/mean_rows_test
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "test_support.cuh"
#include "../mean_rows.cuh"
#include "cpu/ops.h"
#include "cpu/thread_pool.h"

namespace {

using fusedrt::gpu::MeanRowsArgs;
using fusedrt::test::DeviceBuffer;
using fusedrt::test::Rng;

int g_failures = 0;

// The GPU's fp32 sums run in another order than the CPU's: within 1e-5 of
// the mean's scale; fp16 outputs also round, by half an ulp.
template <class T>
void check(fusedrt::cpu::ThreadPool& pool, Rng& rng, const std::vector<int32_t>& cu_seqlens, int64_t cols) {
  const int64_t sequences = static_cast<int64_t>(cu_seqlens.size()) - 1;
  const int64_t tokens = cu_seqlens.back();
  std::vector<T> in(static_cast<size_t>(tokens * cols));
  std::vector<float> in_float(in.size());
  for (size_t i = 0; i < in.size(); ++i) {
    in[i] = static_cast<T>(rng.uniform(-3.f, 3.f));
    in_float[i] = static_cast<float>(in[i]);
  }
  std::vector<float> want(static_cast<size_t>(sequences * cols));
  fusedrt::cpu::mean_rows({in_float.data(), cu_seqlens.data(), sequences, cols, want.data()}, pool);

  DeviceBuffer<T> d_in(in.size()), d_out(want.size());
  DeviceBuffer<int32_t> d_cu(cu_seqlens.size());
  CHECK_CUDA(cudaMemcpy(d_in.ptr, in.data(), in.size() * sizeof(T), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(d_cu.ptr, cu_seqlens.data(), cu_seqlens.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemset(d_out.ptr, 0xff, want.size() * sizeof(T)));  // NaN everywhere first
  CHECK_CUDA(fusedrt::gpu::mean_rows(MeanRowsArgs<T>{d_in.ptr, d_cu.ptr, sequences, cols, d_out.ptr}, nullptr));
  std::vector<T> got(want.size());
  CHECK_CUDA(cudaMemcpy(got.data(), d_out.ptr, got.size() * sizeof(T), cudaMemcpyDeviceToHost));

  const double half_ulp = sizeof(T) == 2 ? 1.0 / 2048 : 0.0;
  double worst = 0;  // error over its bound
  bool padding_zero = true;
  for (int64_t b = 0; b < sequences; ++b) {
    for (int64_t c = 0; c < cols; ++c) {
      const double g = static_cast<float>(got[b * cols + c]), w = want[b * cols + c];
      if (cu_seqlens[b + 1] == cu_seqlens[b]) padding_zero = padding_zero && g == 0.0;
      const double error = std::isnan(g) ? INFINITY : std::fabs(g - w);
      worst = std::max(worst, error / (1e-5 * (1 + std::fabs(w)) + half_ulp * std::fabs(w)));
    }
  }
  const bool ok = worst <= 1.0 && padding_zero;
  if (!ok) ++g_failures;
  std::printf("%s mean_rows %s sequences=%lld cols=%lld: error %.2f of its bound%s\n", ok ? "PASS" : "FAIL",
              sizeof(T) == 2 ? "fp16" : "fp32", static_cast<long long>(sequences), static_cast<long long>(cols), worst,
              padding_zero ? "" : ", padding not zero");
}

}  // namespace

int main() {
  fusedrt::cpu::ThreadPool pool(4);
  Rng rng{20261122};
  const std::vector<int32_t> mixed = {0, 1, 129, 129, 429, 486, 486};  // 1, 128, 0, 300, 57, 0 rows
  for (const int64_t cols : {768, 64, 37}) {
    check<float>(pool, rng, mixed, cols);
    check<__half>(pool, rng, mixed, cols);
  }
  // More sequences than a grid's y dimension takes (65535): one or two rows each.
  std::vector<int32_t> many = {0};
  for (int b = 0; b < 70000; ++b) many.push_back(many.back() + 1 + b % 2);
  check<__half>(pool, rng, many, 8);

  // BERT-base, 32 sequences of 128 tokens, fp16.
  const int64_t sequences = 32, cols = 768, tokens = sequences * 128;
  std::vector<int32_t> cu_seqlens(sequences + 1);
  for (int64_t b = 0; b <= sequences; ++b) cu_seqlens[b] = static_cast<int32_t>(b * 128);
  DeviceBuffer<__half> in(static_cast<size_t>(tokens * cols)), out(static_cast<size_t>(sequences * cols));
  DeviceBuffer<int32_t> cu(cu_seqlens.size());
  CHECK_CUDA(cudaMemset(in.ptr, 0, tokens * cols * sizeof(__half)));
  CHECK_CUDA(cudaMemcpy(cu.ptr, cu_seqlens.data(), cu_seqlens.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  const double us = fusedrt::test::median_us(
      [&](cudaStream_t stream) {
        CHECK_CUDA(fusedrt::gpu::mean_rows(MeanRowsArgs<__half>{in.ptr, cu.ptr, sequences, cols, out.ptr}, stream));
      },
      20, 50);
  std::printf("mean_rows fp16 32 x 128 x 768: %.2f us per launch (%.0f GB/s)\n", us,
              tokens * cols * 2 / (us * 1e3));
  std::printf("%s\n", g_failures == 0 ? "OK" : "FAILED");
  return g_failures == 0 ? 0 : 1;
}
