// Copies between page-locked host staging and device memory done by a
// kernel, which reads or writes the host side across the bus. In a CUDA
// graph, each memcpy node costs the GPU a hand-off to a copy engine and back
// (five of them, a fill-mask run's four inputs and one output, added
// 12-19 us to a graph and 6.5 us to its launch on an H100; bench/RESULTS.md,
// "graph_launch"), where one kernel node costs about what any small kernel
// does. Only for small copies: a kernel writes across the bus slower than a
// copy engine (3.9 MB of logits took 0.25 ms longer on an H100).
//
// The host side must be page-locked memory of this process (cudaHostAlloc):
// with unified addressing, which every platform CUDA 13 runs on has, its
// host pointer is valid on the device too.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>

namespace fusedrt::gpu {

struct CopyRange {
  void* dst;
  const void* src;
  size_t bytes;
};

// Ranges one launch copies at most.
constexpr int kMaxCopyRanges = 4;

// Copies larger than this (in all) go to a copy engine instead.
constexpr size_t kKernelCopyMaxBytes = 64 * 1024;

// Whether copy_ranges takes these: 1..kMaxCopyRanges ranges, kKernelCopyMaxBytes
// in all at most, every pointer and size a multiple of 4 bytes.
bool copy_ranges_supports(const CopyRange* ranges, int count);

// Queues one kernel that copies every range (they must not overlap); returns
// cudaErrorInvalidValue when copy_ranges_supports() says no, else the launch
// error, if any.
cudaError_t copy_ranges(const CopyRange* ranges, int count, cudaStream_t stream);

}  // namespace fusedrt::gpu
