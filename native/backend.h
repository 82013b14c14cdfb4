// The backend contract: everything the runtime needs from a device, and
// nothing more (after ggml-backend). A backend owns device memory and decides
// how a plan's tensors and activations are stored on it; its execution
// contexts run one plan op at a time on pointers the runtime resolved
// (docs/runtime.md).
//
// Memory returned by allocate() and allocate_host() counts towards
// native_memory_bytes(), the process-wide figure behind
// addon.nativeMemoryBytes().
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "plan_reader.h"

namespace fusedrt {

// Sizes of a packed batch. For a run, the runtime hands the backend the real
// sizes and gets back the launch sizes (launch_shape()).
struct BatchShape {
  int64_t tokens = 0;
  int64_t sequences = 0;
  int64_t selected = 0;
  int64_t max_sequence_length = 0;  // of the longest sequence (an upper bound in launch sizes)
};

// Device pointers of the packed batch inputs (docs/plan-format.md, "Inputs")
// and the launch sizes. Launch sizes may exceed the real ones (bucketed
// backends); the runtime then pads the inputs so that every kernel reading
// them stays correct: input and type ids are 0 past the real tokens,
// cu_seqlens repeats the real token count for every padding sequence (so
// they are empty and cu_seqlens[sequences] is always the real token count),
// selected_rows is 0 past the real selected rows.
struct BatchView {
  BatchShape shape;
  const int32_t* input_ids = nullptr;       // [shape.tokens]
  const int32_t* token_type_ids = nullptr;  // [shape.tokens]
  const int32_t* cu_seqlens = nullptr;      // [shape.sequences + 1]
  const int32_t* selected_rows = nullptr;   // [shape.selected]
};

// One op of the plan bound to device memory for one batch. Scalars (eps,
// heads, activation...) come from op; unused pointers are nullptr.
// Activations (in, residual, out) have the dtype DeviceStorage::buffers gave
// their buffer; each weight has the dtype DeviceStorage::tensors gave its
// tensor.
struct OpCall {
  const PlanOp* op = nullptr;
  const BatchView* batch = nullptr;
  int64_t rows = 0;     // rows of `out` for this batch (launch sizes)
  int64_t in_rows = 0;  // rows of `in` (launch sizes); 0 without `in`
  int64_t in_cols = 0;
  int64_t out_cols = 0;
  const void* in = nullptr;
  const void* residual = nullptr;
  void* out = nullptr;
  // Whether out is an fp8 buffer (BufferInfo::fp8): what the op computes,
  // rounded to E4M3 (E4M3 bytes on a GPU, the rounded values in fp32 on the CPU).
  bool out_fp8 = false;
  void* out8 = nullptr;  // layernorm ops with out8: an fp8 buffer, as above
  const void* word = nullptr;
  const void* position = nullptr;
  const void* token_type = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;
  const void* gamma = nullptr;
  const void* beta = nullptr;
};

// The token each output row of a selecting op (gather_rows, attention with
// `select`) stands for. Sequence b starts at token cu_seqlens[b], so the
// boundaries themselves serve "first"; padding sequences of a bucket point
// one past the last token.
inline const int32_t* selected_tokens(const OpCall& call) {
  return call.op->select == RowSelect::kFirst ? call.batch->cu_seqlens : call.batch->selected_rows;
}

// How a backend stores one plan: the dtype of every activation buffer
// (indexed like Plan::buffers) and of every tensor (indexed like
// Plan::tensors; the runtime converts the file's f32/f16 bytes to it at
// load, and widens E4M3 tensors to kF32, scale applied, or keeps them).
// Activations are kF32 or kF16; fp8 buffers (BufferInfo::fp8) kF8E4M3 or,
// holding the rounded values in fp32, kF32.
struct DeviceStorage {
  std::vector<DType> buffers;
  std::vector<DType> tensors;
};

// The device a backend runs on, for info(); only GPUs have one to report.
struct DeviceInfo {
  std::string name;  // e.g. "NVIDIA H100 80GB HBM3"
  int ordinal = 0;   // CUDA device ordinal
  // Engines of this process on the device now, this one included: they
  // share its handles (docs/cuda.md, "The shared device").
  int engines = 0;
  int multiprocessors = 0;
  int64_t memory_bytes = 0;
};

// One execution context: the queued work of one run at a time. The runtime
// gives every context its own workspace and host staging, so runs on
// different contexts of one backend may be issued from different threads at
// once; whether their work overlaps on the device is
// Backend::contexts_overlap(). A context must not outlive its backend.
class BackendContext {
 public:
  virtual ~BackendContext() = default;

  // The host side of a copy is allocate_host() memory and must stay
  // untouched until synchronize(). copy_to_device takes a run's inputs,
  // 1 to kMaxInputCopies ranges, in one call, which a GPU can do as one
  // kernel.
  static constexpr int kMaxInputCopies = 4;
  struct InputCopy {
    void* device_dst;
    const void* host_src;
    size_t bytes;
  };
  virtual void copy_to_device(const InputCopy* copies, int count) = 0;
  virtual void copy_to_host(void* host_dst, const void* device_src, size_t bytes) = 0;
  // dst[i] = float(src[i]) on the device; src holds `count` kF16
  // activations (the runtime converts no other dtype).
  virtual void to_float(float* device_dst, const void* device_src, int64_t count) = 0;
  // Runs one op; the runtime has validated shapes and indices beforehand.
  virtual void run(const OpCall& call) = 0;
  // Softmax top-k of `rows` rows of `cols` logits (activations of dtype
  // `dtype`, their buffer's) into top_ids and top_scores [rows, k] (device
  // or allocate_host() memory), semantics of native/cpu/topk.h.
  // 1 <= k <= 64, k <= cols.
  virtual void softmax_topk(const void* logits, DType dtype, int64_t rows, int64_t cols, int k, int32_t* top_ids,
                            float* top_scores) = 0;
  // run(call), then softmax_topk over the call's out, where the context can
  // do both in one go (a GEMM into logits, on the CUDA backend: docs/cuda.md,
  // "Softmax top-k"); returns false, having queued nothing, where it cannot.
  virtual bool run_with_softmax_topk(const OpCall& /*call*/, int /*k*/, int32_t* /*top_ids*/,
                                     float* /*top_scores*/) {
    return false;
  }
  // Where one of a run's full outputs lands instead of its staging region:
  // enqueue copies it into `staged`, as always (so a recording stays valid
  // for every run of its key), and for this run the copy goes to `landed`,
  // page-locked memory (OutputBuffer, pinned) at least as large. The
  // context sets `done` when it did so; otherwise the output is in staging.
  // Only contexts of a backend whose lands_outputs() is true are given any.
  struct OutputLanding {
    const void* staged;
    void* landed;
    bool done;
  };
  // Issues a run's queued work by calling enqueue, which makes only the
  // calls above, with pointers and sizes that depend on nothing but `key`.
  // So a context may record the calls once per key and replay them (CUDA
  // graphs) instead of calling enqueue again.
  virtual void execute(const std::string& key, const std::function<void()>& enqueue,
                       std::vector<OutputLanding>& landings) = 0;
  // Whether this context records the work of a key and replays it later;
  // then replays(key) says when it would for that key: issuing the run then
  // takes microseconds, so it may be done on a thread that must not block
  // (Runtime::try_issue).
  virtual bool records() const { return false; }
  virtual bool replays(const std::string& key) const {
    (void)key;
    return false;
  }
  // Waits until everything queued on this context so far has finished.
  virtual void synchronize() = 0;
  // Whether it has, without waiting (a failure counts as finished:
  // synchronize() then reports it). For a backend whose work runs
  // synchronously, always true.
  virtual bool done() { return true; }
  // Device time of the work the last execute() issued, in milliseconds,
  // valid after synchronize(); negative when the backend does not measure it
  // (the CPU, whose work is the run's wall time anyway).
  virtual double last_execute_ms() const { return -1; }
};

// The device side: memory, storage decisions and launch shapes, shared by
// all contexts of an engine. Its methods may be called from any thread, but
// loading (configure, upload) happens before any context runs.
class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;
  // Threads (CPU) the backend computes with; informational.
  virtual int threads() const = 0;
  virtual bool supports(OpType type) const = 0;
  // Whether work of different contexts runs at the same time on the device
  // (CUDA streams) or one after another (the CPU's one thread pool).
  virtual bool contexts_overlap() const = 0;
  // Whether its contexts land full outputs in page-locked result buffers
  // (BackendContext::OutputLanding): a GPU, whose copy engine then writes
  // them where JS reads them. The CPU's outputs are host memory already.
  virtual bool lands_outputs() const { return false; }
  // The GPU, when there is one.
  virtual std::optional<DeviceInfo> device_info() const { return std::nullopt; }
  // Called once at load, before anything is allocated: chooses the storage
  // and keeps what the backend needs of the plan (e.g. its precision).
  virtual DeviceStorage configure(const Plan& plan) = 0;
  // The sizes a batch of `real` sizes is launched with: `real` itself, or
  // larger (never above `limits`) so that batches share launch shapes.
  virtual BatchShape launch_shape(const BatchShape& real, const BatchShape& limits) const = 0;
  // A new execution context for batches of launch sizes up to `limits`, so
  // that it can size what it needs per run now; after configure().
  virtual std::unique_ptr<BackendContext> create_context(const BatchShape& limits) = 0;

  // Device memory, 64-byte aligned; throws FusedError E_OOM when it cannot.
  virtual void* allocate(size_t bytes) = 0;
  virtual void release(void* ptr, size_t bytes) = 0;
  // Host memory the queued copies of a context may use (page-locked on a
  // GPU), 64-byte aligned; throws E_OOM when it cannot.
  virtual void* allocate_host(size_t bytes) = 0;
  virtual void release_host(void* ptr, size_t bytes) = 0;
  // Synchronous copy into device memory (loading); src may be any memory.
  virtual void upload(void* device_dst, const void* host_src, size_t bytes) = 0;
};

// Bytes currently allocated by all backends of the process.
inline std::atomic<int64_t> g_native_memory_bytes{0};
inline int64_t native_memory_bytes() { return g_native_memory_bytes.load(); }

}  // namespace fusedrt
