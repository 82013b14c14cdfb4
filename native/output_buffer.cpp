#include "output_buffer.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "errors.h"

namespace fusedrt {

namespace {

enum Kind { kPageableKind = 0, kPinnedKind = 1 };

// Free buffers by kind and size class (log2 of the class's bytes). Never
// destroyed: arrays may be finalized during process teardown, after static
// destructors.
struct Pool {
  std::mutex mutex;
  std::vector<void*> free_lists[2][64];
  size_t free_bytes[2] = {0, 0};
  size_t pinned_bytes = 0;  // page-locked now, in use or free
  OutputBuffer::PinnedAllocator pinned{nullptr, nullptr};
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
  p.free_bytes[kind] -= size_t{1} << size_class;
  return buffer;
}

// A page-locked buffer of the class (from the pool, or newly allocated
// within kMaxPinnedBytes), or nullptr.
void* take_pinned(Pool& p, int size_class) {
  const size_t bytes = size_t{1} << size_class;
  {
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.pinned.allocate == nullptr) return nullptr;
    if (void* buffer = take_free(p, kPinnedKind, size_class)) return buffer;
    if (p.pinned_bytes + bytes > OutputBuffer::kMaxPinnedBytes) return nullptr;
    p.pinned_bytes += bytes;  // reserved while allocating, which takes milliseconds: not under the lock
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

OutputBuffer::OutputBuffer(size_t count, Memory memory) : size_(count) {
  if (count == 0) return;
  // Far beyond any memory, and keeps the size classes' shifts defined.
  if (count > (size_t{1} << 60) / sizeof(float)) fail(ErrorCode::kOom, "an output does not fit in memory");
  const size_t bytes = count * sizeof(float);
  if (bytes >= kPooledBytes) {
    const int size_class = class_of(bytes);
    capacity_bytes_ = size_t{1} << size_class;
    Pool& p = pool();
    if (memory == Memory::kPinned) {
      data_ = static_cast<float*>(take_pinned(p, size_class));
      pinned_ = data_ != nullptr;
      if (pinned_) return;
    }
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
  if (capacity_bytes_ >= kPooledBytes) {
    std::lock_guard<std::mutex> lock(p.mutex);
    const int kind = pinned_ ? kPinnedKind : kPageableKind;
    if (p.free_bytes[kind] + capacity_bytes_ <= kMaxPooledBytes) {
      try {
        p.free_lists[kind][class_of(capacity_bytes_)].push_back(data_);
        p.free_bytes[kind] += capacity_bytes_;
        data_ = nullptr;
      } catch (const std::bad_alloc&) {
        // No room to remember it: free it below.
      }
    }
    if (data_ != nullptr && pinned_) {
      p.pinned_bytes -= capacity_bytes_;
      free_pinned = p.pinned.free;
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
