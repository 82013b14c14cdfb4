#include "output_buffer.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <string>
#include <utility>
#include <vector>

#include "errors.h"

namespace fusedrt {

namespace {

// Free buffers by size class (log2 of the class's bytes). Never destroyed:
// arrays may be finalized during process teardown, after static destructors.
struct Pool {
  std::mutex mutex;
  std::vector<void*> free_lists[64];
  size_t free_bytes = 0;
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

}  // namespace

OutputBuffer::OutputBuffer(size_t count) : size_(count) {
  if (count == 0) return;
  // Far beyond any memory, and keeps the size classes' shifts defined.
  if (count > (size_t{1} << 60) / sizeof(float)) fail(ErrorCode::kOom, "an output does not fit in memory");
  const size_t bytes = count * sizeof(float);
  if (bytes >= kPooledBytes) {
    const int size_class = class_of(bytes);
    capacity_bytes_ = size_t{1} << size_class;
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    std::vector<void*>& list = p.free_lists[size_class];
    if (!list.empty()) {
      data_ = static_cast<float*>(list.back());
      list.pop_back();
      p.free_bytes -= capacity_bytes_;
      return;
    }
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
      capacity_bytes_(std::exchange(other.capacity_bytes_, 0)) {}

OutputBuffer& OutputBuffer::operator=(OutputBuffer&& other) noexcept {
  if (this != &other) {
    release();
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    capacity_bytes_ = std::exchange(other.capacity_bytes_, 0);
  }
  return *this;
}

OutputBuffer::~OutputBuffer() { release(); }

void OutputBuffer::release() {
  if (data_ == nullptr) return;
  if (capacity_bytes_ >= kPooledBytes) {
    Pool& p = pool();
    std::lock_guard<std::mutex> lock(p.mutex);
    if (p.free_bytes + capacity_bytes_ <= kMaxPooledBytes) {
      try {
        p.free_lists[class_of(capacity_bytes_)].push_back(data_);
        p.free_bytes += capacity_bytes_;
        data_ = nullptr;
      } catch (const std::bad_alloc&) {
        // No room to remember it: free it below.
      }
    }
  }
  std::free(data_);
  data_ = nullptr;
  size_ = 0;
  capacity_bytes_ = 0;
}

}  // namespace fusedrt
