// cuBLASLt GEMMs of the CUDA backend (cuda_gemm.h).
#include "cuda_gemm.h"

#include <cuda_fp16.h>
#include <cuda_fp8.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "../cuda/gemm_epilogue.cuh"
#include "../cuda/gemv.cuh"
#include "../cuda/small_gemm.cuh"
#include "backend.h"
#include "cuda_check.h"

namespace fusedrt {

namespace {

// cuBLASLt workspace per runner: enough for the split-K and stream-K
// algorithms the heuristic picks for BERT-sized fp32, tf32 and fp8 GEMMs,
// and for fp16 ones without a workspace-free algorithm (try_gemm_setup);
// also the small-row kernel's split-K partials.
constexpr size_t kGemmWorkspaceBytes = 32u << 20;
// Cached GEMM setups per runner: a handful per launch shape; the cache is
// emptied when it reaches this size (safe: a runner's calls never overlap,
// so no queued call still uses a setup's descriptor on the host).
constexpr size_t kMaxGemmSetups = 512;

// Tactic selection (docs/cuda.md, "GEMM tactics").
// Candidates asked of the heuristic per GemmKey.
constexpr int kMaxCandidates = 16;
// A timed sample spans at least this much GPU time, so the events' 0.5 us
// resolution and the jitter of single launches stay near 1% of it.
constexpr double kTargetSpanUs = 50;
// Launches per sample at most: a GEMM under 1 us is bound by launches anyway.
constexpr int kMaxReps = 64;
// Samples per candidate; its time is their median.
constexpr int kSamples = 3;
// After its first sample, a candidate this much slower than the best so far
// is not sampled again.
constexpr double kClearlySlower = 1.25;
// Samples of one algorithm are expected to differ by about 1% from run to
// run (to be confirmed in the device log): a candidate replaces the
// heuristic's first only when it is at least 2% faster.
constexpr double kMinGain = 0.98;
// Wall time per GemmKey; candidates are tried in order (the heuristic's
// first, the project's own kernels', the heuristic's others) until it is
// spent. Capturing and timing one candidate takes 1-3 ms (H100), or up to
// ~10 ms where its kernel's module loads first, whatever the GEMM's size,
// while what a better choice saves every run grows with it: a key gets
// kTuningBudgetPerLaunch times its heuristic first's launch time, at least
// kTuningBudgetUs and at most kMaxTuningBudgetUs. (With 20 ms for every
// key, BERT-base's 4096 x 3072 x 768 + GELU had 2 of its candidates timed.)
constexpr double kTuningBudgetUs = 20000;
constexpr double kTuningBudgetPerLaunch = 2000;
constexpr double kMaxTuningBudgetUs = 100000;
// The small-row kernel (cuda/small_gemm.cu) joins the candidates of fp16
// GEMMs up to this many rows; beyond, cuBLASLt's large tiles fill the GPU.
constexpr int64_t kSmallGemmMaxRows = 256;
// Split-K tile counters per runner: a split candidate needs one per output
// tile (BERT-base's largest, the MLM decoder at 64 rows, has 477).
constexpr int64_t kTileCounters = 4096;
// After them, a float 1 for fp8 GEMMs' input and output scales, which
// cuBLASLt reads from device memory.
constexpr size_t kOneOffset = kGemmWorkspaceBytes + kTileCounters * sizeof(int32_t);
constexpr size_t kRunnerDeviceBytes = kOneOffset + 16;

// Split-K into partials (run_into_partials; docs/cuda.md, "Split-K partials
// into the LayerNorm"). Candidates, in the order they are timed:
constexpr int kPartialSplits[] = {2, 3, 4, 6, 8, 12, 16};
// Slices narrower than this are not worth a batch member.
constexpr int64_t kMinPartialSlice = 64;
// Above this many rows a GEMM fills the GPU without splitting, and the
// partials' fp32 traffic would only cost.
constexpr int64_t kPartialsMaxRows = 1024;
// Partials per execution context at most: 16 splits of 128 x 768 products,
// 4 of 512 x 768.
constexpr int64_t kPartialsMaxBytes = 16 * 128 * 768 * sizeof(float);
// What add_layernorm pays for reading partials instead of one fp16 product
// (cuda/tests/layernorm_test.cu, H100, graphed): per partial, whatever the
// rows up to 128, about 0.2 us (at 1, 8 and 128 rows of 768: 0.4 / 0.7 /
// 1.5 / 3.2 us more from 2 / 4 / 8 / 16 partials), since a thread has four
// partials' loads in flight at a time and each round waits on L2; for many
// rows, the extra bytes at 2 TB/s (an upper bound there: 4 partials of 1024
// rows cost 2.4 us more, not 5.5). Counting only the bytes, the tuner split
// a 1-row FFN2 into 16 partials, 3.2 us faster as a GEMM and as much slower
// in the LayerNorm.
constexpr double kPartialReadBytesPerUs = 2e6;
constexpr double kPartialReadUs = 0.2;

bool env_equals(const char* name, const char* value) {
  const char* set = std::getenv(name);
  return set != nullptr && std::string(set) == value;
}
// Read once: every runner of the process tunes, or none does.
bool tuning_enabled() {
  static const bool enabled = !env_equals("FUSEDRT_GEMM_TUNING", "0");
  return enabled;
}
bool tuning_logged() {
  static const bool logged = env_equals("FUSEDRT_GEMM_TUNING_LOG", "1");
  return logged;
}

// FUSEDRT_GEMM_PARTIALS (docs/cuda.md, "Split-K partials into the
// LayerNorm"): unset, the split is timed per shape; 0 turns
// run_into_partials into run; N > 0 splits every GEMM it can into N (for
// tests). Read once.
int forced_partial_splits() {
  static const int forced = [] {
    const char* set = std::getenv("FUSEDRT_GEMM_PARTIALS");
    return set == nullptr ? -1 : std::max(0, std::atoi(set));
  }();
  return forced;
}
bool partials_enabled() { return forced_partial_splits() != 0; }

std::string format_us(double us) {
  char text[32];
  std::snprintf(text, sizeof(text), "%.2f us", us);
  return text;
}

// FUSEDRT_GEMM_TACTICS (docs/cuda.md, "GEMM tactics"): which kinds of tactic
// are candidates.
enum class TacticKinds { kAll, kCublasLt, kFusedRT };
TacticKinds tactic_kinds() {
  static const TacticKinds kinds = env_equals("FUSEDRT_GEMM_TACTICS", "cublaslt") ? TacticKinds::kCublasLt
                                   : env_equals("FUSEDRT_GEMM_TACTICS", "fusedrt") ? TacticKinds::kFusedRT
                                                                                   : TacticKinds::kAll;
  return kinds;
}

template <class T>
const T* as(const void* p) { return static_cast<const T*>(p); }
template <class T>
T* as(void* p) { return static_cast<T*>(p); }

// The element types of a GEMM's operands: float, __half, __nv_fp8_e4m3.
template <class T>
constexpr cudaDataType_t cuda_type() {
  if constexpr (std::is_same_v<T, float>) return CUDA_R_32F;
  if constexpr (std::is_same_v<T, __half>) return CUDA_R_16F;
  return CUDA_R_8F_E4M3;
}
template <class T>
constexpr bool kIsE4M3 = std::is_same_v<T, __nv_fp8_e4m3>;

// out[rows, n] = act(in[rows, k] . weight[n, k]^T + bias), all row-major. In
// cuBLASLt's column-major terms the same bytes are C (n x rows, ld n) =
// op(A) . B with A = weight seen as k x n (ld k) and transposed, B = in seen as
// k x rows (ld k); a bias of length n is then cuBLASLt's per-row bias of C.
//
// Types by plan precision: fp32: fp32 data, CUBLAS_COMPUTE_32F (true fp32,
// for the 1e-4 tolerance); tf32: fp32 data, CUBLAS_COMPUTE_32F_FAST_TF32;
// fp16: fp16 A, B, C, D and bias, CUBLAS_COMPUTE_32F with fp32 scalars; a
// GEMM into logits (float_out) has fp32 C, D and bias. fp8 plans run their
// other GEMMs as fp16 ones, and those with an E4M3 weight with E4M3 A and B,
// cuBLASLt's A scale the weight's scale and B's (and an E4M3 D's) 1, fast
// accumulation, fp16 bias and C, D fp16 or E4M3 (cuBLASLt asks the C of an
// E4M3 D to be fp16; it is never read, beta being 0).
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
// Setup (descriptor, layouts, the candidate tactics) is cached per GemmKey; a
// cached call only sets the bias pointer and launches. Which tactic runs is
// chosen once per GemmKey and device for the whole process (Tuner,
// choose_tactic).

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
uint32_t alignment_of_offset(uint64_t bytes) {
  const uint64_t lowest_bit = bytes & (~bytes + 1);
  return lowest_bit == 0 || lowest_bit > 256 ? 256u : static_cast<uint32_t>(lowest_bit);
}
uint32_t alignment_of(const void* ptr) { return alignment_of_offset(reinterpret_cast<uintptr_t>(ptr)); }

struct GemmKey {
  int64_t rows, n, k;
  cudaDataType_t data_type;  // of in and weight
  cudaDataType_t out_type;   // of out and bias
  cublasComputeType_t compute;
  cublasLtEpilogue_t epilogue;
  uint32_t align_weight, align_in, align_out, align_bias;
  // > 0: a product into fp32 partials over this many slices of K
  // (run_into_partials); the alignments are then those of every slice.
  int splits;

  bool operator<(const GemmKey& o) const {
    return std::tie(rows, n, k, data_type, out_type, compute, epilogue, align_weight, align_in, align_out, align_bias,
                    splits) < std::tie(o.rows, o.n, o.k, o.data_type, o.out_type, o.compute, o.epilogue, o.align_weight,
                                       o.align_in, o.align_out, o.align_bias, o.splits);
  }
};

// One way to run a GemmKey: a cuBLASLt algorithm, the project's small-row
// kernel (cuda/small_gemm.cu) with one of its configurations, or its
// few-row matrix-vector kernel (cuda/gemv.cu); both fuse bias and every
// activation themselves.
struct Tactic {
  bool small_gemm = false;
  cublasLtMatmulAlgo_t algo{};
  gpu::SmallGemmConfig config;
  bool gemv = false;
  // The workspace a cuBLASLt algorithm is launched with: the one it was
  // chosen under (0 or all of the runner's). The workspace passed at launch
  // selects which variant of the algorithm runs (try_gemm_setup says why
  // that matters).
  size_t workspace_bytes = 0;
};

// Everything one GemmKey needs, owned: cuBLASLt's descriptors and the
// candidate tactics.
struct GemmSetup {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t weight = nullptr;
  cublasLtMatrixLayout_t in = nullptr;
  cublasLtMatrixLayout_t out = nullptr;
  // The candidates, the heuristic's best estimate first (only that one when
  // tuning is off), and the one that runs: the first until tuning picks
  // another.
  std::vector<Tactic> candidates;
  Tactic tactic;
  // The heuristic found nothing with the fused epilogue, so its algorithms
  // run a plain product and the epilogue kernel adds bias and activation.
  bool epilogue_in_kernel = false;
  // A key with splits: the product goes to the call's partials, not out.
  bool into_partials = false;
  // An E4M3 out: C's layout (fp16), which differs from out's.
  cublasLtMatrixLayout_t unread_c = nullptr;

  GemmSetup() = default;
  GemmSetup(const GemmSetup&) = delete;
  GemmSetup& operator=(const GemmSetup&) = delete;
  ~GemmSetup() {
    if (unread_c) cublasLtMatrixLayoutDestroy(unread_c);
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
std::unique_ptr<GemmSetup> try_gemm_setup(cublasLtHandle_t lt, const GemmKey& key, cublasLtEpilogue_t epilogue,
                                          int max_candidates) {
  auto setup = std::make_unique<GemmSetup>();
  check(cublasLtMatmulDescCreate(&setup->desc, key.compute, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const cublasOperation_t transpose = CUBLAS_OP_T;
  const cublasOperation_t keep = CUBLAS_OP_N;
  check(cublasLtMatmulDescSetAttribute(setup->desc, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof(transpose)), "TRANSA");
  check(cublasLtMatmulDescSetAttribute(setup->desc, CUBLASLT_MATMUL_DESC_TRANSB, &keep, sizeof(keep)), "TRANSB");
  check(cublasLtMatmulDescSetAttribute(setup->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof(epilogue)),
        "EPILOGUE");
  if (key.data_type == CUDA_R_8F_E4M3) {
    // 1.2-1.5x the precise accumulation's speed at BERT's 4096-row GEMMs
    // (bench/RESULTS.md), with no difference beside E4M3's own rounding.
    const int8_t fast = 1;
    check(cublasLtMatmulDescSetAttribute(setup->desc, CUBLASLT_MATMUL_DESC_FAST_ACCUM, &fast, sizeof(fast)),
          "FAST_ACCUM");
    // Left unset, it would follow D, which may be E4M3.
    const cudaDataType_t bias_type = CUDA_R_16F;
    check(cublasLtMatmulDescSetAttribute(setup->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, &bias_type,
                                         sizeof(bias_type)),
          "BIAS_DATA_TYPE");
  }
  const auto n = static_cast<uint64_t>(key.n);
  const auto rows = static_cast<uint64_t>(key.rows);
  if (key.splits == 0) {
    const auto k = static_cast<uint64_t>(key.k);
    check(cublasLtMatrixLayoutCreate(&setup->weight, key.data_type, k, n, key.k), "layout of weight");
    check(cublasLtMatrixLayoutCreate(&setup->in, key.data_type, k, rows, key.k), "layout of in");
    check(cublasLtMatrixLayoutCreate(&setup->out, key.out_type, n, rows, key.n), "layout of out");
    if (key.out_type == CUDA_R_8F_E4M3) {
      check(cublasLtMatrixLayoutCreate(&setup->unread_c, CUDA_R_16F, n, rows, key.n), "layout of C");
    }
  } else {
    // A strided batch, one member per slice of K: weight and in advance by
    // the slice's width along their rows, the fp32 partials by a whole
    // rows x n product.
    const int64_t slice = key.k / key.splits;
    const int64_t product = key.rows * key.n;
    check(cublasLtMatrixLayoutCreate(&setup->weight, key.data_type, static_cast<uint64_t>(slice), n, key.k),
          "layout of weight");
    check(cublasLtMatrixLayoutCreate(&setup->in, key.data_type, static_cast<uint64_t>(slice), rows, key.k),
          "layout of in");
    check(cublasLtMatrixLayoutCreate(&setup->out, CUDA_R_32F, n, rows, key.n), "layout of partials");
    const std::pair<cublasLtMatrixLayout_t, int64_t> batched[] = {
        {setup->weight, slice}, {setup->in, slice}, {setup->out, product}};
    for (const auto& [layout, offset] : batched) {
      const int32_t count = key.splits;
      check(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)),
            "BATCH_COUNT");
      check(cublasLtMatrixLayoutSetAttribute(layout, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offset,
                                             sizeof(offset)),
            "STRIDED_BATCH_OFFSET");
    }
    setup->into_partials = true;
  }

  MatmulPreference preference;
  check(cublasLtMatmulPreferenceCreate(&preference.preference), "cublasLtMatmulPreferenceCreate");
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
  // The heuristic's own list first (its first is the default). For small
  // GEMMs it often offers one or two algorithms, split-K ones with a
  // separate reduction kernel among them; asking again without split-K and
  // with in-place reduction widens what tuning can choose from.
  //
  // For fp16 GEMMs, algorithms that need no workspace come first, and those
  // that do are asked for only when there are none: given a workspace,
  // cuBLASLt 13's Hopper kernels for BERT's larger GEMMs (the same tiles)
  // zero a counter in it with a memset before each launch. Back to back, as
  // tuning times them, that hardly shows; in a run, after another kernel,
  // the memset node leaves the GPU idle 3.3-4.2 us, and the kernels
  // themselves are up to 2 us slower than their workspace-free twins
  // (bench/RESULTS.md, sixteenth session, "cuBLASLt's workspace"). fp32,
  // tf32 and fp8 GEMMs keep the workspace: without it whole fp32 and tf32
  // runs were 7-90% slower (bench/RESULTS.md, seventeenth session).
  std::vector<cublasLtMatmulHeuristicResult_t> results(static_cast<size_t>(max_candidates));
  const auto add_candidates = [&](uint32_t reduction_schemes, size_t workspace_bytes) {
    check(cublasLtMatmulPreferenceSetAttribute(preference.preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                               &workspace_bytes, sizeof(workspace_bytes)),
          "MAX_WORKSPACE_BYTES");
    check(cublasLtMatmulPreferenceSetAttribute(preference.preference, CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                               &reduction_schemes, sizeof(reduction_schemes)),
          "REDUCTION_SCHEME_MASK");
    int found = 0;
    check(cublasLtMatmulAlgoGetHeuristic(lt, setup->desc, setup->weight, setup->in,
                                         setup->unread_c != nullptr ? setup->unread_c : setup->out, setup->out,
                                         preference.preference, max_candidates, results.data(), &found),
          "cublasLtMatmulAlgoGetHeuristic");
    for (int i = 0; i < found && static_cast<int>(setup->candidates.size()) < max_candidates; ++i) {
      const cublasLtMatmulHeuristicResult_t& result = results[static_cast<size_t>(i)];
      const bool known = std::any_of(setup->candidates.begin(), setup->candidates.end(), [&](const Tactic& t) {
        return std::memcmp(&t.algo, &result.algo, sizeof(t.algo)) == 0;
      });
      if (!known && result.state == CUBLAS_STATUS_SUCCESS && result.workspaceSize <= workspace_bytes) {
        setup->candidates.push_back(Tactic{false, result.algo, {}, false, workspace_bytes});
      }
    }
  };
  const std::vector<size_t> workspaces =
      key.data_type == CUDA_R_16F ? std::vector<size_t>{0, kGemmWorkspaceBytes} : std::vector<size_t>{kGemmWorkspaceBytes};
  for (const size_t workspace_bytes : workspaces) {
    add_candidates(CUBLASLT_REDUCTION_SCHEME_MASK, workspace_bytes);
    if (max_candidates > 1) {
      add_candidates(CUBLASLT_REDUCTION_SCHEME_NONE, workspace_bytes);
      add_candidates(CUBLASLT_REDUCTION_SCHEME_INPLACE, workspace_bytes);
    }
    if (!setup->candidates.empty()) break;
  }
  if (setup->candidates.empty()) return nullptr;
  return setup;
}

// A call's operands, as the project's own kernels take them: fp16 in and
// weight, out and bias of type Out.
template <class Out>
gpu::HalfGemmArgs<Out> half_operands(const GemmArgs& c) {
  gpu::HalfGemmArgs<Out> a;
  a.rows = c.rows;
  a.n = c.n;
  a.k = c.k;
  a.in = as<__half>(c.in);
  a.weight = as<__half>(c.weight);
  a.bias = as<Out>(c.bias);
  a.activation = c.activation;
  a.out = as<Out>(c.out);
  return a;
}

// The small-row kernel's operands for a call; partials in the runner's
// workspace (a runner's GEMMs never overlap, whichever tactic runs them).
template <class Out>
gpu::SmallGemmArgs<Out> small_gemm_args(const GemmArgs& c, void* workspace, int32_t* tile_counters) {
  gpu::SmallGemmArgs<Out> a;
  static_cast<gpu::HalfGemmArgs<Out>&>(a) = half_operands<Out>(c);
  a.partials = as<float>(workspace);
  a.tile_counters = tile_counters;
  return a;
}

// The small-row kernel's configurations worth timing for a key: for each
// tile height that fits the rows, no split, and the splits that give every
// SM one or two blocks (a tile's blocks share its K range, so more splits
// mean more blocks, smaller ones, and more partials to sum). Alignments are
// part of the key, so whether the kernel takes a call's operands follows
// from its key.
std::vector<Tactic> small_gemm_tactics(const GemmKey& key, int sm_count) {
  std::vector<Tactic> tactics;
  if (key.data_type != CUDA_R_16F || key.rows > kSmallGemmMaxRows || key.splits > 0) return tactics;
  const uintptr_t store_alignment = gpu::small_gemm_store_alignment(key.out_type == CUDA_R_32F ? sizeof(float) : 2);
  const bool aligned = key.align_in >= gpu::kSmallGemmLoadAlignment &&
                       key.align_weight >= gpu::kSmallGemmLoadAlignment && key.align_out >= store_alignment &&
                       (key.align_bias == 0 || key.align_bias >= store_alignment);
  if (!aligned) return tactics;
  for (const int tile_rows : {16, 32, 64}) {
    if (tile_rows < 64 && key.rows > 2 * tile_rows) continue;
    const int64_t tiles = gpu::small_gemm_tiles(key.rows, key.n, {tile_rows, 1});
    for (const int64_t wanted : {int64_t{1}, (sm_count + tiles - 1) / tiles, (2 * sm_count + tiles - 1) / tiles}) {
      const int splits = static_cast<int>(std::min<int64_t>(wanted, gpu::small_gemm_max_splits(key.k)));
      const gpu::SmallGemmConfig config{tile_rows, splits};
      const size_t partial_bytes = gpu::small_gemm_workspace_bytes(key.rows, key.n, config);
      const bool fits = splits == 1 || (tiles <= kTileCounters && partial_bytes <= kGemmWorkspaceBytes);
      const bool known = std::any_of(tactics.begin(), tactics.end(), [&](const Tactic& t) {
        return t.config.tile_rows == config.tile_rows && t.config.splits == config.splits;
      });
      if (fits && !known && gpu::small_gemm_supports_shape(key.rows, key.n, key.k, config)) {
        tactics.push_back(Tactic{true, {}, config});
      }
    }
  }
  return tactics;
}

// The few-row kernel's tactic for a key, if it takes the key's shape and
// alignments.
std::vector<Tactic> gemv_tactics(const GemmKey& key) {
  gpu::GemvArgs<__half> shape;  // only the alignments and sizes matter
  shape.rows = key.rows;
  shape.n = key.n;
  shape.k = key.k;
  // Stand-ins with the key's alignments: gemv_supports reads only those.
  shape.in = reinterpret_cast<const __half*>(uintptr_t{key.align_in});
  shape.weight = reinterpret_cast<const __half*>(uintptr_t{key.align_weight});
  shape.out = reinterpret_cast<__half*>(uintptr_t{key.align_out});
  if (key.data_type != CUDA_R_16F || key.splits > 0 || !gpu::gemv_supports(shape)) return {};
  Tactic tactic;
  tactic.gemv = true;
  return {tactic};
}

std::unique_ptr<GemmSetup> make_gemm_setup(cublasLtHandle_t lt, const GemmKey& key, int sm_count) {
  const int max_candidates = tuning_enabled() ? kMaxCandidates : 1;
  std::unique_ptr<GemmSetup> setup = try_gemm_setup(lt, key, key.epilogue, max_candidates);
  if (!setup && key.epilogue != CUBLASLT_EPILOGUE_DEFAULT) {
    setup = try_gemm_setup(lt, key, CUBLASLT_EPILOGUE_DEFAULT, max_candidates);
    if (setup) setup->epilogue_in_kernel = true;
  }
  if (!setup) {
    fail(ErrorCode::kBackend, "cuBLASLt has no algorithm for a " + std::to_string(key.rows) + "x" +
                                  std::to_string(key.k) + " by " + std::to_string(key.k) + "x" + std::to_string(key.n) +
                                  " GEMM of this precision");
  }
  const TacticKinds kinds = tactic_kinds();
  std::vector<Tactic> own;
  if (kinds != TacticKinds::kCublasLt) {
    own = gemv_tactics(key);
    const std::vector<Tactic> small = small_gemm_tactics(key, sm_count);
    own.insert(own.end(), small.begin(), small.end());
  }
  if (!own.empty() && kinds == TacticKinds::kFusedRT) setup->candidates.clear();
  if (!tuning_enabled() && !setup->candidates.empty()) own.clear();
  // After the heuristic's first: its other algorithms are mostly slower
  // variants of it, and the budget may run out before the end of the list.
  const auto after_first = setup->candidates.empty() ? setup->candidates.end() : setup->candidates.begin() + 1;
  setup->candidates.insert(after_first, own.begin(), own.end());
  setup->tactic = setup->candidates.front();
  return setup;
}

// What a launch needs besides the setup and the call: the runner's.
struct LaunchTarget {
  cublasLtHandle_t lt;
  cudaStream_t stream;
  void* workspace;
  int32_t* tile_counters;
};

// Scalars are read on the host when the call is made, also while capturing.
cublasStatus_t launch_cublaslt(const LaunchTarget& to, const GemmSetup& setup, const Tactic& tactic,
                               const GemmArgs& c) {
  const cublasLtMatmulAlgo_t& algo = tactic.algo;
  void* const workspace = tactic.workspace_bytes > 0 ? to.workspace : nullptr;
  const float one = 1.f;
  const float zero = 0.f;
  void* out = setup.into_partials ? static_cast<void*>(c.partials) : c.out;
  if (setup.unread_c != nullptr) {
    // Any address but out's: the same one with another layout would make
    // cuBLASLt take the call for an invalid in-place one.
    return cublasLtMatmul(to.lt, setup.desc, &one, c.weight, setup.weight, c.in, setup.in, &zero, c.in,
                          setup.unread_c, out, setup.out, &algo, workspace, tactic.workspace_bytes, to.stream);
  }
  return cublasLtMatmul(to.lt, setup.desc, &one, c.weight, setup.weight, c.in, setup.in, &zero, out, setup.out, out,
                        setup.out, &algo, workspace, tactic.workspace_bytes, to.stream);
}

// Queues one call with a tactic: the product, bias and activation (with
// cuBLASLt, the epilogue kernel follows where cuBLASLt cannot fuse them).
// T: the type of in and weight; Out: of out and bias. Throws FusedError.
template <class T, class Out>
void queue_gemm(const LaunchTarget& to, const GemmSetup& setup, const Tactic& tactic, const GemmArgs& c) {
  if constexpr (std::is_same_v<T, __half>) {
    if (tactic.small_gemm) {
      check(gpu::small_gemm(small_gemm_args<Out>(c, to.workspace, to.tile_counters), tactic.config, to.stream),
            "the small_gemm kernel");
      return;
    }
    if (tactic.gemv) {
      check(gpu::gemv(half_operands<Out>(c), to.stream), "the gemv kernel");
      return;
    }
  }
  if constexpr (kIsE4M3<T>) {
    // The epilogue kernel takes no E4M3; fp8 plans' GEMMs have bias and
    // tanh GELU at most, which cuBLASLt fuses.
    if (setup.epilogue_in_kernel || gemm_epilogue(c.activation, c.bias != nullptr, true).separate_activation) {
      fail(ErrorCode::kBackend, "cuBLASLt cannot fuse this fp8 GEMM's bias and activation");
    }
    check(launch_cublaslt(to, setup, tactic, c), "cublasLtMatmul (fp8)");
  } else {
    check(launch_cublaslt(to, setup, tactic, c), "cublasLtMatmul");
    if (setup.into_partials) return;  // no bias or activation (run_into_partials)
    gpu::BiasActivationArgs<Out> epilogue{as<Out>(c.out), as<Out>(c.bias), c.activation, c.rows, c.n};
    if (setup.epilogue_in_kernel) {
      check(gpu::bias_activation(epilogue, to.stream), "the gemm epilogue kernel");
    } else if (gemm_epilogue(c.activation, c.bias != nullptr, sizeof(T) == 2).separate_activation) {
      epilogue.bias = nullptr;  // cuBLASLt added it
      check(gpu::bias_activation(epilogue, to.stream), "the gemm epilogue kernel");
    }
  }
}
using QueueGemm = void (*)(const LaunchTarget&, const GemmSetup&, const Tactic&, const GemmArgs&);

// The algorithm chosen per (device ordinal, GemmKey) by any runner of the
// process: engines and execution contexts on one GPU tune a shape once, and
// all then run it with the same algorithm, so their results for a shape stay
// bit-identical (graphs on or off). The requested key is enough: the setup a
// key gets (fallback epilogue, candidates) follows from the key alone. An
// algorithm is plain data, valid with any cuBLASLt handle on its device.
std::mutex g_tuned_mutex;
std::map<std::pair<int, GemmKey>, Tactic> g_tuned;

bool find_tuned(int device, const GemmKey& key, Tactic* tactic) {
  const std::lock_guard<std::mutex> lock(g_tuned_mutex);
  const auto found = g_tuned.find({device, key});
  if (found == g_tuned.end()) return false;
  *tactic = found->second;
  return true;
}

// Two runners may tune one key at once: the first to publish wins, and both
// run its tactic.
Tactic publish_tuned(int device, const GemmKey& key, const Tactic& tactic) {
  const std::lock_guard<std::mutex> lock(g_tuned_mutex);
  return g_tuned.try_emplace({device, key}, tactic).first->second;
}

// run_into_partials' choice per (device ordinal, key of the plain GEMM), for
// the whole process like the algorithms: splits, or 0 for the plain GEMM.
std::mutex g_splits_mutex;
std::map<std::pair<int, GemmKey>, int> g_splits;

bool find_splits(int device, const GemmKey& key, int* splits) {
  const std::lock_guard<std::mutex> lock(g_splits_mutex);
  const auto found = g_splits.find({device, key});
  if (found == g_splits.end()) return false;
  *splits = found->second;
  return true;
}

int publish_splits(int device, const GemmKey& key, int splits) {
  const std::lock_guard<std::mutex> lock(g_splits_mutex);
  return g_splits.try_emplace({device, key}, splits).first->second;
}

struct GraphExecDestroy {
  void operator()(cudaGraphExec_t exec) const { cudaGraphExecDestroy(exec); }
};
using GraphExecPtr = std::unique_ptr<std::remove_pointer_t<cudaGraphExec_t>, GraphExecDestroy>;

struct TimingEvent {
  cudaEvent_t event = nullptr;
  TimingEvent() { check(cudaEventCreate(&event), "cudaEventCreate (GEMM tuning)"); }
  ~TimingEvent() {
    if (event) cudaEventDestroy(event);
  }
  TimingEvent(const TimingEvent&) = delete;
  TimingEvent& operator=(const TimingEvent&) = delete;
};

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  return values[values.size() / 2];
}

struct TuneResult {
  Tactic tactic;                // the one to run
  size_t chosen = 0;            // its index in the candidates
  double first_us = 0;          // per launch, the heuristic's first; 0 when not timed
  double best_us = 0;           // per launch, the fastest candidate timed
  double own_us = 0;            // per launch, the fastest first sample of the project's kernels; 0 when none was timed
  int tried = 0;                // candidates timed, the first included
  std::string not_tuned;        // why the first was kept untimed, if it was
  double wall_ms = 0;           // the tuning's own cost, on the host's clock
};

// Times a setup's candidates on the call's own operands and stream (out is
// overwritten with beta = 0, so running it again is harmless) and picks the
// fastest. Each sample is a CUDA graph of `reps` launches queued behind an
// untimed run of the same graph, so the GPU runs them back to back: launched
// one by one, a small GEMM takes about as long as the host needs to launch it,
// and every candidate would time the same. Graphs are also how the GEMMs run
// after the first run of a launch shape.
class Tuner {
 public:
  Tuner(const LaunchTarget& target, QueueGemm queue, const GemmSetup& setup, const GemmArgs& args)
      : target_(target), queue_(queue), setup_(setup), args_(args) {}

  // Per launch, the GPU time of one tactic, timed as tuning times the
  // heuristic's first; 0 when it fails on these operands or cannot be
  // captured.
  double time_us(const Tactic& tactic) {
    check(cudaStreamSynchronize(target_.stream), "cudaStreamSynchronize (GEMM tuning)");
    if (!queued(tactic)) return 0;
    int reps = 1;
    double span_us = 0;
    const GraphExecPtr graph = capture_spanning(tactic, reps, span_us);
    if (!graph) return 0;
    return median(measure(graph.get(), kSamples, true)) / reps;
  }

  TuneResult run() {
    TuneResult result;
    const std::vector<Tactic>& candidates = setup_.candidates;
    result.tactic = candidates.front();
    if (candidates.size() == 1) {
      result.not_tuned = "the heuristic has one candidate";
      return result;
    }
    // The budget is for the tuning itself, not for the run's work queued
    // before it.
    check(cudaStreamSynchronize(target_.stream), "cudaStreamSynchronize (GEMM tuning)");
    start_ = std::chrono::steady_clock::now();
    tune(result);
    result.wall_ms = elapsed_us() / 1e3;
    return result;
  }

 private:
  double elapsed_us() const {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start_).count();
  }

  void tune(TuneResult& result) {
    const std::vector<Tactic>& candidates = setup_.candidates;
    // The heuristic's first sets the launches per sample and the time to beat.
    if (!queued(result.tactic)) {
      result.not_tuned = "the heuristic's first fails on these operands";
      return;
    }
    int reps = 1;
    double span_us = 0;
    GraphExecPtr first = capture_spanning(result.tactic, reps, span_us);
    if (!first) {
      result.not_tuned = "the heuristic's first cannot be captured";
      return;
    }
    const double budget_us =
        std::clamp(kTuningBudgetPerLaunch * span_us / reps, kTuningBudgetUs, kMaxTuningBudgetUs);
    // Timing the first (a lead and kSamples spans) and two rivals (a lead and
    // a span each, at the least) must fit the budget, or tuning cannot pay.
    if ((1 + kSamples + 2 * 2) * span_us > budget_us) {
      result.first_us = span_us / reps;
      result.best_us = result.first_us;
      result.not_tuned = "too large to tune within the budget";
      return;
    }
    result.first_us = median(measure(first.get(), kSamples, true)) / reps;
    first.reset();
    result.best_us = result.first_us;
    result.tried = 1;

    for (size_t i = 1; i < candidates.size() && elapsed_us() < budget_us; ++i) {
      if (!queued(candidates[i])) continue;
      const GraphExecPtr graph = capture(candidates[i], reps);
      if (!graph) continue;
      ++result.tried;
      std::vector<double> spans = measure(graph.get(), 1, true);
      const bool own = candidates[i].small_gemm || candidates[i].gemv;
      if (own && (result.own_us == 0 || spans.front() / reps < result.own_us)) {
        result.own_us = spans.front() / reps;
      }
      if (spans.front() / reps > kClearlySlower * result.best_us) continue;
      const std::vector<double> more = measure(graph.get(), kSamples - 1, true);
      spans.insert(spans.end(), more.begin(), more.end());
      const double us = median(spans) / reps;
      if (us < result.best_us) {
        result.best_us = us;
        result.chosen = i;
      }
    }
    if (result.best_us >= kMinGain * result.first_us) result.chosen = 0;
    result.tactic = candidates[result.chosen];
  }

  // The tactic captured as a graph of `reps` launches, reps grown from the
  // value passed in until one run of the graph spans kTargetSpanUs (or
  // kMaxReps); span_us is that run's time. nullptr when it cannot be captured.
  GraphExecPtr capture_spanning(const Tactic& tactic, int& reps, double& span_us) {
    for (;;) {
      GraphExecPtr graph = capture(tactic, reps);
      if (!graph) return nullptr;
      // A single launch goes without a lead: that spares a large GEMM a run,
      // and a small one is launched again with more reps anyway.
      span_us = measure(graph.get(), 1, reps > 1).front();
      if (span_us >= kTargetSpanUs || reps == kMaxReps) return graph;
      const double scaled = std::ceil(1.2 * reps * kTargetSpanUs / std::max(span_us, 0.5));
      reps = std::min(kMaxReps, std::max(reps + 1, static_cast<int>(scaled)));
    }
  }

  // Queues the tactic once: eagerly, that loads the kernel's module before it
  // is captured and tells whether the tactic runs on these operands at all.
  // False, with no error left behind, when it fails.
  bool queued(const Tactic& tactic) const {
    try {
      queue_(target_, setup_, tactic, args_);
      return true;
    } catch (const FusedError&) {
      cudaGetLastError();
      return false;
    }
  }

  // reps launches as an executable graph; nullptr (and no error state) when
  // the tactic cannot be captured.
  GraphExecPtr capture(const Tactic& tactic, int reps) const {
    if (cudaStreamBeginCapture(target_.stream, cudaStreamCaptureModeThreadLocal) != cudaSuccess) {
      cudaGetLastError();
      return nullptr;
    }
    bool launched = true;
    for (int i = 0; i < reps && launched; ++i) {
      launched = queued(tactic);
    }
    cudaGraph_t graph = nullptr;
    const bool ended = cudaStreamEndCapture(target_.stream, &graph) == cudaSuccess;
    cudaGraphExec_t exec = nullptr;
    const bool instantiated = launched && ended && cudaGraphInstantiate(&exec, graph, 0) == cudaSuccess;
    if (graph != nullptr) cudaGraphDestroy(graph);
    if (!instantiated) {
      cudaGetLastError();
      return nullptr;
    }
    return GraphExecPtr(exec);
  }

  // The GPU time in us of each of `samples` runs of exec. With lead, an
  // untimed run goes first, so the timed runs are queued before the GPU
  // reaches them and the host's launch latency is not in their time.
  std::vector<double> measure(cudaGraphExec_t exec, int samples, bool lead) {
    const cudaStream_t stream = target_.stream;
    if (lead) check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch (GEMM tuning)");
    check(cudaEventRecord(events_[0].event, stream), "cudaEventRecord (GEMM tuning)");
    for (int s = 1; s <= samples; ++s) {
      check(cudaGraphLaunch(exec, stream), "cudaGraphLaunch (GEMM tuning)");
      check(cudaEventRecord(events_[s].event, stream), "cudaEventRecord (GEMM tuning)");
    }
    check(cudaEventSynchronize(events_[samples].event), "cudaEventSynchronize (GEMM tuning)");
    std::vector<double> spans_us;
    for (int s = 1; s <= samples; ++s) {
      float ms = 0;
      check(cudaEventElapsedTime(&ms, events_[s - 1].event, events_[s].event), "cudaEventElapsedTime (GEMM tuning)");
      spans_us.push_back(1e3 * ms);
    }
    return spans_us;
  }

  LaunchTarget target_;
  QueueGemm queue_;
  const GemmSetup& setup_;
  const GemmArgs& args_;
  std::array<TimingEvent, kSamples + 1> events_;
  std::chrono::steady_clock::time_point start_;
};

const char* type_name(const GemmKey& key) {
  if (key.data_type == CUDA_R_8F_E4M3) return key.out_type == CUDA_R_8F_E4M3 ? "fp8 into fp8" : "fp8";
  if (key.data_type == CUDA_R_16F) return key.out_type == CUDA_R_32F ? "fp16 into fp32" : "fp16";
  return key.compute == CUBLAS_COMPUTE_32F_FAST_TF32 ? "tf32" : "fp32";
}

const char* epilogue_name(cublasLtEpilogue_t epilogue) {
  switch (epilogue) {
    case CUBLASLT_EPILOGUE_BIAS: return "bias";
    case CUBLASLT_EPILOGUE_RELU: return "relu";
    case CUBLASLT_EPILOGUE_RELU_BIAS: return "bias+relu";
    case CUBLASLT_EPILOGUE_GELU: return "gelu";
    case CUBLASLT_EPILOGUE_GELU_BIAS: return "bias+gelu";
    default: return "none";
  }
}

// One attribute of an algorithm's configuration, for the log; "?" where
// cuBLASLt does not report it.
template <class T>
std::string config_value(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attribute) {
  T value{};
  size_t written = 0;
  if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attribute, &value, sizeof(value), &written) !=
      CUBLAS_STATUS_SUCCESS) {
    return "?";
  }
  return std::to_string(value);
}

// FUSEDRT_GEMM_TUNING_LOG=1: one line per tuned key (docs/cuda.md, "GEMM
// tactics" says how to read it).
void log_tuning(const GemmKey& key, const TuneResult& r) {
  char head[160];
  std::snprintf(head, sizeof(head), "fusedrt gemm tuning: %lldx%lldx%lld %s %s: ", static_cast<long long>(key.rows),
                static_cast<long long>(key.n), static_cast<long long>(key.k), type_name(key),
                epilogue_name(key.epilogue));
  char times[200];
  if (r.not_tuned.empty()) {
    std::snprintf(times, sizeof(times), "first %.1f us, best %.1f us, own %.1f us, %d tried, chose #%zu",
                  r.first_us, r.best_us, r.own_us, r.tried, r.chosen);
  } else if (r.first_us > 0) {
    std::snprintf(times, sizeof(times), "first %.1f us, not tuned: %s", r.first_us, r.not_tuned.c_str());
  } else {
    std::snprintf(times, sizeof(times), "not tuned: %s", r.not_tuned.c_str());
  }
  std::string line = std::string(head) + times;
  const Tactic& t = r.tactic;
  if (t.small_gemm) {
    line += " (small_gemm tile_rows " + std::to_string(t.config.tile_rows) + " splits " +
            std::to_string(t.config.splits) + ")";
  } else if (t.gemv) {
    line += " (gemv)";
  } else {
    line += " (cublaslt algo " + config_value<int32_t>(t.algo, CUBLASLT_ALGO_CONFIG_ID) + " tile " +
            config_value<uint32_t>(t.algo, CUBLASLT_ALGO_CONFIG_TILE_ID) + " stages " +
            config_value<uint32_t>(t.algo, CUBLASLT_ALGO_CONFIG_STAGES_ID) + " splitk " +
            config_value<int32_t>(t.algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM) + " reduction " +
            config_value<uint32_t>(t.algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME) + " workspace " +
            std::to_string(t.workspace_bytes) + ")";
  }
  std::fprintf(stderr, "%s, %.1f ms\n", line.c_str(), r.wall_ms);
}

}  // namespace

struct GemmRunner::State {
  Precision precision;
  int device = 0;  // the workspace's, where the runner was made
  int sm_count = 0;
  LaunchTarget target{};  // its workspace and tile counters are owned here
  std::map<GemmKey, std::unique_ptr<GemmSetup>> setups;

  State() = default;
  State(const State&) = delete;
  State& operator=(const State&) = delete;
  // The owner has synchronised the stream; nothing queued reads the workspace.
  ~State() {
    if (target.workspace == nullptr) return;
    cudaFree(target.workspace);
    g_native_memory_bytes -= static_cast<int64_t>(kRunnerDeviceBytes);
  }

  // For a new setup: the algorithm chosen for the key on this device, if any
  // runner has chosen one; else, with tuning on and the stream not capturing
  // (synchronising then would be illegal), it is tuned now; else the
  // heuristic's first runs. The backend runs every launch shape eagerly
  // before capturing it, so captures find their keys chosen.
  template <class T, class Out>
  void choose_tactic(GemmSetup& setup, const GemmKey& key, const GemmArgs& c) {
    if (!tuning_enabled() || find_tuned(device, key, &setup.tactic)) return;
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(target.stream, &capture), "cudaStreamIsCapturing");
    if (capture != cudaStreamCaptureStatusNone) return;
    const TuneResult tuned = Tuner(target, &queue_gemm<T, Out>, setup, c).run();
    setup.tactic = publish_tuned(device, key, tuned.tactic);
    if (tuning_logged()) log_tuning(key, tuned);
  }

  template <class T, class Out>
  GemmKey key_of(const GemmArgs& c) const {
    const GemmEpilogue plan = gemm_epilogue(c.activation, c.bias != nullptr, !std::is_same_v<T, float>);
    GemmKey key{};
    key.rows = c.rows;
    key.n = c.n;
    key.k = c.k;
    key.data_type = cuda_type<T>();
    key.out_type = cuda_type<Out>();
    key.compute = precision == Precision::kTf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    key.epilogue = plan.epilogue;
    key.align_weight = alignment_of(c.weight);
    key.align_in = alignment_of(c.in);
    key.align_out = alignment_of(c.out);
    key.align_bias = c.bias != nullptr ? alignment_of(c.bias) : 0;
    key.splits = c.splits;
    if (c.splits > 0) {
      // Every slice and every partial must keep the alignment claimed.
      const uint32_t slice = alignment_of_offset(static_cast<uint64_t>(c.k / c.splits) * sizeof(T));
      key.align_weight = std::min(key.align_weight, slice);
      key.align_in = std::min(key.align_in, slice);
      key.align_out = std::min(alignment_of(c.partials),
                               alignment_of_offset(static_cast<uint64_t>(c.rows * c.n) * sizeof(float)));
    }
    return key;
  }

  // The setup of a key, made on its first use, with the call's bias pointer
  // set; a fresh setup's tactic is chosen on the call's operands.
  template <class T, class Out>
  GemmSetup& setup_of(const GemmKey& key, const GemmArgs& c) {
    auto found = setups.find(key);
    const bool fresh = found == setups.end();
    if (fresh) {
      if (setups.size() >= kMaxGemmSetups) setups.clear();
      found = setups.emplace(key, make_gemm_setup(target.lt, key, sm_count)).first;
    }
    GemmSetup& setup = *found->second;
    // The per-call attributes: the descriptor is shared by every GEMM of
    // this shape, and calls on one runner never overlap.
    if (c.bias != nullptr && !setup.epilogue_in_kernel) {
      const void* bias = c.bias;
      check(cublasLtMatmulDescSetAttribute(setup.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
            "BIAS_POINTER");
    }
    if constexpr (kIsE4M3<T>) {
      const float* scales[] = {c.weight_scale, one(), one()};
      const cublasLtMatmulDescAttributes_t attributes[] = {CUBLASLT_MATMUL_DESC_A_SCALE_POINTER,
                                                           CUBLASLT_MATMUL_DESC_B_SCALE_POINTER,
                                                           CUBLASLT_MATMUL_DESC_D_SCALE_POINTER};
      for (int i = 0; i < (kIsE4M3<Out> ? 3 : 2); ++i) {
        check(cublasLtMatmulDescSetAttribute(setup.desc, attributes[i], &scales[i], sizeof(scales[i])), "SCALE_POINTER");
      }
    }
    if (fresh) choose_tactic<T, Out>(setup, key, c);  // tuning times the real call, bias included
    return setup;
  }

  // run() with the output type the call asks for.
  template <class T>
  void run_as_asked(const GemmArgs& c) {
    if (c.float_out) {
      run<T, float>(c);
    } else {
      run<T, T>(c);
    }
  }

  const float* one() const {
    return reinterpret_cast<const float*>(static_cast<const char*>(target.workspace) + kOneOffset);
  }

  template <class Out>
  void run_fp8(const GemmArgs& c) {
    GemmSetup& setup = setup_of<__nv_fp8_e4m3, Out>(key_of<__nv_fp8_e4m3, Out>(c), c);
    queue_gemm<__nv_fp8_e4m3, Out>(target, setup, setup.tactic, c);
  }

  template <class Out>
  bool run_with_topk(const GemmArgs& c, const GemmTopK& t) {
    if (c.k == 0) return false;
    GemmSetup& setup = setup_of<__half, Out>(key_of<__half, Out>(c), c);
    const gpu::GemvTopK top{t.k, t.top_ids, t.top_scores, t.counter, t.scratch};
    if (!setup.tactic.gemv || !gpu::gemv_topk_supports(half_operands<Out>(c), top)) return false;
    check(gpu::gemv_topk(half_operands<Out>(c), top, target.stream), "the gemv kernel with top-k");
    return true;
  }

  template <class T, class Out>
  void run(const GemmArgs& c) {
    if (c.k == 0) {  // act(bias), as on the CPU; cuBLASLt does not take k = 0
      const gpu::BiasActivationArgs<Out> epilogue{as<Out>(c.out), as<Out>(c.bias), c.activation, c.rows, c.n};
      check(cudaMemsetAsync(c.out, 0, static_cast<size_t>(c.rows * c.n) * sizeof(Out), target.stream), "gemm (k = 0)");
      check(gpu::bias_activation(epilogue, target.stream), "the gemm epilogue kernel");
      return;
    }
    GemmSetup& setup = setup_of<T, Out>(key_of<T, Out>(c), c);
    queue_gemm<T, Out>(target, setup, setup.tactic, c);
  }

  // Whether run_into_partials may split c into `splits`: equal slices of K
  // that keep 16-byte loads (not narrower than kMinPartialSlice unless the
  // split is forced), and partials that fit.
  static bool can_split(const GemmArgs& c, int splits, int64_t capacity) {
    const int64_t slice = c.k / splits;
    const int64_t min_slice = forced_partial_splits() > 0 ? 8 : kMinPartialSlice;
    return c.k % splits == 0 && slice >= min_slice && slice % 8 == 0 && splits * c.rows * c.n <= capacity;
  }

  template <class T>
  int run_into_partials(const GemmArgs& plain, float* partials, int64_t capacity) {
    const bool eligible = capacity > 0 && partials_enabled() && sizeof(T) == 2 && !plain.float_out &&
                          plain.bias == nullptr && plain.activation == Activation::kNone && plain.k > 0 &&
                          plain.rows <= kPartialsMaxRows;
    if (!eligible) {
      run_as_asked<T>(plain);
      return 0;
    }
    const GemmKey plain_key = key_of<T, T>(plain);
    int splits = forced_partial_splits() > 0 ? forced_partial_splits() : 0;
    if (splits == 0 && !find_splits(device, plain_key, &splits)) {
      cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
      check(cudaStreamIsCapturing(target.stream, &capture), "cudaStreamIsCapturing");
      // Undecided while capturing (the backend decides in its eager run
      // first) or with tuning off: the plain GEMM.
      if (capture == cudaStreamCaptureStatusNone && tuning_enabled()) {
        splits = publish_splits(device, plain_key, choose_splits<T>(plain, plain_key, partials, capacity));
      }
    }
    if (splits == 0 || !can_split(plain, splits, capacity)) {
      run_as_asked<T>(plain);
      return 0;
    }
    GemmArgs into = plain;
    into.partials = partials;
    into.splits = splits;
    GemmSetup& setup = setup_of<T, T>(key_of<T, T>(into), into);
    queue_gemm<T, T>(target, setup, setup.tactic, into);
    return splits;
  }

  // Times the plain GEMM and its splits (each with its own best algorithm);
  // a split wins when its time, plus what add_layernorm then reads more,
  // is under the plain GEMM's by kMinGain. 0: none does.
  template <class T>
  int choose_splits(const GemmArgs& plain, const GemmKey& plain_key, float* partials, int64_t capacity) {
    GemmSetup& plain_setup = setup_of<T, T>(plain_key, plain);
    const double plain_us = Tuner(target, &queue_gemm<T, T>, plain_setup, plain).time_us(plain_setup.tactic);
    std::string log = "plain " + format_us(plain_us);
    int best = 0;
    double best_us = plain_us * kMinGain;
    for (const int splits : kPartialSplits) {
      if (plain_us == 0 || !can_split(plain, splits, capacity)) continue;
      GemmArgs into = plain;
      into.partials = partials;
      into.splits = splits;
      GemmSetup* setup = nullptr;
      try {
        setup = &setup_of<T, T>(key_of<T, T>(into), into);
      } catch (const FusedError&) {
        continue;  // no cuBLASLt algorithm for this split
      }
      const double gemm_us = Tuner(target, &queue_gemm<T, T>, *setup, into).time_us(setup->tactic);
      // add_layernorm reads splits fp32 products instead of one fp16 one.
      const double extra_bytes = static_cast<double>(plain.rows * plain.n) * (splits * sizeof(float) - sizeof(T));
      const double us = gemm_us + std::max(extra_bytes / kPartialReadBytesPerUs, splits * kPartialReadUs);
      log += ", " + std::to_string(splits) + " splits " + format_us(gemm_us) + " + " +
             format_us(us - gemm_us) + " read";
      if (gemm_us > 0 && us < best_us) {
        best = splits;
        best_us = us;
      }
    }
    if (tuning_logged()) {
      std::fprintf(stderr, "fusedrt gemm partials: %lldx%lldx%lld: %s: chose %d\n", static_cast<long long>(plain.rows),
                   static_cast<long long>(plain.n), static_cast<long long>(plain.k), log.c_str(), best);
    }
    return best;
  }
};

GemmRunner::GemmRunner(cublasLtHandle_t lt, cudaStream_t stream, Precision precision)
    : state_(std::make_unique<State>()) {
  State& s = *state_;
  s.precision = precision;
  s.target.lt = lt;
  s.target.stream = stream;
  check(cudaGetDevice(&s.device), "cudaGetDevice");
  check(cudaDeviceGetAttribute(&s.sm_count, cudaDevAttrMultiProcessorCount, s.device), "cudaDeviceGetAttribute");
  // The workspace, then the small-row kernel's tile counters, zeroed in
  // stream order.
  check(cudaMalloc(&s.target.workspace, kRunnerDeviceBytes), "cudaMalloc of the GEMM workspace");
  g_native_memory_bytes += static_cast<int64_t>(kRunnerDeviceBytes);
  s.target.tile_counters = reinterpret_cast<int32_t*>(static_cast<char*>(s.target.workspace) + kGemmWorkspaceBytes);
  check(cudaMemsetAsync(s.target.tile_counters, 0, kTileCounters * sizeof(int32_t), stream), "the tile counters");
  static const float kOne = 1.f;  // static: the copy may still read it after this returns
  check(cudaMemcpyAsync(static_cast<char*>(s.target.workspace) + kOneOffset, &kOne, sizeof(kOne),
                        cudaMemcpyHostToDevice, stream),
        "the GEMM scale 1");
}

GemmRunner::~GemmRunner() = default;

namespace {
bool half_activations(Precision precision) { return precision == Precision::kFp16 || precision == Precision::kFp8; }
}  // namespace

void GemmRunner::run(const GemmArgs& args) {
  if (args.weight_scale != nullptr) {
    if (args.e4m3_out) {
      state_->run_fp8<__nv_fp8_e4m3>(args);
    } else {
      state_->run_fp8<__half>(args);
    }
  } else if (half_activations(state_->precision)) {
    state_->run_as_asked<__half>(args);
  } else {
    state_->run_as_asked<float>(args);
  }
}

bool GemmRunner::run_with_topk(const GemmArgs& args, const GemmTopK& topk) {
  // The gemv is an fp16 tactic: fp32 and tf32 plans, and fp8 GEMMs, never have it.
  if (args.weight_scale != nullptr || !half_activations(state_->precision)) return false;
  return args.float_out ? state_->run_with_topk<float>(args, topk) : state_->run_with_topk<__half>(args, topk);
}

int64_t GemmRunner::partials_capacity(Precision precision, int64_t max_rows, int64_t n) {
  if (!half_activations(precision) || !partials_enabled()) return 0;
  const int64_t most_splits = *std::max_element(std::begin(kPartialSplits), std::end(kPartialSplits));
  return std::min<int64_t>(kPartialsMaxBytes / sizeof(float), most_splits * std::min(max_rows, kPartialsMaxRows) * n);
}

int GemmRunner::run_into_partials(const GemmArgs& args, float* partials, int64_t partial_capacity) {
  if (half_activations(state_->precision)) return state_->run_into_partials<__half>(args, partials, partial_capacity);
  return state_->run_into_partials<float>(args, partials, partial_capacity);
}

}  // namespace fusedrt
