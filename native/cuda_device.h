// One GPU as every engine of the process on it shares it (docs/cuda.md, "The
// shared device"): the cuBLASLt handle, the device's properties, and the lock
// that keeps CUDA graph capture apart from calls that may synchronise the
// whole device. Only for files built with FUSEDRT_WITH_CUDA.
#pragma once

#include <cublasLt.h>

#include <memory>
#include <mutex>
#include <string>

#include "backend.h"

namespace fusedrt {

class CudaDevice : public std::enable_shared_from_this<CudaDevice> {
 public:
  // The process's device for `ordinal`: made by the first caller, shared
  // with later ones while any of them holds it, destroyed with the last.
  // Throws FusedError E_BACKEND when the device does not exist or cannot be
  // initialised.
  static std::shared_ptr<CudaDevice> acquire(int ordinal);
  ~CudaDevice();
  CudaDevice(const CudaDevice&) = delete;
  CudaDevice& operator=(const CudaDevice&) = delete;

  int ordinal() const { return ordinal_; }
  // Safe to use from several threads at once: cuBLASLt takes the stream and
  // the workspace per call, and nothing here changes the handle's settings.
  cublasLtHandle_t lt() const { return lt_; }
  // Compute capability as major * 10 + minor (an H100: 90).
  int compute_capability() const { return compute_capability_; }
  // engines: how many holders it has now (each CudaBackend holds it once).
  DeviceInfo info() const;
  // The current device is per host thread, and libuv workers change: every
  // entry point that calls CUDA selects the device first.
  void select() const;

  // A stream capture is invalidated by a call from any thread that
  // synchronises the whole device (cudaFree does, cudaMalloc may), and
  // perhaps by a kernel module loading lazily (it waits for the device). So
  // a context's first run of each key (which may load modules) and its
  // capture, and every creation and release of device resources, happen
  // under this lock: one at a time per GPU, for all engines. Later runs of a
  // key, replayed or launched eagerly, do not take it.
  std::mutex& resource_lock() const { return resource_lock_; }

 private:
  explicit CudaDevice(int ordinal);

  int ordinal_;
  std::string name_;
  int multiprocessors_ = 0;
  int compute_capability_ = 0;
  int64_t memory_bytes_ = 0;
  cublasLtHandle_t lt_ = nullptr;
  mutable std::mutex resource_lock_;
};

}  // namespace fusedrt
