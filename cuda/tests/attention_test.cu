// The fp16 tensor-core attention (launch_attention_fp16) against the fp32
// kernel (attention), which the GPU test suite checks against the CPU backend
// and transformers. Both get the same fp16-rounded inputs. Then both are
// timed on BERT-base and MiniLM shapes with CUDA events. Exit status 0 only if every
// check passes. On a Hopper GPU head_dim 64 runs the wgmma kernel
// (cuda/attention_hopper.cu); FUSEDRT_ATTENTION=mma runs the mma.sync one.
//
//   nvcc -std=c++17 -O3 -gencode arch=compute_90a,code=sm_90a -I native -c cuda/attention_hopper.cu -o attention_hopper.o
//   nvcc -std=c++17 -O3 -arch=native -I native -o attention_test cuda/tests/attention_test.cu cuda/attention.cu attention_hopper.o
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

#include "test_support.cuh"
#include "../attention.cuh"

using fusedrt::gpu::AttentionHalfParams;

namespace {

using fusedrt::test::DeviceBuffer;
using fusedrt::test::Rng;

// Relative to the largest |output| of the fp32 kernel.
constexpr double kTolerance = 2e-3;

int64_t count_tokens(const std::vector<int>& lengths) {
  int64_t n = 0;
  for (int l : lengths) n += l;
  return n;
}

// One packed batch on the device, in both precisions (the fp32 copy is the fp16 values widened).
struct Batch {
  std::vector<int> lengths;
  int64_t tokens = 0, heads = 0, head_dim = 0, max_seqlen = 0;
  float scale = 0;
  DeviceBuffer<int32_t> cu_seqlens;
  DeviceBuffer<__half> qkv16, out16;
  DeviceBuffer<float> qkv32, out32;

  Batch(const std::vector<int>& lens, int64_t h, int64_t d, float qk_amplitude, Rng& rng)
      : lengths(lens), tokens(count_tokens(lens)), heads(h), head_dim(d),
        scale(1.f / std::sqrt(static_cast<float>(d))), cu_seqlens(lens.size() + 1), qkv16(tokens * 3 * h * d),
        out16(tokens * h * d), qkv32(tokens * 3 * h * d), out32(tokens * h * d) {
    std::vector<int32_t> cu(lens.size() + 1, 0);
    for (size_t b = 0; b < lens.size(); ++b) cu[b + 1] = cu[b] + lens[b];
    max_seqlen = std::max(1, *std::max_element(lens.begin(), lens.end()));
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

  cudaError_t run16() const {
    AttentionHalfParams p{};
    p.qkv = qkv16.ptr;
    p.cu_seqlens = cu_seqlens.ptr;
    p.sequences = static_cast<int64_t>(lengths.size());
    p.max_seqlen = max_seqlen;
    p.heads = heads;
    p.head_dim = head_dim;
    p.scale = scale;
    p.out = out16.ptr;
    return fusedrt::gpu::launch_attention_fp16(p, nullptr);
  }

  cudaError_t run32() const {
    fusedrt::cpu::AttentionParams p{};
    p.qkv = qkv32.ptr;
    p.cu_seqlens = cu_seqlens.ptr;
    p.sequences = static_cast<int64_t>(lengths.size());
    p.heads = heads;
    p.head_dim = head_dim;
    p.scale = scale;
    p.out = out32.ptr;
    return fusedrt::gpu::attention(p, tokens, nullptr);
  }

  size_t out_count() const { return static_cast<size_t>(tokens * heads * head_dim); }

  // 4 * sum(len^2) * head_dim * heads: Q K^T and P V.
  double flops() const {
    double sum = 0;
    for (int l : lengths) sum += static_cast<double>(l) * l;
    return 4 * sum * static_cast<double>(head_dim * heads);
  }

  // What the op must move at least: QKV read once, out written once.
  double bytes() const { return static_cast<double>(tokens * heads * head_dim) * 4 * sizeof(__half); }
};

int failures = 0;

// The error cell of a check row: the error relative to the largest |output|,
// or why it failed.
std::string compare(const std::vector<__half>& got, const std::vector<float>& want, bool& ok) {
  double worst = 0, scale = 0;
  size_t unwritten = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double g = __half2float(got[i]);
    if (std::isnan(g) || std::isnan(want[i])) {
      ++unwritten;
      continue;
    }
    worst = std::max(worst, std::fabs(g - want[i]));
    scale = std::max(scale, std::fabs(static_cast<double>(want[i])));
  }
  const double relative = scale > 0 ? worst / scale : worst;
  ok = unwritten == 0 && relative <= kTolerance;
  char cell[64];
  if (unwritten) {
    std::snprintf(cell, sizeof cell, "FAIL (%zu NaN)", unwritten);
  } else {
    std::snprintf(cell, sizeof cell, "%.1e%s", relative, ok ? "" : " FAIL");
  }
  return cell;
}

std::vector<__half> download16(const Batch& batch) {
  std::vector<__half> v(batch.out_count());
  CHECK_CUDA(cudaMemcpy(v.data(), batch.out16.ptr, v.size() * sizeof(__half), cudaMemcpyDeviceToHost));
  return v;
}

// Poisons the outputs (NaN), runs both kernels once, compares every
// element; one table row.
void check(const std::string& label, Batch& batch) {
  const size_t count = batch.out_count();
  CHECK_CUDA(cudaMemset(batch.out32.ptr, 0xff, count * sizeof(float)));
  CHECK_CUDA(batch.run32());
  CHECK_CUDA(cudaMemset(batch.out16.ptr, 0xff, count * sizeof(__half)));
  CHECK_CUDA(batch.run16());
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> want(count);
  CHECK_CUDA(cudaMemcpy(want.data(), batch.out32.ptr, count * sizeof(float), cudaMemcpyDeviceToHost));
  bool ok = false;
  const std::string cell = compare(download16(batch), want, ok);
  if (!ok) ++failures;
  std::printf("| %-40s | %4lld | %4lld | %6lld | %s | %s |\n", label.c_str(), static_cast<long long>(batch.head_dim),
              static_cast<long long>(batch.heads), static_cast<long long>(batch.tokens), cell.c_str(),
              ok ? "ok" : "FAIL");
}

std::vector<int> random_lengths(Rng& rng, int count, int lo, int hi) {
  std::vector<int> lengths(count);
  for (int& l : lengths) l = rng.between(lo, hi);
  return lengths;
}

// A runtime-style bucket: `real` random lengths in [1, longest], then empty
// padding sequences up to `bucket`, all starting at the real token count.
std::vector<int> padded_bucket(Rng& rng, int real, int bucket, int longest) {
  std::vector<int> lengths = random_lengths(rng, real, 1, longest);
  lengths.resize(bucket, 0);
  return lengths;
}

void check_rejections() {
  for (int64_t head_dim : {0, 4, 100, 136, 256}) {
    AttentionHalfParams p{};
    p.sequences = 1;
    p.max_seqlen = 1;
    p.heads = 1;
    p.head_dim = head_dim;
    const bool rejected = fusedrt::gpu::launch_attention_fp16(p, nullptr) == cudaErrorInvalidValue &&
                          !fusedrt::gpu::attention_fp16_supports(head_dim);
    if (!rejected) ++failures;
    std::printf("| unsupported head_dim %-19lld | %4lld | %4d | %6d | - | %s |\n", static_cast<long long>(head_dim),
                static_cast<long long>(head_dim), 1, 0, rejected ? "ok" : "FAIL");
  }
}

void run_checks(Rng& rng) {
  std::printf("Checks: max |fp16 - fp32| / max |fp32 output| (tolerance %.0e).\n\n", kTolerance);
  std::printf("| check | head_dim | heads | tokens | error | result |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: | --- |\n");
  const std::vector<int> edges = {1, 2, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129, 200, 255, 256, 257, 384, 511, 512,
                                  513, 600};
  const std::vector<int> with_empty = {0, 5, 0, 0, 1, 130, 0, 64, 1, 300, 0, 0};
  for (int head_dim : {32, 64, 128, 8, 48, 96, 120}) {
    for (float amplitude : {1.f, 3.f}) {
      Batch batch(edges, 3, head_dim, amplitude, rng);
      check("edge lengths 1..600, |q|,|k| <= " + std::to_string(static_cast<int>(amplitude)), batch);
    }
    Batch random_batch(random_lengths(rng, 24, 1, 600), 2, head_dim, 2.f, rng);
    check("24 random lengths in [1, 600]", random_batch);
    Batch empty_batch(with_empty, 3, head_dim, 2.f, rng);
    check("empty (first, middle, last) and length-1", empty_batch);
    // Enough short sequences that head dims up to 64 take the short tiling
    // (stages of 32 keys, 6 blocks per SM), its stage edges included.
    std::vector<int> short_edges;
    for (int copy = 0; copy < 4; ++copy) {
      for (int length : edges) {
        if (length <= 128) short_edges.push_back(length);
      }
    }
    Batch short_batch(short_edges, 12, head_dim, 2.f, rng);
    short_batch.max_seqlen = 128;
    check("edge lengths 1..128 x 4, 12 heads", short_batch);
    if (head_dim == 64) {
      random_batch.max_seqlen = 1024;
      check("24 random, max_seqlen 1024 (idle blocks)", random_batch);
      for (float scale : {-0.125f, 0.f}) {
        Batch scaled(edges, 3, head_dim, 2.f, rng);
        scaled.scale = scale;
        check("edge lengths, scale " + std::to_string(scale), scaled);
      }
    }
  }
  for (int head_dim : {32, 64, 128}) {
    struct Case {
      const char* name;
      std::vector<int> lengths;
      int max_seqlen;
    };
    const Case cases[] = {
        {"batch 1 x 128", std::vector<int>(1, 128), 128},
        {"batch 1 x 384", std::vector<int>(1, 384), 384},
        {"batch 1 x 512", std::vector<int>(1, 512), 512},
        {"batch 2 x 100, max_seqlen 128", std::vector<int>(2, 100), 128},
        {"batch 32 x 128", std::vector<int>(32, 128), 128},
        {"bucket 32 (20 real in [1, 128]), max 128", padded_bucket(rng, 20, 32, 128), 128},
        {"bucket 4 (3 real in [1, 512]), max 512", padded_bucket(rng, 3, 4, 512), 512},
    };
    for (const Case& c : cases) {
      Batch batch(c.lengths, 12, head_dim, 2.f, rng);
      batch.max_seqlen = c.max_seqlen;
      check(c.name, batch);
    }
  }
  check_rejections();
}

// Mean time of one launch, in microseconds. warm: median over 5 event pairs
// around 20 back-to-back launches (inputs stay in L2 where they fit). cold:
// median over 20 event pairs around one launch each, after a memset of twice
// the L2 size (as Nsight Compute's cache control does; includes the ~1-2 us
// gap between an event and the launch).
template <class Launch>
double time_us(Launch launch, bool cold, void* flush, size_t flush_bytes) {
  for (int i = 0; i < 3; ++i) CHECK_CUDA(launch());
  const int pairs = cold ? 20 : 5;
  const int per_pair = cold ? 1 : 20;
  std::vector<cudaEvent_t> events(2 * pairs);
  for (auto& e : events) CHECK_CUDA(cudaEventCreate(&e));
  for (int i = 0; i < pairs; ++i) {
    if (cold) CHECK_CUDA(cudaMemsetAsync(flush, i & 0xff, flush_bytes));
    CHECK_CUDA(cudaEventRecord(events[2 * i]));
    for (int k = 0; k < per_pair; ++k) CHECK_CUDA(launch());
    CHECK_CUDA(cudaEventRecord(events[2 * i + 1]));
  }
  CHECK_CUDA(cudaDeviceSynchronize());
  std::vector<float> ms(pairs);
  for (int i = 0; i < pairs; ++i) CHECK_CUDA(cudaEventElapsedTime(&ms[i], events[2 * i], events[2 * i + 1]));
  for (auto& e : events) CHECK_CUDA(cudaEventDestroy(e));
  std::sort(ms.begin(), ms.end());
  return 1e3 * ms[pairs / 2] / per_pair;
}

struct TimedShape {
  const char* name;
  int seq, batch;
  bool varlen;
};

// Cold and warm tables of one model's heads (12 of head_dim) over shapes.
void time_heads(Rng& rng, const char* model, int head_dim, const std::vector<TimedShape>& shapes, void* flush,
                size_t flush_bytes) {
  std::string tables[2];  // cold, warm
  for (const TimedShape& s : shapes) {
    const std::vector<int> lengths =
        s.varlen ? random_lengths(rng, s.batch, s.seq / 8, s.seq) : std::vector<int>(s.batch, s.seq);
    Batch batch(lengths, 12, head_dim, 2.f, rng);
    batch.max_seqlen = s.seq;
    for (int cold = 1; cold >= 0; --cold) {
      const double us = time_us([&] { return batch.run16(); }, cold, flush, flush_bytes);
      char cell[128];
      std::snprintf(cell, sizeof cell, "| %s | %.2f | %.1f | %.0f |", s.name, us, batch.flops() / (us * 1e-6) / 1e12,
                    batch.bytes() / (us * 1e-6) / 1e9);
      std::string row = cell;
      if (!cold) {
        std::snprintf(cell, sizeof cell, " %.1f |", time_us([&] { return batch.run32(); }, false, nullptr, 0));
        row += cell;
      }
      tables[cold ? 0 : 1] += row + "\n";
    }
  }
  for (int cold = 1; cold >= 0; --cold) {
    std::printf("\nTiming, %s attention (12 heads x %d), %s, us per launch; TFLOP/s and GB/s (QKV read + out "
                "written once) of the fp16 kernel:\n\n",
                model, head_dim, cold ? "cold L2 (flushed before each launch)" : "warm L2 (20 launches back to back)");
    std::printf("| batch x seq | fp16 | TFLOP/s | GB/s |%s\n", cold ? "" : " fp32 |");
    std::printf("| --- | ---: | ---: | ---: |%s\n", cold ? "" : " ---: |");
    std::printf("%s", tables[cold ? 0 : 1].c_str());
  }
}

void run_timing(Rng& rng, const cudaDeviceProp& prop) {
  const size_t flush_bytes = 2 * static_cast<size_t>(std::max(prop.l2CacheSize, 1 << 20));
  DeviceBuffer<unsigned char> flush(flush_bytes);
  time_heads(rng, "BERT-base", 64,
             {{"1 x 128", 128, 1, false},
              {"1 x 384", 384, 1, false},
              {"1 x 512", 512, 1, false},
              {"4 x 128", 128, 4, false},
              {"8 x 128", 128, 8, false},
              {"32 x 128", 128, 32, false},
              {"32 x 128 varlen [16, 128]", 128, 32, true},
              {"128 x 128", 128, 128, false},
              {"32 x 384", 384, 32, false},
              {"128 x 384", 384, 128, false},
              {"128 x 384 varlen [48, 384]", 384, 128, true}},
             flush.ptr, flush_bytes);
  // MiniLM-L6 (sentence embeddings) has 12 heads of 32.
  time_heads(rng, "MiniLM", 32,
             {{"1 x 128", 128, 1, false},
              {"8 x 128", 128, 8, false},
              {"32 x 128", 128, 32, false},
              {"32 x 128 varlen [16, 128]", 128, 32, true},
              {"32 x 384", 384, 32, false}},
             flush.ptr, flush_bytes);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("attention_test on %s (sm_%d%d, %d SMs, L2 %d MB)\n\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20);
  Rng rng{0x9e3779b97f4a7c15ull};
  run_checks(rng);
  run_timing(rng, prop);
  std::printf("\nattention_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
