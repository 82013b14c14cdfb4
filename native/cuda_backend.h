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
  // device: CUDA ordinal. cuda_graphs: record each launch shape's work once
  // as a CUDA graph and replay it (docs/cuda.md). Throws FusedError
  // E_BACKEND when the device does not exist or cannot be initialised.
  CudaBackend(int device, bool cuda_graphs);
  ~CudaBackend() override;

  const char* name() const override { return "cuda"; }
  int threads() const override { return 1; }  // host threads driving the device
  bool supports(OpType type) const override;
  // fp16 plans: fp16 activations, GEMM weights and biases, embedding tables;
  // fp32 LayerNorm parameters. fp32 and tf32 plans: fp32 everywhere.
  DeviceStorage configure(const Plan& plan) override;
  // Buckets (docs/cuda.md, "Launch shapes and CUDA graphs").
  BatchShape launch_shape(const BatchShape& real, const BatchShape& limits) const override;
  void* allocate(size_t bytes) override;
  void release(void* ptr, size_t bytes) override;
  void* allocate_host(size_t bytes) override;  // page-locked
  void release_host(void* ptr, size_t bytes) override;
  void upload(void* device_dst, const void* host_src, size_t bytes) override;
  void copy_to_device(void* device_dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* device_src, size_t bytes) override;
  void to_float(float* device_dst, const void* device_src, int64_t count) override;
  void run(const OpCall& call) override;
  void softmax_topk(const void* logits, int64_t rows, int64_t cols, int k, int32_t* top_ids,
                    float* top_scores) override;
  // Records CUDA events around the work it issues (outside any capture).
  void execute(const std::string& key, const std::function<void()>& enqueue) override;
  void synchronize() override;
  // Elapsed time between the events of the last execute().
  double last_execute_ms() const override;

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace fusedrt
