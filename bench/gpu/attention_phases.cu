// Where a launch of the Hopper attention (cuda/attention_hopper.cu) spends
// its time: the kernel's phase marks (FUSEDRT_ATTENTION_MARK) recorded by
// the first thread of every block, on its SM's cycle counter, with the
// global timer at the block's start and end. Printed per BERT-base shape:
// when blocks start and end after the first block starts, and for each
// phase the median and the slowest block, in nanoseconds.
//
// Each launch follows a copy that rewrites the QKV input, as the QKV GEMM
// does in a run (the input is in L2, the launch waits on a copy); the last
// of 20 is marked. A mark costs its thread a clock read and a store, so the
// phases add up to a little more than an unmarked block takes.
//
//   nvcc -std=c++17 -O3 -I native -I cuda/tests -gencode arch=compute_90a,code=sm_90a \
//     -o /tmp/attention_phases bench/gpu/attention_phases.cu && /tmp/attention_phases
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <vector>

#include "test_support.cuh"

namespace probe {

constexpr int kTiles = 2;   // query tiles a block takes at most (kQTiles)
constexpr int kPhases = 11;  // marks per tile, FUSEDRT_ATTENTION_MARK's second argument
constexpr int kStartNs = kTiles * kPhases, kEndNs = kStartNs + 1, kSm = kStartNs + 2, kEndClock = kStartNs + 3;
constexpr int kSlots = kStartNs + 4;

__device__ unsigned long long* marks;

__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ void mark(int tile, int phase) {
  if (threadIdx.x != 0 || marks == nullptr) return;
  unsigned long long* m = marks + (static_cast<size_t>(blockIdx.y) * gridDim.x + blockIdx.x) * kSlots;
  m[tile * kPhases + phase] = clock64();
  if (phase == 0) {
    unsigned sm;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
    m[kStartNs] = global_ns();
    m[kSm] = sm;
  } else if (phase == kPhases - 1) {
    m[kEndNs] = global_ns();
    m[kEndClock] = clock64();
  }
}

}  // namespace probe

#define FUSEDRT_ATTENTION_MARK(tile, phase) ::probe::mark(tile, phase)
#include "../../cuda/attention_hopper.cu"

namespace {

using fusedrt::gpu::AttentionHalfParams;
using fusedrt::test::DeviceBuffer;
using fusedrt::test::Rng;

const char* const kPhaseNames[probe::kPhases] = {
    "start",     "Q, K_0 landed",    "S_0",        "softmax_0", "K_1, V_0 landed", "S_1",
    "softmax_1", "P_0 V_0, rescale", "V_1 landed", "P_1 V_1",   "output stored"};

struct Shape {
  const char* name;
  int sequences, longest;
  bool varlen;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

void probe_shape(const Shape& shape, Rng& rng) {
  constexpr int kHeads = 12, kHeadDim = 64, kWidth = kHeads * kHeadDim;
  std::vector<int32_t> cu(shape.sequences + 1, 0);
  for (int b = 0; b < shape.sequences; ++b) {
    cu[b + 1] = cu[b] + (shape.varlen ? rng.between(shape.longest / 8, shape.longest) : shape.longest);
  }
  const int64_t tokens = cu.back();
  std::vector<__half> host(tokens * 3 * kWidth);
  for (auto& v : host) v = __float2half(rng.uniform(-2.f, 2.f));
  DeviceBuffer<int32_t> cu_seqlens(cu.size());
  DeviceBuffer<__half> source(host.size()), qkv(host.size()), out(tokens * kWidth);
  CHECK_CUDA(cudaMemcpy(cu_seqlens.ptr, cu.data(), cu.size() * sizeof(int32_t), cudaMemcpyHostToDevice));
  CHECK_CUDA(cudaMemcpy(source.ptr, host.data(), host.size() * sizeof(__half), cudaMemcpyHostToDevice));

  AttentionHalfParams p{};
  p.qkv = qkv.ptr;
  p.cu_seqlens = cu_seqlens.ptr;
  p.sequences = shape.sequences;
  p.max_seqlen = shape.longest;
  p.heads = kHeads;
  p.head_dim = kHeadDim;
  p.scale = 0.125f;
  p.out = out.ptr;

  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreate(&stream));
  const size_t blocks = static_cast<size_t>(shape.sequences) * 2 * kHeads;  // at least the grid
  DeviceBuffer<unsigned long long> marks(blocks * probe::kSlots);
  std::vector<unsigned long long> m(blocks * probe::kSlots);
  for (int round = 0; round < 20; ++round) {  // the last one marked, after 19 to warm up
    const bool marked = round == 19;
    unsigned long long* target = marked ? marks.ptr : nullptr;
    CHECK_CUDA(cudaMemcpyToSymbol(probe::marks, &target, sizeof target));
    if (marked) CHECK_CUDA(cudaMemset(marks.ptr, 0, blocks * probe::kSlots * sizeof(unsigned long long)));
    CHECK_CUDA(cudaMemcpyAsync(qkv.ptr, source.ptr, host.size() * sizeof(__half), cudaMemcpyDeviceToDevice, stream));
    CHECK_CUDA(fusedrt::gpu::launch_attention_hopper(p, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
  }
  CHECK_CUDA(cudaMemcpy(m.data(), marks.ptr, m.size() * sizeof(unsigned long long), cudaMemcpyDeviceToHost));
  CHECK_CUDA(cudaStreamDestroy(stream));

  unsigned long long first_ns = ~0ull;
  std::vector<const unsigned long long*> started;
  for (size_t b = 0; b < blocks; ++b) {
    const unsigned long long* row = m.data() + b * probe::kSlots;
    if (row[probe::kStartNs] == 0) continue;
    started.push_back(row);
    first_ns = std::min(first_ns, row[probe::kStartNs]);
  }
  std::vector<double> starts, ends, cycles_per_ns;
  std::vector<int> per_sm(1024, 0);
  for (const auto* row : started) {
    starts.push_back(static_cast<double>(row[probe::kStartNs] - first_ns));
    ends.push_back(static_cast<double>(row[probe::kEndNs] - first_ns));
    const double ns = static_cast<double>(row[probe::kEndNs] - row[probe::kStartNs]);
    if (ns > 0) cycles_per_ns.push_back(static_cast<double>(row[probe::kEndClock] - row[0]) / ns);
    ++per_sm[row[probe::kSm] % 1024];
  }
  const double ghz = median(cycles_per_ns);
  if (started.empty()) {
    std::printf("\n### %s: no marks (a kernel built without FUSEDRT_ATTENTION_MARK?)\n", shape.name);
    return;
  }
  std::printf("\n### %s: %lld tokens, %zu blocks ran, at most %d on one SM; SM clock %.2f GHz\n\n", shape.name,
              static_cast<long long>(tokens), started.size(), *std::max_element(per_sm.begin(), per_sm.end()), ghz);
  std::printf("block start after the first: median %.0f ns, last %.0f ns; block end: median %.0f ns, last %.0f ns\n\n",
              median(starts), *std::max_element(starts.begin(), starts.end()), median(ends),
              *std::max_element(ends.begin(), ends.end()));
  std::printf("| tile | phase (time since the block's previous mark) | blocks | median ns | slowest ns |\n");
  std::printf("| ---: | --- | ---: | ---: | ---: |\n");
  for (int tile = 0; tile < probe::kTiles; ++tile) {
    for (int phase = 1; phase < probe::kPhases; ++phase) {
      std::vector<double> deltas;
      for (const auto* row : started) {
        const unsigned long long at = row[tile * probe::kPhases + phase];
        if (at == 0) continue;
        // The mark this block made just before (tile 1's first follows tile
        // 0's last).
        unsigned long long previous = 0;
        for (int i = 0; i < probe::kTiles * probe::kPhases; ++i) {
          if (row[i] != 0 && row[i] < at) previous = std::max(previous, row[i]);
        }
        if (previous == 0) continue;
        deltas.push_back(static_cast<double>(at - previous) / ghz);
      }
      if (deltas.empty()) continue;
      std::printf("| %d | %s | %zu | %.0f | %.0f |\n", tile, kPhaseNames[phase], deltas.size(), median(deltas),
                  *std::max_element(deltas.begin(), deltas.end()));
    }
  }
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("attention_phases on %s (%d SMs)\n", prop.name, prop.multiProcessorCount);
  Rng rng{0x5eed5eedull};
  const Shape shapes[] = {{"1 x 128", 1, 128, false},
                          {"8 x 128", 8, 128, false},
                          {"32 x 128", 32, 128, false},
                          {"32 x 128, lengths in [16, 128]", 32, 128, true},
                          {"128 x 128", 128, 128, false}};
  for (const Shape& shape : shapes) probe_shape(shape, rng);
  return 0;
}
