// cuBLASLt GEMMs of the CUDA backend (cuda_gemm.h).
#include "cuda_gemm.h"

#include <cuda_fp16.h>

#include <map>
#include <string>
#include <tuple>
#include <utility>

#include "../cuda/gemm_epilogue.cuh"
#include "backend.h"
#include "cuda_check.h"

namespace fusedrt {

namespace {

// cuBLASLt workspace per runner: enough for the split-K and stream-K
// algorithms the heuristic picks for BERT-sized GEMMs.
constexpr size_t kGemmWorkspaceBytes = 32u << 20;
// Cached GEMM setups per runner: a handful per launch shape; the cache is
// emptied when it reaches this size (safe: a runner's calls never overlap,
// so no queued call still uses a setup's descriptor on the host).
constexpr size_t kMaxGemmSetups = 512;

template <class T>
const T* as(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* as(void* p) { return static_cast<T*>(p); }

// // out[rows, n] = act(in[rows, k] . weight[n, k]^T + bias), all row-major. In
// cuBLASLt's column-major terms the same bytes are C (n x rows, ld n) =
// op(A) . B with A = weight seen as k x n (ld k) and transposed, B = in seen as
// k x rows (ld k); a bias of length n is then cuBLASLt's per-row bias of C.
//
// Types by plan precision: fp32: fp32 data, CUBLAS_COMPUTE_32F (true fp32,
// for the 1e-4 tolerance); tf32: fp32 data, CUBLAS_COMPUTE_32F_FAST_TF32;
// fp16: fp16 A, B, C, D and bias, CUBLAS_COMPUTE_32F with fp32 scalars.
//
// Epilogues: none, bias, relu (+bias) and tanh-GELU (+bias) run inside
// cuBLASLt (its GELU epilogue is the tanh approximation, which is what
// gelu_tanh asks for). Exact erf GELU: fp16 plans take cuBLASLt's tanh GELU
// too, a deliberate approximation that saves one kernel per layer (its error,
// at most 4.7e-4 per activation, is within fp16's own rounding of them;
// docs/decisions/0005-fp16-gelu-epilogue.md); fp32 and tf32 plans keep exact
// erf. erf GELU there, and tanh, have no cuBLASLt epilogue: cuBLASLt adds the
// bias, then cuda/gemm_epilogue.cu applies the activation.
//
// Setup (descriptor, layouts, the heuristic's algorithm) is cached per
// GemmKey; a cached call only sets the bias pointer and launches.

struct GemmEpilogue {
  cublasLtEpilogue_t epilogue;
  bool separate_activation;
};

// half_activations: an fp16 plan, whose erf GELU runs as cuBLASLt's tanh GELU.
GemmEpilogue gemm_epilogue(Activation activation, bool has_bias, bool half_activations) {
  switch (activation) {
    case Activation::kNone:
      return {has_bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT, false};
    case Activation::kRelu:
      return {has_bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU, false};
    case Activation::kGelu:
      if (!half_activations) break;
      [[fallthrough]];
    case Activation::kGeluTanh:
      return {has_bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU, false};
    case Activation::kTanh:
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

struct GemmKey {
  int64_t rows, n, k;
  cudaDataType_t data_type;
  cublasComputeType_t compute;
  cublasLtEpilogue_t epilogue;
  uint32_t align_weight, align_in, align_out, align_bias;

  bool operator<(const GemmKey& o) const {
    return std::tie(rows, n, k, data_type, compute, epilogue, align_weight, align_in, align_out, align_bias) <
           std::tie(o.rows, o.n, o.k, o.data_type, o.compute, o.epilogue, o.align_weight, o.align_in, o.align_out,
                    o.align_bias);
  }
};

// Everything cuBLASLt needs for one GemmKey, owned.
struct GemmSetup {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t weight = nullptr;
  cublasLtMatrixLayout_t in = nullptr;
  cublasLtMatrixLayout_t out = nullptr;
  cublasLtMatmulAlgo_t algo{};
  // The heuristic found nothing with the fused epilogue, so this setup runs
  // a plain product and the epilogue kernel adds bias and activation.
  bool epilogue_in_kernel = false;

  GemmSetup() = default;
  GemmSetup(const GemmSetup&) = delete;
  GemmSetup& operator=(const GemmSetup&) = delete;
  ~GemmSetup() {
    if (out) cublasLtMatrixLayoutDestroy(out);
    if (in) cublasLtMatrixLayoutDestroy(in);
    if (weight) cublasLtMatrixLayoutDestroy(weight);
    if (desc) cublasLtMatmulDescDestroy(desc);
  }
};

struct MatmulPreference {
  cublasLtMatmulPreference_t preference = nullptr;
  ~MatmulPreference() { if (preference) cublasLtMatmulPreferenceDestroy(preference); }
};

// Setup with the key's epilogue; nullptr when the heuristic finds no
// algorithm for it.
std::unique_ptr<GemmSetup> try_gemm_setup(cublasLtHandle_t lt, const GemmKey& key, cublasLtEpilogue_t epilogue) {
  auto setup = std::make_unique<GemmSetup>();
  check(cublasLtMatmulDescCreate(&setup->desc, key.compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t transpose = CUBLAS_OP_T;
  const cublasOperation_t keep = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(setup->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)), "TRANSA");
  check(cublasLtMatmulDescSetAttribute(setup->desc, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep)), "TRANSB");
  check(cublasLtMatmulDescSetAttribute(setup->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
        "EPILOGUE");
  const auto k = static_cast<uint64_t>(key.k);
  const auto n = static_cast<uint64_t>(key.n);
  const auto rows = static_cast<uint64_t>(key.rows);
  check(cublasLtMatrixLayoutCreate(&setup->weight, key.data_type, k, n, key.k), "layout of weight");
  check(cublasLtMatrixLayoutCreate(&setup->in, key.data_type, k, rows, key.k), "layout of in");
  check(cublasLtMatrixLayoutCreate(&setup->out, key.data_type, n, rows, key.n), "layout of out");

  MatmulPreference preference;
  check(cublasLtMatmulPreferenceCreate(&preference.preference), "cublasLtMatmulPreferenceCreate");
  const size_t workspace_bytes = kGemmWorkspaceBytes;
  check(cublasLtMatmulPreferenceSetAttribute(preference.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                             &workspace_bytes, sizeof(workspace_bytes)),
        "MAX_WORKSPACE_BYTES");
  const std::pair<cublasLtMatmulPreferenceAttributes_t, uint32_t> alignments[] = {
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, key.align_weight},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, key.align_in},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, key.align_out},
      {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, key.align_out},
  };
  for (const auto& [attribute, alignment] : alignments) {
    check(cublasLtMatmulPreferenceSetAttribute(preference.preference, attribute, &alignment, sizeof(alignment)),
          "MIN_ALIGNMENT");
  }
  cublasLtMatmulHeuristicResult_t heuristic{};
  int found = 0;
  check(cublasLtMatmulAlgoGetHeuristic(lt, setup->desc, setup->weight, setup->in, setup->out, setup->out,
                                       preference.preference, 1, &heuristic, &found),
        "cublasLtMatmulAlgoGetHeuristic");
  if (found == 0) return nullptr;
  setup->algo = heuristic.algo;
  return setup;
}

std::unique_ptr<GemmSetup> make_gemm_setup(cublasLtHandle_t lt, const GemmKey& key) {
  if (auto setup = try_gemm_setup(lt, key, key.epilogue)) return setup;
  if (key.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    if (auto setup = try_gemm_setup(lt, key, CUBLASLT_EPILOGUE_DEFAULT)) {
      setup->epilogue_in_kernel = true;
      return setup;
    }
  }
  fail(ErrorCode::kBackend, "cuBLASLt has no algorithm for a " + std::to_string(key.rows) + "x" + std::to_string(key.k) +
                                " by " + std::to_string(key.k) + "x" + std::to_string(key.n) + " GEMM of this precision");
}

}  // namespace

struct GemmRunner::State {
  cublasLtHandle_t lt;
  cudaStream_t stream;
  Precision precision;
  void* workspace = nullptr;
  std::map<GemmKey, std::unique_ptr<GemmSetup>> setups;

  template <class T>
  void run(const GemmArgs& c) {
    const int64_t rows = c.rows;
    const int64_t n = c.n;
    const int64_t k = c.k;
    gpu::BiasActivationArgs<T> epilogue{as<T>(c.out), as<T>(c.bias), c.activation, rows, n};
    if (k == 0) {  // act(bias), as on the CPU; cuBLASLt does not take k = 0
      check(cudaMemsetAsync(c.out, 0, static_cast<size_t>(rows * n) * sizeof(T), stream), "gemm (k = 0)");
      check(gpu::bias_activation(epilogue, stream), "the gemm epilogue kernel");
      return;
    }
    const GemmEpilogue plan = gemm_epilogue(c.activation, c.bias != nullptr, sizeof(T) == 2);
    GemmKey key{};
    key.rows = rows;
    key.n = n;
    key.k = k;
    key.data_type = sizeof(T) == 2 ? CUDA_R_16F : CUDA_R_32F;
    key.compute = precision == Precision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    key.epilogue = plan.epilogue;
    key.align_weight = alignment_of(c.weight);
    key.align_in = alignment_of(c.in);
    key.align_out = alignment_of(c.out);
    key.align_bias = c.bias != nullptr ? alignment_of(c.bias) : 0;
    auto found = setups.find(key);
    if (found == setups.end()) {
      if (setups.size() >= kMaxGemmSetups) setups.clear();
      found = setups.emplace(key, make_gemm_setup(lt, key)).first;
    }
    GemmSetup& setup = *found->second;
    if (c.bias != nullptr && !setup.epilogue_in_kernel) {
      // The one per-call attribute: the descriptor is shared by every GEMM of
      // this shape, and calls on one runner never overlap.
      const void* bias = c.bias;
      check(cublasLtMatmulDescSetAttribute(setup.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
            "BIAS_POINTER");
    }
    const float one = 1.f;
    const float zero = 0.f;
    check(cublasLtMatmul(lt, setup.desc, &one, c.weight, setup.weight, c.in, setup.in, &zero, c.out, setup.out, c.out,
                         setup.out, &setup.algo, workspace, kGemmWorkspaceBytes, stream),
          "cublasLtMatmul");
    if (setup.epilogue_in_kernel) {
      check(gpu::bias_activation(epilogue, stream), "the gemm epilogue kernel");
    } else if (plan.separate_activation) {
      epilogue.bias = nullptr;  // cuBLASLt added it
      check(gpu::bias_activation(epilogue, stream), "the gemm epilogue kernel");
    }
  }
};

GemmRunner::GemmRunner(cublasLtHandle_t lt, cudaStream_t stream, Precision precision)
    : state_(std::make_unique<State>()) {
  state_->lt = lt;
  state_->stream = stream;
  state_->precision = precision;
  check(cudaMalloc(&state_->workspace, kGemmWorkspaceBytes), "cudaMalloc of the GEMM workspace");
  g_native_memory_bytes += static_cast<int64_t>(kGemmWorkspaceBytes);
}

GemmRunner::~GemmRunner() {
  // The owner has synchronised the stream; nothing queued reads the workspace.
  state_->setups.clear();
  cudaFree(state_->workspace);
  g_native_memory_bytes -= static_cast<int64_t>(kGemmWorkspaceBytes);
}

void GemmRunner::run(const GemmArgs& args) {
  if (state_->precision == Precision::kFp16) {
    state_->run<__half>(args);
  } else {
    state_->run<float>(args);
  }
}

}  // namespace fusedrt
