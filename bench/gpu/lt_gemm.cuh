// cuBLASLt as the backend calls it for out[rows, n] = in[rows, k] .
// weight[n, k]^T (fp16, fp32 compute; in column-major terms out^T = W . in^T),
// for the probes that time a kernel of their own against it
// (wgmma_gemm.cu, gemm_layernorm.cu). Probe code only.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdio>
#include <cstdlib>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS

namespace fusedrt::probe {

struct LtGemm {
  cublasLtHandle_t handle;
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, c;
  cublasLtMatmulAlgo_t algo;
  void* workspace;
  size_t workspace_bytes = 32 << 20;
};

// The descriptor, layouts and the heuristic's first algorithm; `configure`
// sets the descriptor's epilogue attributes (if any) before the heuristic
// is asked. Exits with status 2 when cuBLASLt offers nothing.
template <class Configure>
LtGemm make_lt_gemm(cublasLtHandle_t handle, int rows, int n, int k, Configure&& configure) {
  LtGemm lt{};
  lt.handle = handle;
  CHECK_CUBLAS(cublasLtMatmulDescCreate(&lt.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(lt.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  configure(lt.desc);
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&lt.a, CUDA_R_16F, k, n, k));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&lt.b, CUDA_R_16F, k, rows, k));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&lt.c, CUDA_R_16F, n, rows, n));
  CHECK_CUDA(cudaMalloc(&lt.workspace, lt.workspace_bytes));
  cublasLtMatmulPreference_t preference;
  CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&preference));
  CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &lt.workspace_bytes, sizeof(lt.workspace_bytes)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  CHECK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(handle, lt.desc, lt.a, lt.b, lt.c, lt.c, preference, 1, &result, &found));
  cublasLtMatmulPreferenceDestroy(preference);
  if (found == 0) {
    std::fprintf(stderr, "no cuBLASLt algorithm\n");
    std::exit(2);
  }
  lt.algo = result.algo;
  return lt;
}

// out = in . weight^T (+ c when beta is 1: c may be out, or another [rows, n]).
inline void run_lt_gemm(const LtGemm& lt, const __half* in, const __half* weight, float beta, const __half* c,
                        __half* out, cudaStream_t stream) {
  const float one = 1.f;
  CHECK_CUBLAS(cublasLtMatmul(lt.handle, lt.desc, &one, weight, lt.a, in, lt.b, &beta, c, lt.c, out, lt.c, &lt.algo,
                              lt.workspace, lt.workspace_bytes, stream));
}

}  // namespace fusedrt::probe
