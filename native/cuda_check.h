// CUDA and cuBLAS statuses as FusedErrors: E_OOM for allocation failures,
// E_BACKEND otherwise, with the library's own error name and text. Only for
// files built with FUSEDRT_WITH_CUDA.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <string>

#include "errors.h"

namespace fusedrt {

inline void check(cudaError_t status, const std::string& what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so the engine stays usable
  const ErrorCode code = status == cudaErrorMemoryAllocation ? ErrorCode::kOom : ErrorCode::kBackend;
  fail(code, "CUDA error in " + what + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

inline void check(cublasStatus_t status, const std::string& what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const ErrorCode code = status == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::kOom : ErrorCode::kBackend;
  fail(code, "cuBLASLt error in " + what + ": " + cublasGetStatusName(status) + " (" + cublasGetStatusString(status) + ")");
}

}  // namespace fusedrt
