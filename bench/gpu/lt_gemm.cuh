// cuBLASLt as the backend calls it for out[rows, n] = in[rows, k] .
// weight[n, k]^T (fp16, fp32 compute; in column-major terms out^T = W . in^T),
// for the probes that time a kernel of their own against it
// (wgmma_gemm.cu, gemm_layernorm.cu) or cuBLASLt's candidates against each
// other (branched_layer.cu, row_split_chains.cu, tuning_conditions.cu,
// lt_config_search.cu).
// Probe code only.
#pragma once

#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <tuple>
#include <utility>
#include <vector>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS

namespace fusedrt::probe {

// A GEMM as the backend sets one up, with leading dimensions: out[rows, n]
// (ld_out; fp16, or fp32 for partials) = in[rows, k] (ld_in) . weight[n, k]^T
// (ld_w), and an epilogue of none, BIAS or GELU_BIAS with an fp16 bias whose
// pointer is set per launch (CUBLASLT_MATMUL_DESC_BIAS_POINTER).
struct LtShape {
  int rows, n, k, ld_in, ld_w, ld_out;
  bool fp32_out;
  cublasLtEpilogue_t epilogue;
};

// A BERT GEMM the probes time: out[rows, n] = in[rows, k] . weight^T, with
// bias, and GELU after it where `gelu`.
struct NamedShape {
  const char* name;
  int rows, n, k;
  bool gelu;
};

// One of an algorithm's CUBLASLT_ALGO_CONFIG_* values (those that fit an int).
inline int lt_algo_config(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attribute) {
  int value = 0;
  size_t written = 0;
  cublasLtMatmulAlgoConfigGetAttribute(&algo, attribute, &value, sizeof(value), &written);
  return value;
}

// A NamedShape's fp16 operands on the device: in and weight (and bias,
// their first n values) uniform in [-0.5, 0.5), out unwritten.
struct GemmOperands {
  __half *in = nullptr, *weight = nullptr, *bias = nullptr, *out = nullptr;
};

inline GemmOperands make_gemm_operands(const NamedShape& s, fusedrt::test::Rng& rng) {
  const size_t in_count = static_cast<size_t>(s.rows) * s.k;
  const size_t weight_count = static_cast<size_t>(s.n) * s.k;
  std::vector<__half> host(std::max(in_count, weight_count));
  for (auto& h : host) h = __float2half(rng.uniform(-0.5f, 0.5f));
  GemmOperands g;
  CHECK_CUDA(cudaMalloc(&g.in, in_count * 2));
  CHECK_CUDA(cudaMalloc(&g.weight, weight_count * 2));
  CHECK_CUDA(cudaMalloc(&g.bias, static_cast<size_t>(s.n) * 2));
  CHECK_CUDA(cudaMalloc(&g.out, static_cast<size_t>(s.rows) * s.n * 2));
  CHECK_CUDA(cudaMemcpy(g.in, host.data(), in_count * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(g.weight, host.data(), weight_count * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(g.bias, host.data(), static_cast<size_t>(s.n) * 2, cudaMemcpyHostToDevice));
  return g;
}

inline void free_gemm_operands(GemmOperands& g) {
  for (__half* p : {g.in, g.weight, g.bias, g.out}) CHECK_CUDA(cudaFree(p));
  g = {};
}

struct LtProblem {
  cublasLtMatmulDesc_t desc;
  cublasLtMatrixLayout_t a, b, c;  // weight, in, out (C and D)
  std::vector<cublasLtMatmulHeuristicResult_t> candidates;  // the heuristic's, best first
};

// The descriptor, the layouts and up to max_candidates of the heuristic's
// algorithms within workspace_bytes; exits with status 2 when it offers none.
inline LtProblem make_lt_problem(cublasLtHandle_t handle, const LtShape& s, size_t workspace_bytes,
                                 int max_candidates) {
  LtProblem p;
  CHECK_CUBLAS(cublasLtMatmulDescCreate(&p.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &s.epilogue, sizeof(s.epilogue)));
  if (s.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    const cudaDataType_t bias_type = CUDA_R_16F;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                                sizeof(bias_type)));
  }
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p.a, CUDA_R_16F, s.k, s.n, s.ld_w));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p.b, CUDA_R_16F, s.k, s.rows, s.ld_in));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&p.c, s.fp32_out ? CUDA_R_32F : CUDA_R_16F, s.n, s.rows, s.ld_out));
  cublasLtMatmulPreference_t preference;
  CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&preference));
  CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                    &workspace_bytes, sizeof(workspace_bytes)));
  p.candidates.resize(static_cast<size_t>(max_candidates));
  int found = 0;
  CHECK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(handle, p.desc, p.a, p.b, p.c, p.c, preference, max_candidates,
                                              p.candidates.data(), &found));
  cublasLtMatmulPreferenceDestroy(preference);
  p.candidates.resize(static_cast<size_t>(found));
  if (found == 0) {
    std::fprintf(stderr, "no cuBLASLt algorithm for %d x %d x %d\n", s.rows, s.n, s.k);
    std::exit(2);
  }
  return p;
}

inline void destroy_lt_problem(LtProblem& p) {
  cublasLtMatrixLayoutDestroy(p.a);
  cublasLtMatrixLayoutDestroy(p.b);
  cublasLtMatrixLayoutDestroy(p.c);
  cublasLtMatmulDescDestroy(p.desc);
}

// out = in . weight^T (+ bias, which the epilogue needs) with one algorithm.
inline void run_lt_problem(cublasLtHandle_t handle, const LtProblem& p, const cublasLtMatmulAlgo_t& algo,
                           const __half* in, const __half* weight, const __half* bias, void* out, void* workspace,
                           size_t workspace_bytes, cudaStream_t stream) {
  if (bias != nullptr) {
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  const float one = 1.f, zero = 0.f;
  CHECK_CUBLAS(cublasLtMatmul(handle, p.desc, &one, weight, p.a, in, p.b, &zero, out, p.c, out, p.c, &algo, workspace,
                              workspace_bytes, stream));
}

// Orders LtShapes, for a map of the algorithm chosen per shape.
struct LtShapeLess {
  static auto tie(const LtShape& s) { return std::tie(s.rows, s.n, s.k, s.ld_in, s.ld_w, s.ld_out, s.fp32_out, s.epilogue); }
  bool operator()(const LtShape& x, const LtShape& y) const { return tie(x) < tie(y); }
};

// A shape's problem and the algorithm chosen for it, with its time.
struct LtChoice {
  LtProblem problem;
  cublasLtMatmulAlgo_t algo{};
  double us = 1e30;
};

// The candidate of `problem` that time_us(problem, algo) finds fastest, as
// the backend's tuner picks.
template <class TimeUs>
LtChoice fastest_candidate(LtProblem problem, TimeUs time_us) {
  LtChoice choice{std::move(problem)};
  for (const cublasLtMatmulHeuristicResult_t& result : choice.problem.candidates) {
    const double us = time_us(choice.problem, result.algo);
    if (us < choice.us) {
      choice.us = us;
      choice.algo = result.algo;
    }
  }
  return choice;
}

// count fp16 values uniform in [-scale, scale) on the device.
inline __half* random_device_halves(size_t count, float scale, fusedrt::test::Rng& rng) {
  std::vector<__half> host(count);
  for (auto& h : host) h = __float2half(rng.uniform(-scale, scale));
  __half* device = nullptr;
  CHECK_CUDA(cudaMalloc(&device, count * sizeof(__half)));
  CHECK_CUDA(cudaMemcpy(device, host.data(), count * sizeof(__half), cudaMemcpyHostToDevice));
  return device;
}

// One BERT layer's GEMM weights ([n, k]) and fp16 biases on the device, as
// the probes that time whole layers draw them (branched_layer.cu,
// row_split_chains.cu): uniform in +-0.05 (FFN2's in +-0.03), in this order.
struct BertGemmWeights {
  __half *qkv, *qkv_bias, *o, *ffn1, *ffn1_bias, *ffn2;
};

inline BertGemmWeights random_bert_gemm_weights(size_t hidden, size_t inter, fusedrt::test::Rng& rng) {
  BertGemmWeights w;
  w.qkv = random_device_halves(3 * hidden * hidden, 0.05f, rng);
  w.qkv_bias = random_device_halves(3 * hidden, 0.05f, rng);
  w.o = random_device_halves(hidden * hidden, 0.05f, rng);
  w.ffn1 = random_device_halves(inter * hidden, 0.05f, rng);
  w.ffn1_bias = random_device_halves(inter, 0.05f, rng);
  w.ffn2 = random_device_halves(hidden * inter, 0.03f, rng);
  return w;
}

// The heuristic's first algorithm for a shape, with a workspace of its own.
struct LtGemm {
  cublasLtHandle_t handle;
  LtProblem problem;
  void* workspace;
  size_t workspace_bytes = 32 << 20;
};

inline LtGemm make_lt_gemm(cublasLtHandle_t handle, const LtShape& shape) {
  LtGemm lt{handle, make_lt_problem(handle, shape, size_t{32} << 20, 1), nullptr};
  CHECK_CUDA(cudaMalloc(&lt.workspace, lt.workspace_bytes));
  return lt;
}

// out = in . weight^T (+ bias where the epilogue has one) (+ c when beta is
// 1: c may be out, or another [rows, n]).
inline void run_lt_gemm(const LtGemm& lt, const __half* in, const __half* weight, const __half* bias, float beta,
                        const __half* c, __half* out, cudaStream_t stream) {
  const LtProblem& p = lt.problem;
  if (bias != nullptr) {
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  const float one = 1.f;
  CHECK_CUBLAS(cublasLtMatmul(lt.handle, p.desc, &one, weight, p.a, in, p.b, &beta, c, p.c, out, p.c,
                              &p.candidates.front().algo, lt.workspace, lt.workspace_bytes, stream));
}

// Rewrites `count` halves in place (x -> x), as the op before a GEMM leaves
// its input in L2.
static __global__ void rewrite_in_place(__half* data, size_t count) {
  for (size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < count; i += size_t{gridDim.x} * blockDim.x) {
    data[i] = __hadd(data[i], __float2half(0.f));
  }
}

// What a GEMM meets in a run: its weight pushed out of L2 (flush_bytes, at
// least twice the L2, written over) and its input in L2 (rewritten). The
// probes time a GEMM after this and subtract this alone.
inline void queue_in_run_conditions(void* flush, size_t flush_bytes, __half* in, size_t in_count,
                                    cudaStream_t stream) {
  CHECK_CUDA(cudaMemsetAsync(flush, 0, flush_bytes, stream));
  rewrite_in_place<<<264, 256, 0, stream>>>(in, in_count);
  CHECK_CUDA(cudaGetLastError());
}

}  // namespace fusedrt::probe
