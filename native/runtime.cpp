#include "runtime.h"

#include <algorithm>
#include <limits>

#include "cpu/ops.h"
#include "errors.h"

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

DeviceAllocation& DeviceAllocation::operator=(DeviceAllocation&& other) noexcept {
  if (this != &other) {
    reset();
    backend_ = other.backend_;
    bytes_ = other.bytes_;
    ptr_ = other.ptr_;
    other.ptr_ = nullptr;
    other.bytes_ = 0;
  }
  return *this;
}

void DeviceAllocation::reset() {
  if (ptr_ != nullptr) backend_->release(ptr_, bytes_);
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
  Plan plan = read_plan_header(source);
  for (const PlanOp& op : plan.ops) {
    if (!backend->supports(op.type)) {
      fail(ErrorCode::kBackend, std::string("the ") + backend->name() + " backend cannot run op " + op_type_name(op.type));
    }
  }
  std::unique_ptr<Runtime> runtime(new Runtime(std::move(plan), std::move(backend), options));
  runtime->load_weights(source);
  runtime->plan_workspace();
  return runtime;
}

void Runtime::load_weights(PlanSource& source) {
  // Every tensor an op uses becomes fp32 in one backend allocation.
  std::vector<size_t> offsets(plan_.tensors.size(), 0);
  size_t total = 0;
  for (size_t i = 0; i < plan_.tensors.size(); ++i) {
    const TensorInfo& t = plan_.tensors[i];
    if (!t.used_by_ops) continue;
    offsets[i] = place(total, checked_mul(static_cast<size_t>(t.elements), sizeof(float), "the weights"), "the weights");
  }
  weights_ = DeviceAllocation(backend_.get(), total);

  std::vector<float> widened;
  read_plan_data(source, plan_, [&](int index, uint64_t offset, const uint8_t* bytes, size_t n) {
    const TensorInfo& t = plan_.tensors[index];
    uint8_t* dst = weights_.data() + offsets[index];
    if (t.dtype == DType::kF32) {
      backend_->upload(dst + offset, bytes, n);
    } else {
      // Pieces start at multiples of 64 bytes, so they never split a half.
      widened.resize(n / 2);
      cpu::half_to_float(reinterpret_cast<const uint16_t*>(bytes), widened.data(), static_cast<int64_t>(n / 2));
      backend_->upload(dst + offset * 2, widened.data(), widened.size() * sizeof(float));
    }
  });

  tensor_data_.assign(plan_.tensors.size(), nullptr);
  for (size_t i = 0; i < plan_.tensors.size(); ++i) {
    if (plan_.tensors[i].used_by_ops) tensor_data_[i] = reinterpret_cast<const float*>(weights_.data() + offsets[i]);
  }

  max_sequence_length_ = plan_.config.max_seq;
  for (const PlanOp& op : plan_.ops) {
    if (op.type == OpType::kEmbedLayerNorm) {
      max_sequence_length_ = std::min(max_sequence_length_, plan_.tensors[op.position].shape[0]);
    }
  }
}

void Runtime::plan_workspace() {
  const char* what = "the workspace";
  const size_t max_tokens = static_cast<size_t>(options_.max_tokens);
  const size_t max_sequences = static_cast<size_t>(options_.max_sequences);
  const size_t max_selected = static_cast<size_t>(options_.max_selected_rows);
  size_t total = 0;
  buffer_offsets_.resize(plan_.buffers.size());
  for (size_t i = 0; i < plan_.buffers.size(); ++i) {
    const BufferInfo& b = plan_.buffers[i];
    size_t rows = b.rows == RowsKind::kSequences ? max_sequences
                : b.rows == RowsKind::kSelected  ? max_selected
                                                 : max_tokens;
    size_t bytes = checked_mul(checked_mul(rows, static_cast<size_t>(b.cols), what), sizeof(float), what);
    buffer_offsets_[i] = place(total, bytes, what);
  }
  input_ids_offset_ = place(total, max_tokens * sizeof(int32_t), what);
  token_types_offset_ = place(total, max_tokens * sizeof(int32_t), what);
  cu_seqlens_offset_ = place(total, (max_sequences + 1) * sizeof(int32_t), what);
  selected_offset_ = place(total, max_selected * sizeof(int32_t), what);
  workspace_ = DeviceAllocation(backend_.get(), total);
}

float* Runtime::buffer_data(int buffer) const {
  return reinterpret_cast<float*>(workspace_.data() + buffer_offsets_[buffer]);
}

int64_t Runtime::rows_of(RowsKind kind, const BatchView& batch) const {
  switch (kind) {
    case RowsKind::kTokens: return batch.tokens;
    case RowsKind::kSequences: return batch.sequences;
    case RowsKind::kSelected: return batch.selected;
  }
  return 0;
}

void Runtime::validate(const RunRequest& r) const {
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
  for (int64_t b = 0; b < sequences; ++b) {
    const int64_t begin = r.cu_seqlens[b];
    const int64_t end = r.cu_seqlens[b + 1];
    if (end <= begin) bad_input("cuSeqlens must increase strictly (entry " + std::to_string(b + 1) + ")");
    if (end > tokens) bad_input("cuSeqlens[" + std::to_string(b + 1) + "] = " + std::to_string(end) + " exceeds the token count " + std::to_string(tokens));
    if (end - begin > max_sequence_length_) {
      bad_shape("sequence " + std::to_string(b) + " has " + std::to_string(end - begin) +
                " tokens, more than the plan's maximum sequence length " + std::to_string(max_sequence_length_));
    }
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
}

std::vector<bool> Runtime::ops_needed_for(const std::vector<int>& output_buffers) const {
  // Backward liveness: an op is needed when it writes a buffer that a needed
  // op (or the caller) reads afterwards. Ops overwrite all rows of `out`, so
  // a write ends the buffer's liveness unless the op also reads it.
  std::vector<bool> live(plan_.buffers.size(), false);
  for (int b : output_buffers) live[b] = true;
  std::vector<bool> needed(plan_.ops.size(), false);
  for (size_t i = plan_.ops.size(); i-- > 0;) {
    const PlanOp& op = plan_.ops[i];
    if (!live[op.out]) continue;
    needed[i] = true;
    live[op.out] = false;
    if (op.in >= 0) live[op.in] = true;
    if (op.residual >= 0) live[op.residual] = true;
  }
  return needed;
}

std::vector<RunOutput> Runtime::run(const RunRequest& request) {
  validate(request);
  std::vector<int> output_buffers;
  for (const std::string& name : request.outputs) {
    auto found = std::find_if(plan_.outputs.begin(), plan_.outputs.end(),
                              [&](const PlanOutput& o) { return o.name == name; });
    if (found == plan_.outputs.end()) bad_input("the plan has no output named \"" + name + "\"");
    for (size_t i = 0; i < output_buffers.size(); ++i) {
      if (request.outputs[i] == name) bad_input("output \"" + name + "\" is requested twice");
    }
    output_buffers.push_back(found->buffer);
  }
  const std::vector<bool> needed = ops_needed_for(output_buffers);

  std::lock_guard<std::mutex> lock(run_mutex_);
  uint8_t* ws = workspace_.data();
  BatchView batch;
  batch.tokens = static_cast<int64_t>(request.input_ids.size());
  batch.sequences = static_cast<int64_t>(request.cu_seqlens.size()) - 1;
  batch.selected = static_cast<int64_t>(request.selected_rows.size());
  backend_->upload(ws + input_ids_offset_, request.input_ids.data(), request.input_ids.size() * sizeof(int32_t));
  batch.input_ids = reinterpret_cast<const int32_t*>(ws + input_ids_offset_);
  if (request.token_type_ids) {
    backend_->upload(ws + token_types_offset_, request.token_type_ids->data(), request.token_type_ids->size() * sizeof(int32_t));
    batch.token_type_ids = reinterpret_cast<const int32_t*>(ws + token_types_offset_);
  }
  backend_->upload(ws + cu_seqlens_offset_, request.cu_seqlens.data(), request.cu_seqlens.size() * sizeof(int32_t));
  batch.cu_seqlens = reinterpret_cast<const int32_t*>(ws + cu_seqlens_offset_);
  if (batch.selected > 0) {
    backend_->upload(ws + selected_offset_, request.selected_rows.data(), request.selected_rows.size() * sizeof(int32_t));
  }
  batch.selected_rows = reinterpret_cast<const int32_t*>(ws + selected_offset_);

  auto weight = [&](int tensor) { return tensor >= 0 ? tensor_data_[tensor] : nullptr; };
  for (size_t i = 0; i < plan_.ops.size(); ++i) {
    if (!needed[i]) continue;
    const PlanOp& op = plan_.ops[i];
    OpCall call;
    call.op = &op;
    call.batch = &batch;
    call.rows = rows_of(plan_.buffers[op.out].rows, batch);
    if (call.rows == 0) continue;  // selected rows asked for, none given
    call.in_cols = op.in >= 0 ? plan_.buffers[op.in].cols : 0;
    call.out_cols = plan_.buffers[op.out].cols;
    call.in = op.in >= 0 ? buffer_data(op.in) : nullptr;
    call.residual = op.residual >= 0 ? buffer_data(op.residual) : nullptr;
    call.out = buffer_data(op.out);
    call.word = weight(op.word);
    call.position = weight(op.position);
    call.token_type = weight(op.token_type);
    call.weight = weight(op.weight);
    call.bias = weight(op.bias);
    call.gamma = weight(op.gamma);
    call.beta = weight(op.beta);
    backend_->run(call);
  }
  backend_->synchronize();

  std::vector<RunOutput> results;
  for (size_t i = 0; i < request.outputs.size(); ++i) {
    const BufferInfo& b = plan_.buffers[output_buffers[i]];
    RunOutput out;
    out.name = request.outputs[i];
    out.rows = rows_of(b.rows, batch);
    out.cols = b.cols;
    out.data.resize(static_cast<size_t>(out.rows * out.cols));
    backend_->download(out.data.data(), buffer_data(output_buffers[i]), out.data.size() * sizeof(float));
    results.push_back(std::move(out));
  }
  return results;
}

}  // namespace fusedrt
