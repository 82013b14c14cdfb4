// Would GEMMs of our own that wait for programmatic dependencies beat
// cuBLASLt's at batch 1? cuBLASLt's fast kernels do not wait
// (lt_programmatic_edge.cu), so the backend's runs cannot launch a kernel
// before the one it follows ends; the split-K Hopper GEMM of
// split_k_gemm.cuh is 1.1-1.6x slower than cuBLASLt's alone
// (wgmma_gemm.cu), but as a programmatic dependent it can launch early and
// ask for its first weight tiles while the kernel before it still runs.
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90a,code=sm_90a bench/gpu/pdl_gemm_chain.cu \
//     -lcublasLt -o /tmp/pdl_gemm_chain && /tmp/pdl_gemm_chain
//
// 12 BERT-base layers at 128 rows (each weight its own, 170 MB, so from
// DRAM as in a run), per layer: QKV GEMM + bias, attention's stand-in,
// output projection, residual LayerNorm, FFN1 + bias + GELU, FFN2, residual
// LayerNorm (layer_stand_ins.cuh); the output projection and FFN2 get a
// zero bias from our GEMM. Replayed from CUDA graphs (median of 200, three
// rounds): with cuBLASLt's GEMMs (the heuristic's first, no workspace, as
// the backend asks for fp16); with ours, plain; with ours and every kernel
// a programmatic dependent of the one before. Each output is compared with
// the cuBLASLt chain's (largest |difference|) and the two of ours with each
// other (bit for bit: the same kernels, launched differently).
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <vector>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS, Rng, median_graph_us
#include "layer_stand_ins.cuh"
#include "lt_gemm.cuh"
#include "split_k_gemm.cuh"

namespace {

using namespace fusedrt::probe;

constexpr int kRows = 128;
constexpr int kTileN = 64;

struct OwnGemm {
  CUtensorMap in, weight;
  const __half* bias;
  __half* out;
  int n, k, splits;
  bool gelu;
};

template <class Kernel, class... Args>
void launch(Kernel kernel, dim3 grid, int threads, size_t shared, int cluster_z, bool dependent, cudaStream_t stream,
            Args... args) {
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = dim3(threads);
  config.dynamicSmemBytes = shared;
  config.stream = stream;
  cudaLaunchAttribute attributes[2] = {};
  int count = 0;
  if (cluster_z > 1) {
    attributes[count].id = cudaLaunchAttributeClusterDimension;
    attributes[count].val.clusterDim.x = 1;
    attributes[count].val.clusterDim.y = 1;
    attributes[count].val.clusterDim.z = cluster_z;
    ++count;
  }
  if (dependent) {
    attributes[count].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attributes[count].val.programmaticStreamSerializationAllowed = 1;
    ++count;
  }
  config.attrs = attributes;
  config.numAttrs = count;
  CHECK_CUDA(cudaLaunchKernelEx(&config, kernel, args...));
}

void run_own(const OwnGemm& g, bool dependent, cudaStream_t stream) {
  const dim3 grid(g.n / kTileN, 1, g.splits);
  const int k_blocks = g.k / kBlockK;
  uint64_t* no_stamps = nullptr;
  if (dependent) {
    launch(split_k_gemm<kTileN, true>, grid, kThreads, shared_bytes<kTileN>(), g.splits, true, stream, g.in, g.weight,
           g.bias, g.out, kRows, g.n, k_blocks, g.gelu, no_stamps);
  } else {
    launch(split_k_gemm<kTileN, false>, grid, kThreads, shared_bytes<kTileN>(), g.splits, false, stream, g.in,
           g.weight, g.bias, g.out, kRows, g.n, k_blocks, g.gelu, no_stamps);
  }
}

struct Buffers {
  __half *x, *x0, *qkv, *mixed, *projected, *h, *inter, *ffn_out, *zero_bias;
};

struct LayerGemms {
  BertGemmWeights weights;
  OwnGemm qkv, o, ffn1, ffn2;
};

__half* device_halves(size_t count) {
  __half* p = nullptr;
  CHECK_CUDA(cudaMalloc(&p, count * sizeof(__half)));
  return p;
}

// The layer's stand-in kernels, as a programmatic dependent or not.
void run_mix(const Buffers& b, bool dependent, cudaStream_t stream) {
  launch(mix_rows, dim3(kRows / 4), 128, 0, 1, dependent, stream, static_cast<const __half*>(b.qkv), b.mixed, kRows,
         false);
}

void run_add_norm(const __half* a, const __half* residual, __half* out, bool dependent, cudaStream_t stream) {
  launch(add_norm_rows, dim3(kRows / 4), 128, 0, 1, dependent, stream, a, residual, out, kRows, false);
}

std::vector<__half> chain_output(cudaGraphExec_t exec, const Buffers& b, cudaStream_t stream) {
  const size_t count = size_t{kRows} * kHidden;
  CHECK_CUDA(cudaMemcpyAsync(b.x, b.x0, count * sizeof(__half), cudaMemcpyDeviceToDevice, stream));
  CHECK_CUDA(cudaGraphLaunch(exec, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<__half> out(count);
  CHECK_CUDA(cudaMemcpy(out.data(), b.x, count * sizeof(__half), cudaMemcpyDeviceToHost));
  return out;
}

bool same_bits(const std::vector<__half>& a, const std::vector<__half>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(__half)) == 0;
}

double largest_difference(const std::vector<__half>& a, const std::vector<__half>& b) {
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = std::fabs(static_cast<double>(__half2float(a[i])) - __half2float(b[i]));
    worst = std::isfinite(d) ? std::max(worst, d) : INFINITY;
  }
  return worst;
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  if (prop.major != 9) {
    std::fprintf(stderr, "needs an sm_90 GPU (this is sm_%d%d)\n", prop.major, prop.minor);
    return 2;
  }
  CHECK_CUDA(cudaFuncSetAttribute(split_k_gemm<kTileN, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  shared_bytes<kTileN>()));
  CHECK_CUDA(cudaFuncSetAttribute(split_k_gemm<kTileN, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  shared_bytes<kTileN>()));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cublasLtHandle_t handle;
  CHECK_CUBLAS(cublasLtCreate(&handle));
  fusedrt::test::Rng rng{20261123};

  Buffers b{};
  for (__half** p : {&b.x, &b.mixed, &b.projected, &b.h, &b.ffn_out}) *p = device_halves(size_t{kRows} * kHidden);
  b.x0 = random_device_halves(size_t{kRows} * kHidden, 1.f, rng);
  b.qkv = device_halves(size_t{kRows} * 3 * kHidden);
  b.inter = device_halves(size_t{kRows} * kInter);
  b.zero_bias = device_halves(kInter);
  CHECK_CUDA(cudaMemset(b.zero_bias, 0, kInter * sizeof(__half)));

  // Splits per GEMM: the fastest of wgmma_gemm.cu's table at 128 rows.
  const CUtensorMap in_x = tile_map(b.x, kRows, kHidden, kBlockM);
  const CUtensorMap in_mixed = tile_map(b.mixed, kRows, kHidden, kBlockM);
  const CUtensorMap in_h = tile_map(b.h, kRows, kHidden, kBlockM);
  const CUtensorMap in_inter = tile_map(b.inter, kRows, kInter, kBlockM);
  std::vector<LayerGemms> layers;
  for (int l = 0; l < kLayers; ++l) {
    LayerGemms g;
    g.weights = random_bert_gemm_weights(kHidden, kInter, rng);
    const BertGemmWeights& w = g.weights;
    g.qkv = {in_x, tile_map(w.qkv, 3 * kHidden, kHidden, kTileN), w.qkv_bias, b.qkv, 3 * kHidden, kHidden, 3, false};
    g.o = {in_mixed, tile_map(w.o, kHidden, kHidden, kTileN), b.zero_bias, b.projected, kHidden, kHidden, 4, false};
    g.ffn1 = {in_h, tile_map(w.ffn1, kInter, kHidden, kTileN), w.ffn1_bias, b.inter, kInter, kHidden, 2, true};
    g.ffn2 = {in_inter, tile_map(w.ffn2, kHidden, kInter, kTileN), b.zero_bias, b.ffn_out, kHidden, kInter, 8, false};
    layers.push_back(g);
  }
  const auto lt = [&](int n, int k, cublasLtEpilogue_t epilogue) {
    return LtGemm{handle, make_lt_problem(handle, {kRows, n, k, k, k, n, false, epilogue}, 0, 1), nullptr, 0};
  };
  const LtGemm lt_qkv = lt(3 * kHidden, kHidden, CUBLASLT_EPILOGUE_BIAS);
  const LtGemm lt_o = lt(kHidden, kHidden, CUBLASLT_EPILOGUE_DEFAULT);
  const LtGemm lt_ffn1 = lt(kInter, kHidden, CUBLASLT_EPILOGUE_GELU_BIAS);
  const LtGemm lt_ffn2 = lt(kHidden, kInter, CUBLASLT_EPILOGUE_DEFAULT);

  const auto cublaslt_chain = [&] {
    for (const LayerGemms& g : layers) {
      const BertGemmWeights& w = g.weights;
      run_lt_gemm(lt_qkv, b.x, w.qkv, w.qkv_bias, 0.f, nullptr, b.qkv, stream);
      run_mix(b, false, stream);
      run_lt_gemm(lt_o, b.mixed, w.o, nullptr, 0.f, nullptr, b.projected, stream);
      run_add_norm(b.projected, b.x, b.h, false, stream);
      run_lt_gemm(lt_ffn1, b.h, w.ffn1, w.ffn1_bias, 0.f, nullptr, b.inter, stream);
      run_lt_gemm(lt_ffn2, b.inter, w.ffn2, nullptr, 0.f, nullptr, b.ffn_out, stream);
      run_add_norm(b.ffn_out, b.h, b.x, false, stream);
    }
  };
  const auto own_chain = [&](bool dependent) {
    for (const LayerGemms& g : layers) {
      run_own(g.qkv, dependent, stream);
      run_mix(b, dependent, stream);
      run_own(g.o, dependent, stream);
      run_add_norm(b.projected, b.x, b.h, dependent, stream);
      run_own(g.ffn1, dependent, stream);
      run_own(g.ffn2, dependent, stream);
      run_add_norm(b.ffn_out, b.h, b.x, dependent, stream);
    }
  };
  const char* names[3] = {"cuBLASLt GEMMs, plain launches", "our split-K GEMMs, plain launches",
                          "our split-K GEMMs, every kernel a programmatic dependent"};
  using fusedrt::test::captured_graph_exec;
  cudaGraphExec_t exec[3] = {captured_graph_exec(stream, cublaslt_chain),
                             captured_graph_exec(stream, [&] { own_chain(false); }),
                             captured_graph_exec(stream, [&] { own_chain(true); })};
  std::vector<__half> outputs[3];
  for (int v = 0; v < 3; ++v) outputs[v] = chain_output(exec[v], b, stream);
  double us[3][3];
  for (int round = 0; round < 3; ++round) {
    for (int v = 0; v < 3; ++v) us[v][round] = fusedrt::test::median_graph_us(exec[v], stream, 200);
  }
  std::printf("pdl_gemm_chain on %s: 12 BERT-base layers at %d rows, 84 kernels, graph us (median of 200), "
              "3 rounds\n\n", prop.name, kRows);
  std::printf("| GEMMs and launches | us | largest difference from cuBLASLt's output | same output on a replay |\n");
  std::printf("| --- | --- | ---: | --- |\n");
  for (int v = 0; v < 3; ++v) {
    const bool stable = same_bits(chain_output(exec[v], b, stream), outputs[v]);
    std::printf("| %s | %.2f / %.2f / %.2f | %.3g | %s |\n", names[v], us[v][0], us[v][1], us[v][2],
                largest_difference(outputs[v], outputs[0]), stable ? "yes" : "NO");
  }
  const bool same = same_bits(outputs[1], outputs[2]);
  std::printf("\nours, plain and programmatic: %s\n", same ? "the same output bit for bit" : "OUTPUTS DIFFER");
  for (cudaGraphExec_t e : exec) CHECK_CUDA(cudaGraphExecDestroy(e));
  cublasLtDestroy(handle);
  std::printf("pdl_gemm_chain: done\n");
  return same ? 0 : 1;
}
