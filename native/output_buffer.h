// Host memory for a run's full outputs (RunOutput::data), recycled.
//
// A full output is copied out of the context's staging into memory that the
// result's Float32Array then owns until it is collected. glibc serves a fresh
// multi-megabyte allocation as a new mapping, and faulting its pages in (and
// unmapping them at free) costs several times the copy itself: on an H100
// host, copying 3.8 MB of staging into freshly malloc'd memory took 2.4-2.7
// ms, into memory used before 0.37-0.38 ms (bench/RESULTS.md). So buffers of
// at least kPooledBytes go back to a process-wide pool when released, and
// the next output of the same size class reuses one, its pages already in.
// The pool keeps at most kMaxPooledBytes of free ordinary buffers; the rest
// is freed.
// Thread-safe: buffers are filled on the thread that finishes a run and
// released on the JS thread, by the array's finalizer.
//
// A buffer may also be page-locked (Memory::kPinned), from an allocator a
// GPU backend registers: its copy engine then writes the run's output
// straight into the buffer the result hands to JS, and no host copy is left
// (docs/runtime.md, "Outputs land in their result"). Pinned buffers have a
// pool of their own and a cap on what is page-locked at once
// (kMaxPinnedBytes, in use and free); past it, or without an allocator, a
// buffer asked for as pinned is an ordinary one (pinned() says which).
// Allocating and giving back page-locked memory take milliseconds each
// (on an H100 host, runs that had 16 MB page-locked and gave as much back
// held the JS thread 6-9 ms) and hold up the device's other work,
// so a pinned buffer, once had, is never given back but kept free for the
// next result, and a helper thread allocates spares ahead: when a buffer
// of a class is taken, up to two more of it (none above 64 MB).
#pragma once

#include <cstddef>

namespace fusedrt {

class OutputBuffer {
 public:
  // Ordinary buffers of this size and above are pooled, in power-of-two
  // classes.
  static constexpr size_t kPooledBytes = size_t{256} << 10;
  static constexpr size_t kMaxPooledBytes = size_t{256} << 20;
  static constexpr size_t kMaxPinnedBytes = size_t{1} << 30;
  // Page-locked buffers from this size on (pooled in the same classes): up
  // to 64 KB a GPU's copy of an output is a kernel writing the staging
  // (cuda/host_copy.cuh), which a recorded graph cannot point elsewhere.
  static constexpr size_t kPinnedMinBytes = size_t{64} << 10;

  enum class Memory { kPageable, kPinned };
  // How page-locked memory is had and given back (the CUDA backend's:
  // cudaHostRegister of written memory, cudaHostUnregister); allocate
  // returns nullptr when it cannot. Registered once
  // per process; later calls are ignored. Both may be called on the pool's
  // helper thread.
  struct PinnedAllocator {
    void* (*allocate)(size_t bytes);
    void (*free)(void* p);
  };
  static void register_pinned_allocator(PinnedAllocator allocator);
  // Waits until the helper thread has allocated the spares asked for, so
  // that what is page-locked is known (for tests).
  static void settle();

  OutputBuffer() = default;
  // `count` floats, not initialised. Pinned only from kPinnedMinBytes on.
  // Throws FusedError E_OOM when the memory cannot be had.
  explicit OutputBuffer(size_t count, Memory memory = Memory::kPageable);
  OutputBuffer(OutputBuffer&& other) noexcept;
  OutputBuffer& operator=(OutputBuffer&& other) noexcept;
  OutputBuffer(const OutputBuffer&) = delete;
  OutputBuffer& operator=(const OutputBuffer&) = delete;
  ~OutputBuffer();

  float* data() { return data_; }
  const float* data() const { return data_; }
  size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }
  bool pinned() const { return pinned_; }
  // Keeps the first `count` floats (at most size()) as the buffer's content.
  void shrink(size_t count);

 private:
  void release();

  float* data_ = nullptr;
  size_t size_ = 0;
  size_t capacity_bytes_ = 0;  // of the allocation; a pool class when pooled
  bool pinned_ = false;
};

}  // namespace fusedrt
