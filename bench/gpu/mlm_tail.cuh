// Probe: the fill-mask tail in one launch, in the form a backend op would
// take (any BERT sizes, 1-4 rows, the top-k folded in, refusals, scratch
// rules): what follows the last layer's attention on a few selected ([MASK])
// rows of a BERT MLM plan, as one cooperative kernel instead of eight
// dependent ones. Not in the backend: at one row it was about as fast as the
// backend's kernels with the top-5, slower at 2-4 rows (bench/RESULTS.md,
// nineteenth session); bench/gpu/mlm_tail_test.cu checks and times it.
//   proj   = ctx . w_out^T                       (plan: gemm, no bias)
//   x      = LN1((proj + b_out) + x)             (add_layernorm, in place)
//   inter  = act_up(x . w_up^T + b_up)           (gemm)
//   proj   = inter . w_down^T                    (gemm, no bias)
//   x      = LN2((proj + b_down) + x)            (add_layernorm, in place)
//   t      = act_t(x . w_t^T + b_t)              (gemm: the head's transform)
//   t      = LN_t(t)                             (add_layernorm, no residual)
//   logits = t . w_dec^T + b_dec                 (gemm, fp32 out)
// and, optionally, the softmax top-k of every logits row. Every value is
// rounded to fp16 where the ops store it in fp16 buffers, so the results are
// the eight ops' up to the order of fp32 sums. fp16 activations and weights,
// fp32 LayerNorm parameters and decoder bias, as the CUDA backend stores an
// fp16 plan.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "activation.h"

namespace fusedrt::probe {

constexpr int64_t kMlmTailMaxRows = 4;
constexpr int kMlmTailMaxK = 8;

struct MlmTailArgs {
  int64_t rows = 0;  // 1 .. kMlmTailMaxRows
  int64_t hidden = 0;
  int64_t inter = 0;
  int64_t vocab = 0;
  const __half* ctx = nullptr;  // [rows, hidden]: the rows' attention output
  __half* x = nullptr;          // [rows, hidden]: the residual; gets LN2's output
  // Scratch the phases exchange through (the plan's buffers of the same ops).
  __half* proj = nullptr;   // [rows, hidden]
  __half* inter_out = nullptr;  // [rows, inter]
  __half* t = nullptr;      // [rows, hidden]: act_t's output (not LN_t's)
  const __half* w_out = nullptr;  // [hidden, hidden]
  const float* b_out = nullptr;   // [hidden] or nullptr
  const float *g1 = nullptr, *be1 = nullptr;
  float eps1 = 0;
  const __half* w_up = nullptr;  // [inter, hidden]
  const __half* b_up = nullptr;  // [inter] or nullptr
  Activation act_up = Activation::kNone;
  const __half* w_down = nullptr;  // [hidden, inter]
  const float* b_down = nullptr;   // [hidden] or nullptr
  const float *g2 = nullptr, *be2 = nullptr;
  float eps2 = 0;
  const __half* w_t = nullptr;  // [hidden, hidden]
  const __half* b_t = nullptr;  // [hidden] or nullptr
  Activation act_t = Activation::kNone;
  const float *g_t = nullptr, *be_t = nullptr;
  float eps_t = 0;
  const __half* w_dec = nullptr;  // [vocab, hidden]
  const float* b_dec = nullptr;   // [vocab] or nullptr
  float* logits = nullptr;        // [rows, vocab]
};

// The softmax top-k of the logits rows (semantics of topk.cuh's
// softmax_topk), or k = 0 for none.
struct MlmTailTopK {
  int k = 0;                   // 0, or 1 .. kMlmTailMaxK (may exceed vocab: surplus slots are id -1, score 0)
  int32_t* top_ids = nullptr;  // [rows, k]
  float* top_scores = nullptr;  // [rows, k]
};

// Device memory of one stream's calls: mlm_tail_scratch_bytes() bytes,
// 16-byte aligned, zero before the first call; every call leaves its
// counters zero. Calls on one stream may share it, concurrent ones not.
size_t mlm_tail_scratch_bytes();

// Whether the device and shapes allow the launch: fp16 rows of 16-byte
// vectors (hidden and inter multiples of 8), 16-byte aligned pointers, every
// block's share of the four layer weights and the parameters in its shared
// memory with one block on every SM, at most kMlmTailMaxRows rows.
bool mlm_tail_supports(const MlmTailArgs& args, const MlmTailTopK& top_k);

// Queues the tail on stream (cooperative launch); cudaErrorInvalidValue
// for a call that mlm_tail_supports refuses, else the launch error, if any.
cudaError_t mlm_tail(const MlmTailArgs& args, const MlmTailTopK& top_k, void* scratch, cudaStream_t stream);

}  // namespace fusedrt::probe
