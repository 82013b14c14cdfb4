// CPU reference implementations of the fused ops (docs/plan-format.md, "Ops").
// Every op works on packed tokens: row-major float32 activations, no padding,
// sequence boundaries in cu_seqlens. Weights are float32 here (fp16 plans are
// widened once at load). Each op lives in native/cpu/<op>.cpp; the CUDA
// version of the same op will live in cuda/<op>.cu with the same semantics.
//
// Preconditions (shapes, index ranges) are validated by the runtime before an
// op is called; ops do not re-check them.
#pragma once

#include <cstdint>

#include "../activation.h"
#include "thread_pool.h"

namespace fusedrt::cpu {

using fusedrt::Activation;

struct EmbedLayerNormParams {
  const int32_t* input_ids;       // [tokens]
  const int32_t* token_type_ids;  // [tokens], or nullptr for all zeros
  const int32_t* cu_seqlens;      // [sequences + 1]
  int64_t tokens;
  int64_t sequences;
  int64_t hidden;
  const float* word;        // [vocab, hidden]
  const float* position;    // [max_positions, hidden]
  const float* token_type;  // [type_vocab, hidden]
  const float* gamma;       // [hidden]
  const float* beta;        // [hidden]
  float eps;
  float* out;  // [tokens, hidden]
};
void embed_layernorm(const EmbedLayerNormParams& p, ThreadPool& pool);

struct GemmParams {
  const float* in;      // [rows, k]
  const float* weight;  // [n, k] (PyTorch Linear layout)
  const float* bias;    // [n] or nullptr
  Activation activation;
  int64_t rows;
  int64_t n;
  int64_t k;
  float* out;  // [rows, n]; never aliases in
};
void gemm(const GemmParams& p, ThreadPool& pool);
// "openblas" or "builtin": which implementation gemm() uses in this build.
const char* gemm_implementation();

// A gemm weight rearranged once at load for gemm_packed(): the n output
// columns in panels of kGemmPanelWidth; panel p holds, for k = 0..K-1, the
// weights of its columns side by side ([K][width], width = min(32, n - 32p)).
// Exactly n·k floats, so the packed copy can take the original's memory.
constexpr int64_t kGemmPanelWidth = 32;
struct PackedWeight {
  const float* data;  // n * k floats in the layout above
  int64_t n;
  int64_t k;
};
// Writes weight [n, k] (PyTorch Linear layout) packed into `packed` (n * k
// floats, must not overlap weight) and returns the view of it.
PackedWeight pack_gemm_weight(const float* weight, int64_t n, int64_t k, float* packed);

// The micro-kernels of gemm_packed, slowest first; picked from what the CPU
// supports at run time (kBest), or named to test one.
enum class GemmKernel { kBaseline, kAvx2, kAvx512, kBest };
// The fastest kernel this CPU (and build) can run.
GemmKernel gemm_best_kernel();
const char* gemm_kernel_name(GemmKernel kernel);
// gemm() with the weight already packed: p.weight is ignored, p.n and p.k
// must equal weight.n and weight.k. Same result as gemm() up to float
// summation order (sequential in k, fused multiply-adds on AVX2/AVX-512).
void gemm_packed(const GemmParams& p, const PackedWeight& weight, ThreadPool& pool,
                 GemmKernel kernel = GemmKernel::kBest);

struct AttentionParams {
  const float* qkv;  // [tokens, 3 * heads * head_dim]: Q | K | V
  const int32_t* cu_seqlens;
  int64_t sequences;
  int64_t heads;
  int64_t head_dim;
  float scale;
  float* out;  // [tokens, heads * head_dim]
};
void attention(const AttentionParams& p, ThreadPool& pool);

// attention() for some query rows only: row r of attention.out is the
// attention output of token query_rows[r] (against the keys of its own
// sequence), or zeros when that index is outside [0, cu_seqlens[sequences])
// (padding entries).
struct AttentionRowsParams {
  AttentionParams attention;  // its out is [rows, heads * head_dim] here
  const int32_t* query_rows;  // [rows]
  int64_t rows;
};
void attention_rows(const AttentionRowsParams& p, ThreadPool& pool);

struct AddLayerNormParams {
  const float* in;        // [rows, cols]
  const float* residual;  // [rows, cols] or nullptr
  const float* bias;      // [cols] or nullptr
  const float* gamma;     // [cols]
  const float* beta;      // [cols]
  float eps;
  int64_t rows;
  int64_t cols;
  float* out;  // [rows, cols]; may alias in or residual
};
void add_layernorm(const AddLayerNormParams& p, ThreadPool& pool);

struct GatherRowsParams {
  const float* in;           // [tokens, cols]
  const int32_t* row_index;  // [rows_out]: which input row each output row copies
  int64_t rows_out;
  int64_t cols;
  float* out;  // [rows_out, cols]
};
void gather_rows(const GatherRowsParams& p, ThreadPool& pool);

// out[b] = the mean of in's rows cu_seqlens[b] .. cu_seqlens[b + 1] - 1,
// summed in float in row order; a row of zeros for an empty sequence.
struct MeanRowsParams {
  const float* in;            // [tokens, cols]
  const int32_t* cu_seqlens;  // [sequences + 1]
  int64_t sequences;
  int64_t cols;
  float* out;  // [sequences, cols]
};
void mean_rows(const MeanRowsParams& p, ThreadPool& pool);

// IEEE half -> float, for widening fp16 plans at load.
void half_to_float(const uint16_t* in, float* out, int64_t count);

}  // namespace fusedrt::cpu
