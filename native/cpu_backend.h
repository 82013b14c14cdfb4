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
  void* allocate(size_t bytes) override;
  void release(void* ptr, size_t bytes) override;
  void upload(void* device_dst, const void* host_src, size_t bytes) override;
  void download(void* host_dst, const void* device_src, size_t bytes) override;
  void synchronize() override {}
  void run(const OpCall& call) override;

 private:
  cpu::ThreadPool pool_;
};

}  // namespace fusedrt
