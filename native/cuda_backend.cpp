// The CUDA backend (docs/cuda.md). GEMMs are in cuda_gemm.cpp, the kernels
// in cuda/.
//
// Every CUDA and cuBLAS status is checked; a failure becomes a FusedError:
// E_OOM for allocation failures, E_BACKEND otherwise, with CUDA's own error
// name and text. Nothing aborts.
//
// Threads: the runtime calls a backend from whichever libuv worker runs the
// load or the run (one at a time per engine), and the current device is
// per host thread, so every entry point selects the device first.
#include "cuda_backend.h"

#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <string>
#include <unordered_map>
#include <utility>

#include "../cuda/add_layernorm.cuh"
#include "../cuda/attention.cuh"
#include "../cuda/convert.cuh"
#include "../cuda/embed_layernorm.cuh"
#include "../cuda/gather_rows.cuh"
#include "../cuda/topk.cuh"
#include "cuda_check.h"
#include "cuda_gemm.h"
#include "errors.h"

namespace fusedrt {

namespace {

// Instantiated graphs per engine (one per launch shape and output set); the
// least recently used goes when a new one would exceed this.
constexpr size_t kMaxGraphs = 64;

// Bucket sizes (docs/cuda.md): tokens in steps of 64 up to 1024, then of
// 256; sequences and selected rows in powers of two; never above the limit.
int64_t round_up(int64_t n, int64_t step) { return (n + step - 1) / step * step; }
int64_t next_power_of_two(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

template <class T>
const T* as(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* as(void* p) { return static_cast<T*>(p); }

}  // namespace

struct CudaBackend::State {
  int device = 0;
  bool graphs_enabled = true;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  DType activations = DType::kF32;

  // Made by configure(), which knows the plan's precision.
  std::unique_ptr<GemmRunner> gemms;

  struct Graph {
    cudaGraphExec_t exec = nullptr;
    uint64_t last_use = 0;
  };
  std::unordered_map<std::string, Graph> graphs;
  uint64_t graph_clock = 0;

  // Around the device work of each execute(): the run's GPU time.
  cudaEvent_t work_start = nullptr;
  cudaEvent_t work_end = nullptr;

  void select_device() const { check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")"); }

  void attention(const OpCall& c) {
    if (activations == DType::kF16) {
      gpu::AttentionHalfParams p{};
      p.qkv = as<__half>(c.in);
      p.cu_seqlens = c.batch->cu_seqlens;
      p.sequences = c.batch->shape.sequences;
      p.max_seqlen = c.batch->shape.max_sequence_length;
      p.heads = c.op->heads;
      p.head_dim = c.op->head_dim;
      p.scale = c.op->scale;
      p.out = as<__half>(c.out);
      check(gpu::launch_attention_fp16(p, stream), "the fp16 attention kernel");
      return;
    }
    if (c.op->head_dim > gpu::kAttentionMaxHeadDim) {
      fail(ErrorCode::kShape, "the CUDA attention kernel supports head_dim up to " +
                                  std::to_string(gpu::kAttentionMaxHeadDim) + ", the plan has " +
                                  std::to_string(c.op->head_dim));
    }
    cpu::AttentionParams p{};
    p.qkv = as<float>(c.in);
    p.cu_seqlens = c.batch->cu_seqlens;
    p.sequences = c.batch->shape.sequences;
    p.heads = c.op->heads;
    p.head_dim = c.op->head_dim;
    p.scale = c.op->scale;
    p.out = as<float>(c.out);
    check(gpu::attention(p, c.rows, stream), "the attention kernel");
  }

  template <class T>
  void run(const OpCall& c) {
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
        check(gpu::embed_layernorm(p, stream), "the embed_layernorm kernel");
        return;
      }
      case OpType::kGemm: {
        GemmArgs g;
        g.rows = c.rows;
        g.n = c.out_cols;
        g.k = c.in_cols;
        g.in = c.in;
        g.weight = c.weight;
        g.bias = c.bias;
        g.activation = c.op->activation;
        g.out = c.out;
        gemms->run(g);
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
        check(gpu::add_layernorm(p, stream), "the add_layernorm kernel");
        return;
      }
      case OpType::kGatherRows: {
        gpu::GatherRowsArgs<T> p{};
        p.in = as<T>(c.in);
        p.in_rows = c.in_rows;
        // As on the CPU: the first token of sequence b is row cu_seqlens[b].
        p.row_index = c.op->select == GatherSelect::kFirst ? c.batch->cu_seqlens : c.batch->selected_rows;
        p.rows_out = c.rows;
        p.cols = c.out_cols;
        p.out = as<T>(c.out);
        check(gpu::gather_rows(p, stream), "the gather_rows kernel");
        return;
      }
    }
    fail(ErrorCode::kBackend, std::string("the CUDA backend does not implement op ") + op_type_name(c.op->type));
  }

  // Records enqueue's work on the stream as a graph for `key`, without
  // running it (the caller has just run it eagerly, which also loaded every
  // kernel module and filled the GEMM cache, so nothing unsafe happens while
  // capturing).
  void capture(const std::string& key, const std::function<void()>& enqueue) {
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
    cudaGraph_t graph = nullptr;
    try {
      enqueue();
    } catch (...) {
      cudaStreamEndCapture(stream, &graph);
      if (graph != nullptr) cudaGraphDestroy(graph);
      cudaGetLastError();
      throw;
    }
    check(cudaStreamEndCapture(stream, &graph), "cudaStreamEndCapture");
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    check(instantiated, "cudaGraphInstantiate");
    if (graphs.size() >= kMaxGraphs) {
      auto oldest = std::min_element(graphs.begin(), graphs.end(),
                                     [](const auto& a, const auto& b) { return a.second.last_use < b.second.last_use; });
      cudaGraphExecDestroy(oldest->second.exec);
      graphs.erase(oldest);
    }
    try {
      graphs.emplace(key, Graph{exec, ++graph_clock});
    } catch (...) {
      cudaGraphExecDestroy(exec);  // a failed insert must not leak the instantiated graph
      throw;
    }
  }
};

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

CudaBackend::CudaBackend(int device, bool cuda_graphs) : state_(std::make_unique<State>()) {
  const int count = cuda_device_count();
  if (device < 0 || device >= count) {
    fail(ErrorCode::kBackend, "CUDA device " + std::to_string(device) + " does not exist: this machine has " +
                                  std::to_string(count) + " CUDA device(s)");
  }
  state_->device = device;
  state_->graphs_enabled = cuda_graphs;
  state_->select_device();
  // Members are released by ~CudaBackend in reverse, also when a later step
  // of this constructor throws (the destructor does not run then: clean up
  // here).
  try {
    check(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cublasLtCreate(&state_->lt), "cublasLtCreate");
    check(cudaEventCreate(&state_->work_start), "cudaEventCreate");
    check(cudaEventCreate(&state_->work_end), "cudaEventCreate");
  } catch (...) {
    if (state_->work_end) cudaEventDestroy(state_->work_end);
    if (state_->work_start) cudaEventDestroy(state_->work_start);
    if (state_->lt) cublasLtDestroy(state_->lt);
    if (state_->stream) cudaStreamDestroy(state_->stream);
    throw;
  }
}

CudaBackend::~CudaBackend() {
  // Errors cannot be reported from here; the runtime has synchronised.
  cudaSetDevice(state_->device);
  cudaStreamSynchronize(state_->stream);
  for (auto& [key, graph] : state_->graphs) cudaGraphExecDestroy(graph.exec);
  state_->gemms.reset();
  cudaEventDestroy(state_->work_end);
  cudaEventDestroy(state_->work_start);
  cublasLtDestroy(state_->lt);
  cudaStreamDestroy(state_->stream);
}

bool CudaBackend::supports(OpType type) const {
  switch (type) {
    case OpType::kEmbedLayerNorm:
    case OpType::kGemm:
    case OpType::kAttention:
    case OpType::kAddLayerNorm:
    case OpType::kGatherRows:
      return true;
  }
  return false;
}

DeviceStorage CudaBackend::configure(const Plan& plan) {
  state_->select_device();
  state_->gemms = std::make_unique<GemmRunner>(state_->lt, state_->stream, plan.precision);
  DeviceStorage storage;
  storage.tensors.assign(plan.tensors.size(), DType::kF32);
  if (plan.precision != Precision::kFp16) return storage;

  storage.activations = DType::kF16;
  auto half = [&](int tensor) {
    if (tensor >= 0) storage.tensors[tensor] = DType::kF16;
  };
  for (const PlanOp& op : plan.ops) {
    if (op.type == OpType::kGemm) {
      half(op.weight);
      half(op.bias);
    } else if (op.type == OpType::kEmbedLayerNorm) {
      half(op.word);
      half(op.position);
      half(op.token_type);
    } else if (op.type == OpType::kAttention && !gpu::attention_fp16_supports(op.head_dim)) {
      fail(ErrorCode::kShape, "the CUDA fp16 attention kernel does not support head_dim " +
                                  std::to_string(op.head_dim) + " (multiples of 8 up to 128); build the plan with --precision fp32");
    }
  }
  // LayerNorm parameters (and add_layernorm's bias) stay fp32; a tensor that
  // is also a GEMM operand or embedding table cannot be both.
  for (const PlanOp& op : plan.ops) {
    for (int tensor : {op.gamma, op.beta, op.type == OpType::kAddLayerNorm ? op.bias : -1}) {
      if (tensor >= 0 && storage.tensors[tensor] == DType::kF16) {
        fail(ErrorCode::kBackend, "tensor \"" + plan.tensors[tensor].name +
                                      "\" is used both as a LayerNorm parameter and as a GEMM or embedding operand");
      }
    }
  }
  state_->activations = storage.activations;
  return storage;
}

BatchShape CudaBackend::launch_shape(const BatchShape& real, const BatchShape& limits) const {
  BatchShape launch;
  launch.tokens = std::min(limits.tokens, round_up(real.tokens, real.tokens <= 1024 ? 64 : 256));
  launch.sequences = std::min(limits.sequences, next_power_of_two(real.sequences));
  launch.selected = real.selected == 0 ? 0 : std::min(limits.selected, next_power_of_two(real.selected));
  launch.max_sequence_length =
      std::min({limits.max_sequence_length, launch.tokens, round_up(real.max_sequence_length, 64)});
  return launch;
}

void* CudaBackend::allocate(size_t bytes) {
  state_->select_device();
  void* ptr = nullptr;
  // cudaMalloc aligns to 256 bytes, more than the 64 the contract asks.
  check(cudaMalloc(&ptr, bytes == 0 ? 1 : bytes), "cudaMalloc of " + std::to_string(bytes) + " bytes");
  g_native_memory_bytes += static_cast<int64_t>(bytes);
  return ptr;
}

void CudaBackend::release(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  cudaSetDevice(state_->device);
  // Pending work may still read the memory; cudaFree waits for the device.
  cudaFree(ptr);
  g_native_memory_bytes -= static_cast<int64_t>(bytes);
}

void* CudaBackend::allocate_host(size_t bytes) {
  state_->select_device();
  void* ptr = nullptr;
  // Page-locked, so copies are truly asynchronous and can be graph nodes;
  // page aligned.
  check(cudaHostAlloc(&ptr, bytes == 0 ? 1 : bytes, cudaHostAllocDefault),
        "cudaHostAlloc of " + std::to_string(bytes) + " bytes");
  g_native_memory_bytes += static_cast<int64_t>(bytes);
  return ptr;
}

void CudaBackend::release_host(void* ptr, size_t bytes) {
  if (ptr == nullptr) return;
  cudaSetDevice(state_->device);
  cudaFreeHost(ptr);
  g_native_memory_bytes -= static_cast<int64_t>(bytes);
}

void CudaBackend::upload(void* device_dst, const void* host_src, size_t bytes) {
  state_->select_device();
  // The host buffer may be reused as soon as we return, so wait for the copy.
  check(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, state_->stream), "upload");
  check(cudaStreamSynchronize(state_->stream), "upload");
}

// copy_to_device, copy_to_host, to_float and run are only called from
// execute()'s enqueue, which has selected the device (and may be capturing).

void CudaBackend::copy_to_device(void* device_dst, const void* host_src, size_t bytes) {
  check(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, state_->stream), "copy of the inputs");
}

void CudaBackend::copy_to_host(void* host_dst, const void* device_src, size_t bytes) {
  check(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, state_->stream), "copy of an output");
}

void CudaBackend::to_float(float* device_dst, const void* device_src, int64_t count) {
  // Only fp16 activations need converting (DeviceStorage::activations).
  check(gpu::half_to_float(as<__half>(device_src), device_dst, count, state_->stream), "the fp16 -> fp32 output kernel");
}

void CudaBackend::run(const OpCall& c) {
  if (state_->activations == DType::kF16) {
    state_->run<__half>(c);
  } else {
    state_->run<float>(c);
  }
}

void CudaBackend::softmax_topk(const void* logits, int64_t rows, int64_t cols, int k, int32_t* top_ids,
                               float* top_scores) {
  if (state_->activations == DType::kF16) {
    check(gpu::softmax_topk(gpu::SoftmaxTopKArgs<__half>{as<__half>(logits), rows, cols, k, top_ids, top_scores},
                            state_->stream),
          "the softmax top-k kernel");
  } else {
    check(gpu::softmax_topk(gpu::SoftmaxTopKArgs<float>{as<float>(logits), rows, cols, k, top_ids, top_scores},
                            state_->stream),
          "the softmax top-k kernel");
  }
}

void CudaBackend::execute(const std::string& key, const std::function<void()>& enqueue) {
  state_->select_device();
  // The events are recorded outside any capture, so a replay is timed too.
  const auto start = [&] { check(cudaEventRecord(state_->work_start, state_->stream), "cudaEventRecord"); };
  const auto end = [&] { check(cudaEventRecord(state_->work_end, state_->stream), "cudaEventRecord"); };
  if (!state_->graphs_enabled) {
    start();
    enqueue();
    end();
    return;
  }
  auto found = state_->graphs.find(key);
  if (found != state_->graphs.end()) {
    found->second.last_use = ++state_->graph_clock;
    start();
    check(cudaGraphLaunch(found->second.exec, state_->stream), "cudaGraphLaunch");
    end();
    return;
  }
  // First batch of this launch shape: run it as it comes, wait for it (so an
  // error shows before capturing; once per key), then record it.
  start();
  enqueue();
  end();
  check(cudaStreamSynchronize(state_->stream), "the batch's kernels");
  state_->capture(key, enqueue);
}

double CudaBackend::last_execute_ms() const {
  float ms = 0.f;
  check(cudaEventElapsedTime(&ms, state_->work_start, state_->work_end), "cudaEventElapsedTime");
  return ms;
}

void CudaBackend::synchronize() {
  state_->select_device();
  check(cudaStreamSynchronize(state_->stream), "the batch's kernels");
}

}  // namespace fusedrt
