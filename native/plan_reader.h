// Reads and validates a plan file (docs/plan-format.md). The header is
// checked completely before any weight byte is touched; the data section is
// then streamed once, tensor by tensor, while the CRC-32 of the whole file is
// computed, so a large plan is never held in memory twice. Every failure is a
// FusedError with E_PLAN_IO, E_PLAN_CORRUPT or E_PLAN_VERSION naming the bad
// field.
#pragma once

#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "activation.h"

namespace fusedrt {

// kF8E4M3: OCP FP8 E4M3 (cuda_fp8.h's __nv_fp8_e4m3); as a tensor, each
// byte times TensorInfo::scale.
enum class DType { kF32, kF16, kU8, kF8E4M3 };
enum class RowsKind { kTokens, kSequences, kSelected };
enum class OpType { kEmbedLayerNorm, kGemm, kAttention, kAddLayerNorm, kGatherRows, kMeanRows };
// Which rows an op produces: all tokens, the first token of each sequence
// (a `sequences` buffer) or the caller's selected rows (a `selected` buffer).
enum class RowSelect { kAll, kFirst, kSelected };
// header.precision: how the weights are stored and, on CUDA, how GEMMs compute
// (docs/plan-format.md). tf32 plans store fp32 weights; fp8 plans store some
// GEMM weights as E4M3 and everything else as fp16 does.
enum class Precision { kFp32, kFp16, kTf32, kFp8 };

const char* op_type_name(OpType type);
const char* rows_kind_name(RowsKind kind);

struct PlanConfig {
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t intermediate_size = 0;
  int64_t vocab_size = 0;
  int64_t max_positions = 0;
  int64_t type_vocab_size = 0;
  int64_t max_seq = 0;
  double layer_norm_eps = 0;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  int64_t elements = 0;
  uint64_t offset = 0;  // relative to the data section
  uint64_t size = 0;    // bytes in the file
  float scale = 1;      // kF8E4M3 only: an element's value is its E4M3 value times this
  bool used_by_ops = false;
};

struct BufferInfo {
  std::string name;
  RowsKind rows = RowsKind::kTokens;
  int64_t cols = 0;
  // Holds values rounded to E4M3 (header "dtype": "f8e4m3"), the input of
  // GEMMs whose weight is E4M3; otherwise a float buffer.
  bool fp8 = false;
};

// One op of the plan with names resolved to indices into Plan::buffers and
// Plan::tensors (-1: field absent).
struct PlanOp {
  OpType type = OpType::kGemm;
  int in = -1;
  int residual = -1;
  int out = -1;
  int out8 = -1;  // layernorm ops: an fp8 buffer that also gets out, rounded to E4M3
  int word = -1;
  int position = -1;
  int token_type = -1;
  int weight = -1;
  int bias = -1;
  int gamma = -1;
  int beta = -1;
  float eps = 0;
  float scale = 0;
  int64_t heads = 0;
  int64_t head_dim = 0;
  Activation activation = Activation::kNone;
  RowSelect select = RowSelect::kAll;  // gather_rows and attention
};

struct PlanOutput {
  std::string name;
  int buffer = -1;
};

struct Plan {
  std::string header_json;
  Precision precision = Precision::kFp32;
  PlanConfig config;
  std::vector<TensorInfo> tensors;
  std::vector<BufferInfo> buffers;
  std::vector<PlanOp> ops;
  std::vector<PlanOutput> outputs;
  uint64_t data_start = 0;  // absolute file offset of the data section
  uint64_t data_size = 0;
};

// Random access to the bytes of a plan: a file or a copy of caller bytes.
class PlanSource {
 public:
  virtual ~PlanSource() = default;
  virtual uint64_t size() const = 0;
  // Reads exactly n bytes at offset (the caller keeps offset + n <= size()).
  virtual void read(uint64_t offset, void* dst, size_t n) = 0;
};

std::unique_ptr<PlanSource> open_plan_file(const std::string& path);  // E_PLAN_IO
std::unique_ptr<PlanSource> plan_from_bytes(std::vector<uint8_t> bytes);

// Checks the preamble, footer magic and file size, and validates the header.
Plan read_plan_header(PlanSource& source);

// Receives `n` bytes of tensor `index` starting `offset` bytes into it.
using TensorSink = std::function<void(int index, uint64_t offset, const uint8_t* bytes, size_t n)>;

// Streams the data section once, handing the bytes of tensors used by ops to
// the sink (in pieces whose offsets are multiples of 64), and verifies the
// CRC-32 at the end. The sink's work must be discarded if this throws.
void read_plan_data(PlanSource& source, const Plan& plan, const TensorSink& sink);

// zlib-compatible CRC-32, chainable: crc32_update(crc32_update(0, a), b).
uint32_t crc32_update(uint32_t crc, const uint8_t* bytes, size_t n);

}  // namespace fusedrt
