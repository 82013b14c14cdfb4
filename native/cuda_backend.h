// The CUDA backend: device memory, the kernels of cuda/ and cuBLASLt GEMMs
// (docs/cuda.md). Each execution context has its own stream, events, graph
// cache and GEMM runner; all engines on one GPU share its CudaDevice
// (cuda_device.h). Built only with FUSEDRT_WITH_CUDA. The header has no CUDA
// types, so code built by the host compiler alone can include it.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "backend.h"

namespace fusedrt {

// CUDA devices this process sees; 0 when there is no driver or no device.
int cuda_device_count();

// The oldest GPUs the kernels of cuda/ are built for (cuda/backend.cmake):
// compute capability 8.0, whose cp.async and m16n8k16 tensor-core
// instructions they use. Older GPUs (T4, V100, Jetson Xavier) have no code
// to run and would fail at the first kernel.
constexpr int kCudaMinComputeCapability = 80;

struct CudaDeviceSummary {
  int ordinal = 0;
  std::string name;
  int compute_capability = 0;  // major * 10 + minor
};

// Every CUDA device this process sees, in ordinal order (empty when there is
// no driver or no device).
std::vector<CudaDeviceSummary> cuda_devices();

// Why the CUDA backend cannot run on `device`, as a sentence naming it and
// what to do instead; "" when it can.
std::string cuda_unsupported_reason(const CudaDeviceSummary& device);

// Why CUDA cannot start at all although a driver is installed (one older
// than this build's CUDA runtime, most often), as a sentence saying what to
// do; "" when it starts, and when there is no driver or no GPU.
std::string cuda_unavailable_reason();

class CudaBackend : public Backend {
 public:
  // device: CUDA ordinal. cuda_graphs: record each launch shape's work once
  // as a CUDA graph and replay it (docs/cuda.md). Throws FusedError
  // E_BACKEND when the device does not exist or cannot be initialised.
  CudaBackend(int device, bool cuda_graphs);
  ~CudaBackend() override;

  const char* name() const override { return "cuda"; }
  int threads() const override { return 1; }  // host threads driving the device
  bool supports(OpType type) const override;
  bool contexts_overlap() const override { return true; }  // one stream each
  // Into page-locked result buffers; a replayed graph's copies are re-pointed
  // at them (docs/runtime.md, "Outputs land in their result").
  bool lands_outputs() const override { return true; }
  std::optional<DeviceInfo> device_info() const override;
  // fp16 plans: fp16 activations, GEMM weights and biases, embedding tables;
  // fp32 LayerNorm parameters, and fp32 logits with their GEMM's bias
  // (gemms_into_logits). fp32 and tf32 plans: fp32 everywhere.
  DeviceStorage configure(const Plan& plan) override;
  // Buckets (docs/cuda.md, "Launch shapes and CUDA graphs").
  BatchShape launch_shape(const BatchShape& real, const BatchShape& limits) const override;
  // Each context also holds the softmax top-k kernel's row counters and
  // scratch for `limits` (cuda/topk.cuh).
  std::unique_ptr<BackendContext> create_context(const BatchShape& limits) override;
  void* allocate(size_t bytes) override;
  void release(void* ptr, size_t bytes) override;
  void* allocate_host(size_t bytes) override;  // page-locked
  void release_host(void* ptr, size_t bytes) override;
  void upload(void* device_dst, const void* host_src, size_t bytes) override;

 private:
  class Context;
  struct State;
  // E_BACKEND unless the plan's E4M3 parts can run here.
  void check_fp8_support(const Plan& plan) const;
  void store_fp8(const Plan& plan, DeviceStorage& storage);
  std::unique_ptr<State> state_;
};

}  // namespace fusedrt
