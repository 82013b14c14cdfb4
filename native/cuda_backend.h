// The CUDA backend: device memory, one stream per engine, the kernels of
// cuda/ and cuBLASLt GEMMs (docs/cuda.md). Built only with FUSEDRT_WITH_CUDA.
// The header has no CUDA types, so code built by the host compiler alone can
// include it.
#pragma once

#include <memory>

#include "backend.h"

namespace fusedrt {

// CUDA devices this process sees; 0 when there is no driver or no device.
int cuda_device_count();

class CudaBackend : public Backend {
 public:
  // device: CUDA ordinal. Throws FusedError E_BACKEND when it does not exist
  // or cannot be initialised.
  explicit CudaBackend(int device);
  ~CudaBackend() override;

  const char* name() const override { return "cuda"; }
  int threads() const override { return 1; }  // host threads driving the device
  bool supports(OpType type) const override;
  void* allocate(size_t bytes) override;
  void release(void* ptr, size_t bytes) override;
  void upload(void* device_dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* device_src, size_t bytes) override;
  void synchronize() override;
  void run(const OpCall& call) override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace fusedrt
