// Executes a validated plan on a backend over packed tokens.
//
// At load the runtime widens fp16 weights to fp32, uploads them, and plans
// one workspace for (maxTokens, maxSequences): every plan buffer gets a fixed
// region sized for its rows kind, plus staging for the int32 inputs. A run
// validates its inputs, works out which ops the requested outputs depend on,
// and executes only those. Runs are serialised on one execution context by a
// mutex: the CPU kernels already use every thread of the backend's pool, so
// a second context would only compete for the same cores.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend.h"
#include "plan_reader.h"

namespace fusedrt {

struct RuntimeOptions {
  int64_t max_tokens = 8192;
  int64_t max_sequences = 64;
  // Rows of `selected` buffers (e.g. [MASK] positions). Kept apart from
  // max_tokens because an MLM head's logits are selected x vocab wide.
  int64_t max_selected_rows = 256;
};

struct RunRequest {
  std::vector<int32_t> input_ids;
  std::optional<std::vector<int32_t>> token_type_ids;
  std::vector<int32_t> cu_seqlens;
  std::vector<int32_t> selected_rows;
  std::vector<std::string> outputs;
};

struct RunOutput {
  std::string name;
  std::vector<float> data;  // row-major [rows, cols]
  int64_t rows = 0;
  int64_t cols = 0;
};

// Backend memory released when the owner goes; the backend must outlive it.
class DeviceAllocation {
 public:
  DeviceAllocation() = default;
  DeviceAllocation(Backend* backend, size_t bytes) : backend_(backend), bytes_(bytes), ptr_(backend->allocate(bytes)) {}
  ~DeviceAllocation() { reset(); }
  DeviceAllocation(const DeviceAllocation&) = delete;
  DeviceAllocation& operator=(const DeviceAllocation&) = delete;
  DeviceAllocation& operator=(DeviceAllocation&& other) noexcept;

  uint8_t* data() const { return static_cast<uint8_t*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void reset();

 private:
  Backend* backend_ = nullptr;
  size_t bytes_ = 0;
  void* ptr_ = nullptr;
};

class Runtime {
 public:
  // Reads the plan from source into the backend; throws FusedError.
  static std::unique_ptr<Runtime> load(PlanSource& source, std::unique_ptr<Backend> backend,
                                       const RuntimeOptions& options);
  ~Runtime();

  // Thread-safe; concurrent callers run one after another.
  std::vector<RunOutput> run(const RunRequest& request);

  const Plan& plan() const { return plan_; }
  const Backend& backend() const { return *backend_; }
  const RuntimeOptions& options() const { return options_; }
  int64_t weight_bytes() const { return static_cast<int64_t>(weights_.bytes()); }
  int64_t workspace_bytes() const { return static_cast<int64_t>(workspace_.bytes()); }

 private:
  Runtime(Plan plan, std::unique_ptr<Backend> backend, const RuntimeOptions& options);
  void load_weights(PlanSource& source);
  void plan_workspace();
  void validate(const RunRequest& request) const;
  std::vector<bool> ops_needed_for(const std::vector<int>& output_buffers) const;
  int64_t rows_of(RowsKind kind, const BatchView& batch) const;
  float* buffer_data(int buffer) const;

  Plan plan_;
  // Declared before the allocations so that it is destroyed after them.
  std::unique_ptr<Backend> backend_;
  RuntimeOptions options_;
  int64_t max_sequence_length_ = 0;

  DeviceAllocation weights_;
  std::vector<const float*> tensor_data_;  // per plan tensor; nullptr when no op uses it

  DeviceAllocation workspace_;
  std::vector<size_t> buffer_offsets_;
  size_t input_ids_offset_ = 0;
  size_t token_types_offset_ = 0;
  size_t cu_seqlens_offset_ = 0;
  size_t selected_offset_ = 0;

  std::mutex run_mutex_;
};

}  // namespace fusedrt
