// The copy kernel between mapped host staging and device memory
// (cuda/host_copy.cu): random ranges host → device and device → host, one to
// four per launch, sizes from 4 bytes to the 64 KB limit, 4- and 16-byte
// alignments; every byte must arrive and no byte around a range may change.
// Also: a CUDA graph replays it with the host side rewritten between replays
// (as the backend's recorded runs do), and what it does not take is refused.
// Exit status 0 only if every check passes.
//
//   nvcc -std=c++17 -O3 -arch=native -I native -o host_copy_test cuda/tests/host_copy_test.cu cuda/host_copy.cu
//   ./host_copy_test
#include <cuda_runtime.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "test_support.cuh"
#include "../host_copy.cuh"

namespace {

using fusedrt::gpu::CopyRange;
using fusedrt::test::DeviceBuffer;
using fusedrt::test::Rng;

// Each range gets its own slot this large in both buffers, with guard bytes
// around it that must stay as they were.
constexpr size_t kSlotBytes = fusedrt::gpu::kKernelCopyMaxBytes + 256;
constexpr size_t kGuardBytes = 32;
constexpr int kCases = 400;

int failures = 0;

void expect(bool ok, const char* what, int case_index) {
  if (ok) return;
  ++failures;
  std::printf("FAILED case %d: %s\n", case_index, what);
}

struct Host {
  uint8_t* ptr = nullptr;
  explicit Host(size_t bytes) { CHECK_CUDA(cudaHostAlloc(&ptr, bytes, cudaHostAllocMapped)); }
  ~Host() { cudaFreeHost(ptr); }
  Host(const Host&) = delete;
  Host& operator=(const Host&) = delete;
};

void fill(uint8_t* p, size_t bytes, Rng& rng) {
  for (size_t i = 0; i < bytes; ++i) p[i] = static_cast<uint8_t>(rng.next());
}

// Sizes of `count` ranges: multiples of 4, together `total` bytes at most.
std::vector<size_t> random_sizes(Rng& rng, int count, size_t total) {
  std::vector<size_t> sizes(count);
  for (int i = 0; i < count; ++i) {
    const size_t share = total / static_cast<size_t>(count);
    sizes[i] = 4 * static_cast<size_t>(rng.between(1, static_cast<int>(share / 4)));
  }
  return sizes;
}

void check_round_trips(Rng& rng) {
  const size_t bytes = fusedrt::gpu::kMaxCopyRanges * kSlotBytes;
  Host host(bytes);
  Host back(bytes);
  DeviceBuffer<uint8_t> device(bytes);
  std::vector<uint8_t> device_before(bytes);
  for (int c = 0; c < kCases; ++c) {
    const int count = rng.between(1, fusedrt::gpu::kMaxCopyRanges);
    const size_t alignment = rng.between(0, 1) ? 16 : 4;
    const size_t total = c % 7 == 0 ? fusedrt::gpu::kKernelCopyMaxBytes : static_cast<size_t>(rng.between(16, 8192));
    const std::vector<size_t> sizes = random_sizes(rng, count, total);
    fill(host.ptr, bytes, rng);
    fill(device_before.data(), bytes, rng);
    CHECK_CUDA(cudaMemcpy(device.ptr, device_before.data(), bytes, cudaMemcpyHostToDevice));
    std::vector<CopyRange> in(count), out(count);
    std::vector<size_t> offsets(count);
    for (int i = 0; i < count; ++i) {
      offsets[i] = static_cast<size_t>(i) * kSlotBytes + kGuardBytes + alignment * static_cast<size_t>(rng.between(0, 3));
      in[i] = {device.ptr + offsets[i], host.ptr + offsets[i], sizes[i]};
      out[i] = {back.ptr + offsets[i], device.ptr + offsets[i], sizes[i]};
    }
    expect(fusedrt::gpu::copy_ranges_supports(in.data(), count), "supported", c);
    CHECK_CUDA(fusedrt::gpu::copy_ranges(in.data(), count, nullptr));
    std::vector<uint8_t> device_after(bytes);
    CHECK_CUDA(cudaMemcpy(device_after.data(), device.ptr, bytes, cudaMemcpyDeviceToHost));
    // Expected device contents: the old bytes, with each range from the host.
    std::vector<uint8_t> expected = device_before;
    for (int i = 0; i < count; ++i) std::memcpy(&expected[offsets[i]], host.ptr + offsets[i], sizes[i]);
    expect(device_after == expected, "host -> device: ranges copied, guards kept", c);

    // And back, each range to its own place in a second host buffer.
    std::memset(back.ptr, 0xA5, bytes);
    CHECK_CUDA(fusedrt::gpu::copy_ranges(out.data(), count, nullptr));
    CHECK_CUDA(cudaDeviceSynchronize());
    bool ok = true;
    for (int i = 0; i < count; ++i) {
      ok = ok && std::memcmp(back.ptr + offsets[i], host.ptr + offsets[i], sizes[i]) == 0;
      const size_t end = offsets[i] + sizes[i];
      for (size_t g = 0; g < kGuardBytes; ++g) ok = ok && back.ptr[offsets[i] - 1 - g] == 0xA5 && back.ptr[end + g] == 0xA5;
    }
    expect(ok, "device -> host: ranges copied, guards kept", c);
  }
  std::printf("round trips: %d cases of 1-%d ranges\n", kCases, fusedrt::gpu::kMaxCopyRanges);
}

// Recorded once, replayed with new host contents each time, as the backend
// replays a run's graph after writing the next batch into staging.
void check_graph_replay(Rng& rng) {
  constexpr size_t kBytes = 4096;
  Host host(kBytes);
  Host back(kBytes);
  DeviceBuffer<uint8_t> device(kBytes);
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  const CopyRange in{device.ptr, host.ptr, kBytes};
  const CopyRange out{back.ptr, device.ptr, kBytes};
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  CHECK_CUDA(fusedrt::gpu::copy_ranges(&in, 1, stream));
  CHECK_CUDA(fusedrt::gpu::copy_ranges(&out, 1, stream));
  cudaGraph_t graph;
  CHECK_CUDA(cudaStreamEndCapture(stream, &graph));
  cudaGraphExec_t exec;
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  for (int replay = 0; replay < 5; ++replay) {
    fill(host.ptr, kBytes, rng);
    std::memset(back.ptr, 0, kBytes);
    CHECK_CUDA(cudaGraphLaunch(exec, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    expect(std::memcmp(back.ptr, host.ptr, kBytes) == 0, "graph replay sees the host's new bytes", replay);
  }
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  cudaStreamDestroy(stream);
  std::printf("graph replays: 5\n");
}

void check_refusals() {
  alignas(16) static uint8_t a[64], b[64];
  const CopyRange odd_size{a, b, 6};
  const CopyRange misaligned{a + 2, b, 8};
  const CopyRange too_large{a, b, fusedrt::gpu::kKernelCopyMaxBytes + 4};
  const CopyRange fine{a, b, 8};
  const CopyRange five[5] = {fine, fine, fine, fine, fine};
  int index = 0;
  for (const auto& [ranges, count] : {std::pair<const CopyRange*, int>{&odd_size, 1}, {&misaligned, 1}, {&too_large, 1},
                                      {five, 5}, {&fine, 0}}) {
    expect(!fusedrt::gpu::copy_ranges_supports(ranges, count), "refused by copy_ranges_supports", index);
    expect(fusedrt::gpu::copy_ranges(ranges, count, nullptr) == cudaErrorInvalidValue, "refused by copy_ranges", index);
    ++index;
  }
  std::printf("refusals: %d\n", index);
}

}  // namespace

int main() {
  cudaDeviceProp prop{};
  CHECK_CUDA(cudaGetDeviceProperties(&prop, 0));
  std::printf("host_copy_test on %s\n", prop.name);
  Rng rng{0x2545f4914f6cdd1dull};
  check_round_trips(rng);
  check_graph_replay(rng);
  check_refusals();
  std::printf("host_copy_test: %s (%d failure%s)\n", failures ? "FAILED" : "all checks passed", failures,
              failures == 1 ? "" : "s");
  return failures ? 1 : 0;
}
