// The backend contract: everything the runtime needs from a device, and
// nothing more (after ggml-backend). A backend owns device memory and runs one
// plan op at a time on pointers the runtime resolved. The CPU backend
// implements it now; the CUDA backend will implement the same interface.
//
// Memory returned by allocate() counts towards native_memory_bytes(), the
// process-wide figure behind addon.nativeMemoryBytes().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <string>

#include "plan_reader.h"

namespace fusedrt {

// Device pointers of the packed batch inputs (docs/plan-format.md, "Inputs").
struct BatchView {
  int64_t tokens = 0;
  int64_t sequences = 0;
  int64_t selected = 0;
  const int32_t* input_ids = nullptr;       // [tokens]
  const int32_t* token_type_ids = nullptr;  // [tokens], or nullptr for all zeros
  const int32_t* cu_seqlens = nullptr;      // [sequences + 1]
  const int32_t* selected_rows = nullptr;   // [selected]
};

// One op of the plan bound to device memory for one batch. Scalars (eps,
// heads, activation...) come from op; unused pointers are nullptr.
struct OpCall {
  const PlanOp* op = nullptr;
  const BatchView* batch = nullptr;
  int64_t rows = 0;  // rows of `in` (gather: rows of `out`) for this batch
  int64_t in_cols = 0;
  int64_t out_cols = 0;
  const float* in = nullptr;
  const float* residual = nullptr;
  float* out = nullptr;
  const float* word = nullptr;
  const float* position = nullptr;
  const float* token_type = nullptr;
  const float* weight = nullptr;
  const float* bias = nullptr;
  const float* gamma = nullptr;
  const float* beta = nullptr;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;
  // Threads (CPU) the backend computes with; informational.
  virtual int threads() const = 0;
  virtual bool supports(OpType type) const = 0;

  // Device memory, 64-byte aligned; throws FusedError E_OOM when it cannot.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr, size_t bytes) = 0;
  virtual void upload(void* device_dst, const void* host_src, size_t bytes) = 0;
  virtual void download(void* host_dst, const void* device_src, size_t bytes) = 0;
  // Waits until every op and copy issued so far has finished.
  virtual void synchronize() = 0;

  // Runs one op; the runtime has validated shapes and indices beforehand.
  virtual void run(const OpCall& call) = 0;
};

// Bytes currently allocated by all backends of the process.
inline std::atomic<int64_t> g_native_memory_bytes{0};
inline int64_t native_memory_bytes() { return g_native_memory_bytes.load(); }

}  // namespace fusedrt
