// Twelve BERT-base layers at a given row count with cuBLASLt's GEMMs (the
// heuristic's first without a workspace, as the backend asks for fp16) and
// the stand-ins of layer_stand_ins.cuh: the buffers, each layer's own
// weights (170 MB: from DRAM, as in a run) and the chain queued on a
// stream. Shared by lt_programmatic_edge.cu and pdl_gemm_chain.cu. Probe
// code only, sm_90.
#pragma once

#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <vector>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, Rng
#include "layer_stand_ins.cuh"
#include "lt_gemm.cuh"

namespace fusedrt::probe {

// x is the layers' input and output; the rest their intermediates.
struct Chain {
  int rows;
  __half *x, *qkv, *mixed, *projected, *h, *inter, *ffn_out;
  std::vector<BertGemmWeights> weights;
  LtGemm qkv_gemm, o_gemm, ffn1_gemm, ffn2_gemm;
  bool trigger_late = false;
};

inline LtGemm workspace_free_gemm(cublasLtHandle_t handle, const LtShape& shape) {
  return LtGemm{handle, make_lt_problem(handle, shape, 0, 1), nullptr, 0};
}

inline Chain make_chain(cublasLtHandle_t handle, int rows, fusedrt::test::Rng& rng) {
  Chain c{rows};
  for (__half** p : {&c.x, &c.mixed, &c.projected, &c.h, &c.ffn_out}) {
    CHECK_CUDA(cudaMalloc(p, size_t{static_cast<size_t>(rows)} * kHidden * 2));
  }
  CHECK_CUDA(cudaMalloc(&c.qkv, size_t{static_cast<size_t>(rows)} * 3 * kHidden * 2));
  CHECK_CUDA(cudaMalloc(&c.inter, size_t{static_cast<size_t>(rows)} * kInter * 2));
  for (int l = 0; l < kLayers; ++l) c.weights.push_back(random_bert_gemm_weights(kHidden, kInter, rng));
  c.qkv_gemm = workspace_free_gemm(handle, {rows, 3 * kHidden, kHidden, kHidden, kHidden, 3 * kHidden, false,
                                            CUBLASLT_EPILOGUE_BIAS});
  c.o_gemm = workspace_free_gemm(handle, {rows, kHidden, kHidden, kHidden, kHidden, kHidden, false,
                                          CUBLASLT_EPILOGUE_DEFAULT});
  c.ffn1_gemm = workspace_free_gemm(handle, {rows, kInter, kHidden, kHidden, kHidden, kInter, false,
                                             CUBLASLT_EPILOGUE_GELU_BIAS});
  c.ffn2_gemm = workspace_free_gemm(handle, {rows, kHidden, kInter, kInter, kInter, kHidden, false,
                                             CUBLASLT_EPILOGUE_DEFAULT});
  return c;
}

// The stand-ins let the next kernel launch at their start, or after their
// stores with trigger_late; launched plainly, that changes nothing.
inline void enqueue_chain(const Chain& c, cudaStream_t stream) {
  const int blocks = (c.rows + 3) / 4;
  for (const auto& w : c.weights) {
    run_lt_gemm(c.qkv_gemm, c.x, w.qkv, w.qkv_bias, 0.f, nullptr, c.qkv, stream);
    mix_rows<<<blocks, 128, 0, stream>>>(c.qkv, c.mixed, c.rows, c.trigger_late);
    run_lt_gemm(c.o_gemm, c.mixed, w.o, nullptr, 0.f, nullptr, c.projected, stream);
    add_norm_rows<<<blocks, 128, 0, stream>>>(c.projected, c.x, c.h, c.rows, c.trigger_late);
    run_lt_gemm(c.ffn1_gemm, c.h, w.ffn1, w.ffn1_bias, 0.f, nullptr, c.inter, stream);
    run_lt_gemm(c.ffn2_gemm, c.inter, w.ffn2, nullptr, 0.f, nullptr, c.ffn_out, stream);
    add_norm_rows<<<blocks, 128, 0, stream>>>(c.ffn_out, c.h, c.x, c.rows, c.trigger_late);
  }
}

}  // namespace fusedrt::probe
