// Configurations of cuBLASLt's algorithms that its heuristic does not offer
// (docs/cuda.md, "GEMM tactics"): for small GEMMs the heuristic returns one
// or two algorithms, while the library holds many tile shapes, pipeline
// depths and split-K counts that run the same product. Only for files built
// with FUSEDRT_WITH_CUDA.
#pragma once

#include <cublasLt.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace fusedrt {

// One GEMM as cuBLASLt sees it, with the minimum alignment of its pointers.
struct CublasLtProblem {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, c;  // C is also D
  cublasComputeType_t compute;
  cudaDataType_t data_type;        // of A, B, C and D; the scale type is fp32
  uint32_t align_a, align_b, align_c;
  size_t max_workspace_bytes;
};

// Every configuration of every algorithm of the problem's types that
// cublasLtMatmulAlgoCheck accepts (tile, stages, split-K and its reduction;
// the rest at their defaults), best estimate first, at most max_count. The
// estimate is cuBLASLt's own wave count: a configuration that leaves SMs idle
// (under one wave) or runs a mostly empty last wave ranks low. Whatever the
// library refuses is skipped, so this never fails.
std::vector<cublasLtMatmulAlgo_t> enumerate_cublaslt_configs(cublasLtHandle_t lt, const CublasLtProblem& problem,
                                                             size_t max_count);

}  // namespace fusedrt
