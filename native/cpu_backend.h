// The CPU backend: host memory and the reference kernels of native/cpu/.
// One thread pool per backend instance; runs on one backend are serialised
// by the runtime (ThreadPool::parallel_for is not re-entrant).
#pragma once

#include <memory>

#include "backend.h"
#include "cpu/thread_pool.h"

namespace fusedrt {

class CpuBackend : public Backend {
 public:
  // threads <= 0: one per hardware thread.
  explicit CpuBackend(int threads);

  const char* name() const override { return "cpu"; }
  int threads() const override { return pool_.size(); }
  bool supports(OpType type) const override;
  // fp32 activations and weights for every plan (fp16 weights are widened,
  // tf32 plans compute in plain fp32).
  DeviceStorage configure(const Plan& plan) override;
  // Exact sizes: padding would only cost CPU time.
  BatchShape launch_shape(const BatchShape& real, const BatchShape&) const override { return real; }
  void* allocate(size_t bytes) override;
  void release(void* ptr, size_t bytes) override;
  // Host memory is all the CPU has: the same allocator.
  void* allocate_host(size_t bytes) override { return allocate(bytes); }
  void release_host(void* ptr, size_t bytes) override { release(ptr, bytes); }
  void upload(void* device_dst, const void* host_src, size_t bytes) override;
  void copy_to_device(void* device_dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* device_src, size_t bytes) override;
  void to_float(float* device_dst, const void* device_src, int64_t count) override;
  void run(const OpCall& call) override;
  void softmax_topk(const void* logits, int64_t rows, int64_t cols, int k, int32_t* top_ids,
                    float* top_scores) override;
  // The kernels run as they are called: nothing to record or wait for.
  void execute(const std::string&, const std::function<void()>& enqueue) override { enqueue(); }
  void synchronize() override {}

 private:
  // Per plan tensor: kNone unless every op reading it is a gemm (its weight).
  enum class GemmWeight : uint8_t { kNone, kPackOnFirstUse, kPacked };
  void run_packed_gemm(const OpCall& call);

  cpu::ThreadPool pool_;
  std::vector<GemmWeight> gemm_weights_;
};

}  // namespace fusedrt
