// The CUDA backend (docs/cuda.md). GEMMs are in cuda_gemm.cpp, the kernels
// in cuda/.
//
// Every CUDA and cuBLAS status is checked; a failure becomes a FusedError:
// E_OOM for allocation failures, E_BACKEND otherwise, with CUDA's own error
// name and text. Nothing aborts.
//
// Threads: the runtime calls a backend from whichever libuv worker runs the
// load or the run, one run at a time per context but several contexts at
// once; the current device is per host thread, so every entry point selects
// the device first. A context touches only its own state and the shared
// CudaDevice; the backend's state is read-only once loaded.
#include "cuda_backend.h"

#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "../cuda/add_layernorm.cuh"
#include "../cuda/attention.cuh"
#include "../cuda/attention_rows.cuh"
#include "../cuda/convert.cuh"
#include "../cuda/embed_layernorm.cuh"
#include "../cuda/gather_rows.cuh"
#include "../cuda/gemv.cuh"
#include "../cuda/host_copy.cuh"
#include "../cuda/mean_rows.cuh"
#include "../cuda/topk.cuh"
#include "cpu/topk.h"
#include "cuda_check.h"
#include "cuda_device.h"
#include "cuda_gemm.h"
#include "errors.h"
#include "output_buffer.h"

namespace fusedrt {

namespace {

// Instantiated graphs per context (one per launch shape and output set); the
// least recently used goes when a new one would exceed this.
constexpr size_t kMaxGraphs = 64;

// Bucket sizes (docs/cuda.md): tokens in steps of 64 up to 1024, of 128 up
// to 4096, then of 256; sequences and selected rows in powers of two; never
// above the limit.
int64_t round_up(int64_t n, int64_t step) { return (n + step - 1) / step * step; }
int64_t token_step(int64_t tokens) { return tokens <= 1024 ? 64 : tokens <= 4096 ? 128 : 256; }
int64_t next_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

// Page-locked result buffers (OutputBuffer::register_pinned_allocator),
// portable, so every device's copies may land in them. Registered with the
// first CUDA engine's device current, so that a thread that has not used
// CUDA yet does not start a context on device 0 for it.
//
// Ordinary memory, written once and then registered, rather than
// cudaHostAlloc: page-locking stalls every other thread's CUDA calls while
// it runs, the JS thread's graph launches included, and the pool grows on a
// helper thread while runs go on. Beside a thread page-locking 128 KB
// buffers back to back, 333 of 2000 replays' launches took over 1 ms during
// 10,638 cudaHostAlloc calls, and 2 during 1,951 registrations of this kind
// (bench/gpu/pinned_alloc_stall.cu, bench/RESULTS.md); presumably because
// the pages are faulted in before the driver's lock is taken, not under it.
// Whole pages of its own per buffer: two registrations may not share a page
// (aarch64 kernels may use 64 KB pages).
int g_pinned_device = 0;
void* allocate_pinned(size_t bytes) {
  static const size_t page = static_cast<size_t>(std::max(sysconf(_SC_PAGESIZE), 4096L));
  const size_t rounded = (bytes + page - 1) / page * page;
  void* p = std::aligned_alloc(page, rounded);
  if (p == nullptr) return nullptr;
  std::memset(p, 0, rounded);
  int current = 0;
  const bool got = cudaGetDevice(&current) == cudaSuccess && cudaSetDevice(g_pinned_device) == cudaSuccess &&
                   cudaHostRegister(p, rounded, cudaHostRegisterPortable) == cudaSuccess;
  if (!got) {
    cudaGetLastError();  // a refusal is answered by an ordinary buffer, not an error
    std::free(p);
    p = nullptr;
  }
  cudaSetDevice(current);
  return p;
}
void free_pinned(void* p) {
  if (cudaHostUnregister(p) != cudaSuccess) cudaGetLastError();  // at process teardown CUDA may be gone already
  std::free(p);
}

template <class T>
const T* as(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* as(void* p) { return static_cast<T*>(p); }

// The GEMMs (plain: no bias, no activation) whose product is read only by
// the next op, an add_layernorm, as its `in`: BERT's attention output
// projection and FFN2, whose bias rides in that LayerNorm. The context may
// hand such a LayerNorm split-K partial products instead
// (GemmRunner::run_into_partials; docs/cuda.md, "Split-K partials into the
// LayerNorm"), since nothing else will ever read the product.
std::vector<size_t> gemms_feeding_layernorm(const Plan& plan) {
  std::vector<size_t> found;
  for (size_t i = 0; i + 1 < plan.ops.size(); ++i) {
    const PlanOp& gemm = plan.ops[i];
    const PlanOp& norm = plan.ops[i + 1];
    const int product = gemm.out;
    if (gemm.type != OpType::kGemm || gemm.bias >= 0 || gemm.activation != Activation::kNone ||
        plan.tensors[gemm.weight].dtype == DType::kF8E4M3 || norm.type != OpType::kAddLayerNorm ||
        norm.in != product || norm.residual == product) {
      continue;
    }
    const bool is_output = std::any_of(plan.outputs.begin(), plan.outputs.end(),
                                       [&](const PlanOutput& output) { return output.buffer == product; });
    bool read_later = false;
    for (size_t j = i + 1; j < plan.ops.size() && !read_later; ++j) {
      const PlanOp& op = plan.ops[j];
      read_later = j > i + 1 && (op.in == product || op.residual == product);
      if (op.out == product) break;  // overwritten: later reads see the new values
    }
    if (!is_output && !read_later) found.push_back(i);
  }
  return found;
}

// The GEMMs that write logits on an fp16 plan: a plan output that a GEMM
// writes and no op reads (the heads' last GEMMs). They write it in fp32,
// with an fp32 bias, from fp32 accumulators: rounding logits to fp16 costs
// them up to 1e-3 near the top of a BERT vocabulary, the size of the gap
// between the best two tokens of a few rows in a hundred (docs/cuda.md,
// "fp32 logits").
std::vector<size_t> gemms_into_logits(const Plan& plan) {
  std::vector<bool> read(plan.buffers.size(), false);
  std::vector<int> writers(plan.buffers.size(), 0);
  for (const PlanOp& op : plan.ops) {
    for (int buffer : {op.in, op.residual}) {
      if (buffer >= 0) read[static_cast<size_t>(buffer)] = true;
    }
    ++writers[static_cast<size_t>(op.out)];
  }
  std::vector<size_t> found;
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    const PlanOp& op = plan.ops[i];
    const auto out = static_cast<size_t>(op.out);
    const bool is_output = std::any_of(plan.outputs.begin(), plan.outputs.end(),
                                       [&](const PlanOutput& output) { return output.buffer == op.out; });
    if (op.type == OpType::kGemm && is_output && !read[out] && writers[out] == 1) found.push_back(i);
  }
  return found;
}

}  // namespace

// What a context needs for an fp8 plan's fp8 GEMMs (cuda_gemm.h, GemmArgs):
// per plan tensor, the device address of its scale (nullptr unless E4M3).
// Empty on other plans.
struct Fp8Operands {
  std::vector<const float*> weight_scales;
};

struct CudaBackend::State {
  std::shared_ptr<CudaDevice> device;
  bool graphs_enabled = true;
  // Loading's own stream: upload() waits for its copies.
  cudaStream_t load_stream = nullptr;
  // Set by configure().
  Precision precision = Precision::kFp32;
  DType activations = DType::kF32;  // of every buffer but fp32 logits
  std::unordered_set<const PlanOp*> gemms_into_logits;  // see gemms_into_logits()
  std::vector<int64_t> topk_cols;  // columns of each plan output with selected rows
  // gemms_feeding_layernorm's ops (the runtime keeps the plan configure()
  // saw for the backend's life) and the widest of their products.
  std::unordered_set<const PlanOp*> gemms_into_partials;
  int64_t partial_cols = 0;
  Fp8Operands fp8;
  // The E4M3 weights' scales, 16 bytes apart (cuBLASLt's alignment).
  float* scales = nullptr;
  size_t scales_bytes = 0;
};

// What a context's split-K partials (GemmRunner::run_into_partials) need.
struct PartialSizes {
  std::unordered_set<const PlanOp*> gemms;
  int64_t capacity = 0;  // floats
};

// What a context's softmax top-k needs (cuda/topk.cuh) for up to `rows`
// rows; none when the plan has no output with selected rows.
struct TopKSizes {
  int64_t rows = 0;
  size_t scratch_bytes = 0;
};

class CudaBackend::Context : public BackendContext {
 public:
  // Called under the device's resource lock.
  Context(CudaDevice& device, bool graphs_enabled, Precision precision, DType activations,
          std::unordered_set<const PlanOp*> gemms_into_logits, TopKSizes topk, PartialSizes partials, Fp8Operands fp8)
      : device_(device), graphs_enabled_(graphs_enabled), activations_(activations),
        gemms_into_logits_(std::move(gemms_into_logits)), fp8_(std::move(fp8)),
        gemms_into_partials_(std::move(partials.gemms)) {
    // The destructor does not run when this throws: clean up here.
    try {
      check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
      check(cudaEventCreate(&work_start_), "cudaEventCreate");
      check(cudaEventCreate(&work_end_), "cudaEventCreate");
      gemms_ = std::make_unique<GemmRunner>(device.lt(), stream_, precision);
      if (topk.rows > 0 && topk.scratch_bytes > 0) allocate_topk(topk);
      if (partials.capacity > 0 && !gemms_into_partials_.empty()) allocate_partials(partials.capacity);
    } catch (...) {
      release_resources();
      throw;
    }
  }

  ~Context() override {
    // Errors cannot be reported from here; the runtime has synchronised.
    std::lock_guard<std::mutex> lock(device_.resource_lock());
    cudaSetDevice(device_.ordinal());
    if (stream_) cudaStreamSynchronize(stream_);
    release_resources();
  }

  // The calls below up to softmax_topk come only from execute()'s enqueue,
  // which has selected the device (and may be capturing).

  // Small copies as one kernel, large ones on a copy engine
  // (cuda/host_copy.cuh says why).
  void copy_to_device(const InputCopy* copies, int count) override {
    std::array<gpu::CopyRange, kMaxInputCopies> ranges{};
    for (int i = 0; i < count; ++i) ranges[i] = {copies[i].device_dst, copies[i].host_src, copies[i].bytes};
    if (gpu::copy_ranges_supports(ranges.data(), count)) {
      check(gpu::copy_ranges(ranges.data(), count, stream_), "the input copy kernel");
      return;
    }
    for (int i = 0; i < count; ++i) {
      check(cudaMemcpyAsync(copies[i].device_dst, copies[i].host_src, copies[i].bytes, cudaMemcpyHostToDevice, stream_),
            "copy of the inputs");
    }
  }

  void copy_to_host(void* host_dst, const void* device_src, size_t bytes) override {
    if (OutputLanding* landing = landing_for(host_dst)) {
      check(cudaMemcpyAsync(landing->landed, device_src, bytes, cudaMemcpyDeviceToHost, stream_), "copy of an output");
      landing->done = true;
      return;
    }
    const gpu::CopyRange range{host_dst, device_src, bytes};
    if (gpu::copy_ranges_supports(&range, 1)) {
      check(gpu::copy_ranges(&range, 1, stream_), "the output copy kernel");
      return;
    }
    check(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, stream_), "copy of an output");
  }

  void to_float(float* device_dst, const void* device_src, int64_t count) override {
    check(gpu::half_to_float(as<__half>(device_src), device_dst, count, stream_), "the fp16 -> fp32 output kernel");
  }

  void run(const OpCall& c) override {
    if (activations_ == DType::kF16) {
      run_op<__half>(c);
    } else {
      run_op<float>(c);
    }
  }

  // rows never exceed the limits the context was made for, and its calls are
  // all on its own stream, so they may share its counters and scratch.
  void softmax_topk(const void* logits, DType dtype, int64_t rows, int64_t cols, int k, int32_t* top_ids,
                    float* top_scores) override {
    if (dtype == DType::kF16) {
      softmax_topk_of(as<__half>(logits), rows, cols, k, top_ids, top_scores);
    } else {
      softmax_topk_of(as<float>(logits), rows, cols, k, top_ids, top_scores);
    }
  }

  // The MLM decoder at a few [MASK] rows, where tuning chose the gemv for
  // it: the top-k in the gemv's own launch (cuda/gemv.cuh, gemv_topk).
  bool run_with_softmax_topk(const OpCall& c, int k, int32_t* top_ids, float* top_scores) override {
    if (c.op->type != OpType::kGemm || gemms_into_partials_.count(c.op) != 0) return false;
    // The counter and scratch are softmax_topk's: calls on this stream never overlap.
    const GemmTopK top{k, top_ids, top_scores, topk_counters_, topk_scratch_};
    const bool done = gemms_->run_with_topk(gemm_args(c), top);
    if (done) pending_partials_ = {};
    return done;
  }

  void execute(const std::string& key, const std::function<void()>& enqueue,
               std::vector<OutputLanding>& landings) override;
  bool records() const override { return graphs_enabled_; }
  bool replays(const std::string& key) const override { return graphs_enabled_ && graphs_.count(key) > 0; }

  void synchronize() override {
    device_.select();
    check(cudaStreamSynchronize(stream_), "the batch's kernels");
  }

  // The end event of the last execute() is its last work on the stream.
  bool done() override {
    device_.select();
    return cudaEventQuery(work_end_) != cudaErrorNotReady;
  }

  // Elapsed time between the events of the last execute().
  double last_execute_ms() const override {
    float ms = 0.f;
    check(cudaEventElapsedTime(&ms, work_start_, work_end_), "cudaEventElapsedTime");
    return ms;
  }

 private:
  // A recorded copy of an output into staging, which a replay points at
  // the run's landing instead (cudaGraphExecMemcpyNodeSetParams1D).
  struct OutputCopy {
    cudaGraphNode_t node;
    void* staged;
    const void* source;
    size_t bytes;
    void* current;  // where the instantiated graph copies it now
  };
  struct Graph {
    cudaGraphExec_t exec = nullptr;
    cudaGraph_t graph = nullptr;  // kept: its nodes name the copies to re-point
    std::vector<OutputCopy> output_copies;
    uint64_t last_use = 0;
  };
  static void destroy(Graph& g) {
    if (g.exec != nullptr) cudaGraphExecDestroy(g.exec);
    if (g.graph != nullptr) cudaGraphDestroy(g.graph);
  }

  // The landing of the output staged at host_dst in the run being issued
  // eagerly, if any (none while recording: a graph copies into staging).
  OutputLanding* landing_for(const void* host_dst) {
    if (landings_ == nullptr) return nullptr;
    for (OutputLanding& l : *landings_) {
      if (l.staged == host_dst) return &l;
    }
    return nullptr;
  }

  // Every device-to-host copy node of a recorded graph.
  static std::vector<OutputCopy> output_copies_of(cudaGraph_t graph) {
    size_t count = 0;
    check(cudaGraphGetNodes(graph, nullptr, &count), "cudaGraphGetNodes");
    std::vector<cudaGraphNode_t> nodes(count);
    check(cudaGraphGetNodes(graph, nodes.data(), &count), "cudaGraphGetNodes");
    std::vector<OutputCopy> copies;
    for (cudaGraphNode_t node : nodes) {
      cudaGraphNodeType type{};
      check(cudaGraphNodeGetType(node, &type), "cudaGraphNodeGetType");
      if (type != cudaGraphNodeTypeMemcpy) continue;
      cudaMemcpy3DParms params{};
      check(cudaGraphMemcpyNodeGetParams(node, &params), "cudaGraphMemcpyNodeGetParams");
      if (params.kind != cudaMemcpyDeviceToHost) continue;
      copies.push_back({node, params.dstPtr.ptr, params.srcPtr.ptr, params.extent.width, params.dstPtr.ptr});
    }
    return copies;
  }

  // Points each recorded output copy of g at this run's landing, or back at
  // staging; a landing the driver refuses stays undone (its output is read
  // from staging).
  void aim_output_copies(Graph& g, std::vector<OutputLanding>& landings) {
    for (OutputCopy& copy : g.output_copies) {
      OutputLanding* landing = nullptr;
      for (OutputLanding& l : landings) {
        if (l.staged == copy.staged) landing = &l;
      }
      if (landing != nullptr && landing->landed != copy.current) {
        if (cudaGraphExecMemcpyNodeSetParams1D(g.exec, copy.node, landing->landed, copy.source, copy.bytes,
                                               cudaMemcpyDeviceToHost) == cudaSuccess) {
          copy.current = landing->landed;
        } else {
          cudaGetLastError();
          landing = nullptr;
        }
      }
      if (landing != nullptr) {
        landing->done = true;
      } else if (copy.current != copy.staged) {
        check(cudaGraphExecMemcpyNodeSetParams1D(g.exec, copy.node, copy.staged, copy.source, copy.bytes,
                                                 cudaMemcpyDeviceToHost),
              "re-pointing an output copy at staging");
        copy.current = copy.staged;
      }
    }
  }

  void allocate_topk(const TopKSizes& topk) {
    const size_t counter_bytes = static_cast<size_t>(topk.rows) * sizeof(uint32_t);
    check(cudaMalloc(&topk_counters_, counter_bytes), "cudaMalloc of the top-k row counters");
    topk_bytes_ += counter_bytes;
    g_native_memory_bytes += static_cast<int64_t>(counter_bytes);
    check(cudaMalloc(&topk_scratch_, topk.scratch_bytes), "cudaMalloc of the top-k scratch");
    topk_bytes_ += topk.scratch_bytes;
    g_native_memory_bytes += static_cast<int64_t>(topk.scratch_bytes);
    // The kernel needs the counters zero before its first call and leaves them so.
    check(cudaMemsetAsync(topk_counters_, 0, counter_bytes, stream_), "cudaMemset of the top-k row counters");
    check(cudaStreamSynchronize(stream_), "cudaMemset of the top-k row counters");
  }

  template <class T>
  void softmax_topk_of(const T* logits, int64_t rows, int64_t cols, int k, int32_t* top_ids, float* top_scores) {
    const gpu::SoftmaxTopKArgs<T> args{logits, rows, cols, k, top_ids, top_scores, topk_counters_, topk_scratch_};
    check(gpu::softmax_topk(args, stream_), "the softmax top-k kernel");
  }

  void allocate_partials(int64_t capacity) {
    const size_t bytes = static_cast<size_t>(capacity) * sizeof(float);
    check(cudaMalloc(&partials_, bytes), "cudaMalloc of the split-K partials");
    partial_capacity_ = capacity;
    g_native_memory_bytes += static_cast<int64_t>(bytes);
  }

  void release_resources() {
    for (auto& [key, graph] : graphs_) destroy(graph);
    graphs_.clear();
    gemms_.reset();
    if (partials_) cudaFree(partials_);
    g_native_memory_bytes -= partial_capacity_ * static_cast<int64_t>(sizeof(float));
    partials_ = nullptr;
    partial_capacity_ = 0;
    if (topk_scratch_) cudaFree(topk_scratch_);
    if (topk_counters_) cudaFree(topk_counters_);
    g_native_memory_bytes -= static_cast<int64_t>(topk_bytes_);
    topk_scratch_ = nullptr;
    topk_counters_ = nullptr;
    topk_bytes_ = 0;
    if (work_end_) cudaEventDestroy(work_end_);
    if (work_start_) cudaEventDestroy(work_start_);
    if (stream_) cudaStreamDestroy(stream_);
    work_end_ = work_start_ = nullptr;
    stream_ = nullptr;
  }

  template <class T>
  void attention_rows(const OpCall& c) {
    gpu::AttentionRowsArgs<T> p{};
    p.qkv = as<T>(c.in);
    p.cu_seqlens = c.batch->cu_seqlens;
    p.sequences = c.batch->shape.sequences;
    p.heads = c.op->heads;
    p.head_dim = c.op->head_dim;
    p.scale = c.op->scale;
    p.query_rows = selected_tokens(c);
    p.rows = c.rows;
    if (c.out_fp8) {
      p.out8 = as<__nv_fp8_e4m3>(c.out);
    } else {
      p.out = as<T>(c.out);
    }
    check(gpu::attention_rows(p, stream_), "the attention_rows kernel");
  }

  void attention(const OpCall& c) {
    if (c.op->head_dim > gpu::kAttentionMaxHeadDim) {
      fail(ErrorCode::kShape, "the CUDA attention kernel supports head_dim up to " +
                                  std::to_string(gpu::kAttentionMaxHeadDim) + ", the plan has " +
                                  std::to_string(c.op->head_dim));
    }
    if (c.op->select != RowSelect::kAll) {
      if (activations_ == DType::kF16) {
        attention_rows<__half>(c);
      } else {
        attention_rows<float>(c);
      }
      return;
    }
    if (activations_ == DType::kF16) {
      gpu::AttentionHalfParams p{};
      p.qkv = as<__half>(c.in);
      p.cu_seqlens = c.batch->cu_seqlens;
      p.sequences = c.batch->shape.sequences;
      p.max_seqlen = c.batch->shape.max_sequence_length;
      p.heads = c.op->heads;
      p.head_dim = c.op->head_dim;
      p.scale = c.op->scale;
      if (c.out_fp8) {
        p.out8 = as<__nv_fp8_e4m3>(c.out);
      } else {
        p.out = as<__half>(c.out);
      }
      check(gpu::launch_attention_fp16(p, stream_), "the fp16 attention kernel");
      return;
    }
    cpu::AttentionParams p{};
    p.qkv = as<float>(c.in);
    p.cu_seqlens = c.batch->cu_seqlens;
    p.sequences = c.batch->shape.sequences;
    p.heads = c.op->heads;
    p.head_dim = c.op->head_dim;
    p.scale = c.op->scale;
    p.out = as<float>(c.out);
    check(gpu::attention(p, c.rows, stream_), "the attention kernel");
  }

  GemmArgs gemm_args(const OpCall& c) const {
    GemmArgs g;
    g.rows = c.rows;
    g.n = c.out_cols;
    g.k = c.in_cols;
    g.in = c.in;
    g.weight = c.weight;
    g.bias = c.bias;
    g.activation = c.op->activation;
    g.out = c.out;
    g.float_out = gemms_into_logits_.count(c.op) != 0;  // only ever filled on fp16 and fp8 plans
    if (!fp8_.weight_scales.empty()) {
      g.weight_scale = fp8_.weight_scales[static_cast<size_t>(c.op->weight)];
      g.e4m3_out = c.out_fp8;
    }
    return g;
  }

  template <class T>
  void run_op(const OpCall& c) {
    // Partials are for the op right after their GEMM only.
    const PendingPartials pending = std::exchange(pending_partials_, {});
    switch (c.op->type) {
      case OpType::kEmbedLayerNorm: {
        gpu::EmbedLayerNormArgs<T> p{};
        p.input_ids = c.batch->input_ids;
        p.token_type_ids = c.batch->token_type_ids;
        p.cu_seqlens = c.batch->cu_seqlens;
        p.tokens = c.rows;
        p.sequences = c.batch->shape.sequences;
        p.hidden = c.out_cols;
        p.word = as<T>(c.word);
        p.position = as<T>(c.position);
        p.token_type = as<T>(c.token_type);
        p.gamma = as<float>(c.gamma);
        p.beta = as<float>(c.beta);
        p.eps = c.op->eps;
        p.out = as<T>(c.out);
        p.out8 = as<__nv_fp8_e4m3>(c.out8);
        check(gpu::embed_layernorm(p, stream_), "the embed_layernorm kernel");
        return;
      }
      case OpType::kGemm: {
        const GemmArgs g = gemm_args(c);
        if (partials_ != nullptr && gemms_into_partials_.count(c.op) != 0) {
          pending_partials_ = {c.out, gemms_->run_into_partials(g, partials_, partial_capacity_)};
        } else {
          gemms_->run(g);
        }
        return;
      }
      case OpType::kAttention:
        attention(c);
        return;
      case OpType::kAddLayerNorm: {
        gpu::AddLayerNormArgs<T> p{};
        p.in = as<T>(c.in);
        p.residual = as<T>(c.residual);
        p.bias = as<float>(c.bias);
        p.gamma = as<float>(c.gamma);
        p.beta = as<float>(c.beta);
        p.eps = c.op->eps;
        p.rows = c.rows;
        p.cols = c.out_cols;
        p.out = as<T>(c.out);
        p.out8 = as<__nv_fp8_e4m3>(c.out8);
        if (pending.splits > 0 && pending.product == c.in) {
          p.in = nullptr;
          p.partials = partials_;
          p.partial_count = pending.splits;
        }
        check(gpu::add_layernorm(p, stream_), "the add_layernorm kernel");
        return;
      }
      case OpType::kGatherRows: {
        gpu::GatherRowsArgs<T> p{};
        p.in = as<T>(c.in);
        p.in_rows = c.in_rows;
        p.row_index = selected_tokens(c);
        p.rows_out = c.rows;
        p.cols = c.out_cols;
        p.out = as<T>(c.out);
        check(gpu::gather_rows(p, stream_), "the gather_rows kernel");
        return;
      }
      case OpType::kMeanRows: {
        gpu::MeanRowsArgs<T> p{};
        p.in = as<T>(c.in);
        p.cu_seqlens = c.batch->cu_seqlens;
        p.sequences = c.rows;
        p.cols = c.out_cols;
        p.out = as<T>(c.out);
        check(gpu::mean_rows(p, stream_), "the mean_rows kernel");
        return;
      }
    }
    fail(ErrorCode::kBackend, std::string("the CUDA backend does not implement op ") + op_type_name(c.op->type));
  }

  // Records enqueue's work on the stream as a graph for `key`, without
  // running it. The caller holds the device's resource lock and has just run
  // it eagerly, which also loaded every kernel module and filled the GEMM
  // cache, so nothing unsafe happens while capturing.
  void capture(const std::string& key, const std::function<void()>& enqueue) {
    check(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    Graph g;
    std::vector<OutputLanding>* const landings = std::exchange(landings_, nullptr);  // record copies into staging
    try {
      enqueue();
    } catch (...) {
      landings_ = landings;
      cudaStreamEndCapture(stream_, &g.graph);
      if (g.graph != nullptr) cudaGraphDestroy(g.graph);
      cudaGetLastError();
      throw;
    }
    landings_ = landings;
    check(cudaStreamEndCapture(stream_, &g.graph), "cudaStreamEndCapture");
    try {
      check(cudaGraphInstantiate(&g.exec, g.graph, 0), "cudaGraphInstantiate");
      g.output_copies = output_copies_of(g.graph);
      if (graphs_.size() >= kMaxGraphs) {
        auto oldest = std::min_element(graphs_.begin(), graphs_.end(),
                                       [](const auto& a, const auto& b) { return a.second.last_use < b.second.last_use; });
        destroy(oldest->second);
        graphs_.erase(oldest);
      }
      g.last_use = ++graph_clock_;
      graphs_.emplace(key, g);
    } catch (...) {
      destroy(g);  // a failed instantiation or insert must not leak the graph
      throw;
    }
  }

  CudaDevice& device_;
  const bool graphs_enabled_;
  const DType activations_;
  const std::unordered_set<const PlanOp*> gemms_into_logits_;
  const Fp8Operands fp8_;
  cudaStream_t stream_ = nullptr;
  // Around the device work of each execute(): the run's GPU time.
  cudaEvent_t work_start_ = nullptr;
  cudaEvent_t work_end_ = nullptr;
  std::unique_ptr<GemmRunner> gemms_;
  // Split-K partials: which GEMMs may write them, where, and what the last
  // one wrote (its product's buffer, which it left unwritten, and the count;
  // 0 after a plain GEMM).
  struct PendingPartials {
    const void* product = nullptr;
    int splits = 0;
  };
  const std::unordered_set<const PlanOp*> gemms_into_partials_;
  float* partials_ = nullptr;
  int64_t partial_capacity_ = 0;
  PendingPartials pending_partials_;
  uint32_t* topk_counters_ = nullptr;
  void* topk_scratch_ = nullptr;
  size_t topk_bytes_ = 0;  // both, as counted in g_native_memory_bytes
  std::unordered_map<std::string, Graph> graphs_;
  // The landings of the run execute() is issuing; nullptr outside it.
  std::vector<OutputLanding>* landings_ = nullptr;
  uint64_t graph_clock_ = 0;
  // With graphs off: keys run so far (execute()); emptied at kMaxGraphs.
  std::unordered_set<std::string> seen_keys_;
};

void CudaBackend::Context::execute(const std::string& key, const std::function<void()>& enqueue,
                                   std::vector<OutputLanding>& landings) {
  device_.select();
  landings_ = &landings;
  struct Reset {
    std::vector<OutputLanding>*& landings;
    ~Reset() { landings = nullptr; }
  } reset{landings_};
  // The events are recorded outside any capture, so a replay is timed too.
  const auto timed = [&](const auto& work) {
    check(cudaEventRecord(work_start_, stream_), "cudaEventRecord");
    work();
    check(cudaEventRecord(work_end_, stream_), "cudaEventRecord");
  };
  if (graphs_enabled_) {
    auto found = graphs_.find(key);
    if (found != graphs_.end()) {
      found->second.last_use = ++graph_clock_;
      aim_output_copies(found->second, landings);
      timed([&] { check(cudaGraphLaunch(found->second.exec, stream_), "cudaGraphLaunch"); });
      return;
    }
  } else if (seen_keys_.count(key) != 0) {
    timed(enqueue);
    return;
  }
  // First run of this key here: launched under the device's lock, since it
  // may load kernel modules (CudaDevice::resource_lock).
  std::lock_guard<std::mutex> lock(device_.resource_lock());
  timed(enqueue);
  if (!graphs_enabled_) {
    if (seen_keys_.size() >= kMaxGraphs) seen_keys_.clear();
    seen_keys_.insert(key);
    return;
  }
  // Wait for it (so an error shows before capturing; once per key), then
  // record it.
  check(cudaStreamSynchronize(stream_), "the batch's kernels");
  capture(key, enqueue);
}

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

std::vector<CudaDeviceSummary> cuda_devices() {
  std::vector<CudaDeviceSummary> devices;
  for (int ordinal = 0, count = cuda_device_count(); ordinal < count; ++ordinal) {
    cudaDeviceProp properties{};
    if (cudaGetDeviceProperties(&properties, ordinal) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    devices.push_back({ordinal, properties.name, properties.major * 10 + properties.minor});
  }
  return devices;
}

std::string cuda_unavailable_reason() {
  int count = 0;
  const cudaError_t error = cudaGetDeviceCount(&count);
  cudaGetLastError();
  int driver = 0, runtime = 0;
  cudaDriverGetVersion(&driver);
  cudaRuntimeGetVersion(&runtime);
  if (error == cudaSuccess || error == cudaErrorNoDevice || driver == 0) return "";
  const auto version = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  if (error == cudaErrorInsufficientDriver) {
    return "the NVIDIA driver supports CUDA " + version(driver) + ", but FusedRT was built with CUDA " +
           version(runtime) + ": update the driver, or use device \"cpu\"";
  }
  return std::string("CUDA cannot start (") + cudaGetErrorName(error) + ": " + cudaGetErrorString(error) +
         "); use device \"cpu\"";
}

std::string cuda_unsupported_reason(const CudaDeviceSummary& device) {
  if (device.compute_capability >= kCudaMinComputeCapability) return "";
  return "cuda:" + std::to_string(device.ordinal) + " (" + device.name + ") has compute capability " +
         std::to_string(device.compute_capability / 10) + "." + std::to_string(device.compute_capability % 10) +
         "; FusedRT's CUDA kernels need " + std::to_string(kCudaMinComputeCapability / 10) + "." +
         std::to_string(kCudaMinComputeCapability % 10) +
         " or newer (Ampere and later: A100, A10, L4, RTX 30 and 40 series, H100, Jetson Orin); "
         "use device \"cpu\"";
}

CudaBackend::CudaBackend(int device, bool cuda_graphs) : state_(std::make_unique<State>()) {
  state_->device = CudaDevice::acquire(device);
  state_->graphs_enabled = cuda_graphs;
  static std::once_flag pinned_registered;
  std::call_once(pinned_registered, [device] {
    g_pinned_device = device;
    OutputBuffer::register_pinned_allocator({allocate_pinned, free_pinned});
  });
  std::lock_guard<std::mutex> lock(state_->device->resource_lock());
  state_->device->select();
  check(cudaStreamCreateWithFlags(&state_->load_stream, cudaStreamNonBlocking), "cudaStreamCreate");
}

CudaBackend::~CudaBackend() {
  // Errors cannot be reported from here; the runtime's contexts are gone.
  std::lock_guard<std::mutex> lock(state_->device->resource_lock());
  cudaSetDevice(state_->device->ordinal());
  cudaStreamDestroy(state_->load_stream);
  if (state_->scales != nullptr) {
    cudaFree(state_->scales);
    g_native_memory_bytes -= static_cast<int64_t>(state_->scales_bytes);
  }
}

bool CudaBackend::supports(OpType type) const {
  switch (type) {
    case OpType::kEmbedLayerNorm:
    case OpType::kGemm:
    case OpType::kAttention:
    case OpType::kAddLayerNorm:
    case OpType::kGatherRows:
    case OpType::kMeanRows:
      return true;
  }
  return false;
}

std::optional<DeviceInfo> CudaBackend::device_info() const { return state_->device->info(); }

DeviceStorage CudaBackend::configure(const Plan& plan) {
  state_->precision = plan.precision;
  state_->topk_cols.clear();
  state_->gemms_into_partials.clear();
  state_->gemms_into_logits.clear();
  state_->partial_cols = 0;
  for (const PlanOutput& output : plan.outputs) {
    const BufferInfo& buffer = plan.buffers[output.buffer];
    if (buffer.rows == RowsKind::kSelected) state_->topk_cols.push_back(buffer.cols);
  }
  DeviceStorage storage;
  storage.buffers.assign(plan.buffers.size(), DType::kF32);
  storage.tensors.assign(plan.tensors.size(), DType::kF32);
  check_fp8_support(plan);
  if (plan.precision != Precision::kFp16 && plan.precision != Precision::kFp8) return storage;

  state_->activations = DType::kF16;
  storage.buffers.assign(plan.buffers.size(), DType::kF16);
  for (const size_t i : gemms_into_logits(plan)) {
    state_->gemms_into_logits.insert(&plan.ops[i]);
    storage.buffers[plan.ops[i].out] = DType::kF32;
  }
  // Each tensor gets one dtype: fp16 for GEMM weights and biases and for
  // embedding tables; fp32 for LayerNorm parameters (and add_layernorm's
  // bias) and for the bias of a GEMM into fp32 logits.
  std::vector<int> half_use(plan.tensors.size(), -1);
  std::vector<int> float_use(plan.tensors.size(), -1);
  const auto use = [&](std::vector<int>& uses, int tensor, size_t op) {
    if (tensor >= 0 && uses[tensor] < 0) uses[tensor] = static_cast<int>(op);
  };
  for (size_t i = 0; i < plan.ops.size(); ++i) {
    const PlanOp& op = plan.ops[i];
    if (op.type == OpType::kGemm) {
      if (plan.tensors[op.weight].dtype != DType::kF8E4M3) use(half_use, op.weight, i);
      use(state_->gemms_into_logits.count(&op) != 0 ? float_use : half_use, op.bias, i);
    } else if (op.type == OpType::kEmbedLayerNorm) {
      use(half_use, op.word, i);
      use(half_use, op.position, i);
      use(half_use, op.token_type, i);
    } else if (op.type == OpType::kAttention && !gpu::attention_fp16_supports(op.head_dim)) {
      fail(ErrorCode::kShape, "the CUDA fp16 attention kernel does not support head_dim " +
                                  std::to_string(op.head_dim) + " (multiples of 8 up to 128); build the plan with --precision fp32");
    }
    use(float_use, op.gamma, i);
    use(float_use, op.beta, i);
    if (op.type == OpType::kAddLayerNorm) use(float_use, op.bias, i);
  }
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    if (half_use[t] >= 0 && float_use[t] >= 0) {
      fail(ErrorCode::kBackend, "tensor \"" + plan.tensors[t].name + "\" is an fp16 operand of op " +
                                    std::to_string(half_use[t]) + " and an fp32 one of op " + std::to_string(float_use[t]) +
                                    " (a LayerNorm parameter or a logits bias)");
    }
    if (half_use[t] >= 0) storage.tensors[t] = DType::kF16;
  }
  for (const size_t i : gemms_feeding_layernorm(plan)) {
    state_->gemms_into_partials.insert(&plan.ops[i]);
    state_->partial_cols = std::max(state_->partial_cols, plan.buffers[plan.ops[i].out].cols);
  }
  if (plan.precision == Precision::kFp8) store_fp8(plan, storage);
  return storage;
}

void CudaBackend::check_fp8_support(const Plan& plan) const {
  const bool has_fp8 =
      std::any_of(plan.tensors.begin(), plan.tensors.end(), [](const TensorInfo& t) { return t.dtype == DType::kF8E4M3; }) ||
      std::any_of(plan.buffers.begin(), plan.buffers.end(), [](const BufferInfo& b) { return b.fp8; });
  if (has_fp8 && plan.precision != Precision::kFp8) {
    fail(ErrorCode::kBackend, "the CUDA backend runs f8e4m3 tensors and buffers only in plans of precision fp8");
  }
  const int capability = state_->device->compute_capability();
  if (plan.precision == Precision::kFp8 && capability < 89) {
    fail(ErrorCode::kBackend, "fp8 plans need a GPU with FP8 tensor cores (compute capability 8.9 or newer: Ada, "
                              "Hopper); " + state_->device->info().name + " is " + std::to_string(capability / 10) +
                                  "." + std::to_string(capability % 10) +
                                  ". Run this plan on the CPU, or build one with --precision fp16");
  }
}

// E4M3 weights stay E4M3, fp8 buffers are E4M3, and each E4M3 weight's
// scale goes to device memory, where cuBLASLt reads it.
void CudaBackend::store_fp8(const Plan& plan, DeviceStorage& storage) {
  Fp8Operands& fp8 = state_->fp8;
  for (size_t b = 0; b < plan.buffers.size(); ++b) {
    if (plan.buffers[b].fp8) storage.buffers[b] = DType::kF8E4M3;
  }
  constexpr size_t kScaleStride = 4;  // floats: 16 bytes
  std::vector<float> scales;
  std::vector<size_t> slot(plan.tensors.size(), SIZE_MAX);
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    if (plan.tensors[t].dtype != DType::kF8E4M3) continue;
    storage.tensors[t] = DType::kF8E4M3;
    slot[t] = scales.size();
    scales.resize(scales.size() + kScaleStride, 0.f);
    scales[slot[t]] = plan.tensors[t].scale;
  }
  std::lock_guard<std::mutex> lock(state_->device->resource_lock());
  state_->device->select();
  state_->scales_bytes = std::max<size_t>(scales.size(), 1) * sizeof(float);
  check(cudaMalloc(&state_->scales, state_->scales_bytes), "cudaMalloc of the fp8 scales");
  g_native_memory_bytes += static_cast<int64_t>(state_->scales_bytes);
  check(cudaMemcpy(state_->scales, scales.data(), scales.size() * sizeof(float), cudaMemcpyHostToDevice),
        "copy of the fp8 scales");
  fp8.weight_scales.assign(plan.tensors.size(), nullptr);
  for (size_t t = 0; t < plan.tensors.size(); ++t) {
    if (slot[t] != SIZE_MAX) fp8.weight_scales[t] = state_->scales + slot[t];
  }
}

BatchShape CudaBackend::launch_shape(const BatchShape& real, const BatchShape& limits) const {
  BatchShape launch;
  launch.tokens = std::min(limits.tokens, round_up(real.tokens, token_step(real.tokens)));
  launch.sequences = std::min(limits.sequences, next_power_of_two(real.sequences));
  launch.selected = real.selected == 0 ? 0 : std::min(limits.selected, next_power_of_two(real.selected));
  launch.max_sequence_length =
      std::min({limits.max_sequence_length, launch.tokens, round_up(real.max_sequence_length, 64)});
  return launch;
}

std::unique_ptr<BackendContext> CudaBackend::create_context(const BatchShape& limits) {
  TopKSizes topk;
  if (!state_->topk_cols.empty()) topk.rows = limits.selected;
  // The scratch grows with rows and k but not steadily with cols: the
  // largest of the plan's outputs.
  for (int64_t cols : state_->topk_cols) {
    topk.scratch_bytes = std::max(topk.scratch_bytes, gpu::softmax_topk_scratch_bytes(limits.selected, cols, cpu::kMaxTopK));
  }
  // The same scratch serves the top-k in the decoder's gemv (run_with_softmax_topk).
  if (!state_->topk_cols.empty()) {
    const int64_t gemv_rows = std::min(limits.selected, gpu::kGemvTopKMaxRows);
    topk.scratch_bytes = std::max(topk.scratch_bytes, gpu::gemv_topk_scratch_bytes(gemv_rows, gpu::kGemvTopKMax));
  }
  PartialSizes partials;
  partials.gemms = state_->gemms_into_partials;
  partials.capacity = GemmRunner::partials_capacity(state_->precision, limits.tokens, state_->partial_cols);
  std::lock_guard<std::mutex> lock(state_->device->resource_lock());
  state_->device->select();
  return std::make_unique<Context>(*state_->device, state_->graphs_enabled, state_->precision, state_->activations,
                                   state_->gemms_into_logits, topk, std::move(partials), state_->fp8);
}

void* CudaBackend::allocate(size_t bytes) {
  std::lock_guard<std::mutex> lock(state_->device->resource_lock());
  state_->device->select();
  void* ptr = nullptr;
  // cudaMalloc aligns to 256 bytes, more than the 64 the contract asks.
  check(cudaMalloc(&ptr, bytes == 0 ? 1 : bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
  g_native_memory_bytes += static_cast<int64_t>(bytes);
  return ptr;
}

void CudaBackend::release(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(state_->device->resource_lock());
  cudaSetDevice(state_->device->ordinal());
  // Pending work may still read the memory; cudaFree waits for the device.
  cudaFree(ptr);
  g_native_memory_bytes -= static_cast<int64_t>(bytes);
}

void* CudaBackend::allocate_host(size_t bytes) {
  std::lock_guard<std::mutex> lock(state_->device->resource_lock());
  state_->device->select();
  void* ptr = nullptr;
  // Page-locked, so copies are truly asynchronous and can be graph nodes,
  // and mapped, so the copy kernel (cuda/host_copy.cuh) reads and writes it
  // in place; page aligned.
  check(cudaHostAlloc(&ptr, bytes == 0 ? 1 : bytes, cudaHostAllocMapped),
        "cudaHostAlloc of " + std::to_string(bytes) + " bytes");
  g_native_memory_bytes += static_cast<int64_t>(bytes);
  return ptr;
}

void CudaBackend::release_host(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  std::lock_guard<std::mutex> lock(state_->device->resource_lock());
  cudaSetDevice(state_->device->ordinal());
  cudaFreeHost(ptr);
  g_native_memory_bytes -= static_cast<int64_t>(bytes);
}

void CudaBackend::upload(void* device_dst, const void* host_src, size_t bytes) {
  state_->device->select();
  // The host buffer may be reused as soon as we return, so wait for the copy.
  check(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, state_->load_stream), "upload");
  check(cudaStreamSynchronize(state_->load_stream), "upload");
}

}  // namespace fusedrt
