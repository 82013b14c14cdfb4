#include "cpu_backend.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "cpu/ops.h"
#include "cpu/topk.h"
#include "e4m3.h"
#include "errors.h"

namespace fusedrt {

namespace {

constexpr size_t kAlignment = 64;

// Every pointer of an OpCall is fp32 on the CPU (configure()).
const float* f32(const void* p) { return static_cast<const float*>(p); }
float* f32(void* p) { return static_cast<float*>(p); }

void run_embed_layernorm(const OpCall& c, cpu::ThreadPool& pool) {
  cpu::EmbedLayerNormParams p{};
  p.input_ids = c.batch->input_ids;
  p.token_type_ids = c.batch->token_type_ids;
  p.cu_seqlens = c.batch->cu_seqlens;
  p.tokens = c.batch->shape.tokens;
  p.sequences = c.batch->shape.sequences;
  p.hidden = c.out_cols;
  p.word = f32(c.word);
  p.position = f32(c.position);
  p.token_type = f32(c.token_type);
  p.gamma = f32(c.gamma);
  p.beta = f32(c.beta);
  p.eps = c.op->eps;
  p.out = f32(c.out);
  cpu::embed_layernorm(p, pool);
}

cpu::GemmParams gemm_params(const OpCall& c) {
  cpu::GemmParams p{};
  p.in = f32(c.in);
  p.weight = f32(c.weight);
  p.bias = f32(c.bias);
  p.activation = c.op->activation;
  p.rows = c.rows;
  p.n = c.out_cols;
  p.k = c.in_cols;
  p.out = f32(c.out);
  return p;
}

// A gemm whose weight is also read otherwise (a tied MLM decoder is the
// word embedding table) keeps the plain layout; CpuBackend::run sends the
// others to gemm_packed.
void run_gemm(const OpCall& c, cpu::ThreadPool& pool) { cpu::gemm(gemm_params(c), pool); }

void run_attention(const OpCall& c, cpu::ThreadPool& pool) {
  cpu::AttentionParams p{};
  p.qkv = f32(c.in);
  p.cu_seqlens = c.batch->cu_seqlens;
  p.sequences = c.batch->shape.sequences;
  p.heads = c.op->heads;
  p.head_dim = c.op->head_dim;
  p.scale = c.op->scale;
  p.out = f32(c.out);
  if (c.op->select == RowSelect::kAll) {
    cpu::attention(p, pool);
  } else {
    cpu::attention_rows({p, selected_tokens(c), c.rows}, pool);
  }
}

void run_add_layernorm(const OpCall& c, cpu::ThreadPool& pool) {
  cpu::AddLayerNormParams p{};
  p.in = f32(c.in);
  p.residual = f32(c.residual);
  p.bias = f32(c.bias);
  p.gamma = f32(c.gamma);
  p.beta = f32(c.beta);
  p.eps = c.op->eps;
  p.rows = c.rows;
  p.cols = c.out_cols;
  p.out = f32(c.out);
  cpu::add_layernorm(p, pool);
}

void run_gather_rows(const OpCall& c, cpu::ThreadPool& pool) {
  cpu::GatherRowsParams p{};
  p.in = f32(c.in);
  p.row_index = selected_tokens(c);
  p.rows_out = c.rows;
  p.cols = c.out_cols;
  p.out = f32(c.out);
  cpu::gather_rows(p, pool);
}

void run_mean_rows(const OpCall& c, cpu::ThreadPool& pool) {
  cpu::MeanRowsParams p{};
  p.in = f32(c.in);
  p.cu_seqlens = c.batch->cu_seqlens;
  p.sequences = c.rows;
  p.cols = c.out_cols;
  p.out = f32(c.out);
  cpu::mean_rows(p, pool);
}

// Dispatch and supports() read the same table so they cannot drift apart.
struct CpuOpEntry {
  OpType type;
  void (*run)(const OpCall&, cpu::ThreadPool&);
};

constexpr CpuOpEntry kCpuOps[] = {
    {OpType::kEmbedLayerNorm, run_embed_layernorm},
    {OpType::kGemm, run_gemm},
    {OpType::kAttention, run_attention},
    {OpType::kAddLayerNorm, run_add_layernorm},
    {OpType::kGatherRows, run_gather_rows},
    {OpType::kMeanRows, run_mean_rows},
};

const CpuOpEntry* find_op(OpType type) {
  for (const auto& entry : kCpuOps) {
    if (entry.type == type) return &entry;
  }
  return nullptr;
}

uint64_t physical_memory_bytes() {
  long pages = sysconf(_SC_PHYS_PAGES);
  long page_size = sysconf(_SC_PAGESIZE);
  if (pages <= 0 || page_size <= 0) return UINT64_MAX;
  return static_cast<uint64_t>(pages) * static_cast<uint64_t>(page_size);
}

}  // namespace

CpuBackend::CpuBackend(int threads, bool background) : pool_(threads, background) {}

bool CpuBackend::supports(OpType type) const { return find_op(type) != nullptr; }

DeviceStorage CpuBackend::configure(const Plan& plan) {
  DeviceStorage storage;
  // fp8 buffers and E4M3 weights too: fp32 holding the E4M3 values.
  storage.buffers.assign(plan.buffers.size(), DType::kF32);
  storage.tensors.assign(plan.tensors.size(), DType::kF32);
  // Gemm weights are packed for gemm_packed, in place (the packed layout has
  // the same size), so the weight memory stays what the runtime allocated.
  // A tensor any op reads otherwise stays plain.
  gemm_weights_.assign(plan.tensors.size(), GemmWeight::kNone);
  for (const PlanOp& op : plan.ops) {
    if (op.type == OpType::kGemm && op.weight >= 0 && gemm_weights_[op.weight] == GemmWeight::kNone) {
      gemm_weights_[op.weight] = GemmWeight::kPackOnFirstUse;
    }
  }
  for (const PlanOp& op : plan.ops) {
    const int plain_uses[] = {op.word, op.position, op.token_type, op.bias, op.gamma, op.beta,
                              op.type == OpType::kGemm ? -1 : op.weight};
    for (int tensor : plain_uses) {
      if (tensor >= 0) gemm_weights_[tensor] = GemmWeight::kNone;
    }
  }
  return storage;
}

void* CpuBackend::allocate(size_t bytes) {
  // Overcommitting kernels hand out more than exists and kill the process on
  // first touch; a plan asking for more than the machine has fails here.
  if (bytes > physical_memory_bytes()) {
    fail(ErrorCode::kOom, "cannot allocate " + std::to_string(bytes) + " bytes: more than this machine's memory");
  }
  size_t rounded = bytes == 0 ? kAlignment : (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* ptr = std::aligned_alloc(kAlignment, rounded);
  if (ptr == nullptr) fail(ErrorCode::kOom, "cannot allocate " + std::to_string(bytes) + " bytes of host memory");
  g_native_memory_bytes += static_cast<int64_t>(bytes);
  return ptr;
}

void CpuBackend::release(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  std::free(ptr);
  g_native_memory_bytes -= static_cast<int64_t>(bytes);
}

void CpuBackend::upload(void* device_dst, const void* host_src, size_t bytes) {
  std::memcpy(device_dst, host_src, bytes);
}

// Every call of a context comes from inside its execute(), which holds the
// backend's compute mutex.
class CpuBackend::Context : public BackendContext {
 public:
  explicit Context(CpuBackend& backend) : backend_(backend) {}

  void copy_to_device(const InputCopy* copies, int count) override {
    for (int i = 0; i < count; ++i) std::memcpy(copies[i].device_dst, copies[i].host_src, copies[i].bytes);
  }
  void copy_to_host(void* host_dst, const void* device_src, size_t bytes) override {
    std::memcpy(host_dst, device_src, bytes);
  }
  void to_float(float*, const void*, int64_t) override {
    // Activations are fp32 here, so the runtime has nothing to convert; a
    // request means a runtime bug, not a user error.
    fail(ErrorCode::kNative, "the CPU backend has fp32 activations: nothing to convert");
  }
  void run(const OpCall& call) override { backend_.run(call); }
  void softmax_topk(const void* logits, DType dtype, int64_t rows, int64_t cols, int k, int32_t* top_ids,
                    float* top_scores) override {
    if (dtype != DType::kF32) fail(ErrorCode::kNative, "the CPU backend has fp32 activations only");
    cpu::softmax_topk({f32(logits), rows, cols, k, top_ids, top_scores}, backend_.pool_);
  }
  // The kernels run as they are called, on the pool's lead thread when it
  // has one: nothing to record or wait for.
  void execute(const std::string&, const std::function<void()>& enqueue, std::vector<OutputLanding>&) override {
    std::lock_guard<std::mutex> lock(backend_.compute_mutex_);
    backend_.pool_.run(enqueue);
  }
  void synchronize() override {}

 private:
  CpuBackend& backend_;
};

std::unique_ptr<BackendContext> CpuBackend::create_context(const BatchShape&) {
  return std::make_unique<Context>(*this);
}

void CpuBackend::run(const OpCall& call) {
  const CpuOpEntry* entry = find_op(call.op->type);
  if (entry == nullptr) {
    fail(ErrorCode::kBackend, std::string("the CPU backend does not implement op ") + op_type_name(call.op->type));
  }
  if (call.op->type == OpType::kGemm && gemm_weights_[call.op->weight] != GemmWeight::kNone) {
    run_packed_gemm(call);
  } else {
    entry->run(call, pool_);
  }
  // An fp8 buffer holds what its writer computed, rounded to E4M3.
  const int64_t count = call.rows * call.out_cols;
  if (call.out_fp8) round_to_e4m3(f32(call.out), f32(call.out), count);
  if (call.out8 != nullptr) round_to_e4m3(f32(call.out), f32(call.out8), count);
}

void CpuBackend::round_to_e4m3(const float* from, float* to, int64_t count) {
  pool_.parallel_for(count, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) to[i] = fusedrt::round_to_e4m3(from[i]);
  });
}

// The packing happens on the weight's first run rather than at load: the
// runtime uploads tensors in pieces and tells the backend nothing of their
// boundaries. Runs hold compute_mutex_, so nothing races with it.
void CpuBackend::run_packed_gemm(const OpCall& call) {
  const cpu::GemmParams p = gemm_params(call);
  float* weight = const_cast<float*>(p.weight);  // this backend's own memory (allocate())
  if (gemm_weights_[call.op->weight] == GemmWeight::kPackOnFirstUse) {
    const std::vector<float> plain(weight, weight + p.n * p.k);
    cpu::pack_gemm_weight(plain.data(), p.n, p.k, weight);
    gemm_weights_[call.op->weight] = GemmWeight::kPacked;
  }
  cpu::gemm_packed(p, cpu::PackedWeight{weight, p.n, p.k}, pool_);
}

}  // namespace fusedrt
