// Can an fp16 GEMM of our own beat cuBLASLt on BERT-base's 128-row GEMMs?
// (issue 3's 0.30 ms at 1 x 128 needs them faster; decision 0008.) This
// probe is a Hopper kernel in the shape those GEMMs call for: TMA loads of
// 64-wide K blocks (128-byte swizzle) into a ring of shared-memory stages,
// wgmma (two m64 instructions cover the 128 rows), and split-K over the CTAs
// of a thread-block cluster, whose partial tiles are summed through
// distributed shared memory (each CTA sums a slice of the rows, adds the
// bias and stores fp16), so no workspace and one launch. The bet was that
// at 128 rows there are too few output tiles to keep every SM streaming
// weights, and splitting K would fix that. It did not pay: the results
// match cuBLASLt's, but the kernel is 1.1-1.6x slower on an H100, and its
// phase stamps show load latency and the cross-CTA exchange taking what the
// split saves (bench/RESULTS.md; decision 0008, second addendum).
//
//   nvcc -std=c++17 -O3 -Inative -gencode arch=compute_90a,code=sm_90a bench/gpu/wgmma_gemm.cu -lcublasLt -o /tmp/wgmma_gemm
//   /tmp/wgmma_gemm [rows]
//
// For BERT-base's four GEMM shapes it checks every configuration (tile width
// 64 or 128, 1-8 splits) against cuBLASLt's output, then times both in CUDA
// graphs of 20 launches (median of 30 graphs, per launch): with the weight
// warm in L2, and cold (each launch of a graph reads another of 24 weight
// copies, more than L2 holds, as a run's 12 layers do), and stamps each
// CTA's phases (%globaltimer) in one more launch. Exit status 1 if a
// configuration's result is wrong.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, CHECK_CUBLAS (exit status 2 when the probe cannot run), median_us
#include "lt_gemm.cuh"                        // cuBLASLt as the backend calls it
#include "split_k_gemm.cuh"                   // the kernel

using fusedrt::test::median_us;
using namespace fusedrt::probe;

namespace {

struct Shape {
  const char* name;
  int n, k;
};

struct Operands {
  int rows, n, k;
  __half *in, *bias, *out, *expected;
  std::vector<__half*> weights;  // copies of one weight, for cold-L2 timing
};

template <int kBlockN>
cudaError_t launch(const Operands& o, const CUtensorMap& in_map, const CUtensorMap& weight_map, int splits,
                   cudaStream_t stream, uint64_t* stamps = nullptr) {
  cudaLaunchConfig_t config{};
  config.gridDim = dim3(o.n / kBlockN, 1, splits);
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = shared_bytes<kBlockN>();
  config.stream = stream;
  cudaLaunchAttribute cluster{};
  cluster.id = cudaLaunchAttributeClusterDimension;
  cluster.val.clusterDim.x = 1;
  cluster.val.clusterDim.y = 1;
  cluster.val.clusterDim.z = splits;
  config.attrs = &cluster;
  config.numAttrs = splits > 1 ? 1 : 0;  // no cluster launch when there is nothing to reduce
  return cudaLaunchKernelEx(&config, split_k_gemm<kBlockN>, in_map, weight_map, o.bias, o.out, o.rows, o.n,
                            o.k / kBlockK, false, stamps);
}

// cuBLASLt's first heuristic choice for out = in . weight^T + bias (fp16
// bias epilogue), as the backend calls it.
LtGemm make_lt(cublasLtHandle_t handle, const Operands& o) {
  return make_lt_gemm(handle, {o.rows, o.n, o.k, o.k, o.k, o.n, false, CUBLASLT_EPILOGUE_BIAS});
}

void run_lt(const LtGemm& lt, const Operands& o, const __half* weight, __half* out, cudaStream_t stream) {
  run_lt_gemm(lt, o.in, weight, o.bias, 0.f, out, out, stream);
}

void fill(__half* device, size_t count, float amplitude, uint64_t seed) {
  std::vector<__half> host(count);
  for (auto& v : host) {
    seed ^= seed << 13;
    seed ^= seed >> 7;
    seed ^= seed << 17;
    v = __float2half(amplitude * (static_cast<float>(seed >> 40) / 8388608.f - 1.f));
  }
  CHECK_CUDA(cudaMemcpy(device, host.data(), count * sizeof(__half), cudaMemcpyHostToDevice));
}

// Largest |ours - cuBLASLt| over the output, relative to the largest |cuBLASLt|.
double relative_error(const Operands& o) {
  const size_t count = static_cast<size_t>(o.rows) * o.n;
  std::vector<__half> got(count), want(count);
  CHECK_CUDA(cudaMemcpy(got.data(), o.out, count * sizeof(__half), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(want.data(), o.expected, count * sizeof(__half), cudaMemcpyDeviceToHost));
  double worst = 0, scale = 0;
  for (size_t i = 0; i < count; ++i) {
    const double w = __half2float(want[i]);
    const double g = __half2float(got[i]);
    worst = std::isfinite(g) ? std::max(worst, std::fabs(g - w)) : INFINITY;
    scale = std::max(scale, std::fabs(w));
  }
  return worst / std::max(scale, 1e-30);
}

template <int kBlockN>
bool try_config(const Operands& o, int splits, double lt_warm, double lt_cold, const char* shape, cudaStream_t stream,
                const std::vector<CUtensorMap>& weight_maps, const CUtensorMap& in_map) {
  if (o.n % kBlockN != 0 || splits > o.k / kBlockK) return true;
  CHECK_CUDA(cudaMemset(o.out, 0xFF, static_cast<size_t>(o.rows) * o.n * sizeof(__half)));
  const cudaError_t launched = launch<kBlockN>(o, in_map, weight_maps[0], splits, stream);
  if (launched != cudaSuccess) {
    std::printf("| %s | %d | %d | %d | launch failed: %s | | | |\n", shape, o.rows, kBlockN, splits,
                cudaGetErrorString(launched));
    return true;  // a configuration the GPU cannot run (e.g. cluster size) is not a wrong result
  }
  CHECK_CUDA(cudaStreamSynchronize(stream));
  const double error = relative_error(o);
  const bool ok = error <= 1e-2;
  // Per launch, from 30 graphs of 20; cold: the launches of a graph take the weight copies in turn.
  const double warm = median_us([&](cudaStream_t s) { launch<kBlockN>(o, in_map, weight_maps[0], splits, s); }, 20, 30);
  const double cold = median_us(
      [&, i = size_t{0}](cudaStream_t s) mutable { launch<kBlockN>(o, in_map, weight_maps[i++ % weight_maps.size()], splits, s); },
      20, 30);
  // One more launch, warm, with every CTA's stamps: medians over CTAs of
  // each phase, the spread of their start times, and first start to last exit.
  const int ctas = o.n / kBlockN * splits;
  uint64_t* stamps;
  CHECK_CUDA(cudaMalloc(&stamps, sizeof(uint64_t) * kStamps * ctas));
  CHECK_CUDA(launch<kBlockN>(o, in_map, weight_maps[0], splits, stream, stamps));
  std::vector<uint64_t> t(static_cast<size_t>(kStamps) * ctas);
  CHECK_CUDA(cudaMemcpy(t.data(), stamps, sizeof(uint64_t) * t.size(), cudaMemcpyDeviceToHost));
  cudaFree(stamps);
  uint64_t first_start = UINT64_MAX, last_start = 0, last_end = 0;
  std::vector<double> phase[kStamps - 1];
  for (int c = 0; c < ctas; ++c) {
    const uint64_t* ct = &t[static_cast<size_t>(c) * kStamps];
    first_start = std::min(first_start, ct[0]);
    last_start = std::max(last_start, ct[0]);
    last_end = std::max(last_end, ct[4]);
    for (int p = 0; p < kStamps - 1; ++p) phase[p].push_back(static_cast<double>(ct[p + 1] - ct[p]) / 1000.0);
  }
  for (auto& v : phase) std::sort(v.begin(), v.end());
  std::printf("| %s | %d | %d | %d | %.2e %s | %.2f | %.2f | %.2f / %.2f | %.2f / %.2f / %.2f / %.2f | %.2f | %.2f |\n",
              shape, o.rows, kBlockN, splits, error, ok ? "ok" : "WRONG", warm, cold, lt_warm, lt_cold,
              phase[0][ctas / 2], phase[1][ctas / 2], phase[2][ctas / 2], phase[3][ctas / 2],
              (last_start - first_start) / 1000.0, (last_end - first_start) / 1000.0);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  const int rows = argc > 1 ? std::atoi(argv[1]) : 128;
  if (rows < 1 || rows > kBlockM) {
    std::fprintf(stderr, "rows must be 1..%d\n", kBlockM);
    return 2;
  }
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  if (prop.major != 9) {
    std::fprintf(stderr, "needs an sm_90 GPU (this is sm_%d%d)\n", prop.major, prop.minor);
    return 2;
  }
  CHECK_CUDA(cudaFuncSetAttribute(split_k_gemm<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes<64>()));
  CHECK_CUDA(cudaFuncSetAttribute(split_k_gemm<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, shared_bytes<128>()));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  cublasLtHandle_t handle;
  CHECK_CUBLAS(cublasLtCreate(&handle));
  std::printf("wgmma_gemm on %s (%d SMs), %d rows\n\n", prop.name, prop.multiProcessorCount, rows);
  std::printf("| GEMM | rows | tile N | splits | error vs cuBLASLt | warm us | cold us | cuBLASLt warm / cold us "
              "| phases us (median CTA): first stage / MMA / exchange / store | CTA start spread us | first start to last exit us |\n");
  std::printf("| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | --- | ---: | ---: |\n");
  const Shape shapes[] = {{"QKV", 2304, 768}, {"O", 768, 768}, {"FFN1", 3072, 768}, {"FFN2", 768, 3072}};
  bool all_ok = true;
  constexpr int kCopies = 24;
  for (const Shape& s : shapes) {
    Operands o{rows, s.n, s.k, nullptr, nullptr, nullptr, nullptr, {}};
    CHECK_CUDA(cudaMalloc(&o.in, static_cast<size_t>(rows) * s.k * sizeof(__half)));
    CHECK_CUDA(cudaMalloc(&o.bias, s.n * sizeof(__half)));
    CHECK_CUDA(cudaMalloc(&o.out, static_cast<size_t>(rows) * s.n * sizeof(__half)));
    CHECK_CUDA(cudaMalloc(&o.expected, static_cast<size_t>(rows) * s.n * sizeof(__half)));
    fill(o.in, static_cast<size_t>(rows) * s.k, 1.f, 11);
    fill(o.bias, s.n, 0.5f, 13);
    for (int c = 0; c < kCopies; ++c) {
      __half* w;
      CHECK_CUDA(cudaMalloc(&w, static_cast<size_t>(s.n) * s.k * sizeof(__half)));
      if (c == 0) {
        fill(w, static_cast<size_t>(s.n) * s.k, 0.05f, 17);
      } else {
        CHECK_CUDA(cudaMemcpy(w, o.weights[0], static_cast<size_t>(s.n) * s.k * sizeof(__half), cudaMemcpyDeviceToDevice));
      }
      o.weights.push_back(w);
    }
    const LtGemm lt = make_lt(handle, o);
    run_lt(lt, o, o.weights[0], o.expected, stream);
    CHECK_CUDA(cudaStreamSynchronize(stream));
    const double lt_warm = median_us([&](cudaStream_t s) { run_lt(lt, o, o.weights[0], o.out, s); }, 20, 30);
    const double lt_cold =
        median_us([&, i = 0](cudaStream_t s) mutable { run_lt(lt, o, o.weights[i++ % kCopies], o.out, s); }, 20, 30);
    const CUtensorMap in_map = tile_map(o.in, rows, s.k, kBlockM);
    for (int tile_n : {64, 128}) {
      std::vector<CUtensorMap> maps;
      for (__half* w : o.weights) maps.push_back(tile_map(w, s.n, s.k, tile_n));
      for (int splits : {1, 2, 3, 4, 6, 8}) {
        all_ok &= tile_n == 64 ? try_config<64>(o, splits, lt_warm, lt_cold, s.name, stream, maps, in_map)
                               : try_config<128>(o, splits, lt_warm, lt_cold, s.name, stream, maps, in_map);
      }
    }
    for (__half* w : o.weights) cudaFree(w);
    cudaFree(o.in);
    cudaFree(o.bias);
    cudaFree(o.out);
    cudaFree(o.expected);
  }
  std::printf("\nwgmma_gemm: %s\n", all_ok ? "all results match cuBLASLt" : "SOME RESULTS WRONG");
  return all_ok ? 0 : 1;
}
