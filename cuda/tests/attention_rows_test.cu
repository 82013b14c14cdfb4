// attention_rows (cuda/attention_rows.cu) against the rows of the full fp32
// attention (gpu::attention, cuda/attention.cu, which the GPU test suite
// checks against the CPU backend) on the same inputs: fp32 within 1e-5 and
// fp16 within 2e-3 of the largest |reference output| (qkv rounded to fp16
// once; the reference gets those values widened). Head dims 1, 7, 32, 48,
// 64, 80, 100, 128 and 256 in both types; sequences of 1 to 600 tokens with
// empty ones first, in the middle and as trailing padding, sequences of 4100
// and 8200 tokens, and 100 and 1500 short sequences (two and three rounds of
// the sequence search). Query rows: random tokens with repeats plus each
// sequence's first and last, every token, cu_seqlens itself (the first token
// of each sequence; padding sequences point at the token count and must give
// rows of zeros), and out-of-range tokens (zeros). Also qkv one element off
// 16-byte alignment (the element-load path), and negative and zero scale.
// Outputs are poisoned with NaN first, so an unwritten element fails.
// Refusals must return cudaErrorInvalidValue, and rows = 0 must write
// nothing. Then BERT-base fp16 shapes are timed next to the full fp16
// attention. Exit status 0 only if every check passes (1: a check failed,
// 2: the test could not run).
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o /tmp/attention_rows_test cuda/tests/attention_rows_test.cu cuda/attention_rows.cu cuda/attention.cu
//   /tmp/attention_rows_test
// (tools/device/gpu-check.sh links it against its kernel library instead.)
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <type_traits>
#include <vector>

#include "test_support.cuh"
#include "../attention.cuh"
#include "../attention_rows.cuh"

namespace {

using fusedrt::gpu::AttentionRowsArgs;
using fusedrt::test::DeviceBuffer;
using fusedrt::test::median_us;
using fusedrt::test::Rng;

constexpr double kTolerance32 = 1e-5;
constexpr double kTolerance16 = 2e-3;

int failures = 0;

template <class T>
void upload(T* dst, const std::vector<T>& src) {
  CHECK_CUDA(cudaMemcpy(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice));
}

template <class T>
std::vector<T> download(const T* src, size_t count) {
  std::vector<T> v(count);
  CHECK_CUDA(cudaMemcpy(v.data(), src, count * sizeof(T), cudaMemcpyDeviceToHost));
  return v;
}

double widen(float x) { return x; }
double widen(__half x) { return __half2float(x); }

int64_t count_tokens(const std::vector<int>& lengths) {
  int64_t n = 0;
  for (int l : lengths) n += l;
  return n;
}

// A packed batch on the device: qkv in fp16 and the same values widened to
// fp32, each starting `offset` elements into its buffer.
struct Batch {
  std::vector<int32_t> cu;
  int64_t sequences, tokens, heads, head_dim, offset;
  float scale;
  DeviceBuffer<int32_t> cu_d;
  DeviceBuffer<__half> qkv16;
  DeviceBuffer<float> qkv32;
  std::vector<float> full;  // after reference(): gpu::attention of the fp32 copy, [tokens, heads * head_dim]

  Batch(const std::vector<int>& lengths, int64_t h, int64_t d, float qk_amplitude, int64_t off, Rng& rng)
      : cu(lengths.size() + 1, 0), sequences(static_cast<int64_t>(lengths.size())), tokens(count_tokens(lengths)),
        heads(h), head_dim(d), offset(off), scale(1.f / std::sqrt(static_cast<float>(d))), cu_d(cu.size()),
        qkv16(off + tokens * 3 * h * d), qkv32(off + tokens * 3 * h * d) {
    for (size_t b = 0; b < lengths.size(); ++b) cu[b + 1] = cu[b] + lengths[b];
    const int64_t w = width();
    std::vector<__half> q16(off + tokens * 3 * w, __float2half(0.f));
    std::vector<float> q32(q16.size(), 0.f);
    for (int64_t t = 0; t < tokens; ++t) {
      for (int64_t c = 0; c < 3 * w; ++c) {
        const float amplitude = c < 2 * w ? qk_amplitude : 1.f;  // Q, K | V
        const __half v = __float2half(rng.uniform(-amplitude, amplitude));
        q16[off + t * 3 * w + c] = v;
        q32[off + t * 3 * w + c] = __half2float(v);
      }
    }
    upload(cu_d.ptr, cu);
    upload(qkv16.ptr, q16);
    upload(qkv32.ptr, q32);
  }

  int64_t width() const { return heads * head_dim; }

  template <class T>
  const T* qkv() const {
    if constexpr (std::is_same_v<T, float>) {
      return qkv32.ptr + offset;
    } else {
      return qkv16.ptr + offset;
    }
  }

  void reference() {
    DeviceBuffer<float> out(tokens * width());
    fusedrt::cpu::AttentionParams p{};
    p.qkv = qkv<float>();
    p.cu_seqlens = cu_d.ptr;
    p.sequences = sequences;
    p.heads = heads;
    p.head_dim = head_dim;
    p.scale = scale;
    p.out = out.ptr;
    CHECK_CUDA(fusedrt::gpu::attention(p, tokens, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    full = download(out.ptr, static_cast<size_t>(tokens * width()));
  }
};

template <class T>
AttentionRowsArgs<T> args_for(const Batch& batch, const int32_t* query_rows, int64_t rows, T* out) {
  AttentionRowsArgs<T> p{};
  p.qkv = batch.qkv<T>();
  p.cu_seqlens = batch.cu_d.ptr;
  p.sequences = batch.sequences;
  p.heads = batch.heads;
  p.head_dim = batch.head_dim;
  p.scale = batch.scale;
  p.query_rows = query_rows;
  p.rows = rows;
  p.out = out;
  return p;
}

// Runs attention_rows<T> once on poisoned (NaN) output and compares every
// element: rows of valid tokens with the reference's row, the others with
// exact zeros. One table row.
template <class T>
void check_rows(const std::string& label, const Batch& batch, const int32_t* query_rows_d,
                const std::vector<int32_t>& query_rows) {
  const auto rows = static_cast<int64_t>(query_rows.size());
  const int64_t width = batch.width();
  const auto count = static_cast<size_t>(rows * width);
  DeviceBuffer<T> out(count);
  CHECK_CUDA(cudaMemset(out.ptr, 0xff, count * sizeof(T)));
  CHECK_CUDA(fusedrt::gpu::attention_rows(args_for<T>(batch, query_rows_d, rows, out.ptr), nullptr));
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<T> got = download(out.ptr, count);

  double worst = 0, peak = 0;
  size_t unwritten = 0, not_zero = 0;
  int64_t zero_rows = 0;
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t t = query_rows[r];
    const bool valid = t >= 0 && t < batch.tokens;
    zero_rows += valid ? 0 : 1;
    for (int64_t c = 0; c < width; ++c) {
      const double g = widen(got[r * width + c]);
      if (!valid) {
        not_zero += g == 0 ? 0 : 1;  // NaN too
      } else if (std::isnan(g)) {
        ++unwritten;
      } else {
        const double w = batch.full[t * width + c];
        worst = std::max(worst, std::fabs(g - w));
        peak = std::max(peak, std::fabs(w));
      }
    }
  }
  const double tolerance = std::is_same_v<T, float> ? kTolerance32 : kTolerance16;
  const double relative = peak > 0 ? worst / peak : worst;
  const bool ok = unwritten == 0 && not_zero == 0 && relative <= tolerance;
  if (!ok) ++failures;
  char cell[96];
  if (unwritten || not_zero) {
    std::snprintf(cell, sizeof cell, "FAIL (%zu NaN, %zu not zero)", unwritten, not_zero);
  } else {
    std::snprintf(cell, sizeof cell, "%.1e%s", relative, ok ? "" : " FAIL");
  }
  std::printf("| %-4s | %-52s | %3lld | %2lld | %5lld | %5lld | %4lld | %s | %s |\n",
              std::is_same_v<T, float> ? "fp32" : "fp16", label.c_str(), static_cast<long long>(batch.head_dim),
              static_cast<long long>(batch.heads), static_cast<long long>(batch.tokens), static_cast<long long>(rows),
              static_cast<long long>(zero_rows), cell, ok ? "ok" : "FAIL");
}

void check_both(const std::string& label, const Batch& batch, const int32_t* query_rows_d,
                const std::vector<int32_t>& query_rows) {
  check_rows<float>(label, batch, query_rows_d, query_rows);
  check_rows<__half>(label, batch, query_rows_d, query_rows);
}

void check_uploaded(const std::string& label, const Batch& batch, const std::vector<int32_t>& query_rows) {
  DeviceBuffer<int32_t> rows_d(query_rows.size());
  upload(rows_d.ptr, query_rows);
  check_both(label, batch, rows_d.ptr, query_rows);
}

// Every query-row set on one batch (computing its reference first).
void check_batch(const std::string& name, Batch& batch, Rng& rng, bool every_token) {
  batch.reference();
  std::vector<int32_t> picked;
  for (int i = 0; i < 48; ++i) picked.push_back(static_cast<int32_t>(rng.below(batch.tokens)));
  for (int i = 0; i < 16; ++i) {
    const int32_t repeat = picked[rng.below(48)];
    picked.push_back(repeat);
  }
  for (int64_t b = 0; b < batch.sequences; ++b) {
    if (batch.cu[b + 1] > batch.cu[b]) {
      picked.push_back(batch.cu[b]);
      picked.push_back(batch.cu[b + 1] - 1);
    }
  }
  check_uploaded(name + ": random, repeats, firsts, lasts", batch, picked);

  // Exactly what the backend passes for "first token of each sequence".
  const std::vector<int32_t> firsts(batch.cu.begin(), batch.cu.end() - 1);
  check_both(name + ": query_rows = cu_seqlens", batch, batch.cu_d.ptr, firsts);

  const auto tokens = static_cast<int32_t>(batch.tokens);
  check_uploaded(name + ": out of range among valid", batch,
                 {-1, tokens, tokens + 7, INT_MIN, INT_MAX, 0, tokens - 1, -tokens});

  if (every_token) {
    std::vector<int32_t> all(static_cast<size_t>(batch.tokens));
    for (int32_t t = 0; t < tokens; ++t) all[t] = t;
    check_uploaded(name + ": every token", batch, all);
  }
}

void check_rejections() {
  struct Bad {
    const char* name;
    int64_t heads, head_dim, rows, sequences;
  };
  const Bad cases[] = {{"head_dim 257", 1, 257, 1, 1}, {"head_dim 0", 1, 0, 1, 1}, {"heads 0", 0, 64, 1, 1},
                       {"heads 65536", 65536, 64, 1, 1}, {"rows -1", 1, 64, -1, 1}, {"rows 2^31", 1, 64, 1ll << 31, 1},
                       {"sequences -1", 1, 64, 1, -1}};
  for (const Bad& c : cases) {
    AttentionRowsArgs<float> p32{};
    AttentionRowsArgs<__half> p16{};
    p32.heads = p16.heads = c.heads;
    p32.head_dim = p16.head_dim = c.head_dim;
    p32.rows = p16.rows = c.rows;
    p32.sequences = p16.sequences = c.sequences;
    const bool rejected = fusedrt::gpu::attention_rows(p32, nullptr) == cudaErrorInvalidValue &&
                          fusedrt::gpu::attention_rows(p16, nullptr) == cudaErrorInvalidValue &&
                          cudaGetLastError() == cudaSuccess;
    if (!rejected) ++failures;
    std::printf("%s refused: %s\n", rejected ? "ok" : "FAILED", c.name);
  }

  // rows = 0 on a real batch: success, and the output untouched.
  Rng rng{7};
  Batch batch({5, 3}, 2, 64, 1.f, 0, rng);
  DeviceBuffer<int32_t> rows_d(1);
  DeviceBuffer<__half> out(batch.width());
  CHECK_CUDA(cudaMemset(out.ptr, 0xff, batch.width() * sizeof(__half)));
  const cudaError_t status = fusedrt::gpu::attention_rows(args_for<__half>(batch, rows_d.ptr, 0, out.ptr), nullptr);
  CHECK_CUDA(cudaDeviceSynchronize());
  const std::vector<__half> after = download(out.ptr, static_cast<size_t>(batch.width()));
  bool untouched = status == cudaSuccess;
  for (__half h : after) untouched = untouched && std::isnan(__half2float(h));
  if (!untouched) ++failures;
  std::printf("%s rows 0: success, nothing written\n", untouched ? "ok" : "FAILED");
}

std::vector<int> random_lengths(Rng& rng, int count, int lo, int hi) {
  std::vector<int> lengths(count);
  for (int& l : lengths) l = rng.between(lo, hi);
  return lengths;
}

void run_checks(Rng& rng) {
  std::printf("Checks: max |got - reference| / max |reference| over the valid rows (fp32 %.0e, fp16 %.0e); "
              "other rows must be exact zeros.\n\n",
              kTolerance32, kTolerance16);
  std::printf("| type | check | head_dim | heads | tokens | rows | zero rows | error | result |\n");
  std::printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |\n");
  // Empty sequences first, in the middle and as a bucket's trailing padding.
  const std::vector<int> edges = {0,   1,   2,   15,  16,  17,  31,  32,  33,  63, 64, 65, 0, 127,
                                  128, 129, 200, 255, 256, 257, 384, 511, 512, 513, 600, 0, 0, 0};
  for (int head_dim : {32, 64, 128, 48, 80, 256, 7, 1, 100}) {
    Batch batch(edges, 3, head_dim, 2.f, 0, rng);
    check_batch("lengths 0..600", batch, rng, true);
  }
  for (int head_dim : {64, 128, 256, 7}) {
    // Peaked scores (|q|, |k| <= 3), so that 8200 keys still leave outputs
    // well above fp32 rounding.
    Batch batch({4100, 3, 8200, 0, 0}, 2, head_dim, 3.f, 0, rng);
    check_batch("lengths 4100, 3, 8200, 2 padding", batch, rng, false);
  }
  for (int head_dim : {32, 64, 128, 256}) {
    Batch batch(edges, 3, head_dim, 2.f, 1, rng);
    check_batch("qkv 1 element past 16-byte alignment", batch, rng, true);
  }
  for (float scale : {-0.125f, 0.f}) {
    Batch batch(edges, 3, 64, 2.f, 0, rng);
    batch.scale = scale;
    check_batch("scale " + std::to_string(scale), batch, rng, false);
  }
  {
    Batch batch({300}, 12, 64, 2.f, 0, rng);
    check_batch("one sequence of 300", batch, rng, true);
  }
  for (int sequences : {100, 1500}) {
    std::vector<int> lengths = random_lengths(rng, sequences, 0, 6);
    lengths.resize(lengths.size() + 7, 0);
    Batch batch(lengths, 2, 32, 2.f, 0, rng);
    check_batch(std::to_string(sequences) + " sequences of 0..6, 7 padding", batch, rng, true);
  }
  std::printf("\n");
  check_rejections();
}

void run_timing(Rng& rng) {
  struct Shape {
    const char* name;
    int batch, seq, random_rows;  // random_rows 0: one query row per sequence, its first token
  };
  const Shape shapes[] = {{"1 x 128, first token", 1, 128, 0},       {"1 x 128, 8 random rows", 1, 128, 8},
                          {"32 x 128, first tokens", 32, 128, 0},   {"8 x 384, first tokens", 8, 384, 0},
                          {"1 x 512, first token", 1, 512, 0},      {"1 x 8192, first token", 1, 8192, 0}};
  std::printf("\nTiming, BERT-base attention (12 heads x 64), fp16, warm L2, us per launch (median): single "
              "launches (200, an event pair around each) and CUDA graphs of 20 (50 samples); the full fp16 "
              "attention (launch_attention_fp16, graphs of 20) on the same batch for scale:\n\n");
  std::printf("| batch x seq, query rows | rows | single | graph | full attention |\n");
  std::printf("| --- | ---: | ---: | ---: | ---: |\n");
  for (const Shape& s : shapes) {
    Batch batch(std::vector<int>(s.batch, s.seq), 12, 64, 2.f, 0, rng);
    std::vector<int32_t> picked;
    for (int i = 0; i < s.random_rows; ++i) picked.push_back(static_cast<int32_t>(rng.below(batch.tokens)));
    DeviceBuffer<int32_t> picked_d(picked.size());
    if (!picked.empty()) upload(picked_d.ptr, picked);
    const int32_t* rows_d = picked.empty() ? batch.cu_d.ptr : picked_d.ptr;
    const int64_t rows = picked.empty() ? batch.sequences : static_cast<int64_t>(picked.size());
    DeviceBuffer<__half> out(rows * batch.width());
    const AttentionRowsArgs<__half> p = args_for<__half>(batch, rows_d, rows, out.ptr);
    const auto launch = [&](cudaStream_t stream) { CHECK_CUDA(fusedrt::gpu::attention_rows(p, stream)); };

    DeviceBuffer<__half> full_out(batch.tokens * batch.width());
    fusedrt::gpu::AttentionHalfParams full{};
    full.qkv = batch.qkv<__half>();
    full.cu_seqlens = batch.cu_d.ptr;
    full.sequences = batch.sequences;
    full.max_seqlen = s.seq;
    full.heads = batch.heads;
    full.head_dim = batch.head_dim;
    full.scale = batch.scale;
    full.out = full_out.ptr;
    const auto launch_full = [&](cudaStream_t stream) {
      CHECK_CUDA(fusedrt::gpu::launch_attention_fp16(full, stream));
    };
    std::printf("| %s | %lld | %.2f | %.2f | %.2f |\n", s.name, static_cast<long long>(rows), median_us(launch, 1, 200),
                median_us(launch, 20, 50), median_us(launch_full, 20, 50));
  }
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("attention_rows_test on %s (sm_%d%d, %d SMs, L2 %d MB)\n\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20);
  Rng rng{0x2545f4914f6cdd1dull};
  run_checks(rng);
  run_timing(rng);
  std::printf("\nattention_rows_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
