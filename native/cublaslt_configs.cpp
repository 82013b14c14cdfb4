// Configurations of cuBLASLt's algorithms beyond its heuristic
// (cublaslt_configs.h).
#include "cublaslt_configs.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <map>
#include <tuple>

namespace fusedrt {

namespace {

// Algorithm ids asked of cuBLASLt per type combination (it has a few dozen).
constexpr int kMaxAlgoIds = 256;
// Stage variants kept per (algorithm, tile, split-K, reduction): the library
// lists up to a dozen pipeline depths per tile, which mostly time alike, and
// keeping them all would crowd other tiles out of the tuning budget.
constexpr int kStageVariants = 2;
// Split-K counts tried where an algorithm supports split-K. A split leaves
// at least kMinSplitDepth of K to each part.
constexpr std::array<int32_t, 7> kSplitCounts = {1, 2, 3, 4, 6, 8, 12};
constexpr int64_t kMinSplitDepth = 64;
// Configurations checked per problem at most, so that an unusual library
// with thousands of combinations cannot stall the first run of a shape.
constexpr size_t kMaxChecked = 20000;

template <class T>
bool read_cap(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attribute, T* value) {
  size_t written = 0;
  return cublasLtMatmulAlgoCapGetAttribute(&algo, attribute, value, sizeof(T), &written) == CUBLAS_STATUS_SUCCESS;
}

// An array capability (tile or stage ids); {0} (undefined: the algorithm's
// default) when the algorithm lists none.
std::vector<uint32_t> read_cap_ids(const cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoCapAttributes_t attribute) {
  size_t bytes = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&algo, attribute, nullptr, 0, &bytes) != CUBLAS_STATUS_SUCCESS ||
      bytes < sizeof(uint32_t)) {
    return {0};
  }
  std::vector<uint32_t> ids(bytes / sizeof(uint32_t));
  size_t written = 0;
  if (cublasLtMatmulAlgoCapGetAttribute(&algo, attribute, ids.data(), ids.size() * sizeof(uint32_t), &written) !=
      CUBLAS_STATUS_SUCCESS) {
    return {0};
  }
  return ids;
}

template <class T>
bool set_config(cublasLtMatmulAlgo_t& algo, cublasLtMatmulAlgoConfigAttributes_t attribute, T value) {
  return cublasLtMatmulAlgoConfigSetAttribute(&algo, attribute, &value, sizeof(value)) == CUBLAS_STATUS_SUCCESS;
}

// Whether the algorithm takes pointers aligned only as the problem's are.
bool takes_alignment(const cublasLtMatmulAlgo_t& algo, const CublasLtProblem& p) {
  const std::pair<cublasLtMatmulAlgoCapAttributes_t, uint32_t> needs[] = {
      {CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_A_BYTES, p.align_a},
      {CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_B_BYTES, p.align_b},
      {CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_C_BYTES, p.align_c},
      {CUBLASLT_ALGO_CAP_MIN_ALIGNMENT_D_BYTES, p.align_c},
  };
  for (const auto& [attribute, alignment] : needs) {
    uint32_t required = 0;
    if (read_cap(algo, attribute, &required) && required > alignment) return false;
  }
  return true;
}

// Lower is better. waves / ceil(waves) is the share of the launched SM slots
// that hold work: under one wave SMs sit idle, and a last wave that is mostly
// empty costs a whole wave. Each extra split-K part costs a little more
// traffic for the partial sums.
double estimated_cost(float waves, int32_t splits) {
  if (!(waves > 0.f)) return std::numeric_limits<double>::infinity();
  const double busy = waves / std::ceil(static_cast<double>(waves));
  return (1.0 + 0.05 * (splits - 1)) / busy;
}

struct Ranked {
  cublasLtMatmulAlgo_t algo;
  double cost;
  int32_t splits;
};

}  // namespace

std::vector<cublasLtMatmulAlgo_t> enumerate_cublaslt_configs(cublasLtHandle_t lt, const CublasLtProblem& p,
                                                             size_t max_count) {
  const cudaDataType_t t = p.data_type;
  std::array<int, kMaxAlgoIds> ids{};
  int id_count = 0;
  if (cublasLtMatmulAlgoGetIds(lt, p.compute, CUDA_R_32F, t, t, t, t, kMaxAlgoIds, ids.data(), &id_count) !=
      CUBLAS_STATUS_SUCCESS) {
    return {};
  }
  uint64_t k = 0;
  size_t written = 0;
  // A is the weight seen as k x n, transposed: its rows are K.
  if (cublasLtMatrixLayoutGetAttribute(p.a, CUBLASLT_MATRIX_LAYOUT_ROWS, &k, sizeof(k), &written) !=
      CUBLAS_STATUS_SUCCESS) {
    return {};
  }

  std::vector<Ranked> ranked;
  size_t checked = 0;
  for (int i = 0; i < id_count && checked < kMaxChecked; ++i) {
    cublasLtMatmulAlgo_t base{};
    if (cublasLtMatmulAlgoInit(lt, p.compute, CUDA_R_32F, t, t, t, t, ids[static_cast<size_t>(i)], &base) !=
            CUBLAS_STATUS_SUCCESS ||
        !takes_alignment(base, p)) {
      continue;
    }
    int32_t splits_supported = 0;
    uint32_t reductions = 0;
    read_cap(base, CUBLASLT_ALGO_CAP_SPLITK_SUPPORT, &splits_supported);
    read_cap(base, CUBLASLT_ALGO_CAP_REDUCTION_SCHEME_MASK, &reductions);
    // Stage variants kept so far per (tile, splits, reduction) of this algorithm.
    std::map<std::tuple<uint32_t, int32_t, uint32_t>, int> variants;
    for (const uint32_t tile : read_cap_ids(base, CUBLASLT_ALGO_CAP_TILE_IDS)) {
      for (const uint32_t stages : read_cap_ids(base, CUBLASLT_ALGO_CAP_STAGES_IDS)) {
        for (const int32_t splits : kSplitCounts) {
          if (splits > 1 && (splits_supported == 0 || static_cast<int64_t>(k) < splits * kMinSplitDepth)) break;
          for (const uint32_t reduction :
               {CUBLASLT_REDUCTION_SCHEME_INPLACE, CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE,
                CUBLASLT_REDUCTION_SCHEME_OUTPUT_TYPE}) {
            const uint32_t scheme = splits == 1 ? static_cast<uint32_t>(CUBLASLT_REDUCTION_SCHEME_NONE) : reduction;
            if (splits > 1 && (reductions & reduction) == 0) continue;
            int& kept = variants[{tile, splits, scheme}];
            if (kept >= kStageVariants || checked >= kMaxChecked) {
              if (splits == 1) break;
              continue;
            }
            cublasLtMatmulAlgo_t algo = base;
            const bool configured = set_config(algo, CUBLASLT_ALGO_CONFIG_TILE_ID, tile) &&
                                    set_config(algo, CUBLASLT_ALGO_CONFIG_STAGES_ID, stages) &&
                                    set_config(algo, CUBLASLT_ALGO_CONFIG_SPLITK_NUM, splits) &&
                                    set_config(algo, CUBLASLT_ALGO_CONFIG_REDUCTION_SCHEME, scheme);
            ++checked;
            cublasLtMatmulHeuristicResult_t result{};
            if (configured &&
                cublasLtMatmulAlgoCheck(lt, p.desc, p.a, p.b, p.c, p.c, &algo, &result) == CUBLAS_STATUS_SUCCESS &&
                result.workspaceSize <= p.max_workspace_bytes) {
              ranked.push_back({algo, estimated_cost(result.wavesCount, splits), splits});
              ++kept;
            }
            if (splits == 1) break;  // one scheme (none) without split-K
          }
        }
      }
    }
  }
  // Ties (the same wave count) keep the library's order, fewer splits first.
  std::stable_sort(ranked.begin(), ranked.end(), [](const Ranked& x, const Ranked& y) {
    return std::tie(x.cost, x.splits) < std::tie(y.cost, y.splits);
  });
  std::vector<cublasLtMatmulAlgo_t> configs;
  for (size_t i = 0; i < ranked.size() && configs.size() < max_count; ++i) configs.push_back(ranked[i].algo);
  return configs;
}

}  // namespace fusedrt
