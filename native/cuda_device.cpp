// The process-wide registry of shared CUDA devices (cuda_device.h).
#include "cuda_device.h"

#include <cuda_runtime.h>

#include <map>

#include "cuda_backend.h"
#include "cuda_check.h"
#include "errors.h"

namespace fusedrt {

namespace {

// Weak, so a device goes with its last engine: an idle process keeps no
// cuBLASLt handle (nor its device memory) alive.
struct Registry {
  std::mutex mutex;
  std::map<int, std::weak_ptr<CudaDevice>> devices;
};

Registry& registry() {
  static Registry* instance = new Registry();  // never destroyed: engines may be freed during exit
  return *instance;
}

}  // namespace

std::shared_ptr<CudaDevice> CudaDevice::acquire(int ordinal) {
  Registry& r = registry();
  // Held while a new device initialises, so engines loading at the same time
  // on one GPU end up with the same device.
  std::lock_guard<std::mutex> lock(r.mutex);
  auto found = r.devices.find(ordinal);
  if (found != r.devices.end()) {
    if (std::shared_ptr<CudaDevice> existing = found->second.lock()) return existing;
  }
  std::shared_ptr<CudaDevice> device(new CudaDevice(ordinal));
  r.devices[ordinal] = device;
  return device;
}

CudaDevice::CudaDevice(int ordinal) : ordinal_(ordinal) {
  const int count = cuda_device_count();
  if (ordinal < 0 || ordinal >= count) {
    fail(ErrorCode::kBackend, "CUDA device " + std::to_string(ordinal) + " does not exist: this machine has " +
                                  std::to_string(count) + " CUDA device(s)");
  }
  select();
  cudaDeviceProp properties{};
  check(cudaGetDeviceProperties(&properties, ordinal), "cudaGetDeviceProperties");
  name_ = properties.name;
  multiprocessors_ = properties.multiProcessorCount;
  compute_capability_ = properties.major * 10 + properties.minor;
  memory_bytes_ = static_cast<int64_t>(properties.totalGlobalMem);
  const std::string unsupported = cuda_unsupported_reason({ordinal, name_, compute_capability_});
  if (!unsupported.empty()) fail(ErrorCode::kBackend, unsupported);
  check(cublasLtCreate(&lt_), "cublasLtCreate");
}

CudaDevice::~CudaDevice() {
  // Every engine on the device is gone, and with it all work that used the handle.
  cudaSetDevice(ordinal_);
  cublasLtDestroy(lt_);
}

void CudaDevice::select() const {
  check(cudaSetDevice(ordinal_), "cudaSetDevice(" + std::to_string(ordinal_) + ")");
}

DeviceInfo CudaDevice::info() const {
  DeviceInfo info;
  info.name = name_;
  info.ordinal = ordinal_;
  info.engines = static_cast<int>(weak_from_this().use_count());
  info.multiprocessors = multiprocessors_;
  info.memory_bytes = memory_bytes_;
  return info;
}

}  // namespace fusedrt
