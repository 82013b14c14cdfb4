// One block row per range (blockIdx.y); its blocks stride over the range in
// 16-byte words where both ends of the range allow, else in 4-byte ones.
#include "host_copy.cuh"

#include <algorithm>
#include <cstdint>

namespace fusedrt::gpu {

namespace {

constexpr int kThreads = 256;
// Enough blocks per range to keep a few hundred bus transactions in flight
// for the largest copy this takes (64 KB = 4096 16-byte words).
constexpr size_t kMaxBlocksPerRange = 16;

struct Ranges {
  CopyRange range[kMaxCopyRanges];
};

bool aligned(const void* p, uintptr_t to) { return reinterpret_cast<uintptr_t>(p) % to == 0; }

template <class Word>
__device__ void copy_words(const CopyRange& r) {
  const size_t words = r.bytes / sizeof(Word);
  const Word* from = static_cast<const Word*>(r.src);
  Word* to = static_cast<Word*>(r.dst);
  for (size_t i = size_t{blockIdx.x} * kThreads + threadIdx.x; i < words; i += size_t{gridDim.x} * kThreads) {
    to[i] = from[i];
  }
}

__global__ void __launch_bounds__(kThreads) copy_ranges_kernel(const Ranges ranges) {
  const CopyRange& r = ranges.range[blockIdx.y];
  const bool wide = r.bytes % 16 == 0 && reinterpret_cast<uintptr_t>(r.src) % 16 == 0 &&
                    reinterpret_cast<uintptr_t>(r.dst) % 16 == 0;
  if (wide) {
    copy_words<uint4>(r);
  } else {
    copy_words<uint32_t>(r);
  }
}

}  // namespace

bool copy_ranges_supports(const CopyRange* ranges, int count) {
  if (count < 1 || count > kMaxCopyRanges) return false;
  size_t total = 0;
  for (int i = 0; i < count; ++i) {
    const CopyRange& r = ranges[i];
    if (r.bytes % 4 != 0 || !aligned(r.src, 4) || !aligned(r.dst, 4)) return false;
    total += r.bytes;
  }
  return total <= kKernelCopyMaxBytes;
}

cudaError_t copy_ranges(const CopyRange* ranges, int count, cudaStream_t stream) {
  if (!copy_ranges_supports(ranges, count)) return cudaErrorInvalidValue;
  Ranges packed{};
  size_t largest = 0;
  for (int i = 0; i < count; ++i) {
    packed.range[i] = ranges[i];
    largest = std::max(largest, ranges[i].bytes);
  }
  const size_t blocks = std::clamp<size_t>((largest / 16 + kThreads - 1) / kThreads, 1, kMaxBlocksPerRange);
  copy_ranges_kernel<<<dim3(static_cast<unsigned>(blocks), static_cast<unsigned>(count)), kThreads, 0, stream>>>(packed);
  return cudaGetLastError();
}

}  // namespace fusedrt::gpu
