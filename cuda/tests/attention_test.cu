// The fp16 tensor-core attention (launch_attention_fp16) against the fp32
// kernel (attention), which the GPU test suite checks against the CPU backend
// and transformers. Both get the same fp16-rounded inputs. Then both are timed
// on BERT-base shapes with CUDA events. Exit status 0 only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o attention_test cuda/tests/attention_test.cu cuda/attention.cu
//   ./attention_test
// (tools/device/gpu-bench.sh does this on the GPU machine.)
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../attention.cuh"

using fusedrt::gpu::AttentionHalfParams;

namespace {

#define CHECK_CUDA(call)                                                                                   \
  do {                                                                                                     \
    const cudaError_t error_ = (call);                                                                     \
    if (error_ != cudaSuccess) {                                                                           \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(error_));      \
      std::exit(2);                                                                                        \
    }                                                                                                      \
  } while (0)

// Relative to the largest |output| of the fp32 kernel.
constexpr double kTolerance = 2e-3;

struct Rng {
  uint64_t state;
  uint32_t next() {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return static_cast<uint32_t>(state >> 32);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * (next() >> 8) * (1.f / 16777216.f); }
  int between(int lo, int hi) { return lo + static_cast<int>(next() % static_cast<uint32_t>(hi - lo + 1)); }
};

template <class T>
struct DeviceBuffer {
  T* ptr = nullptr;
  explicit DeviceBuffer(size_t count) { CHECK_CUDA(cudaMalloc(&ptr, std::max<size_t>(count, 1) * sizeof(T))); }
  ~DeviceBuffer() { cudaFree(ptr); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// One packed batch on the device, in both precisions (the fp32 copy is the fp16 values widened).
struct Batch {
  std::vector<int> lengths;
  int64_t tokens = 0, heads = 0, head_dim = 0, max_seqlen = 0;
  DeviceBuffer<int32_t> cu_seqlens;
  DeviceBuffer<__half> qkv16, out16;
  DeviceBuffer<float> qkv32, out32;

  Batch(const std::vector<int>& lens, int64_t h, int64_t d, float qk_amplitude, Rng& rng)
      : lengths(lens), heads(h), head_dim(d), cu_seqlens(lens.size() + 1),
        qkv16(count_tokens(lens) * 3 * h * d), out16(count_tokens(lens) * h * d),
        qkv32(count_tokens(lens) * 3 * h * d), out32(count_tokens(lens) * h * d) {
    std::vector<int32_t> cu(lens.size() + 1, 0);
    for (size_t b = 0; b < lens.size(); ++b) cu[b + 1] = cu[b] + lens[b];
    tokens = cu.back();
    max_seqlen = *std::max_element(lens.begin(), lens.end());
    const int64_t width = h * d;
    std::vector<__half> q16(tokens * 3 * width);
    std::vector<float> q32(q16.size());
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = 0; c < 3 * width; ++c) {
        const float amplitude = c < 2 * width ? qk_amplitude : 1.f;  // Q, K | V
        const __half v = __float2half(rng.uniform(-amplitude, amplitude));
        q16[t * 3 * width + c] = v;
        q32[t * 3 * width + c] = __half2float(v);
      }
    }
    CHECK_CUDA(cudaMemcpy(cu_seqlens.ptr, cu.data(), cu.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(qkv16.ptr, q16.data(), q16.size() * sizeof(__half), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaMemcpy(qkv32.ptr, q32.data(), q32.size() * sizeof(float), cudaMemcpyHostToDevice));
  }

  static int64_t count_tokens(const std::vector<int>& lens) {
    int64_t n = 0;
    for (int l : lens) n += l;
    return n;
  }

  float scale() const { return 1.f / std::sqrt(static_cast<float>(head_dim)); }

  cudaError_t run16(cudaStream_t stream, int64_t max_seqlen_override = 0) const {
    AttentionHalfParams p{};
    p.qkv = qkv16.ptr;
    p.cu_seqlens = cu_seqlens.ptr;
    p.sequences = static_cast<int64_t>(lengths.size());
    p.max_seqlen = max_seqlen_override > 0 ? max_seqlen_override : max_seqlen;
    p.heads = heads;
    p.head_dim = head_dim;
    p.scale = scale();
    p.out = out16.ptr;
    return fusedrt::gpu::launch_attention_fp16(p, stream);
  }

  cudaError_t run32(cudaStream_t stream) const {
    fusedrt::cpu::AttentionParams p{};
    p.qkv = qkv32.ptr;
    p.cu_seqlens = cu_seqlens.ptr;
    p.sequences = static_cast<int64_t>(lengths.size());
    p.heads = heads;
    p.head_dim = head_dim;
    p.scale = scale();
    p.out = out32.ptr;
    return fusedrt::gpu::attention(p, tokens, stream);
  }

  // 4 * sum(len^2) * head_dim * heads: Q K^T and P V.
  double flops() const {
    double sum = 0;
    for (int l : lengths) sum += static_cast<double>(l) * l;
    return 4 * sum * static_cast<double>(head_dim * heads);
  }
};

int failures = 0;

// Poisons both outputs (NaN), runs both kernels, compares every element.
void check(const std::string& label, const Batch& batch, int64_t max_seqlen_override = 0) {
  const size_t count = static_cast<size_t>(batch.tokens * batch.heads * batch.head_dim);
  CHECK_CUDA(cudaMemset(batch.out16.ptr, 0xff, count * sizeof(__half)));
  CHECK_CUDA(cudaMemset(batch.out32.ptr, 0xff, count * sizeof(float)));
  CHECK_CUDA(batch.run16(nullptr, max_seqlen_override));
  CHECK_CUDA(batch.run32(nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<__half> got(count);
  std::vector<float> want(count);
  CHECK_CUDA(cudaMemcpy(got.data(), batch.out16.ptr, count * sizeof(__half), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaMemcpy(want.data(), batch.out32.ptr, count * sizeof(float), cudaMemcpyDeviceToHost));
  double worst = 0, scale = 0;
  size_t unwritten = 0;
  for (size_t i = 0; i < count; ++i) {
    const double g = __half2float(got[i]);
    if (std::isnan(g) || std::isnan(want[i])) {
      ++unwritten;
      continue;
    }
    worst = std::max(worst, std::fabs(g - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  const double relative = scale > 0 ? worst / scale : worst;
  const bool ok = unwritten == 0 && relative <= kTolerance;
  if (!ok) ++failures;
  std::printf("| %-44s | %4lld | %6lld | %9.2e | %9.2e | %s |\n", label.c_str(), static_cast<long long>(batch.head_dim),
              static_cast<long long>(batch.tokens), worst, relative,
              ok ? "ok" : (unwritten ? ("FAIL (" + std::to_string(unwritten) + " NaN)").c_str() : "FAIL"));
}

std::vector<int> random_lengths(Rng& rng, int count, int lo, int hi) {
  std::vector<int> lengths(count);
  for (int& l : lengths) l = rng.between(lo, hi);
  return lengths;
}

float median_ms(cudaError_t (*launch)(const Batch&), const Batch& batch, int runs) {
  for (int i = 0; i < 5; ++i) CHECK_CUDA(launch(batch));
  std::vector<cudaEvent_t> events(2 * runs);
  for (auto& e : events) CHECK_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < runs; ++i) {
    CHECK_CUDA(cudaEventRecord(events[2 * i]));
    CHECK_CUDA(launch(batch));
    CHECK_CUDA(cudaEventRecord(events[2 * i + 1]));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> ms(runs);
  for (int i = 0; i < runs; ++i) CHECK_CUDA(cudaEventElapsedTime(&ms[i], events[2 * i], events[2 * i + 1]));
  for (auto& e : events) CHECK_CUDA(cudaEventDestroy(e));
  std::sort(ms.begin(), ms.end());
  return ms[runs / 2];
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("attention_test on %s (sm_%d%d)\n\n", prop.name, prop.major, prop.minor);
  Rng rng{0x9e3779b97f4a7c15ull};

  std::printf("| check | head_dim | tokens | max abs err | / max abs out | result |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | --- |\n");
  const std::vector<int> edges = {1, 2, 15, 16, 17, 63, 64, 65, 127, 128, 129, 200, 384, 511, 512, 513, 600};
  for (int head_dim : {32, 64, 128, 8, 48, 96, 120}) {
    for (float amplitude : {1.f, 3.f}) {
      const Batch edge_batch(edges, 3, head_dim, amplitude, rng);
      check("edge lengths 1..600, |q|,|k| <= " + std::to_string(static_cast<int>(amplitude)), edge_batch);
    }
    const Batch random_batch(random_lengths(rng, 24, 1, 600), 2, head_dim, 2.f, rng);
    check("24 random lengths in [1, 600]", random_batch);
    if (head_dim == 64) check("same, max_seqlen 1024 (idle blocks exit)", random_batch, 1024);
  }
  for (int64_t head_dim : {0, 4, 100, 136, 256}) {
    AttentionHalfParams p{};
    p.sequences = 1;
    p.max_seqlen = 1;
    p.heads = 1;
    p.head_dim = head_dim;
    const bool rejected = fusedrt::gpu::launch_attention_fp16(p, nullptr) == cudaErrorInvalidValue &&
                          !fusedrt::gpu::attention_fp16_supports(head_dim);
    if (!rejected) ++failures;
    std::printf("| %-44s | %4lld | %6d | %9s | %9s | %s |\n", "unsupported head_dim is rejected",
                static_cast<long long>(head_dim), 0, "-", "-", rejected ? "ok" : "FAIL");
  }

  std::printf("\nTiming, BERT-base attention (12 heads x 64), CUDA events, median of 50:\n\n");
  std::printf("| case | tokens | fp32 ms | fp16 ms | fp16 TFLOP/s | speed-up |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | ---: |\n");
  struct Shape {
    const char* name;
    int seq, batch;
    bool varlen;
  };
  for (const Shape& s : {Shape{"s128 b32", 128, 32, false}, Shape{"s128 b128", 128, 128, false},
                         Shape{"s384 b32", 384, 32, false}, Shape{"s384 b128", 384, 128, false},
                         Shape{"s384 b128 varlen [48, 384]", 384, 128, true}}) {
    const std::vector<int> lengths = s.varlen ? random_lengths(rng, s.batch, s.seq / 8, s.seq) : std::vector<int>(s.batch, s.seq);
    const Batch batch(lengths, 12, 64, 2.f, rng);
    const float ms32 = median_ms([](const Batch& b) { return b.run32(nullptr); }, batch, 50);
    const float ms16 = median_ms([](const Batch& b) { return b.run16(nullptr); }, batch, 50);
    std::printf("| %s | %lld | %.3f | %.3f | %.1f | %.1fx |\n", s.name, static_cast<long long>(batch.tokens), ms32, ms16,
                batch.flops() / (ms16 * 1e-3) / 1e12, ms32 / ms16);
  }
  std::printf("\nattention_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
