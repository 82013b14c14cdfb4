// Executes a validated plan on a backend over packed tokens.
//
// At load the backend chooses how the plan is stored (Backend::configure:
// fp32 everywhere on the CPU, fp16 weights and activations for fp16 plans on
// CUDA, but fp32 logits); the runtime converts and uploads the weights
// accordingly, and plans one workspace for (maxTokens, maxSequences): every
// plan buffer gets a fixed region sized for its rows kind and dtype, plus the
// int32 inputs and an fp32 copy of each output whose buffer is not fp32. Host staging
// (page-locked and mapped on a GPU) mirrors the inputs and outputs (the
// top-k kernel writes its results there directly), so a run copies
// asynchronously and waits once. A run validates its inputs, works out which
// ops the requested outputs depend on, and issues only those, at the
// backend's launch sizes.
//
// The runtime has `contexts` execution contexts, each a BackendContext (a
// CUDA stream) with its own workspace and staging at the same offsets. A run
// takes a free context, works on it without any lock of the runtime, and
// gives it back; runs beyond the number of contexts wait for one.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend.h"
#include "output_buffer.h"
#include "plan_reader.h"

namespace fusedrt {

// Most execution contexts of one runtime.
constexpr int kMaxContexts = 16;

struct RuntimeOptions {
  int64_t max_tokens = 8192;
  int64_t max_sequences = 64;
  // Rows of `selected` buffers (e.g. [MASK] positions). Kept apart from
  // max_tokens because an MLM head's logits are selected x vocab wide.
  int64_t max_selected_rows = 256;
  int contexts = 1;  // 1..kMaxContexts
};

struct RunRequest {
  std::vector<int32_t> input_ids;
  std::optional<std::vector<int32_t>> token_type_ids;
  std::vector<int32_t> cu_seqlens;
  std::vector<int32_t> selected_rows;
  std::vector<std::string> outputs;
  // 1..64: requested outputs with selected rows come back as their softmax
  // top-k (Backend::softmax_topk) instead of full rows; 0: off.
  int top_k = 0;
};

struct RunOutput {
  std::string name;
  OutputBuffer data;  // row-major [rows, cols]; empty for a top-k output
  int64_t rows = 0;
  int64_t cols = 0;
  int k = 0;                       // > 0: a top-k output, the two vectors below hold it
  std::vector<int32_t> top_ids;    // [rows, k]
  std::vector<float> top_scores;   // [rows, k]
};

// Where a run's time went on the host, microseconds of the steady clock:
// what is not device time of a run (issue 3 bounds it at 50 us at batch 1).
struct RunTiming {
  double validate_us = 0;      // checking the request, choosing the ops
  double context_wait_us = 0;  // waiting for a free execution context
  double stage_us = 0;         // inputs into host staging
  double launch_us = 0;        // issuing the device work (a graph launch when replayed)
  double device_wait_us = 0;   // from issued to finished on the device
  double collect_us = 0;       // outputs out of staging
  int landed_outputs = 0;      // full outputs the device wrote into their result, with no copy left to do
};

struct RunResult {
  std::vector<RunOutput> outputs;  // in the order requested
  RunTiming timing;
  double gpu_ms = -1;              // BackendContext::last_execute_ms(); negative when not measured
};

// Backend memory (device, or host staging) released when the owner goes;
// the backend must outlive it.
class BackendAllocation {
 public:
  enum class Kind { kDevice, kHost };
  BackendAllocation() = default;
  BackendAllocation(Backend* backend, size_t bytes, Kind kind)
      : backend_(backend),
        kind_(kind),
        bytes_(bytes),
        ptr_(kind == Kind::kDevice ? backend->allocate(bytes) : backend->allocate_host(bytes)) {}
  ~BackendAllocation() { reset(); }
  BackendAllocation(const BackendAllocation&) = delete;
  BackendAllocation& operator=(const BackendAllocation&) = delete;
  BackendAllocation& operator=(BackendAllocation&& other) noexcept;

  uint8_t* data() const { return static_cast<uint8_t*>(ptr_); }
  size_t bytes() const { return bytes_; }
  void reset();

 private:
  Backend* backend_ = nullptr;
  Kind kind_ = Kind::kDevice;
  size_t bytes_ = 0;
  void* ptr_ = nullptr;
};

class Runtime {
 public:
  // Reads the plan from source into the backend; throws FusedError.
  static std::unique_ptr<Runtime> load(PlanSource& source, std::unique_ptr<Backend> backend,
                                       const RuntimeOptions& options);
  ~Runtime();

  // Thread-safe; runs beyond the number of contexts wait for a free one.
  RunResult run(const RunRequest& request);

  // The fast path for a caller that must not block (the JS thread): when a
  // context is free now and its backend replays recorded work for this
  // run's launch shape, validates, stages and issues the run here, in tens
  // of microseconds, and returns it in flight; finish() then waits for it
  // (on a worker thread) and reads the outputs. Returns nullptr when the
  // run would have to wait for a context or do real work on this thread (a
  // CPU backend, or the first run of a launch shape); run() is then the way.
  // Throws FusedError for a bad request, as run() does.
  class InFlight;
  std::unique_ptr<InFlight> try_issue(const RunRequest& request);
  RunResult finish(InFlight& run);
  // Whether finish() would return without waiting for the device; for a
  // caller that polls instead of blocking a thread (docs/runtime.md, "Spin
  // wait").
  bool ready(const InFlight& run) const;

  const Plan& plan() const { return plan_; }
  const Backend& backend() const { return *backend_; }
  const RuntimeOptions& options() const { return options_; }
  int contexts() const { return static_cast<int>(contexts_.size()); }
  int64_t weight_bytes() const { return static_cast<int64_t>(weights_.bytes()); }
  // The device workspaces and host staging of all contexts.
  int64_t workspace_bytes() const;

 private:
  // Device workspace: plan buffers, int32 inputs, fp32 copies of the outputs
  // whose buffers are not fp32. Host staging: the int32 inputs at the same
  // offsets as in the workspace's input region, then one region per output.
  // Every context has both, laid out alike (the offsets below).
  struct Context {
    BackendAllocation workspace;
    BackendAllocation staging;
    // Declared last so that it goes first: it waits for its queued work
    // before the memory that work uses is released.
    std::unique_ptr<BackendContext> backend;
  };
  // A context for the lifetime of the lease: wait() for one, or try_take()
  // one only if one is free (nullptr otherwise).
  class Lease {
   public:
    static std::unique_ptr<Lease> wait(Runtime& runtime);
    static std::unique_ptr<Lease> try_take(Runtime& runtime);
    ~Lease();
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    Context& operator*() const { return *context_; }

   private:
    Lease(Runtime& runtime, Context* context) : runtime_(runtime), context_(context) {}
    // Takes the last free context; free_mutex_ is held and one is free.
    static std::unique_ptr<Lease> take_free(Runtime& runtime);
    Runtime& runtime_;
    Context* context_;
  };

  // What validation of a request decides, before any context is involved.
  struct Prepared {
    BatchShape real;
    std::vector<bool> requested;      // per plan output
    std::vector<size_t> output_index;  // per requested name
    std::vector<bool> needed;          // per plan op
  };
  Prepared prepare(const RunRequest& request) const;
  // The result buffers of a run's full outputs of at least
  // OutputBuffer::kPooledBytes (kPinnedMinBytes where the backend lands
  // outputs), made before the run is issued: where the
  // backend lands them (BackendContext::OutputLanding), or else where
  // collect() copies them. Must outlive the run's device work.
  struct Destinations {
    std::vector<OutputBuffer> buffers;  // per requested output; empty: made at collect()
    std::vector<int> landing;           // per requested output: its index in landings, or -1
    std::vector<BackendContext::OutputLanding> landings;
  };
  // The key under which a context may record a run's work (BackendContext::execute).
  static std::string launch_key(const BatchShape& launch, const std::vector<bool>& requested, int top_k);
  // Stages the inputs, makes the destinations and issues the work on the
  // leased context.
  void issue(Context& context, const RunRequest& request, const Prepared& prepared, const BatchShape& launch,
             Destinations& destinations, RunTiming& timing) const;
  // Reads the outputs out of the context's staging (or takes the landed
  // ones), after synchronize().
  void collect(Context& context, const RunRequest& request, const Prepared& prepared, const BatchShape& launch,
               Destinations& destinations, RunResult& result) const;

  Runtime(Plan plan, std::unique_ptr<Backend> backend, const RuntimeOptions& options);
  void load_weights(PlanSource& source);
  void plan_workspace();
  BatchShape validate(const RunRequest& request) const;
  std::vector<bool> ops_needed_for(const std::vector<bool>& requested_outputs) const;
  void stage_inputs(Context& context, const RunRequest& request, const BatchShape& launch) const;
  void enqueue_run(Context& context, const BatchView& batch, const std::vector<bool>& requested_outputs,
                   const std::vector<bool>& needed_ops, int top_k) const;
  bool top_k_applies(size_t output, int top_k) const;
  static int64_t rows_of(RowsKind kind, const BatchShape& shape);
  void* buffer_data(const Context& context, int buffer) const;

  Plan plan_;
  // Declared before the allocations so that it is destroyed after them.
  std::unique_ptr<Backend> backend_;
  RuntimeOptions options_;
  DeviceStorage storage_;
  BatchShape limits_;  // maxTokens, maxSequences, maxSelectedRows, the longest sequence the plan takes

  BackendAllocation weights_;
  std::vector<const void*> tensor_data_;  // per plan tensor; nullptr when no op uses it

  std::vector<size_t> buffer_offsets_;
  size_t inputs_offset_ = 0;  // in the workspace
  size_t input_ids_offset_ = 0;  // this and the next three: from the start of the input region
  size_t token_types_offset_ = 0;
  size_t cu_seqlens_offset_ = 0;
  size_t selected_offset_ = 0;
  std::vector<size_t> output_f32_offsets_;  // per plan output, in the workspace
  std::vector<size_t> output_staging_offsets_;  // per plan output, in staging
  // Per plan output with selected rows: its top-k ids then scores, room for
  // kMaxTopK per row, in staging (0 for other outputs).
  std::vector<size_t> topk_staging_offsets_;
  // Per output: the op that writes its buffer last, where it may do the
  // output's top-k in its own launch (BackendContext::run_with_softmax_topk);
  // -1 where none may.
  std::vector<int> topk_op_;

  // Declared after the weights so that contexts (and their queued work) go first.
  std::vector<std::unique_ptr<Context>> contexts_;
  std::mutex free_mutex_;
  std::condition_variable context_freed_;
  std::vector<Context*> free_contexts_;  // guarded by free_mutex_
};

// A run issued by Runtime::try_issue and not yet finished. It holds its
// context until finish() (or its destruction, which waits for the device).
class Runtime::InFlight {
 public:
  ~InFlight();
  InFlight(const InFlight&) = delete;
  InFlight& operator=(const InFlight&) = delete;

  // What finish() copies out of staging for the outputs, in bytes (landed
  // outputs cost none).
  size_t output_bytes() const { return output_bytes_; }

 private:
  friend class Runtime;
  InFlight() = default;
  RunRequest request;
  Prepared prepared;
  BatchShape launch;
  RunResult result;  // its timing so far
  Destinations destinations;  // declared before the lease: released after the destructor's wait
  std::unique_ptr<Lease> lease;
  std::chrono::steady_clock::time_point issued;
  size_t output_bytes_ = 0;
};

}  // namespace fusedrt
