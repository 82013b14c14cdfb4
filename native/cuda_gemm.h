// The GEMMs of the CUDA backend, through cuBLASLt (docs/cuda.md, "GEMM"). All
// cuBLAS use of the project is in cuda_gemm.cpp, so it can be reviewed in one
// place. Only for files built with FUSEDRT_WITH_CUDA.
#pragma once

#include <cublasLt.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>

#include "activation.h"
#include "plan_reader.h"

namespace fusedrt {

// out[rows, n] = act(in[rows, k] . weight[n, k]^T + bias), row-major; all
// operands have the activations' dtype (fp16 on fp16 and fp8 plans, else
// fp32), except with float_out or weight_scale.
struct GemmArgs {
  int64_t rows = 0;
  int64_t n = 0;
  int64_t k = 0;
  const void* in = nullptr;
  const void* weight = nullptr;
  const void* bias = nullptr;  // [n] or nullptr
  Activation activation = Activation::kNone;
  void* out = nullptr;
  // On an fp16 plan: out and bias are fp32 (logits; the accumulators are
  // written without rounding to fp16).
  bool float_out = false;
  // An fp8 GEMM (on fp8 plans): in and weight are E4M3, the weight's values
  // times *weight_scale (device memory), accumulation in fp32 (cuBLASLt's
  // fast FP8 accumulation); bias fp16; out fp16, or E4M3 with e4m3_out.
  const float* weight_scale = nullptr;
  bool e4m3_out = false;
  // Filled in by GemmRunner::run_into_partials, which says what they mean;
  // callers leave them as they are.
  float* partials = nullptr;
  int splits = 0;
};

// Where run_with_topk writes the softmax top-k of a GEMM's rows (the
// semantics of softmax_topk, cuda/topk.cuh), and the device memory it needs
// (the rules of gpu::GemvTopK, cuda/gemv.cuh; scratch of
// gpu::gemv_topk_scratch_bytes(rows, k) bytes).
struct GemmTopK {
  int k = 0;
  int32_t* top_ids = nullptr;   // [rows, k]
  float* top_scores = nullptr;  // [rows, k]
  uint32_t* counter = nullptr;
  void* scratch = nullptr;
};

// Runs the GEMMs of one stream. Setup (descriptors, layouts) is made once
// per shape and cached; calls on one GemmRunner must not overlap (one
// execution context runs one batch at a time). The algorithm is chosen once
// per shape and device for the whole process (docs/cuda.md, "GEMM tactics"):
// the first call of a shape that no runner has seen times the candidates on
// the stream and synchronises it, unless the stream is capturing; while
// capturing, calls never synchronise.
class GemmRunner {
 public:
  // lt must outlive the runner. Allocates the cuBLASLt workspace on the
  // current device (E_OOM when it cannot).
  GemmRunner(cublasLtHandle_t lt, cudaStream_t stream, Precision precision);
  ~GemmRunner();
  GemmRunner(const GemmRunner&) = delete;
  GemmRunner& operator=(const GemmRunner&) = delete;

  // Queues the GEMM (and, where cuBLASLt cannot fuse it, the epilogue
  // kernel) on the stream.
  void run(const GemmArgs& args);

  // For a GEMM whose rows' softmax top-k comes next (the MLM decoder): where
  // the shape's algorithm is the project's gemv and that takes the top-k too
  // (gpu::gemv_topk: few rows, k <= 8), queues both in one launch and returns
  // true; otherwise queues nothing and returns false, and the caller runs
  // the GEMM, then the top-k.
  bool run_with_topk(const GemmArgs& args, const GemmTopK& topk);

  // For a GEMM whose only reader is an add_layernorm that can add up partial
  // products (docs/cuda.md, "Split-K partials into the LayerNorm"): either
  // queues it as `splits` products over equal slices of K, each written in
  // fp32 to partials + j * rows * n (no bias, no activation; args.out is not
  // written), and returns splits; or, when that is not faster for the shape
  // (or not possible), runs it as run() does and returns 0. The choice is
  // made once per shape and device, by timing, like the algorithms.
  // partials holds partial_capacity floats.
  int run_into_partials(const GemmArgs& args, float* partials, int64_t partial_capacity);
  // The floats of partials that run_into_partials can use for GEMMs of up
  // to max_rows rows and n columns on a plan of this precision (0: it never
  // splits them).
  static int64_t partials_capacity(Precision precision, int64_t max_rows, int64_t n);

 private:
  struct State;
  std::unique_ptr<State> state_;
};

}  // namespace fusedrt
