#include "runtime.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <limits>

#include "cpu/ops.h"
#include "cpu/topk.h"
#include "errors.h"
#include "e4m3.h"
#include "half.h"

namespace fusedrt {

namespace {

constexpr size_t kAlignment = 64;

// Sizes come from untrusted plans and options: any overflow means the
// request cannot be satisfied, which is an allocation failure.
size_t checked_mul(size_t a, size_t b, const char* what) {
  size_t r;
  if (__builtin_mul_overflow(a, b, &r)) fail(ErrorCode::kOom, std::string(what) + " does not fit in memory");
  return r;
}

size_t checked_add(size_t a, size_t b, const char* what) {
  size_t r;
  if (__builtin_add_overflow(a, b, &r)) fail(ErrorCode::kOom, std::string(what) + " does not fit in memory");
  return r;
}

size_t align_up(size_t n, const char* what) { return checked_add(n, kAlignment - 1, what) / kAlignment * kAlignment; }

// Appends a region of `bytes` to a layout and returns its offset.
size_t place(size_t& total, size_t bytes, const char* what) {
  size_t offset = total;
  total = checked_add(total, align_up(bytes, what), what);
  return offset;
}

[[noreturn]] void bad_input(const std::string& message) { fail(ErrorCode::kInput, message); }
[[noreturn]] void bad_shape(const std::string& message) { fail(ErrorCode::kShape, message); }

}  // namespace

BackendAllocation& BackendAllocation::operator=(BackendAllocation&& other) noexcept {
  if (this != &other) {
    reset();
    backend_ = other.backend_;
    kind_ = other.kind_;
    bytes_ = other.bytes_;
    ptr_ = other.ptr_;
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void BackendAllocation::reset() {
  if (ptr_ != nullptr) {
    if (kind_ == Kind::kDevice) {
      backend_->release(ptr_, bytes_);
    } else {
      backend_->release_host(ptr_, bytes_);
    }
  }
  ptr_ = nullptr;
  bytes_ = 0;
}

Runtime::Runtime(Plan plan, std::unique_ptr<Backend> backend, const RuntimeOptions& options)
    : plan_(std::move(plan)), backend_(std::move(backend)), options_(options) {}

Runtime::~Runtime() = default;

std::unique_ptr<Runtime> Runtime::load(PlanSource& source, std::unique_ptr<Backend> backend,
                                       const RuntimeOptions& options) {
  if (options.max_tokens < 1 || options.max_tokens > std::numeric_limits<int32_t>::max()) {
    bad_input("maxTokens must be an integer in [1, 2^31)");
  }
  if (options.max_sequences < 1 || options.max_sequences > std::numeric_limits<int32_t>::max() - 1) {
    bad_input("maxSequences must be an integer in [1, 2^31 - 1)");
  }
  if (options.max_selected_rows < 1 || options.max_selected_rows > options.max_tokens) {
    bad_input("maxSelectedRows must be an integer in [1, maxTokens]");
  }
  if (options.contexts < 1 || options.contexts > kMaxContexts) {
    bad_input("contexts must be an integer in [1, " + std::to_string(kMaxContexts) + "]");
  }
  Plan plan = read_plan_header(source);
  for (const PlanOp& op : plan.ops) {
    if (!backend->supports(op.type)) {
      fail(ErrorCode::kBackend, std::string("the ") + backend->name() + " backend cannot run op " + op_type_name(op.type));
    }
  }
  std::unique_ptr<Runtime> runtime(new Runtime(std::move(plan), std::move(backend), options));
  runtime->storage_ = runtime->backend_->configure(runtime->plan_);
  if (runtime->storage_.buffers.size() != runtime->plan_.buffers.size() ||
      runtime->storage_.tensors.size() != runtime->plan_.tensors.size()) {
    fail(ErrorCode::kNative, "the backend's storage does not cover the plan");
  }
  runtime->load_weights(source);
  runtime->plan_workspace();
  return runtime;
}

namespace {

size_t dtype_bytes(DType dtype) { return dtype == DType::kF16 ? 2 : dtype == DType::kF32 ? 4 : 1; }

}  // namespace

void Runtime::load_weights(PlanSource& source) {
  // Every tensor an op uses goes, in the dtype the backend chose for it, into
  // one backend allocation.
  std::vector<size_t> offsets(plan_.tensors.size(), 0);
  size_t total = 0;
  for (size_t i = 0; i < plan_.tensors.size(); ++i) {
    const TensorInfo& t = plan_.tensors[i];
    if (!t.used_by_ops) continue;
    // The conversions below: f32 <-> f16, and E4M3 widened to f32.
    const DType stored = storage_.tensors[i];
    const bool convertible = t.dtype == stored || (stored == DType::kF32 && t.dtype != DType::kU8) ||
                             (stored == DType::kF16 && t.dtype == DType::kF32);
    if (!convertible) {
      fail(ErrorCode::kNative, "the backend chose a storage dtype for tensor \"" + t.name +
                                   "\" that its file's dtype does not convert to");
    }
    const size_t bytes = checked_mul(static_cast<size_t>(t.elements), dtype_bytes(stored), "the weights");
    offsets[i] = place(total, bytes, "the weights");
  }
  weights_ = BackendAllocation(backend_.get(), total, BackendAllocation::Kind::kDevice);

  std::vector<float> widened;
  std::vector<uint16_t> narrowed;
  read_plan_data(source, plan_, [&](int index, uint64_t offset, const uint8_t* bytes, size_t n) {
    const TensorInfo& t = plan_.tensors[index];
    const DType stored = storage_.tensors[index];
    uint8_t* dst = weights_.data() + offsets[index];
    // Pieces start at multiples of 64 bytes, so they never split an element.
    if (t.dtype == stored) {
      backend_->upload(dst + offset, bytes, n);
    } else if (t.dtype == DType::kF8E4M3) {  // a backend computing in fp32 on E4M3 weights
      widened.resize(n);
      for (size_t i = 0; i < n; ++i) widened[i] = e4m3_to_float(bytes[i]) * t.scale;
      backend_->upload(dst + offset * 4, widened.data(), widened.size() * sizeof(float));
    } else if (t.dtype == DType::kF16) {
      widened.resize(n / 2);
      cpu::half_to_float(reinterpret_cast<const uint16_t*>(bytes), widened.data(), static_cast<int64_t>(n / 2));
      backend_->upload(dst + offset * 2, widened.data(), widened.size() * sizeof(float));
    } else {
      narrowed.resize(n / 4);
      const auto* values = reinterpret_cast<const float*>(bytes);
      for (size_t i = 0; i < narrowed.size(); ++i) narrowed[i] = float_to_half(values[i]);
      backend_->upload(dst + offset / 2, narrowed.data(), narrowed.size() * sizeof(uint16_t));
    }
  });

  tensor_data_.assign(plan_.tensors.size(), nullptr);
  for (size_t i = 0; i < plan_.tensors.size(); ++i) {
    if (plan_.tensors[i].used_by_ops) tensor_data_[i] = weights_.data() + offsets[i];
  }

  int64_t max_sequence_length = plan_.config.max_seq;
  for (const PlanOp& op : plan_.ops) {
    if (op.type == OpType::kEmbedLayerNorm) {
      max_sequence_length = std::min(max_sequence_length, plan_.tensors[op.position].shape[0]);
    }
  }
  limits_.tokens = options_.max_tokens;
  limits_.sequences = options_.max_sequences;
  limits_.selected = options_.max_selected_rows;
  limits_.max_sequence_length = max_sequence_length;
}

void Runtime::plan_workspace() {
  const char* what = "the workspace";
  const auto max_rows = [&](RowsKind kind) { return static_cast<size_t>(rows_of(kind, limits_)); };
  size_t total = 0;
  buffer_offsets_.resize(plan_.buffers.size());
  for (size_t i = 0; i < plan_.buffers.size(); ++i) {
    const BufferInfo& b = plan_.buffers[i];
    const size_t bytes =
        checked_mul(checked_mul(max_rows(b.rows), static_cast<size_t>(b.cols), what), dtype_bytes(storage_.buffers[i]), what);
    buffer_offsets_[i] = place(total, bytes, what);
  }
  size_t inputs = 0;
  input_ids_offset_ = place(inputs, max_rows(RowsKind::kTokens) * sizeof(int32_t), what);
  token_types_offset_ = place(inputs, max_rows(RowsKind::kTokens) * sizeof(int32_t), what);
  cu_seqlens_offset_ = place(inputs, (max_rows(RowsKind::kSequences) + 1) * sizeof(int32_t), what);
  selected_offset_ = place(inputs, max_rows(RowsKind::kSelected) * sizeof(int32_t), what);
  inputs_offset_ = place(total, inputs, what);

  size_t staging = inputs;
  output_f32_offsets_.assign(plan_.outputs.size(), 0);
  output_staging_offsets_.assign(plan_.outputs.size(), 0);
  for (size_t i = 0; i < plan_.outputs.size(); ++i) {
    const int buffer = plan_.outputs[i].buffer;
    const BufferInfo& b = plan_.buffers[buffer];
    const size_t bytes = checked_mul(checked_mul(max_rows(b.rows), static_cast<size_t>(b.cols), what), sizeof(float), what);
    if (storage_.buffers[buffer] != DType::kF32) output_f32_offsets_[i] = place(total, bytes, what);
    output_staging_offsets_[i] = place(staging, bytes, what);
  }
  // Top-k results: ids and scores (4 bytes each) for kMaxTopK per selected row.
  const size_t topk_bytes = checked_mul(max_rows(RowsKind::kSelected), 2 * cpu::kMaxTopK * sizeof(float), what);
  topk_staging_offsets_.assign(plan_.outputs.size(), 0);
  for (size_t i = 0; i < plan_.outputs.size(); ++i) {
    if (plan_.buffers[plan_.outputs[i].buffer].rows != RowsKind::kSelected) continue;
    topk_staging_offsets_[i] = place(staging, topk_bytes, what);
  }
  // A requested output's last writer always runs (its result is the output).
  topk_op_.assign(plan_.outputs.size(), -1);
  for (size_t o = 0; o < plan_.outputs.size(); ++o) {
    const int buffer = plan_.outputs[o].buffer;
    for (size_t i = plan_.ops.size(); i-- > 0;) {
      if (plan_.ops[i].out == buffer || plan_.ops[i].out8 == buffer) {
        if (plan_.ops[i].out == buffer) topk_op_[o] = static_cast<int>(i);
        break;
      }
    }
  }
  for (int i = 0; i < options_.contexts; ++i) {
    auto context = std::make_unique<Context>();
    context->workspace = BackendAllocation(backend_.get(), total, BackendAllocation::Kind::kDevice);
    context->staging = BackendAllocation(backend_.get(), staging, BackendAllocation::Kind::kHost);
    context->backend = backend_->create_context(limits_);
    contexts_.push_back(std::move(context));
    free_contexts_.push_back(contexts_.back().get());
  }
}

int64_t Runtime::workspace_bytes() const {
  size_t bytes = 0;
  for (const auto& context : contexts_) bytes += context->workspace.bytes() + context->staging.bytes();
  return static_cast<int64_t>(bytes);
}

std::unique_ptr<Runtime::Lease> Runtime::Lease::take_free(Runtime& runtime) {
  Context* context = runtime.free_contexts_.back();
  runtime.free_contexts_.pop_back();
  return std::unique_ptr<Lease>(new Lease(runtime, context));
}

std::unique_ptr<Runtime::Lease> Runtime::Lease::wait(Runtime& runtime) {
  std::unique_lock<std::mutex> lock(runtime.free_mutex_);
  runtime.context_freed_.wait(lock, [&] { return !runtime.free_contexts_.empty(); });
  return take_free(runtime);
}

std::unique_ptr<Runtime::Lease> Runtime::Lease::try_take(Runtime& runtime) {
  std::lock_guard<std::mutex> lock(runtime.free_mutex_);
  if (runtime.free_contexts_.empty()) return nullptr;
  return take_free(runtime);
}

Runtime::Lease::~Lease() {
  {
    std::lock_guard<std::mutex> lock(runtime_.free_mutex_);
    runtime_.free_contexts_.push_back(context_);
  }
  runtime_.context_freed_.notify_one();
}

void* Runtime::buffer_data(const Context& context, int buffer) const {
  return context.workspace.data() + buffer_offsets_[buffer];
}

int64_t Runtime::rows_of(RowsKind kind, const BatchShape& shape) {
  switch (kind) {
    case RowsKind::kTokens: return shape.tokens;
    case RowsKind::kSequences: return shape.sequences;
    case RowsKind::kSelected: return shape.selected;
  }
  return 0;
}

BatchShape Runtime::validate(const RunRequest& r) const {
  const int64_t tokens = static_cast<int64_t>(r.input_ids.size());
  if (tokens == 0) bad_input("inputIds is empty");
  if (tokens > options_.max_tokens) {
    bad_shape("batch of " + std::to_string(tokens) + " tokens exceeds maxTokens " + std::to_string(options_.max_tokens));
  }
  if (r.cu_seqlens.size() < 2) bad_input("cuSeqlens needs at least 2 entries (0 and the token count)");
  const int64_t sequences = static_cast<int64_t>(r.cu_seqlens.size()) - 1;
  if (sequences > options_.max_sequences) {
    bad_shape("batch of " + std::to_string(sequences) + " sequences exceeds maxSequences " +
              std::to_string(options_.max_sequences));
  }
  if (r.cu_seqlens[0] != 0) bad_input("cuSeqlens[0] must be 0, not " + std::to_string(r.cu_seqlens[0]));
  int64_t longest = 0;
  for (int64_t b = 0; b < sequences; ++b) {
    const int64_t begin = r.cu_seqlens[b];
    const int64_t end = r.cu_seqlens[b + 1];
    if (end <= begin) bad_input("cuSeqlens must increase strictly (entry " + std::to_string(b + 1) + ")");
    if (end > tokens) bad_input("cuSeqlens[" + std::to_string(b + 1) + "] = " + std::to_string(end) + " exceeds the token count " + std::to_string(tokens));
    if (end - begin > limits_.max_sequence_length) {
      bad_shape("sequence " + std::to_string(b) + " has " + std::to_string(end - begin) +
                " tokens, more than the plan's maximum sequence length " + std::to_string(limits_.max_sequence_length));
    }
    longest = std::max(longest, end - begin);
  }
  if (r.cu_seqlens[sequences] != tokens) {
    bad_input("cuSeqlens must end at the token count " + std::to_string(tokens) + ", not " +
              std::to_string(r.cu_seqlens[sequences]));
  }
  const int64_t vocab = plan_.config.vocab_size;
  for (int64_t t = 0; t < tokens; ++t) {
    if (r.input_ids[t] < 0 || r.input_ids[t] >= vocab) {
      bad_input("inputIds[" + std::to_string(t) + "] = " + std::to_string(r.input_ids[t]) + " is outside the vocabulary [0, " + std::to_string(vocab) + ")");
    }
  }
  if (r.token_type_ids) {
    const auto& types = *r.token_type_ids;
    if (static_cast<int64_t>(types.size()) != tokens) {
      bad_input("tokenTypeIds has " + std::to_string(types.size()) + " entries, inputIds " + std::to_string(tokens));
    }
    const int64_t type_vocab = plan_.config.type_vocab_size;
    for (int64_t t = 0; t < tokens; ++t) {
      if (types[t] < 0 || types[t] >= type_vocab) {
        bad_input("tokenTypeIds[" + std::to_string(t) + "] = " + std::to_string(types[t]) + " is outside [0, " + std::to_string(type_vocab) + ")");
      }
    }
  }
  if (static_cast<int64_t>(r.selected_rows.size()) > options_.max_selected_rows) {
    bad_shape(std::to_string(r.selected_rows.size()) + " selected rows exceed maxSelectedRows " +
              std::to_string(options_.max_selected_rows));
  }
  for (size_t i = 0; i < r.selected_rows.size(); ++i) {
    if (r.selected_rows[i] < 0 || r.selected_rows[i] >= tokens) {
      bad_input("selectedRows[" + std::to_string(i) + "] = " + std::to_string(r.selected_rows[i]) + " is outside [0, " + std::to_string(tokens) + ")");
    }
  }
  if (r.outputs.empty()) bad_input("outputs must name at least one plan output");
  if (r.top_k < 0 || r.top_k > cpu::kMaxTopK) {
    bad_input("topK must be an integer in [1, " + std::to_string(cpu::kMaxTopK) + "], not " + std::to_string(r.top_k));
  }
  BatchShape real;
  real.tokens = tokens;
  real.sequences = sequences;
  real.selected = static_cast<int64_t>(r.selected_rows.size());
  real.max_sequence_length = longest;
  return real;
}

std::vector<bool> Runtime::ops_needed_for(const std::vector<bool>& requested_outputs) const {
  // Backward liveness: an op is needed when it writes a buffer that a needed
  // op (or the caller) reads afterwards. Ops overwrite all rows of `out`, so
  // a write ends the buffer's liveness unless the op also reads it.
  std::vector<bool> live(plan_.buffers.size(), false);
  for (size_t i = 0; i < plan_.outputs.size(); ++i) {
    if (requested_outputs[i]) live[plan_.outputs[i].buffer] = true;
  }
  std::vector<bool> needed(plan_.ops.size(), false);
  for (size_t i = plan_.ops.size(); i-- > 0;) {
    const PlanOp& op = plan_.ops[i];
    if (!live[op.out] && (op.out8 < 0 || !live[op.out8])) continue;
    needed[i] = true;
    live[op.out] = false;
    if (op.out8 >= 0) live[op.out8] = false;
    if (op.in >= 0) live[op.in] = true;
    if (op.residual >= 0) live[op.residual] = true;
  }
  return needed;
}

void Runtime::stage_inputs(Context& context, const RunRequest& r, const BatchShape& launch) const {
  // Padding up to the launch sizes as BatchView describes: ids and type ids
  // 0, empty sequences ending at the real token count, selected row 0.
  uint8_t* inputs = context.staging.data();
  const auto tokens = static_cast<int64_t>(r.input_ids.size());
  auto* ids = reinterpret_cast<int32_t*>(inputs + input_ids_offset_);
  std::copy(r.input_ids.begin(), r.input_ids.end(), ids);
  std::fill(ids + tokens, ids + launch.tokens, 0);
  auto* types = reinterpret_cast<int32_t*>(inputs + token_types_offset_);
  if (r.token_type_ids) {
    std::copy(r.token_type_ids->begin(), r.token_type_ids->end(), types);
    std::fill(types + tokens, types + launch.tokens, 0);
  } else {
    std::fill(types, types + launch.tokens, 0);
  }
  auto* cu_seqlens = reinterpret_cast<int32_t*>(inputs + cu_seqlens_offset_);
  std::copy(r.cu_seqlens.begin(), r.cu_seqlens.end(), cu_seqlens);
  std::fill(cu_seqlens + r.cu_seqlens.size(), cu_seqlens + launch.sequences + 1, static_cast<int32_t>(tokens));
  auto* selected = reinterpret_cast<int32_t*>(inputs + selected_offset_);
  std::copy(r.selected_rows.begin(), r.selected_rows.end(), selected);
  std::fill(selected + r.selected_rows.size(), selected + launch.selected, 0);
}

bool Runtime::top_k_applies(size_t output, int top_k) const {
  return top_k > 0 && plan_.buffers[plan_.outputs[output].buffer].rows == RowsKind::kSelected;
}

void Runtime::enqueue_run(Context& context, const BatchView& batch, const std::vector<bool>& requested_outputs,
                          const std::vector<bool>& needed_ops, int top_k) const {
  // Everything here depends only on the launch shape and the requested
  // outputs (the key of BackendContext::execute), never on the batch's
  // contents.
  const BatchShape& shape = batch.shape;
  BackendContext& backend = *context.backend;
  uint8_t* workspace = context.workspace.data();
  uint8_t* staging = context.staging.data();
  uint8_t* device_inputs = workspace + inputs_offset_;
  const uint8_t* host_inputs = staging;
  std::array<BackendContext::InputCopy, BackendContext::kMaxInputCopies> copies{};
  int copy_count = 0;
  for (const auto& [offset, count] : {std::pair<size_t, int64_t>{input_ids_offset_, shape.tokens},
                                      {token_types_offset_, shape.tokens},
                                      {cu_seqlens_offset_, shape.sequences + 1},
                                      {selected_offset_, shape.selected}}) {
    if (count > 0) {
      copies[copy_count++] = {device_inputs + offset, host_inputs + offset, static_cast<size_t>(count) * sizeof(int32_t)};
    }
  }
  backend.copy_to_device(copies.data(), copy_count);

  auto weight = [&](int tensor) { return tensor >= 0 ? tensor_data_[tensor] : nullptr; };
  // Only ids and scores of a top-k output cross to the host, written into
  // staging by the kernel itself (no copy follows).
  auto top_k_ids = [&](size_t output) { return reinterpret_cast<int32_t*>(staging + topk_staging_offsets_[output]); };
  std::vector<int> top_k_output_of_op(plan_.ops.size(), -1);
  for (size_t o = 0; o < plan_.outputs.size(); ++o) {
    if (requested_outputs[o] && top_k_applies(o, top_k) && topk_op_[o] >= 0) {
      top_k_output_of_op[static_cast<size_t>(topk_op_[o])] = static_cast<int>(o);
    }
  }
  std::vector<bool> top_k_done(plan_.outputs.size(), false);
  for (size_t i = 0; i < plan_.ops.size(); ++i) {
    if (!needed_ops[i]) continue;
    const PlanOp& op = plan_.ops[i];
    OpCall call;
    call.op = &op;
    call.batch = &batch;
    call.rows = rows_of(plan_.buffers[op.out].rows, shape);
    if (call.rows == 0) continue;  // selected rows asked for, none given
    call.in_rows = op.in >= 0 ? rows_of(plan_.buffers[op.in].rows, shape) : 0;
    call.in_cols = op.in >= 0 ? plan_.buffers[op.in].cols : 0;
    call.out_cols = plan_.buffers[op.out].cols;
    call.in = op.in >= 0 ? buffer_data(context, op.in) : nullptr;
    call.residual = op.residual >= 0 ? buffer_data(context, op.residual) : nullptr;
    call.out = buffer_data(context, op.out);
    call.out_fp8 = plan_.buffers[op.out].fp8;
    call.out8 = op.out8 >= 0 ? buffer_data(context, op.out8) : nullptr;
    call.word = weight(op.word);
    call.position = weight(op.position);
    call.token_type = weight(op.token_type);
    call.weight = weight(op.weight);
    call.bias = weight(op.bias);
    call.gamma = weight(op.gamma);
    call.beta = weight(op.beta);
    if (top_k_output_of_op[i] >= 0) {
      const auto o = static_cast<size_t>(top_k_output_of_op[i]);
      int32_t* ids = top_k_ids(o);
      auto* scores = reinterpret_cast<float*>(ids + call.rows * top_k);
      top_k_done[o] = backend.run_with_softmax_topk(call, top_k, ids, scores);
      if (top_k_done[o]) continue;
    }
    backend.run(call);
  }

  for (size_t i = 0; i < plan_.outputs.size(); ++i) {
    if (!requested_outputs[i]) continue;
    const int buffer = plan_.outputs[i].buffer;
    const BufferInfo& b = plan_.buffers[buffer];
    const int64_t count = rows_of(b.rows, shape) * b.cols;
    if (count == 0) continue;
    const void* source = buffer_data(context, buffer);
    if (top_k_applies(i, top_k)) {
      // The kernel reads the logits in their buffer's dtype and computes in fp32.
      const int64_t rows = rows_of(b.rows, shape);
      int32_t* ids = top_k_ids(i);
      if (!top_k_done[i]) {
        auto* scores = reinterpret_cast<float*>(ids + rows * top_k);
        backend.softmax_topk(source, storage_.buffers[buffer], rows, b.cols, top_k, ids, scores);
      }
      continue;
    }
    // Full outputs are widened in device memory and then copied: a copy
    // engine moves megabytes across the bus faster than kernels writing the
    // staging do (bench/RESULTS.md).
    if (storage_.buffers[buffer] != DType::kF32) {
      auto* widened = reinterpret_cast<float*>(workspace + output_f32_offsets_[i]);
      backend.to_float(widened, source, count);
      source = widened;
    }
    backend.copy_to_host(staging + output_staging_offsets_[i], source, static_cast<size_t>(count) * sizeof(float));
  }
}

namespace {

using Clock = std::chrono::steady_clock;

// Microseconds since `since`, which moves on to now.
double lap_us(Clock::time_point& since) {
  const Clock::time_point now = Clock::now();
  const double us = std::chrono::duration<double, std::micro>(now - since).count();
  since = now;
  return us;
}

}  // namespace

Runtime::Prepared Runtime::prepare(const RunRequest& request) const {
  Prepared prepared;
  prepared.real = validate(request);
  prepared.requested.assign(plan_.outputs.size(), false);
  for (const std::string& name : request.outputs) {
    auto found = std::find_if(plan_.outputs.begin(), plan_.outputs.end(),
                              [&](const PlanOutput& o) { return o.name == name; });
    if (found == plan_.outputs.end()) bad_input("the plan has no output named \"" + name + "\"");
    const auto index = static_cast<size_t>(found - plan_.outputs.begin());
    if (prepared.requested[index]) bad_input("output \"" + name + "\" is requested twice");
    prepared.requested[index] = true;
    prepared.output_index.push_back(index);
    if (top_k_applies(index, request.top_k) && request.top_k > plan_.buffers[plan_.outputs[index].buffer].cols) {
      bad_input("topK " + std::to_string(request.top_k) + " exceeds the " +
                std::to_string(plan_.buffers[plan_.outputs[index].buffer].cols) + " columns of output \"" + name + "\"");
    }
  }
  if (request.top_k > 0 && std::none_of(prepared.output_index.begin(), prepared.output_index.end(),
                                        [&](size_t index) { return top_k_applies(index, request.top_k); })) {
    bad_input("topK applies to outputs with selected rows (e.g. an MLM's logits), and none was requested");
  }
  prepared.needed = ops_needed_for(prepared.requested);
  return prepared;
}

std::string Runtime::launch_key(const BatchShape& launch, const std::vector<bool>& requested, int top_k) {
  std::string key = std::to_string(launch.tokens) + "," + std::to_string(launch.sequences) + "," +
                    std::to_string(launch.selected) + "," + std::to_string(launch.max_sequence_length) + ":";
  for (bool r : requested) key += r ? '1' : '0';
  key += ":k" + std::to_string(top_k);
  return key;
}

void Runtime::issue(Context& context, const RunRequest& request, const Prepared& prepared, const BatchShape& launch,
                    Destinations& destinations, RunTiming& timing) const {
  Clock::time_point lap = Clock::now();
  stage_inputs(context, request, launch);
  // Large full outputs get their result buffer now, page-locked where the
  // backend lands them there (its copy then writes the launch's rows, of
  // which the result keeps the real ones).
  const size_t requested = request.outputs.size();
  destinations.buffers.resize(requested);
  destinations.landing.assign(requested, -1);
  for (size_t i = 0; i < requested; ++i) {
    const size_t index = prepared.output_index[i];
    if (top_k_applies(index, request.top_k)) continue;
    const BufferInfo& b = plan_.buffers[plan_.outputs[index].buffer];
    const auto count = static_cast<size_t>(rows_of(b.rows, launch) * b.cols);
    const bool land = backend_->lands_outputs();
    if (count * sizeof(float) < (land ? OutputBuffer::kPinnedMinBytes : OutputBuffer::kPooledBytes)) continue;
    destinations.buffers[i] = OutputBuffer(count, land ? OutputBuffer::Memory::kPinned : OutputBuffer::Memory::kPageable);
    if (land && destinations.buffers[i].pinned()) {
      destinations.landing[i] = static_cast<int>(destinations.landings.size());
      destinations.landings.push_back({context.staging.data() + output_staging_offsets_[index],
                                       destinations.buffers[i].data(), false});
    }
  }
  BatchView batch;
  batch.shape = launch;
  const uint8_t* device_inputs = context.workspace.data() + inputs_offset_;
  batch.input_ids = reinterpret_cast<const int32_t*>(device_inputs + input_ids_offset_);
  batch.token_type_ids = reinterpret_cast<const int32_t*>(device_inputs + token_types_offset_);
  batch.cu_seqlens = reinterpret_cast<const int32_t*>(device_inputs + cu_seqlens_offset_);
  batch.selected_rows = reinterpret_cast<const int32_t*>(device_inputs + selected_offset_);
  const std::string key = launch_key(launch, prepared.requested, request.top_k);
  timing.stage_us = lap_us(lap);
  context.backend->execute(
      key, [&] { enqueue_run(context, batch, prepared.requested, prepared.needed, request.top_k); },
      destinations.landings);
  timing.launch_us = lap_us(lap);
}

void Runtime::collect(Context& context, const RunRequest& request, const Prepared& prepared, const BatchShape& launch,
                      Destinations& destinations, RunResult& result) const {
  result.gpu_ms = context.backend->last_execute_ms();
  for (size_t i = 0; i < request.outputs.size(); ++i) {
    const size_t index = prepared.output_index[i];
    const BufferInfo& b = plan_.buffers[plan_.outputs[index].buffer];
    RunOutput out;
    out.name = request.outputs[i];
    out.rows = rows_of(b.rows, prepared.real);
    out.cols = b.cols;
    if (top_k_applies(index, request.top_k)) {
      // Staged as ids then scores for the launch's rows; the first real rows are the result.
      const int64_t launch_rows = rows_of(b.rows, launch);
      const auto* ids = reinterpret_cast<const int32_t*>(context.staging.data() + topk_staging_offsets_[index]);
      const auto* scores = reinterpret_cast<const float*>(ids + launch_rows * request.top_k);
      out.k = request.top_k;
      out.top_ids.assign(ids, ids + out.rows * out.k);
      out.top_scores.assign(scores, scores + out.rows * out.k);
    } else {
      const auto count = static_cast<size_t>(out.rows * out.cols);
      const int landing = destinations.landing[i];
      out.data = destinations.buffers[i].empty() ? OutputBuffer(count) : std::move(destinations.buffers[i]);
      out.data.shrink(count);
      if (landing >= 0 && destinations.landings[static_cast<size_t>(landing)].done) {
        ++result.timing.landed_outputs;
      } else {
        const auto* staged = reinterpret_cast<const float*>(context.staging.data() + output_staging_offsets_[index]);
        std::memcpy(out.data.data(), staged, count * sizeof(float));
      }
    }
    result.outputs.push_back(std::move(out));
  }
}

RunResult Runtime::run(const RunRequest& request) {
  RunResult result;
  RunTiming& timing = result.timing;
  Clock::time_point lap = Clock::now();
  const Prepared prepared = prepare(request);
  timing.validate_us = lap_us(lap);
  const std::unique_ptr<Lease> lease = Lease::wait(*this);
  Context& context = **lease;
  timing.context_wait_us = lap_us(lap);
  const BatchShape launch = backend_->launch_shape(prepared.real, limits_);
  Destinations destinations;
  try {
    issue(context, request, prepared, launch, destinations, timing);
    lap = Clock::now();
    context.backend->synchronize();
  } catch (...) {
    // Work already queued may still write the destinations: wait for it
    // before they are released (a failed run reports the first error).
    try {
      context.backend->synchronize();
    } catch (...) {
    }
    throw;
  }
  timing.device_wait_us = lap_us(lap);
  collect(context, request, prepared, launch, destinations, result);
  timing.collect_us = lap_us(lap);
  return result;
}

std::unique_ptr<Runtime::InFlight> Runtime::try_issue(const RunRequest& request) {
  Clock::time_point lap = Clock::now();
  std::unique_ptr<Lease> lease = Lease::try_take(*this);
  if (!lease || !(**lease).backend->records()) return nullptr;
  Context& context = **lease;
  const double context_wait_us = lap_us(lap);
  Prepared prepared = prepare(request);
  const BatchShape launch = backend_->launch_shape(prepared.real, limits_);
  if (!context.backend->replays(launch_key(launch, prepared.requested, request.top_k))) return nullptr;
  std::unique_ptr<InFlight> run(new InFlight());
  // Held by the run from here: if issuing fails, its destructor waits for
  // what was queued before the destinations go.
  run->lease = std::move(lease);
  run->result.timing.context_wait_us = context_wait_us;
  run->result.timing.validate_us = lap_us(lap);
  issue(context, request, prepared, launch, run->destinations, run->result.timing);
  run->issued = Clock::now();
  run->request.outputs = request.outputs;  // all that finish() reads of it
  run->request.top_k = request.top_k;
  for (size_t i = 0; i < request.outputs.size(); ++i) {
    const int landing = run->destinations.landing[i];
    if (landing >= 0 && run->destinations.landings[static_cast<size_t>(landing)].done) continue;
    const size_t index = prepared.output_index[i];
    const BufferInfo& b = plan_.buffers[plan_.outputs[index].buffer];
    const int64_t rows = rows_of(b.rows, prepared.real);
    const int64_t values = top_k_applies(index, request.top_k) ? rows * request.top_k * 2 : rows * b.cols;
    run->output_bytes_ += static_cast<size_t>(values) * sizeof(float);
  }
  run->prepared = std::move(prepared);
  run->launch = launch;
  return run;
}

bool Runtime::ready(const InFlight& run) const { return (**run.lease).backend->done(); }

RunResult Runtime::finish(InFlight& run) {
  Context& context = **run.lease;
  RunTiming& timing = run.result.timing;
  context.backend->synchronize();
  Clock::time_point lap = Clock::now();
  timing.device_wait_us = std::chrono::duration<double, std::micro>(lap - run.issued).count();
  collect(context, run.request, run.prepared, run.launch, run.destinations, run.result);
  timing.collect_us = lap_us(lap);
  run.lease.reset();
  return std::move(run.result);
}

Runtime::InFlight::~InFlight() {
  if (!lease) return;
  // Never finished (its worker did not run): the device may still use the
  // context's staging, so wait before another run can take it.
  try {
    (**lease).backend->synchronize();
  } catch (...) {
  }
}

}  // namespace fusedrt
