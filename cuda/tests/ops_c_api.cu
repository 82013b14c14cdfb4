// A C interface to every fused op of cuda/ and to the backend's GEMM runner
// (native/cuda_gemm.cpp: cuBLASLt, tuning and the project's own GEMM
// kernels), so that cuda/tests/torch_ops_test.py can run them on PyTorch's
// tensors and hold them to PyTorch's own ops. Not part of the addon.
//
//   nvcc -std=c++17 -O3 -arch=native -shared -Xcompiler -fPIC -DFUSEDRT_WITH_CUDA=1 -I native \
//     -o /tmp/libfusedrt_ops.so cuda/tests/ops_c_api.cu cuda/*.cu native/cuda_gemm.cpp -lcublasLt -lcublas
//
// Every function queues its op on the legacy default stream (the one
// PyTorch uses unless told otherwise; the GEMM runner has its own) and
// returns 0, or -1 with the reason in fusedrt_last_error(); the caller
// synchronises the device before reading the result. dtype: 0 for fp32
// operands, 1 for fp16.
#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "../add_layernorm.cuh"
#include "../attention.cuh"
#include "../attention_rows.cuh"
#include "../embed_layernorm.cuh"
#include "../gather_rows.cuh"
#include "../mean_rows.cuh"
#include "../gemm_epilogue.cuh"
#include "../gemv.cuh"
#include "../small_gemm.cuh"
#include "../topk.cuh"
#include "cuda_check.h"
#include "cuda_gemm.h"

namespace {

using namespace fusedrt;

std::string g_last_error;

// Runs `queue`, which throws FusedError (check()) on a failed launch.
template <class Queue>
int guarded(Queue queue) {
  try {
    queue();
    return 0;
  } catch (const std::exception& e) {
    g_last_error = e.what();
    return -1;
  }
}

template <class T>
const T* as(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* as(void* p) { return static_cast<T*>(p); }

// Device memory the ops need besides their operands, grown on demand. The
// top-k's row counters and small_gemm's tile counters share g_counters:
// both need them zero before a launch and leave them zero after it.
struct Scratch {
  void* ptr = nullptr;
  size_t bytes = 0;
  void* at_least(size_t wanted) {
    if (wanted <= bytes) return ptr;
    if (ptr) check(cudaFree(ptr), "cudaFree");
    ptr = nullptr;
    bytes = 0;
    check(cudaMalloc(&ptr, wanted), "cudaMalloc");
    check(cudaMemset(ptr, 0, wanted), "cudaMemset");
    bytes = wanted;
    return ptr;
  }
};
Scratch g_counters, g_scratch;

template <class T>
void embed(const int32_t* ids, const int32_t* types, const int32_t* cu_seqlens, int64_t tokens, int64_t sequences,
           int64_t hidden, const void* word, const void* position, const void* token_type, const float* gamma,
           const float* beta, float eps, void* out) {
  const gpu::EmbedLayerNormArgs<T> p{ids, types, cu_seqlens, tokens, sequences, hidden, as<T>(word), as<T>(position),
                                     as<T>(token_type), gamma, beta, eps, as<T>(out)};
  check(gpu::embed_layernorm(p, nullptr), "embed_layernorm");
}

template <class T>
void add_norm(const void* in, const void* residual, const float* bias, const float* gamma, const float* beta, float eps,
              int64_t rows, int64_t cols, void* out, const float* partials, int partial_count) {
  gpu::AddLayerNormArgs<T> p{as<T>(in), as<T>(residual), bias, gamma, beta, eps, rows, cols, as<T>(out)};
  p.partials = partials;
  p.partial_count = partial_count;
  check(gpu::add_layernorm(p, nullptr), "add_layernorm");
}

template <class T>
void rows_attention(const void* qkv, const int32_t* cu_seqlens, int64_t sequences, int64_t heads, int64_t head_dim,
                    float scale, const int32_t* query_rows, int64_t rows, void* out) {
  const gpu::AttentionRowsArgs<T> p{as<T>(qkv), cu_seqlens, sequences, heads, head_dim, scale, query_rows, rows, as<T>(out)};
  check(gpu::attention_rows(p, nullptr), "attention_rows");
}

template <class T>
void gather(const void* in, int64_t in_rows, const int32_t* index, int64_t rows_out, int64_t cols, void* out) {
  const gpu::GatherRowsArgs<T> p{as<T>(in), in_rows, index, rows_out, cols, as<T>(out)};
  check(gpu::gather_rows(p, nullptr), "gather_rows");
}

template <class T>
void mean(const void* in, const int32_t* cu_seqlens, int64_t sequences, int64_t cols, void* out) {
  const gpu::MeanRowsArgs<T> p{as<T>(in), cu_seqlens, sequences, cols, as<T>(out)};
  check(gpu::mean_rows(p, nullptr), "mean_rows");
}

template <class T>
void bias_act(void* out, const void* bias, int activation, int64_t rows, int64_t n) {
  const gpu::BiasActivationArgs<T> p{as<T>(out), as<T>(bias), static_cast<Activation>(activation), rows, n};
  check(gpu::bias_activation(p, nullptr), "bias_activation");
}

template <class T>
void topk(const void* logits, int64_t rows, int64_t cols, int k, int32_t* ids, float* scores) {
  auto* counters = static_cast<uint32_t*>(g_counters.at_least(static_cast<size_t>(rows) * sizeof(uint32_t)));
  void* scratch = g_scratch.at_least(gpu::softmax_topk_scratch_bytes(rows, cols, k));
  const gpu::SoftmaxTopKArgs<T> p{as<T>(logits), rows, cols, k, ids, scores, counters, scratch};
  check(gpu::softmax_topk(p, nullptr), "softmax_topk");
}

template <class Out>
gpu::HalfGemmArgs<Out> half_gemm_args(int64_t rows, int64_t n, int64_t k, const void* in, const void* weight,
                                      const void* bias, int activation, void* out) {
  gpu::HalfGemmArgs<Out> a;
  a.rows = rows;
  a.n = n;
  a.k = k;
  a.in = as<__half>(in);
  a.weight = as<__half>(weight);
  a.bias = as<Out>(bias);
  a.activation = static_cast<Activation>(activation);
  a.out = as<Out>(out);
  return a;
}

template <class Out>
void small(int64_t rows, int64_t n, int64_t k, const void* in, const void* weight, const void* bias, int activation,
           void* out, int tile_rows, int splits) {
  gpu::SmallGemmArgs<Out> a;
  static_cast<gpu::HalfGemmArgs<Out>&>(a) = half_gemm_args<Out>(rows, n, k, in, weight, bias, activation, out);
  const gpu::SmallGemmConfig config{tile_rows, splits};
  a.partials = static_cast<float*>(g_scratch.at_least(gpu::small_gemm_workspace_bytes(rows, n, config)));
  a.tile_counters = static_cast<int32_t*>(
      g_counters.at_least(static_cast<size_t>(gpu::small_gemm_tiles(rows, n, config)) * sizeof(int32_t)));
  check(gpu::small_gemm(a, config, nullptr), "small_gemm");
}

// One GEMM runner per plan precision, as an execution context of the
// backend holds one, on a stream of its own: tuning captures CUDA graphs,
// which the legacy default stream cannot. The caller synchronises the
// device around each call.
GemmRunner& runner(int precision) {
  static cublasLtHandle_t lt = [] {
    cublasLtHandle_t handle = nullptr;
    check(cublasLtCreate(&handle), "cublasLtCreate");
    return handle;
  }();
  static cudaStream_t stream = [] {
    cudaStream_t created = nullptr;
    check(cudaStreamCreateWithFlags(&created, cudaStreamNonBlocking), "cudaStreamCreate");
    return created;
  }();
  static std::map<int, std::unique_ptr<GemmRunner>> runners;
  auto& slot = runners[precision];
  if (!slot) slot = std::make_unique<GemmRunner>(lt, stream, static_cast<Precision>(precision));
  return *slot;
}

}  // namespace

extern "C" {

const char* fusedrt_last_error() { return g_last_error.c_str(); }

int fusedrt_embed_layernorm(int dtype, const int32_t* ids, const int32_t* types, const int32_t* cu_seqlens,
                            int64_t tokens, int64_t sequences, int64_t hidden, const void* word, const void* position,
                            const void* token_type, const float* gamma, const float* beta, float eps, void* out) {
  return guarded([&] {
    (dtype ? embed<__half> : embed<float>)(ids, types, cu_seqlens, tokens, sequences, hidden, word, position,
                                           token_type, gamma, beta, eps, out);
  });
}

int fusedrt_add_layernorm(int dtype, const void* in, const void* residual, const float* bias, const float* gamma,
                          const float* beta, float eps, int64_t rows, int64_t cols, void* out, const float* partials,
                          int partial_count) {
  return guarded([&] {
    (dtype ? add_norm<__half> : add_norm<float>)(in, residual, bias, gamma, beta, eps, rows, cols, out, partials,
                                                 partial_count);
  });
}

// The whole-sequence attention: fp16 is the backend's tensor-core kernel
// (max_seqlen: at least the longest sequence), fp32 the flash-style one.
int fusedrt_attention(int dtype, const void* qkv, const int32_t* cu_seqlens, int64_t sequences, int64_t max_seqlen,
                      int64_t heads, int64_t head_dim, float scale, void* out, int64_t tokens) {
  return guarded([&] {
    if (dtype) {
      const gpu::AttentionHalfParams p{as<__half>(qkv), cu_seqlens, sequences, max_seqlen, heads, head_dim, scale,
                                       as<__half>(out)};
      check(gpu::launch_attention_fp16(p, nullptr), "attention (fp16)");
    } else {
      const cpu::AttentionParams p{as<float>(qkv), cu_seqlens, sequences, heads, head_dim, scale, as<float>(out)};
      check(gpu::attention(p, tokens, nullptr), "attention (fp32)");
    }
  });
}

int fusedrt_attention_rows(int dtype, const void* qkv, const int32_t* cu_seqlens, int64_t sequences, int64_t heads,
                           int64_t head_dim, float scale, const int32_t* query_rows, int64_t rows, void* out) {
  return guarded([&] {
    (dtype ? rows_attention<__half> : rows_attention<float>)(qkv, cu_seqlens, sequences, heads, head_dim, scale,
                                                             query_rows, rows, out);
  });
}

int fusedrt_gather_rows(int dtype, const void* in, int64_t in_rows, const int32_t* index, int64_t rows_out,
                        int64_t cols, void* out) {
  return guarded([&] { (dtype ? gather<__half> : gather<float>)(in, in_rows, index, rows_out, cols, out); });
}

int fusedrt_mean_rows(int dtype, const void* in, const int32_t* cu_seqlens, int64_t sequences, int64_t cols, void* out) {
  return guarded([&] { (dtype ? mean<__half> : mean<float>)(in, cu_seqlens, sequences, cols, out); });
}

int fusedrt_bias_activation(int dtype, void* out, const void* bias, int activation, int64_t rows, int64_t n) {
  return guarded([&] { (dtype ? bias_act<__half> : bias_act<float>)(out, bias, activation, rows, n); });
}

int fusedrt_softmax_topk(int dtype, const void* logits, int64_t rows, int64_t cols, int k, int32_t* ids,
                         float* scores) {
  return guarded([&] { (dtype ? topk<__half> : topk<float>)(logits, rows, cols, k, ids, scores); });
}

// fp16 in and weight; out and bias fp32 when out_dtype is 0.
int fusedrt_gemv(int out_dtype, int64_t rows, int64_t n, int64_t k, const void* in, const void* weight,
                 const void* bias, int activation, void* out) {
  return guarded([&] {
    const cudaError_t status =
        out_dtype ? gpu::gemv(half_gemm_args<__half>(rows, n, k, in, weight, bias, activation, out), nullptr)
                  : gpu::gemv(half_gemm_args<float>(rows, n, k, in, weight, bias, activation, out), nullptr);
    check(status, "gemv");
  });
}

int fusedrt_small_gemm(int out_dtype, int64_t rows, int64_t n, int64_t k, const void* in, const void* weight,
                       const void* bias, int activation, void* out, int tile_rows, int splits) {
  return guarded([&] {
    (out_dtype ? small<__half> : small<float>)(rows, n, k, in, weight, bias, activation, out, tile_rows, splits);
  });
}

// The backend's GEMM (GemmRunner::run): precision 0 fp32, 1 fp16, 2 tf32
// (Precision's order); float_out: fp32 out and bias on an fp16 plan.
int fusedrt_gemm(int precision, int float_out, int64_t rows, int64_t n, int64_t k, const void* in, const void* weight,
                 const void* bias, int activation, void* out) {
  return guarded([&] {
    GemmArgs g;
    g.rows = rows;
    g.n = n;
    g.k = k;
    g.in = in;
    g.weight = weight;
    g.bias = bias;
    g.activation = static_cast<Activation>(activation);
    g.out = out;
    g.float_out = float_out != 0;
    runner(precision).run(g);
  });
}

}  // extern "C"
