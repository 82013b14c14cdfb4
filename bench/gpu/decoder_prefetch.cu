// Would the MLM decoder at batch 1 gain from part of its weight being in L2
// when it starts? In a 1 x 128 run gemv_topk takes about 25 us, streaming
// 47 MB of weight from DRAM (bench/RESULTS.md, per-kernel trace), while the
// encoder before it reads DRAM at a fraction of its rate. The twenty-second
// session's prefetch of each GEMM's weight (not kept) left the decoder out.
// This probe times gemv_topk (1 row, 30522 x 768, fp32 logits, top-5) in
// graphs of [empty L2, pull the first X MB of the weight into L2, decoder],
// the same graph without the decoder subtracted, for X from 0 to all of it;
// and how long the pull itself takes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/decoder_prefetch bench/gpu/decoder_prefetch.cu cuda/gemv.cu cuda/topk.cu
//   /tmp/decoder_prefetch
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <vector>

#include "../../cuda/gemv.cuh"
#include "../../cuda/tests/test_support.cuh"  // CHECK_CUDA, Rng, captured_graph_us

using fusedrt::gpu::GemvArgs;
using fusedrt::gpu::GemvTopK;
using fusedrt::test::captured_graph_us;
using fusedrt::test::Rng;

namespace {

constexpr int64_t kVocab = 30522;
constexpr int64_t kHidden = 768;
constexpr int kTopK = 5;
constexpr int kLaunches = 10;  // per graph
constexpr int kSamples = 15;

// Reads `bytes` from `data` through L2 (ld.global.cg: not kept in L1), so
// that they are in L2 when the kernel ends; `sink` is written only if the
// sum is an impossible value, so the loads stay.
__global__ void pull_into_l2(const uint4* data, size_t count, unsigned* sink) {
  unsigned sum = 0;
  for (size_t i = size_t{blockIdx.x} * blockDim.x + threadIdx.x; i < count; i += size_t{gridDim.x} * blockDim.x) {
    const uint4 v = __ldcg(data + i);
    sum ^= v.x ^ v.y ^ v.z ^ v.w;
  }
  if (sum == 0x9e3779b9u) *sink = sum;
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  const size_t flush_bytes = 2 * static_cast<size_t>(prop.l2CacheSize);
  std::printf("decoder_prefetch on %s (L2 %d MB, %d SMs)\n\n", prop.name, prop.l2CacheSize >> 20,
              prop.multiProcessorCount);
  Rng rng{20261123};
  const size_t weight_count = static_cast<size_t>(kVocab * kHidden);
  std::vector<__half> host(weight_count);
  for (__half& h : host) h = __float2half(rng.uniform(-0.05f, 0.05f));
  __half *weight = nullptr, *in = nullptr;
  float *bias = nullptr, *logits = nullptr, *scores = nullptr;
  int32_t* ids = nullptr;
  uint32_t* counter = nullptr;
  unsigned* sink = nullptr;
  void *scratch = nullptr, *flush = nullptr;
  CHECK_CUDA(cudaMalloc(&weight, weight_count * 2));
  CHECK_CUDA(cudaMemcpy(weight, host.data(), weight_count * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMalloc(&in, kHidden * 2));
  CHECK_CUDA(cudaMemcpy(in, host.data(), kHidden * 2, cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMalloc(&bias, kVocab * sizeof(float)));
  CHECK_CUDA(cudaMemset(bias, 0, kVocab * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&logits, kVocab * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&ids, kTopK * sizeof(int32_t)));
  CHECK_CUDA(cudaMalloc(&scores, kTopK * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&counter, sizeof(uint32_t)));
  CHECK_CUDA(cudaMemset(counter, 0, sizeof(uint32_t)));
  CHECK_CUDA(cudaMalloc(&sink, sizeof(unsigned)));
  CHECK_CUDA(cudaMalloc(&scratch, fusedrt::gpu::gemv_topk_scratch_bytes(1, kTopK)));
  CHECK_CUDA(cudaMalloc(&flush, flush_bytes));
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));

  GemvArgs<float> args;
  args.rows = 1;
  args.n = kVocab;
  args.k = kHidden;
  args.in = in;
  args.weight = weight;
  args.bias = bias;
  args.out = logits;
  const GemvTopK topk{kTopK, ids, scores, counter, scratch};
  CHECK_CUDA(fusedrt::gpu::gemv_topk(args, topk, stream));
  CHECK_CUDA(cudaStreamSynchronize(stream));

  const int blocks = 2 * prop.multiProcessorCount;
  const auto graph_us = [&](size_t pulled_bytes, bool decoder) {
    return captured_graph_us(stream, [&] {
             for (int i = 0; i < kLaunches; ++i) {
               CHECK_CUDA(cudaMemsetAsync(flush, i, flush_bytes, stream));
               if (pulled_bytes > 0) {
                 pull_into_l2<<<blocks, 512, 0, stream>>>(reinterpret_cast<const uint4*>(weight), pulled_bytes / 16, sink);
                 CHECK_CUDA(cudaGetLastError());
               }
               if (decoder) CHECK_CUDA(fusedrt::gpu::gemv_topk(args, topk, stream));
             }
           }, kSamples).us / kLaunches;
  };
  const double flush_alone = graph_us(0, false);
  std::printf("| weight in L2 before the decoder | decoder us (median of %d graphs) | the pull alone us |\n"
              "| ---: | ---: | ---: |\n", kSamples);
  const size_t weight_bytes = weight_count * 2;
  for (const double fraction : {0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 1.0}) {
    const size_t pulled = static_cast<size_t>(fraction * weight_bytes) / 16 * 16;
    const double without = pulled > 0 ? graph_us(pulled, false) : flush_alone;
    const double with = graph_us(pulled, true);
    std::printf("| %.1f MB (%.0f%%) | %.2f | %.2f |\n", pulled / 1e6, 100 * fraction, with - without,
                without - flush_alone);
  }
  return 0;
}
