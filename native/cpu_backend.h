// The CPU backend: host memory and the reference kernels of native/cpu/.
// One thread pool per backend instance. Its contexts compute one at a time
// (ThreadPool::parallel_for is not re-entrant, and every kernel already uses
// the whole pool); what a run does outside compute (validation, staging,
// copying results out) still overlaps.
#pragma once

#include <memory>
#include <mutex>

#include "backend.h"
#include "cpu/thread_pool.h"

namespace fusedrt {

class CpuBackend : public Backend {
 public:
  // threads <= 0: one per hardware thread. background: the pool computes
  // below the process's priority (cpu/thread_pool.h), runs included.
  CpuBackend(int threads, bool background);

  const char* name() const override { return "cpu"; }
  int threads() const override { return pool_.size(); }
  bool supports(OpType type) const override;
  bool contexts_overlap() const override { return false; }
  // fp32 activations and weights for every plan (fp16 weights are widened,
  // tf32 plans compute in plain fp32).
  DeviceStorage configure(const Plan& plan) override;
  // Exact sizes: padding would only cost CPU time.
  BatchShape launch_shape(const BatchShape& real, const BatchShape&) const override { return real; }
  std::unique_ptr<BackendContext> create_context(const BatchShape& limits) override;
  void* allocate(size_t bytes) override;
  void release(void* ptr, size_t bytes) override;
  // Host memory is all the CPU has: the same allocator.
  void* allocate_host(size_t bytes) override { return allocate(bytes); }
  void release_host(void* ptr, size_t bytes) override { release(ptr, bytes); }
  void upload(void* device_dst, const void* host_src, size_t bytes) override;

 private:
  class Context;
  // Per plan tensor: kNone unless every op reading it is a gemm (its weight).
  enum class GemmWeight : uint8_t { kNone, kPackOnFirstUse, kPacked };
  void run(const OpCall& call);
  void run_packed_gemm(const OpCall& call);
  void round_to_e4m3(const float* from, float* to, int64_t count);

  cpu::ThreadPool pool_;
  std::vector<GemmWeight> gemm_weights_;
  // Held by a context for the whole of its execute(): the pool and the
  // first-use packing of gemm_weights_ serve one run at a time.
  std::mutex compute_mutex_;
};

}  // namespace fusedrt
