// The CUDA backend (docs/cuda.md). All cuBLAS use of the project is in this
// file (section "GEMM"), so it can be reviewed in one place.
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
#include <cuda_runtime.h>

#include <string>
#include <utility>

#include "../cuda/add_layernorm.cuh"
#include "../cuda/attention.cuh"
#include "../cuda/embed_layernorm.cuh"
#include "../cuda/gather_rows.cuh"
#include "../cuda/gemm_epilogue.cuh"
#include "errors.h"

namespace fusedrt {

namespace {

// cuBLASLt workspace per engine: enough for the split-K and stream-K
// algorithms the heuristic picks for BERT-sized GEMMs.
constexpr size_t kGemmWorkspaceBytes = 32u << 20;

void check(cudaError_t status, const std::string& what) {
  if (status == cudaSuccess) return;
  cudaGetLastError();  // clear a non-sticky error so the engine stays usable
  const ErrorCode code = status == cudaErrorMemoryAllocation ? ErrorCode::kOom : ErrorCode::kBackend;
  fail(code, "CUDA error in " + what + ": " + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}

void check(cublasStatus_t status, const std::string& what) {
  if (status == CUBLAS_STATUS_SUCCESS) return;
  const ErrorCode code = status == CUBLAS_STATUS_ALLOC_FAILED ? ErrorCode::kOom : ErrorCode::kBackend;
  fail(code, "cuBLASLt error in " + what + ": " + cublasGetStatusName(status) + " (" + cublasGetStatusString(status) + ")");
}

cpu::Activation to_kernel(Activation activation) {
  switch (activation) {
    case Activation::kNone: return cpu::Activation::kNone;
    case Activation::kGelu: return cpu::Activation::kGelu;
    case Activation::kGeluTanh: return cpu::Activation::kGeluTanh;
    case Activation::kRelu: return cpu::Activation::kRelu;
    case Activation::kTanh: return cpu::Activation::kTanh;
  }
  return cpu::Activation::kNone;
}

// ---- GEMM ------------------------------------------------------------------
//
// out[rows, n] = act(in[rows, k] . weight[n, k]^T + bias), all row-major. In
// cuBLASLt's column-major terms the same bytes are C (n x rows, ld n) =
// op(A) . B with A = weight seen as k x n (ld k) and transposed, B = in seen as
// k x rows (ld k); a bias of length n is then cuBLASLt's per-row bias of C.
// Compute is CUBLAS_COMPUTE_32F (true fp32, no TF32), to meet the fp32
// tolerance of 1e-4 against transformers.
//
// Epilogues: none, bias, relu (+bias) and tanh-GELU (+bias) run inside
// cuBLASLt (its GELU epilogue is the tanh approximation, which is what
// gelu_tanh asks for). Exact erf GELU and tanh have no cuBLASLt epilogue:
// cuBLASLt adds the bias, then cuda/gemm_epilogue.cu applies the activation.

struct GemmPlan {
  cublasLtEpilogue_t epilogue;
  bool separate_activation;
};

GemmPlan gemm_plan(cpu::Activation activation, bool has_bias) {
  switch (activation) {
    case cpu::Activation::kNone:
      return {has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, false};
    case cpu::Activation::kRelu:
      return {has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU, false};
    case cpu::Activation::kGeluTanh:
      return {has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU, false};
    case cpu::Activation::kGelu:
    case cpu::Activation::kTanh:
      break;
  }
  return {has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, true};
}

// The heuristic assumes 256-byte aligned matrices unless told otherwise, and
// plan tensors and workspace buffers are only 64-byte aligned.
uint32_t alignment_of(const void* ptr) {
  const auto address = reinterpret_cast<uintptr_t>(ptr);
  const uintptr_t lowest_bit = address & (~address + 1);
  return lowest_bit == 0 || lowest_bit > 256 ? 256u : static_cast<uint32_t>(lowest_bit);
}

// Descriptors are made and freed per call (RAII below); caching them per
// shape is left for when GEMM launch overhead is measured.
struct MatmulDesc {
  cublasLtMatmulDesc_t desc = nullptr;
  ~MatmulDesc() { if (desc) cublasLtMatmulDescDestroy(desc); }
};
struct MatrixLayout {
  cublasLtMatrixLayout_t layout = nullptr;
  ~MatrixLayout() { if (layout) cublasLtMatrixLayoutDestroy(layout); }
};
struct MatmulPreference {
  cublasLtMatmulPreference_t preference = nullptr;
  ~MatmulPreference() { if (preference) cublasLtMatmulPreferenceDestroy(preference); }
};

}  // namespace

struct CudaBackend::State {
  int device = 0;
  cudaStream_t stream = nullptr;
  cublasLtHandle_t lt = nullptr;
  void* gemm_workspace = nullptr;

  void select_device() const { check(cudaSetDevice(device), "cudaSetDevice(" + std::to_string(device) + ")"); }

  void gemm(const OpCall& c) {
    const cpu::Activation activation = to_kernel(c.op->activation);
    const int64_t rows = c.rows;
    const int64_t n = c.out_cols;
    const int64_t k = c.in_cols;
    gpu::BiasActivationParams epilogue{c.out, c.bias, activation, rows, n};
    if (k == 0) {  // act(bias), as on the CPU; cuBLASLt does not take k = 0
      check(cudaMemsetAsync(c.out, 0, static_cast<size_t>(rows * n) * sizeof(float), stream), "gemm (k = 0)");
      check(gpu::bias_activation(epilogue, stream), "the gemm epilogue kernel");
      return;
    }
    const GemmPlan plan = gemm_plan(activation, c.bias != nullptr);
    MatmulDesc op;
    check(cublasLtMatmulDescCreate(&op.desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), "cublasLtMatmulDescCreate");
    const cublasOperation_t transpose = CUBLAS_OP_T;
    const cublasOperation_t keep = CUBLAS_OP_N;
    check(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)), "TRANSA");
    check(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep)), "TRANSB");
    check(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &plan.epilogue, sizeof(plan.epilogue)),
          "EPILOGUE");
    if (c.bias != nullptr) {
      const void* bias = c.bias;
      check(cublasLtMatmulDescSetAttribute(op.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)), "BIAS_POINTER");
    }
    MatrixLayout a, b, out;
    check(cublasLtMatrixLayoutCreate(&a.layout, CUDA_R_32F, static_cast<uint64_t>(k), static_cast<uint64_t>(n), k), "layout of weight");
    check(cublasLtMatrixLayoutCreate(&b.layout, CUDA_R_32F, static_cast<uint64_t>(k), static_cast<uint64_t>(rows), k), "layout of in");
    check(cublasLtMatrixLayoutCreate(&out.layout, CUDA_R_32F, static_cast<uint64_t>(n), static_cast<uint64_t>(rows), n), "layout of out");
    MatmulPreference preference;
    check(cublasLtMatmulPreferenceCreate(&preference.preference), "cublasLtMatmulPreferenceCreate");
    const size_t workspace_bytes = kGemmWorkspaceBytes;
    check(cublasLtMatmulPreferenceSetAttribute(preference.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                               &workspace_bytes, sizeof(workspace_bytes)),
          "MAX_WORKSPACE_BYTES");
    const std::pair<cublasLtMatmulPreferenceAttributes_t, const void*> alignments[] = {
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, c.weight},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, c.in},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, c.out},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, c.out},
    };
    for (const auto& [attribute, ptr] : alignments) {
      const uint32_t alignment = alignment_of(ptr);
      check(cublasLtMatmulPreferenceSetAttribute(preference.preference, attribute, &alignment, sizeof(alignment)),
            "MIN_ALIGNMENT");
    }
    cublasLtMatmulHeuristicResult_t heuristic{};
    int found = 0;
    check(cublasLtMatmulAlgoGetHeuristic(lt, op.desc, a.layout, b.layout, out.layout, out.layout, preference.preference, 1,
                                         &heuristic, &found),
          "cublasLtMatmulAlgoGetHeuristic");
    if (found == 0) {
      fail(ErrorCode::kBackend, "cuBLASLt has no fp32 algorithm for a " + std::to_string(rows) + "x" + std::to_string(k) +
                                    " by " + std::to_string(k) + "x" + std::to_string(n) + " GEMM");
    }
    const float one = 1.f;
    const float zero = 0.f;
    check(cublasLtMatmul(lt, op.desc, &one, c.weight, a.layout, c.in, b.layout, &zero, c.out, out.layout, c.out,
                         out.layout, &heuristic.algo, gemm_workspace, kGemmWorkspaceBytes, stream),
          "cublasLtMatmul");
    if (plan.separate_activation) {
      epilogue.bias = nullptr;  // cuBLASLt added it
      check(gpu::bias_activation(epilogue, stream), "the gemm epilogue kernel");
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

CudaBackend::CudaBackend(int device) : state_(std::make_unique<State>()) {
  const int count = cuda_device_count();
  if (device < 0 || device >= count) {
    fail(ErrorCode::kBackend, "CUDA device " + std::to_string(device) + " does not exist: this machine has " +
                                  std::to_string(count) + " CUDA device(s)");
  }
  state_->device = device;
  state_->select_device();
  // Members are released by ~CudaBackend in reverse, also when a later step
  // of this constructor throws (the destructor does not run then: clean up
  // here).
  try {
    check(cudaStreamCreateWithFlags(&state_->stream, cudaStreamNonBlocking), "cudaStreamCreate");
    check(cublasLtCreate(&state_->lt), "cublasLtCreate");
    check(cudaMalloc(&state_->gemm_workspace, kGemmWorkspaceBytes), "cudaMalloc of the GEMM workspace");
    g_native_memory_bytes += static_cast<int64_t>(kGemmWorkspaceBytes);
  } catch (...) {
    if (state_->lt) cublasLtDestroy(state_->lt);
    if (state_->stream) cudaStreamDestroy(state_->stream);
    throw;
  }
}

CudaBackend::~CudaBackend() {
  // Errors cannot be reported from here; the runtime has synchronised.
  cudaSetDevice(state_->device);
  cudaStreamSynchronize(state_->stream);
  cudaFree(state_->gemm_workspace);
  g_native_memory_bytes -= static_cast<int64_t>(kGemmWorkspaceBytes);
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

void CudaBackend::upload(void* device_dst, const void* host_src, size_t bytes) {
  state_->select_device();
  // The host buffer may be reused as soon as we return, so wait for the copy.
  check(cudaMemcpyAsync(device_dst, host_src, bytes, cudaMemcpyHostToDevice, state_->stream), "upload");
  check(cudaStreamSynchronize(state_->stream), "upload");
}

void CudaBackend::download(void* host_dst, const void* device_src, size_t bytes) {
  state_->select_device();
  check(cudaMemcpyAsync(host_dst, device_src, bytes, cudaMemcpyDeviceToHost, state_->stream), "download");
  check(cudaStreamSynchronize(state_->stream), "download");
}

void CudaBackend::synchronize() {
  state_->select_device();
  check(cudaStreamSynchronize(state_->stream), "the batch's kernels");
}

void CudaBackend::run(const OpCall& c) {
  state_->select_device();
  cudaStream_t stream = state_->stream;
  switch (c.op->type) {
    case OpType::kEmbedLayerNorm: {
      cpu::EmbedLayerNormParams p{};
      p.input_ids = c.batch->input_ids;
      p.token_type_ids = c.batch->token_type_ids;
      p.cu_seqlens = c.batch->cu_seqlens;
      p.tokens = c.batch->tokens;
      p.sequences = c.batch->sequences;
      p.hidden = c.out_cols;
      p.word = c.word;
      p.position = c.position;
      p.token_type = c.token_type;
      p.gamma = c.gamma;
      p.beta = c.beta;
      p.eps = c.op->eps;
      p.out = c.out;
      check(gpu::embed_layernorm(p, stream), "the embed_layernorm kernel");
      return;
    }
    case OpType::kGemm:
      state_->gemm(c);
      return;
    case OpType::kAttention: {
      if (c.op->head_dim > gpu::kAttentionMaxHeadDim) {
        fail(ErrorCode::kShape, "the CUDA attention kernel supports head_dim up to " +
                                    std::to_string(gpu::kAttentionMaxHeadDim) + ", the plan has " +
                                    std::to_string(c.op->head_dim));
      }
      cpu::AttentionParams p{};
      p.qkv = c.in;
      p.cu_seqlens = c.batch->cu_seqlens;
      p.sequences = c.batch->sequences;
      p.heads = c.op->heads;
      p.head_dim = c.op->head_dim;
      p.scale = c.op->scale;
      p.out = c.out;
      check(gpu::attention(p, c.rows, stream), "the attention kernel");
      return;
    }
    case OpType::kAddLayerNorm: {
      cpu::AddLayerNormParams p{};
      p.in = c.in;
      p.residual = c.residual;
      p.bias = c.bias;
      p.gamma = c.gamma;
      p.beta = c.beta;
      p.eps = c.op->eps;
      p.rows = c.rows;
      p.cols = c.out_cols;
      p.out = c.out;
      check(gpu::add_layernorm(p, stream), "the add_layernorm kernel");
      return;
    }
    case OpType::kGatherRows: {
      cpu::GatherRowsParams p{};
      p.in = c.in;
      // As on the CPU: the first token of sequence b is row cu_seqlens[b].
      p.row_index = c.op->select == GatherSelect::kFirst ? c.batch->cu_seqlens : c.batch->selected_rows;
      p.rows_out = c.rows;
      p.cols = c.out_cols;
      p.out = c.out;
      check(gpu::gather_rows(p, stream), "the gather_rows kernel");
      return;
    }
  }
  fail(ErrorCode::kBackend, std::string("the CUDA backend does not implement op ") + op_type_name(c.op->type));
}

}  // namespace fusedrt
