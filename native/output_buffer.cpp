#include "output_buffer.h"

#include <algorithm>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <functional>
#include <iterator>
#include <mutex>
#include <new>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "errors.h"

namespace fusedrt {

namespace {

enum Kind { kPageableKind = 0, kPinnedKind = 1 };

// Page-locked buffers a class keeps free or under way ahead of need: as
// many as fit in kSpareBytes, at most kMaxSpares (so none above 64 MB).
constexpr int kMaxSpares = 2;
constexpr size_t kSpareBytes = size_t{64} << 20;

// Free buffers by kind and size class (log2 of the class's bytes). Never
// destroyed: arrays may be finalized during process teardown, after static
// destructors.
struct Pool {
  std::mutex mutex;
  std::vector<void*> free_lists[2][64];
  size_t free_pageable_bytes = 0;  // bounded by kMaxPooledBytes; free pinned ones by kMaxPinnedBytes
  size_t pinned_bytes = 0;  // page-locked now, in use, free or being allocated
  OutputBuffer::PinnedAllocator pinned{nullptr, nullptr};

  // The helper thread's work: page-locked allocations ahead, by class.
  // Allocating takes milliseconds, and buffers are taken on the JS thread
  // (a replay's issue).
  enum class Helper { kNotStarted, kRunning, kUnavailable };
  Helper helper = Helper::kNotStarted;
  std::thread helper_thread;
  std::condition_variable work_changed;
  std::deque<int> to_allocate;
  int under_way[64] = {};  // allocations ahead asked for or running, per class
};

Pool& pool() {
  static Pool* const instance = new Pool();
  return *instance;
}

int class_of(size_t bytes) {
  int log2 = 0;
  while ((size_t{1} << log2) < bytes) ++log2;
  return log2;
}

// A free buffer of the class, or nullptr; the pool's mutex is held.
void* take_free(Pool& p, int kind, int size_class) {
  std::vector<void*>& list = p.free_lists[kind][size_class];
  if (list.empty()) return nullptr;
  void* buffer = list.back();
  list.pop_back();
  if (kind == kPageableKind) p.free_pageable_bytes -= size_t{1} << size_class;
  return buffer;
}

// Keeps a page-locked buffer in the free pool (all of them: what is
// page-locked is bounded by kMaxPinnedBytes already), or reports that the
// caller must give it back (outside the lock); the mutex is held.
bool keep_free_pinned(Pool& p, void* buffer, size_t bytes) {
  try {
    p.free_lists[kPinnedKind][class_of(bytes)].push_back(buffer);
    return true;
  } catch (const std::bad_alloc&) {
    p.pinned_bytes -= bytes;  // no room to remember it: given back
    return false;
  }
}

void helper_loop(Pool& p) {
  std::unique_lock<std::mutex> lock(p.mutex);
  for (;;) {
    p.work_changed.wait(lock, [&p] { return p.helper != Pool::Helper::kRunning || !p.to_allocate.empty(); });
    if (p.helper != Pool::Helper::kRunning) return;
    const int size_class = p.to_allocate.front();
    p.to_allocate.pop_front();
    const size_t bytes = size_t{1} << size_class;
    lock.unlock();
    void* buffer = p.pinned.allocate(bytes);
    lock.lock();
    --p.under_way[size_class];
    if (buffer == nullptr) {
      p.pinned_bytes -= bytes;
    } else if (!keep_free_pinned(p, buffer, bytes)) {
      lock.unlock();
      p.pinned.free(buffer);
      lock.lock();
    }
    p.work_changed.notify_all();
  }
}

// Stops the helper at exit, before CUDA's own teardown (registered after
// the CUDA runtime started, so run before it): its allocation in flight
// ends first.
void stop_helper() {
  Pool& p = pool();
  std::thread helper;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.helper != Pool::Helper::kRunning) return;
    p.helper = Pool::Helper::kUnavailable;
    helper = std::move(p.helper_thread);
  }
  p.work_changed.notify_all();
  helper.join();
}

// Whether the helper runs, starting it on first use; the mutex is held.
bool helper_running(Pool& p) {
  if (p.helper == Pool::Helper::kNotStarted) {
    try {
      p.helper_thread = std::thread(helper_loop, std::ref(p));
      p.helper = Pool::Helper::kRunning;
      std::atexit(stop_helper);
    } catch (const std::system_error&) {
      p.helper = Pool::Helper::kUnavailable;  // no thread to be had: everything on the caller's thread
    }
  }
  return p.helper == Pool::Helper::kRunning;
}

// Asks the helper for page-locked buffers of the class until it has its
// spares free or under way, within kMaxPinnedBytes; the mutex is held.
void ask_for_spares(Pool& p, int size_class) {
  const size_t bytes = size_t{1} << size_class;
  const int spares = static_cast<int>(std::min<size_t>(kMaxSpares, kSpareBytes / bytes));
  const auto have = [&] { return static_cast<int>(p.free_lists[kPinnedKind][size_class].size()) + p.under_way[size_class]; };
  if (have() >= spares || !helper_running(p)) return;
  try {
    while (have() < spares && p.pinned_bytes + bytes <= OutputBuffer::kMaxPinnedBytes) {
      p.to_allocate.push_back(size_class);
      ++p.under_way[size_class];
      p.pinned_bytes += bytes;
    }
  } catch (const std::bad_alloc&) {
    // Fewer spares: the next buffer of the class is allocated when asked for.
  }
  p.work_changed.notify_all();
}

// A page-locked buffer of the class (from the pool, or newly allocated
// within kMaxPinnedBytes), or nullptr. Asks for the class's spares, so
// that the next one is had off this thread.
void* take_pinned(Pool& p, int size_class) {
  const size_t bytes = size_t{1} << size_class;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.pinned.allocate == nullptr) return nullptr;
    void* buffer = take_free(p, kPinnedKind, size_class);
    const bool allocate_here = buffer == nullptr && p.pinned_bytes + bytes <= OutputBuffer::kMaxPinnedBytes;
    if (allocate_here) p.pinned_bytes += bytes;  // reserved while allocating, which takes milliseconds: not under the lock
    ask_for_spares(p, size_class);
    if (!allocate_here) return buffer;
  }
  void* buffer = p.pinned.allocate(bytes);
  if (buffer == nullptr) {
    std::lock_guard<std::mutex> lock(p.mutex);
    p.pinned_bytes -= bytes;
  }
  return buffer;
}

}  // namespace

void OutputBuffer::register_pinned_allocator(PinnedAllocator allocator) {
  Pool& p = pool();
  std::lock_guard<std::mutex> lock(p.mutex);
  if (p.pinned.allocate == nullptr) p.pinned = allocator;
}

void OutputBuffer::settle() {
  Pool& p = pool();
  std::unique_lock<std::mutex> lock(p.mutex);
  p.work_changed.wait(lock, [&p] {
    return p.helper != Pool::Helper::kRunning ||
           std::all_of(std::begin(p.under_way), std::end(p.under_way), [](int n) { return n == 0; });
  });
}

OutputBuffer::OutputBuffer(size_t count, Memory memory) : size_(count) {
  if (count == 0) return;
  // Far beyond any memory, and keeps the size classes' shifts defined.
  if (count > (size_t{1} << 60) / sizeof(float)) fail(ErrorCode::kOom, "an output does not fit in memory");
  const size_t bytes = count * sizeof(float);
  const int size_class = class_of(bytes);
  Pool& p = pool();
  if (memory == Memory::kPinned && bytes >= kPinnedMinBytes) {
    data_ = static_cast<float*>(take_pinned(p, size_class));
    pinned_ = data_ != nullptr;
    if (pinned_) {
      capacity_bytes_ = size_t{1} << size_class;
      return;
    }
  }
  if (bytes >= kPooledBytes) {
    capacity_bytes_ = size_t{1} << size_class;
    std::lock_guard<std::mutex> lock(p.mutex);
    data_ = static_cast<float*>(take_free(p, kPageableKind, size_class));
    if (data_ != nullptr) return;
  } else {
    capacity_bytes_ = bytes;
  }
  data_ = static_cast<float*>(std::malloc(capacity_bytes_));
  if (data_ == nullptr) {
    size_ = 0;
    capacity_bytes_ = 0;
    fail(ErrorCode::kOom, "cannot allocate " + std::to_string(bytes) + " bytes for an output");
  }
}

OutputBuffer::OutputBuffer(OutputBuffer&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)),
      size_(std::exchange(other.size_, 0)),
      capacity_bytes_(std::exchange(other.capacity_bytes_, 0)),
      pinned_(std::exchange(other.pinned_, false)) {}

OutputBuffer& OutputBuffer::operator=(OutputBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_bytes_ = std::exchange(other.capacity_bytes_, 0);
    pinned_ = std::exchange(other.pinned_, false);
  }
  return *this;
}

OutputBuffer::~OutputBuffer() { release(); }

void OutputBuffer::shrink(size_t count) { size_ = std::min(size_, count); }

void OutputBuffer::release() {
  if (data_ == nullptr) return;
  Pool& p = pool();
  void (*free_pinned)(void*) = nullptr;
  if (pinned_ || capacity_bytes_ >= kPooledBytes) {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (pinned_) {
      if (keep_free_pinned(p, data_, capacity_bytes_)) {
        data_ = nullptr;
      } else {
        free_pinned = p.pinned.free;
      }
    } else if (p.free_pageable_bytes + capacity_bytes_ <= kMaxPooledBytes) {
      try {
        p.free_lists[kPageableKind][class_of(capacity_bytes_)].push_back(data_);
        p.free_pageable_bytes += capacity_bytes_;
        data_ = nullptr;
      } catch (const std::bad_alloc&) {
        // No room to remember it: freed below.
      }
    }
  }
  if (data_ != nullptr) {
    // Not under the lock: giving page-locked memory back can take a while.
    if (free_pinned != nullptr) {
      free_pinned(data_);
    } else {
      std::free(data_);
    }
  }
  data_ = nullptr;
  size_ = 0;
  capacity_bytes_ = 0;
  pinned_ = false;
}

}  // namespace fusedrt
