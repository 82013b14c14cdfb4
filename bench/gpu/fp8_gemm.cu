// How much would FP8 (E4M3) weights and activations take off BERT-base's
// GEMMs, against the fp16 GEMMs the backend runs now? Issue 3's 32 x 128 in
// 1.2 ms needs the GEMMs (1.18 ms of the 1.57 ms run, at cuBLASLt's fp16
// rates) about halved, and Hopper's FP8 tensor cores run twice fp16's rate.
// This probe answers it before any plan carries FP8: for each of BERT-base's
// four GEMM shapes and 128, 4096 and 49152 rows it times cuBLASLt
//  - fp16: weight, input and output fp16, bias (and GELU) in the epilogue,
//    as cuda_gemm.cpp calls it;
//  - fp8: weight and input E4M3 (the weight scaled per tensor to E4M3's
//    range, the input unscaled), fp32 accumulation, fp16 output with the
//    same epilogue; with cuBLASLt's fast accumulation off and on;
//  - fp8 into fp8: the same with an E4M3 output (what FFN1 would hand FFN2).
// Each is the best of up to 8 heuristic candidates, timed per launch in CUDA
// graphs of 20 (median of 30), and checked against the fp16 result (largest
// error relative to the largest |output|; FP8's 3-bit mantissa makes a few
// percent expected, a layout mistake makes ~100%).
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90a,code=sm_90a bench/gpu/fp8_gemm.cu -lcublasLt -o /tmp/fp8_gemm
//   /tmp/fp8_gemm
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS, median_us

using fusedrt::test::median_us;

namespace {

struct Shape {
  const char* name;
  int n, k;
  bool gelu;
};

struct Kind {
  const char* name;
  cudaDataType_t operands;  // weight and input
  cudaDataType_t out;
  bool fast_accum;
};

constexpr size_t kWorkspaceBytes = 32 << 20;

struct Gemm {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr, d = nullptr;
  std::vector<cublasLtMatmulAlgo_t> algos;
  cublasStatus_t status;
};

void destroy(const Gemm& g) {
  cublasLtMatrixLayoutDestroy(g.a);
  cublasLtMatrixLayoutDestroy(g.b);
  cublasLtMatrixLayoutDestroy(g.c);
  cublasLtMatrixLayoutDestroy(g.d);
  cublasLtMatmulDescDestroy(g.desc);
}

uint64_t g_seed = 20261122;

float uniform() {
  g_seed ^= g_seed << 13;
  g_seed ^= g_seed >> 7;
  g_seed ^= g_seed << 17;
  return static_cast<float>(g_seed >> 40) / 8388608.f - 1.f;
}

// out = act(in . weight^T + bias) in the backend's column-major view:
// out^T = W . in^T, W transposed (the TN layout FP8 requires).
Gemm make_gemm(cublasLtHandle_t lt, const Shape& s, int rows, const Kind& kind, const void* bias,
               cudaDataType_t bias_type, bool epilogue_on, const float* weight_scale, const float* one) {
  Gemm g;
  CHECK_CUBLAS(cublasLtMatmulDescCreate(&g.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t transpose = CUBLAS_OP_T;
  CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)));
  if (epilogue_on) {
    const cublasLtEpilogue_t epilogue = s.gelu ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)));
    CHECK_CUBLAS(
        cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type, sizeof(bias_type)));
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)));
  }
  if (kind.operands == CUDA_R_8F_E4M3) {
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_A_SCALE_POINTER, &weight_scale,
                                                sizeof(weight_scale)));
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_B_SCALE_POINTER, &one, sizeof(one)));
    const int8_t fast = kind.fast_accum ? 1 : 0;
    CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)));
    if (kind.out == CUDA_R_8F_E4M3)
      CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(g.desc, CUBLASLT_MATMUL_DESC_D_SCALE_POINTER, &one, sizeof(one)));
  }
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&g.a, kind.operands, s.k, s.n, s.k));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&g.b, kind.operands, s.k, rows, s.k));
  // C is not read (beta 0) but its type must be fp16 when D is FP8.
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&g.c, CUDA_R_16F, s.n, rows, s.n));
  CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&g.d, kind.out, s.n, rows, s.n));
  cublasLtMatmulPreference_t preference;
  CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&preference));
  const size_t workspace = kWorkspaceBytes;
  CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace,
                                                    sizeof(workspace)));
  cublasLtMatmulHeuristicResult_t results[8];
  int found = 0;
  g.status = cublasLtMatmulAlgoGetHeuristic(lt, g.desc, g.a, g.b, g.c, g.d, preference, 8, results, &found);
  cublasLtMatmulPreferenceDestroy(preference);
  if (g.status == CUBLAS_STATUS_SUCCESS)
    for (int i = 0; i < found; ++i) g.algos.push_back(results[i].algo);
  return g;
}

struct Buffers {
  void* weight;
  void* in;
  void* out;
  void* unread_c;  // beta is 0; a C apart from D keeps cuBLASLt from checking an in-place call
};

cublasStatus_t run(cublasLtHandle_t lt, const Gemm& g, const cublasLtMatmulAlgo_t& algo, const Buffers& b,
                   void* workspace, cudaStream_t stream) {
  const float one = 1.f, zero = 0.f;
  return cublasLtMatmul(lt, g.desc, &one, b.weight, g.a, b.in, g.b, &zero, b.unread_c, g.c, b.out, g.d, &algo,
                        workspace, kWorkspaceBytes, stream);
}

std::vector<float> to_floats(const void* device, size_t count, cudaDataType_t type) {
  std::vector<float> out(count);
  if (type == CUDA_R_16F) {
    std::vector<__half> h(count);
    CHECK_CUDA(cudaMemcpy(h.data(), device, count * 2, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < count; ++i) out[i] = __half2float(h[i]);
  } else {
    std::vector<__nv_fp8_e4m3> h(count);
    CHECK_CUDA(cudaMemcpy(h.data(), device, count, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < count; ++i) out[i] = static_cast<float>(h[i]);
  }
  return out;
}

}  // namespace

int main() {
  const Shape shapes[] = {{"QKV", 2304, 768, false}, {"O", 768, 768, false},
                          {"FFN1+GELU", 3072, 768, true}, {"FFN2", 768, 3072, false}};
  const int row_counts[] = {128, 4096, 49152};
  const Kind kinds[] = {{"fp16", CUDA_R_16F, CUDA_R_16F, false},
                        {"fp8 -> fp16", CUDA_R_8F_E4M3, CUDA_R_16F, false},
                        {"fp8 -> fp16, fast accum", CUDA_R_8F_E4M3, CUDA_R_16F, true},
                        {"fp8 -> fp8", CUDA_R_8F_E4M3, CUDA_R_8F_E4M3, false}};
  cublasLtHandle_t lt;
  CHECK_CUBLAS(cublasLtCreate(&lt));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  void* workspace;
  CHECK_CUDA(cudaMalloc(&workspace, kWorkspaceBytes));
  // Each scale 16-byte aligned as cuBLASLt wants: [0] 1, [4] the weight's scale.
  constexpr int kWeightScale = 4;
  float* scales;
  CHECK_CUDA(cudaMalloc(&scales, 8 * sizeof(float)));
  cudaDeviceProp prop;
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("%s\n\n| GEMM | rows | kind | µs per launch | TFLOP/s | vs fp16 | error vs fp16 |\n"
              "| --- | ---: | --- | ---: | ---: | ---: | ---: |\n",
              prop.name);
  for (const Shape& s : shapes) {
    // Weights like BERT's (HF init: normal, std 0.02), inputs like a LayerNorm's output.
    const size_t weight_count = static_cast<size_t>(s.n) * s.k;
    std::vector<__half> weight16(weight_count), bias16(s.n);
    float amax = 0;
    for (auto& w : weight16) {
      w = __float2half(0.035f * uniform());
      amax = std::max(amax, std::fabs(__half2float(w)));
    }
    for (auto& b : bias16) b = __float2half(0.02f * uniform());
    const float weight_scale = amax / 448.f;
    std::vector<__nv_fp8_e4m3> weight8(weight_count);
    for (size_t i = 0; i < weight_count; ++i) weight8[i] = __nv_fp8_e4m3(__half2float(weight16[i]) / weight_scale);
    const float host_scales[8] = {1.f, 0, 0, 0, weight_scale};
    CHECK_CUDA(cudaMemcpy(scales, host_scales, sizeof(host_scales), cudaMemcpyHostToDevice));
    void *w16, *w8, *bias;
    CHECK_CUDA(cudaMalloc(&w16, weight_count * 2));
    CHECK_CUDA(cudaMalloc(&w8, weight_count));
    CHECK_CUDA(cudaMalloc(&bias, s.n * 2));
    CHECK_CUDA(cudaMemcpy(w16, weight16.data(), weight_count * 2, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(w8, weight8.data(), weight_count, cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(bias, bias16.data(), s.n * 2, cudaMemcpyHostToDevice));
    for (int rows : row_counts) {
      const size_t in_count = static_cast<size_t>(rows) * s.k, out_count = static_cast<size_t>(rows) * s.n;
      std::vector<__half> in16(in_count);
      std::vector<__nv_fp8_e4m3> in8(in_count);
      for (size_t i = 0; i < in_count; ++i) {
        in16[i] = __float2half(1.7f * uniform());
        in8[i] = __nv_fp8_e4m3(__half2float(in16[i]));
      }
      void *i16, *i8, *out16, *out, *unread_c;
      CHECK_CUDA(cudaMalloc(&i16, in_count * 2));
      CHECK_CUDA(cudaMalloc(&i8, in_count));
      CHECK_CUDA(cudaMalloc(&out16, out_count * 2));
      CHECK_CUDA(cudaMalloc(&out, out_count * 2));
      CHECK_CUDA(cudaMalloc(&unread_c, out_count * 2));
      CHECK_CUDA(cudaMemcpy(i16, in16.data(), in_count * 2, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(i8, in8.data(), in_count, cudaMemcpyHostToDevice));
      const double flops = 2.0 * rows * s.n * s.k;
      double fp16_us = 0;
      std::vector<float> reference;
      for (const Kind& kind : kinds) {
        const bool fp8 = kind.operands == CUDA_R_8F_E4M3;
        // The bias type FP8 GEMMs accept is not spelled out for every output
        // type: fp16 first, then bf16 (its bits then read as bf16: timing only).
        Gemm g = make_gemm(lt, s, rows, kind, bias, CUDA_R_16F, true, scales + kWeightScale, scales);
        const char* note = "";
        if (g.algos.empty()) {
          std::printf("| %s | %d | %s, fp16 bias | none (status %d) | | | |\n", s.name, rows, kind.name, g.status);
          destroy(g);
          g = make_gemm(lt, s, rows, kind, bias, CUDA_R_16BF, true, scales + kWeightScale, scales);
          note = ", bf16 bias";
        }
        if (g.algos.empty()) {
          std::printf("| %s | %d | %s, bf16 bias | none (status %d) | | | |\n", s.name, rows, kind.name, g.status);
          destroy(g);
          g = make_gemm(lt, s, rows, kind, bias, CUDA_R_16F, false, scales + kWeightScale, scales);
          note = ", no epilogue";
        }
        const Buffers b{fp8 ? w8 : w16, fp8 ? i8 : i16, kind.out == CUDA_R_16F && !fp8 ? out16 : out, unread_c};
        double best = INFINITY;
        for (const auto& algo : g.algos) {
          g.status = run(lt, g, algo, b, workspace, stream);
          if (g.status != CUBLAS_STATUS_SUCCESS) continue;
          best = std::min(best, median_us([&](cudaStream_t st) { run(lt, g, algo, b, workspace, st); }, 20, 30));
        }
        if (!std::isfinite(best)) {
          std::printf("| %s | %d | %s%s | none (status %d) | | | |\n", s.name, rows, kind.name, note, g.status);
          destroy(g);
          continue;
        }
        CHECK_CUDA(cudaStreamSynchronize(stream));
        const std::vector<float> got = to_floats(b.out, out_count, kind.out);
        if (!fp8) {
          fp16_us = best;
          reference = got;
        }
        double worst = 0, scale = 0;
        for (size_t i = 0; i < out_count; ++i) {
          worst = std::isfinite(got[i]) ? std::max(worst, std::fabs(double{got[i]} - reference[i])) : INFINITY;
          scale = std::max(scale, std::fabs(double{reference[i]}));
        }
        std::printf("| %s | %d | %s%s | %.2f | %.0f | %.2fx | %.3f |\n", s.name, rows, kind.name, note, best,
                    flops / best * 1e-6, fp16_us / best, worst / scale);
        destroy(g);
      }
      cudaFree(i16);
      cudaFree(i8);
      cudaFree(out16);
      cudaFree(out);
      cudaFree(unread_c);
    }
    cudaFree(w16);
    cudaFree(w8);
    cudaFree(bias);
  }
  return 0;
}
