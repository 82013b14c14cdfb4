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
#include "layer_chain.cuh"
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

// One layer's GEMMs as ours runs them.
struct OwnLayer {
  OwnGemm qkv, o, ffn1, ffn2;
};

// The layer's stand-in kernels, as a programmatic dependent or not.
void run_mix(const Chain& c, bool dependent, cudaStream_t stream) {
  launch(mix_rows, dim3(kRows / 4), 128, 0, 1, dependent, stream, static_cast<const __half*>(c.qkv), c.mixed, kRows,
         false);
}

void run_add_norm(const __half* a, const __half* residual, __half* out, bool dependent, cudaStream_t stream) {
  launch(add_norm_rows, dim3(kRows / 4), 128, 0, 1, dependent, stream, a, residual, out, kRows, false);
}

std::vector<__half> chain_output(cudaGraphExec_t exec, const Chain& c, const __half* x0, cudaStream_t stream) {
  const size_t count = size_t{kRows} * kHidden;
  CHECK_CUDA(cudaMemcpyAsync(c.x, x0, count * sizeof(__half), cudaMemcpyDeviceToDevice, stream));
  CHECK_CUDA(cudaGraphLaunch(exec, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<__half> out(count);
  CHECK_CUDA(cudaMemcpy(out.data(), c.x, count * sizeof(__half), cudaMemcpyDeviceToHost));
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

  const Chain c = make_chain(handle, kRows, rng);
  const __half* x0 = random_device_halves(size_t{kRows} * kHidden, 1.f, rng);
  __half* zero_bias = nullptr;
  CHECK_CUDA(cudaMalloc(&zero_bias, kInter * sizeof(__half)));
  CHECK_CUDA(cudaMemset(zero_bias, 0, kInter * sizeof(__half)));

  // Splits per GEMM: the fastest of wgmma_gemm.cu's table at 128 rows.
  const CUtensorMap in_x = tile_map(c.x, kRows, kHidden, kBlockM);
  const CUtensorMap in_mixed = tile_map(c.mixed, kRows, kHidden, kBlockM);
  const CUtensorMap in_h = tile_map(c.h, kRows, kHidden, kBlockM);
  const CUtensorMap in_inter = tile_map(c.inter, kRows, kInter, kBlockM);
  std::vector<OwnLayer> layers;
  for (const BertGemmWeights& w : c.weights) {
    OwnLayer g;
    g.qkv = {in_x, tile_map(w.qkv, 3 * kHidden, kHidden, kTileN), w.qkv_bias, c.qkv, 3 * kHidden, kHidden, 3, false};
    g.o = {in_mixed, tile_map(w.o, kHidden, kHidden, kTileN), zero_bias, c.projected, kHidden, kHidden, 4, false};
    g.ffn1 = {in_h, tile_map(w.ffn1, kInter, kHidden, kTileN), w.ffn1_bias, c.inter, kInter, kHidden, 2, true};
    g.ffn2 = {in_inter, tile_map(w.ffn2, kHidden, kInter, kTileN), zero_bias, c.ffn_out, kHidden, kInter, 8, false};
    layers.push_back(g);
  }
  const auto own_chain = [&](bool dependent) {
    for (const OwnLayer& g : layers) {
      run_own(g.qkv, dependent, stream);
      run_mix(c, dependent, stream);
      run_own(g.o, dependent, stream);
      run_add_norm(c.projected, c.x, c.h, dependent, stream);
      run_own(g.ffn1, dependent, stream);
      run_own(g.ffn2, dependent, stream);
      run_add_norm(c.ffn_out, c.h, c.x, dependent, stream);
    }
  };
  const char* names[3] = {"cuBLASLt GEMMs, plain launches", "our split-K GEMMs, plain launches",
                          "our split-K GEMMs, every kernel a programmatic dependent"};
  using fusedrt::test::captured_graph_exec;
  cudaGraphExec_t exec[3] = {captured_graph_exec(stream, [&] { enqueue_chain(c, stream); }),
                             captured_graph_exec(stream, [&] { own_chain(false); }),
                             captured_graph_exec(stream, [&] { own_chain(true); })};
  std::vector<__half> outputs[3];
  for (int v = 0; v < 3; ++v) outputs[v] = chain_output(exec[v], c, x0, stream);
  double us[3][3];
  for (int round = 0; round < 3; ++round) {
    for (int v = 0; v < 3; ++v) us[v][round] = fusedrt::test::median_graph_us(exec[v], stream, 200);
  }
  std::printf("pdl_gemm_chain on %s: 12 BERT-base layers at %d rows, 84 kernels, graph us (median of 200), "
              "3 rounds\n\n", prop.name, kRows);
  std::printf("| GEMMs and launches | us | largest difference from cuBLASLt's output | same output on a replay |\n");
  std::printf("| --- | --- | ---: | --- |\n");
  for (int v = 0; v < 3; ++v) {
    const bool stable = same_bits(chain_output(exec[v], c, x0, stream), outputs[v]);
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
