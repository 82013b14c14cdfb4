#include "plan_reader.h"

#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <unordered_map>

#include "errors.h"
#include "json.h"

namespace fusedrt {

namespace {

constexpr uint8_t kMagic[8] = {'F', 'R', 'T', 'P', 'L', 'A', 'N', 0};
constexpr uint8_t kFooterMagic[4] = {'F', 'E', 'N', 'D'};
constexpr uint32_t kFormatVersion = 1;
constexpr uint64_t kPreambleBytes = 16;
constexpr uint64_t kFooterBytes = 8;
constexpr uint64_t kMaxHeaderBytes = 16u << 20;
constexpr uint64_t kAlignment = 64;
constexpr int64_t kMaxDim = int64_t{1} << 31;
constexpr int64_t kMaxElements = int64_t{1} << 40;
constexpr int64_t kMaxSafeInteger = (int64_t{1} << 53) - 1;  // JSON numbers are doubles
constexpr size_t kStreamChunkBytes = 4u << 20;          // a multiple of kAlignment

const char* const kInputNames[] = {"input_ids", "token_type_ids", "cu_seqlens", "selected_rows"};

[[noreturn]] void corrupt(const std::string& message) { fail(ErrorCode::kPlanCorrupt, "invalid plan: " + message); }

uint32_t read_u32le(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) | (static_cast<uint32_t>(p[2]) << 16) |
         (static_cast<uint32_t>(p[3]) << 24);
}

uint64_t align_up(uint64_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

class FilePlanSource : public PlanSource {
 public:
  FilePlanSource(std::FILE* file, uint64_t size, std::string path) : file_(file), size_(size), path_(std::move(path)) {}
  ~FilePlanSource() override { std::fclose(file_); }

  uint64_t size() const override { return size_; }

  void read(uint64_t offset, void* dst, size_t n) override {
    if (fseeko(file_, static_cast<off_t>(offset), SEEK_SET) != 0 || std::fread(dst, 1, n, file_) != n) {
      fail(ErrorCode::kPlanIo, "cannot read plan file " + path_ + " at byte " + std::to_string(offset) +
                                   " (the file may have changed while loading)");
    }
  }

 private:
  std::FILE* file_;
  uint64_t size_;
  std::string path_;
};

class MemoryPlanSource : public PlanSource {
 public:
  explicit MemoryPlanSource(std::vector<uint8_t> bytes) : bytes_(std::move(bytes)) {}
  uint64_t size() const override { return bytes_.size(); }
  void read(uint64_t offset, void* dst, size_t n) override { std::memcpy(dst, bytes_.data() + offset, n); }

 private:
  std::vector<uint8_t> bytes_;
};

// Typed access to header fields; every message names the field's path.
class HeaderFields {
 public:
  static const json::Value& require(const json::Value& object, const char* key, const std::string& where) {
    const json::Value* value = object.find(key);
    if (value == nullptr) corrupt(where + " is missing \"" + key + "\"");
    return *value;
  }

  // Absent and null both mean "not given" for optional fields.
  static const json::Value* optional(const json::Value& object, const char* key) {
    const json::Value* value = object.find(key);
    return value == nullptr || value->is_null() ? nullptr : value;
  }

  static void expect_type(const json::Value& value, json::Type type, const std::string& where) {
    if (value.type() != type) {
      corrupt(where + " must be " + json::type_name(type) + ", not " + json::type_name(value.type()));
    }
  }

  static const json::Value& object(const json::Value& parent, const char* key, const std::string& where) {
    const json::Value& value = require(parent, key, where);
    expect_type(value, json::Type::kObject, where + "." + key);
    return value;
  }

  static const std::vector<json::Value>& array(const json::Value& parent, const char* key, const std::string& where) {
    const json::Value& value = require(parent, key, where);
    expect_type(value, json::Type::kArray, where + "." + key);
    return value.items();
  }

  static const std::string& string(const json::Value& parent, const char* key, const std::string& where) {
    const json::Value& value = require(parent, key, where);
    expect_type(value, json::Type::kString, where + "." + key);
    return value.string();
  }

  static int64_t integer(const json::Value& value, int64_t min, int64_t max, const std::string& where) {
    expect_type(value, json::Type::kNumber, where);
    double v = value.number();
    if (std::floor(v) != v) corrupt(where + " must be an integer, not " + format(v));
    // Bounds are checked on the double, before any conversion could overflow.
    if (v < static_cast<double>(min) || v > static_cast<double>(max)) {
      corrupt(where + " = " + format(v) + " is outside [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    }
    return static_cast<int64_t>(v);
  }

  static int64_t integer(const json::Value& parent, const char* key, int64_t min, int64_t max,
                         const std::string& where) {
    return integer(require(parent, key, where), min, max, where + "." + key);
  }

  static double number(const json::Value& parent, const char* key, const std::string& where) {
    const json::Value& value = require(parent, key, where);
    expect_type(value, json::Type::kNumber, where + "." + key);
    return value.number();
  }

  static std::string format(double v) {
    char text[40];
    std::snprintf(text, sizeof(text), "%.17g", v);
    return text;
  }
};

using F = HeaderFields;

// Validates the header JSON into a Plan. One instance per read.
class HeaderValidator {
 public:
  HeaderValidator(const json::Value& root, Plan& plan) : root_(root), plan_(plan) {}

  void validate() {
    validate_metadata();
    validate_config();
    validate_tensors();
    validate_tokenizer();
    validate_buffers();
    validate_ops();
    validate_outputs();
  }

 private:
  void validate_metadata() {
    const json::Value& builder = F::object(root_, "builder", "header");
    F::string(builder, "name", "header.builder");
    F::string(builder, "version", "header.builder");
    F::string(root_, "createdAt", "header");
    const json::Value& source = F::object(root_, "source", "header");
    F::string(source, "architecture", "header.source");
    F::string(source, "sha256", "header.source");
    const auto& files = F::array(source, "files", "header.source");
    for (size_t i = 0; i < files.size(); ++i) {
      F::expect_type(files[i], json::Type::kString, "header.source.files[" + std::to_string(i) + "]");
    }
    F::string(root_, "family", "header");
    expect_one_of(F::string(root_, "task", "header"), "header.task",
                  {"fill-mask", "classification", "token-classification", "question-answering", "embedding"});
    const std::string& precision = F::string(root_, "precision", "header");
    expect_one_of(precision, "header.precision", {"fp32", "fp16", "tf32", "fp8"});
    plan_.precision = precision == "fp16"   ? Precision::kFp16
                      : precision == "tf32" ? Precision::kTf32
                      : precision == "fp8"  ? Precision::kFp8
                                            : Precision::kFp32;
    if (const json::Value* labels = F::optional(root_, "labels")) {
      F::expect_type(*labels, json::Type::kArray, "header.labels");
      for (size_t i = 0; i < labels->items().size(); ++i) {
        F::expect_type(labels->items()[i], json::Type::kString, "header.labels[" + std::to_string(i) + "]");
      }
    }
    if (const json::Value* problem = F::optional(root_, "problemType")) {
      F::expect_type(*problem, json::Type::kString, "header.problemType");
    }
  }

  static void expect_one_of(const std::string& value, const std::string& where, std::initializer_list<const char*> allowed) {
    for (const char* a : allowed) {
      if (value == a) return;
    }
    corrupt(where + " \"" + value + "\" is not supported");
  }

  void validate_config() {
    const json::Value& c = F::object(root_, "config", "header");
    const std::string where = "header.config";
    PlanConfig& config = plan_.config;
    config.hidden_size = F::integer(c, "hiddenSize", 1, kMaxDim, where);
    config.num_layers = F::integer(c, "numLayers", 1, kMaxDim, where);
    config.num_heads = F::integer(c, "numHeads", 1, kMaxDim, where);
    config.intermediate_size = F::integer(c, "intermediateSize", 1, kMaxDim, where);
    config.vocab_size = F::integer(c, "vocabSize", 1, INT32_MAX, where);
    config.max_positions = F::integer(c, "maxPositions", 1, INT32_MAX, where);
    config.type_vocab_size = F::integer(c, "typeVocabSize", 1, INT32_MAX, where);
    config.max_seq = F::integer(c, "maxSeq", 1, config.max_positions, where);
    config.layer_norm_eps = F::number(c, "layerNormEps", where);
    if (!(config.layer_norm_eps > 0) || !(static_cast<float>(config.layer_norm_eps) > 0)) {
      corrupt(where + ".layerNormEps must be a positive float");
    }
    F::string(c, "hiddenAct", where);
  }

  void validate_tensors() {
    const auto& entries = F::array(root_, "tensors", "header");
    plan_.tensors.reserve(entries.size());
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string where = "header.tensors[" + std::to_string(i) + "]";
      const json::Value& entry = entries[i];
      F::expect_type(entry, json::Type::kObject, where);
      TensorInfo t;
      t.name = F::string(entry, "name", where);
      if (t.name.empty()) corrupt(where + ".name is empty");
      if (!tensor_index_.emplace(t.name, static_cast<int>(i)).second) corrupt("tensor \"" + t.name + "\" appears twice");
      const std::string& dtype = F::string(entry, "dtype", where);
      uint64_t element_bytes;
      if (dtype == "f32") {
        t.dtype = DType::kF32;
        element_bytes = 4;
      } else if (dtype == "f16") {
        t.dtype = DType::kF16;
        element_bytes = 2;
      } else if (dtype == "u8") {
        t.dtype = DType::kU8;
        element_bytes = 1;
      } else if (dtype == "f8e4m3") {
        t.dtype = DType::kF8E4M3;
        element_bytes = 1;
      } else {
        corrupt("tensor \"" + t.name + "\" has unknown dtype \"" + dtype + "\"");
      }
      const json::Value* scale = F::optional(entry, "scale");
      if (t.dtype != DType::kF8E4M3) {
        if (scale != nullptr) corrupt("tensor \"" + t.name + "\" has a scale, which only f8e4m3 tensors have");
      } else {
        if (scale == nullptr) corrupt("f8e4m3 tensor \"" + t.name + "\" has no scale");
        t.scale = static_cast<float>(F::number(entry, "scale", where));
        if (!(t.scale > 0) || !std::isfinite(t.scale)) {
          corrupt("f8e4m3 tensor \"" + t.name + "\" has scale " + F::format(scale->number()) +
                  ", which must be a positive finite float");
        }
      }
      const auto& shape = F::array(entry, "shape", where);
      if (shape.empty() || shape.size() > 8) corrupt("tensor \"" + t.name + "\" must have 1 to 8 dimensions");
      t.elements = 1;
      for (size_t d = 0; d < shape.size(); ++d) {
        int64_t dim = F::integer(shape[d], 1, kMaxDim, where + ".shape[" + std::to_string(d) + "]");
        // Both factors are below 2^41 here, so the product cannot overflow int64.
        t.elements *= dim;
        if (t.elements >= kMaxElements) corrupt("tensor \"" + t.name + "\" has 2^40 elements or more");
        t.shape.push_back(dim);
      }
      t.offset = static_cast<uint64_t>(F::integer(entry, "offset", 0, kMaxSafeInteger, where));
      t.size = static_cast<uint64_t>(F::integer(entry, "size", 0, kMaxSafeInteger, where));
      if (t.size != static_cast<uint64_t>(t.elements) * element_bytes) {
        corrupt("tensor \"" + t.name + "\" has size " + std::to_string(t.size) + " but its shape and dtype need " +
                std::to_string(static_cast<uint64_t>(t.elements) * element_bytes));
      }
      if (t.offset % kAlignment != 0) {
        corrupt("tensor \"" + t.name + "\" offset " + std::to_string(t.offset) + " is not a multiple of 64");
      }
      if (t.offset > plan_.data_size || t.size > plan_.data_size - t.offset) {
        corrupt("tensor \"" + t.name + "\" lies outside the data section");
      }
      plan_.tensors.push_back(std::move(t));
    }
    std::vector<const TensorInfo*> by_offset;
    for (const auto& t : plan_.tensors) by_offset.push_back(&t);
    std::sort(by_offset.begin(), by_offset.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->offset < b->offset; });
    for (size_t i = 1; i < by_offset.size(); ++i) {
      if (by_offset[i - 1]->offset + by_offset[i - 1]->size > by_offset[i]->offset) {
        corrupt("tensors \"" + by_offset[i - 1]->name + "\" and \"" + by_offset[i]->name + "\" overlap");
      }
    }
  }

  void validate_tokenizer() {
    const json::Value& tokenizer = F::object(root_, "tokenizer", "header");
    const std::string& name = F::string(tokenizer, "tensor", "header.tokenizer");
    auto found = tensor_index_.find(name);
    if (found == tensor_index_.end()) corrupt("tokenizer tensor \"" + name + "\" is missing");
    if (plan_.tensors[found->second].dtype != DType::kU8) corrupt("tokenizer tensor \"" + name + "\" must be u8");
    F::string(tokenizer, "maskToken", "header.tokenizer");
    F::expect_type(F::require(tokenizer, "doLowerCase", "header.tokenizer"), json::Type::kBool,
                   "header.tokenizer.doLowerCase");
  }

  void validate_buffers() {
    const auto& entries = F::array(root_, "buffers", "header");
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string where = "header.buffers[" + std::to_string(i) + "]";
      F::expect_type(entries[i], json::Type::kObject, where);
      BufferInfo b;
      b.name = F::string(entries[i], "name", where);
      if (b.name.empty()) corrupt(where + ".name is empty");
      for (const char* input : kInputNames) {
        if (b.name == input) corrupt("buffer \"" + b.name + "\" collides with a run input");
      }
      if (!buffer_index_.emplace(b.name, static_cast<int>(i)).second) corrupt("buffer \"" + b.name + "\" appears twice");
      const std::string& rows = F::string(entries[i], "rows", where);
      if (rows == "tokens") {
        b.rows = RowsKind::kTokens;
      } else if (rows == "sequences") {
        b.rows = RowsKind::kSequences;
      } else if (rows == "selected") {
        b.rows = RowsKind::kSelected;
      } else {
        corrupt("buffer \"" + b.name + "\" has unknown rows kind \"" + rows + "\"");
      }
      b.cols = F::integer(entries[i], "cols", 1, kMaxDim, where);
      if (F::optional(entries[i], "dtype")) {
        const std::string& dtype = F::string(entries[i], "dtype", where);
        if (dtype != "f8e4m3") corrupt("buffer \"" + b.name + "\" has unknown dtype \"" + dtype + "\"");
        b.fp8 = true;
      }
      plan_.buffers.push_back(std::move(b));
    }
  }

  // --- ops -------------------------------------------------------------

  int buffer_field(const json::Value& op, const char* key, const std::string& where, bool required) {
    const json::Value* value = required ? &F::require(op, key, where) : F::optional(op, key);
    if (value == nullptr) return -1;
    F::expect_type(*value, json::Type::kString, where + "." + key);
    auto found = buffer_index_.find(value->string());
    if (found == buffer_index_.end()) corrupt(where + "." + key + " names unknown buffer \"" + value->string() + "\"");
    return found->second;
  }

  int read_buffer(const json::Value& op, const char* key, const std::string& where, bool required) {
    int index = buffer_field(op, key, where, required);
    if (index >= 0 && !written_[index]) {
      corrupt(where + " reads buffer \"" + plan_.buffers[index].name + "\" before any op writes it");
    }
    return index;
  }

  // Only a GEMM's weight may be E4M3 (allow_fp8).
  int tensor_field(const json::Value& op, const char* key, const std::string& where, bool required,
                   bool allow_fp8 = false) {
    const json::Value* value = required ? &F::require(op, key, where) : F::optional(op, key);
    if (value == nullptr) return -1;
    F::expect_type(*value, json::Type::kString, where + "." + key);
    auto found = tensor_index_.find(value->string());
    if (found == tensor_index_.end()) corrupt(where + "." + key + " names unknown tensor \"" + value->string() + "\"");
    TensorInfo& t = plan_.tensors[found->second];
    if (t.dtype == DType::kU8) corrupt(where + "." + key + " tensor \"" + t.name + "\" is u8, ops need f32 or f16");
    if (t.dtype == DType::kF8E4M3 && !allow_fp8) {
      corrupt(where + "." + key + " tensor \"" + t.name + "\" is f8e4m3, which only a gemm's weight may be");
    }
    t.used_by_ops = true;
    return found->second;
  }

  void expect_shape(int tensor, std::initializer_list<int64_t> shape, const std::string& where) {
    const TensorInfo& t = plan_.tensors[tensor];
    if (!std::equal(t.shape.begin(), t.shape.end(), shape.begin(), shape.end())) {
      std::string want;
      for (int64_t d : shape) want += (want.empty() ? "" : ", ") + std::to_string(d);
      std::string have;
      for (int64_t d : t.shape) have += (have.empty() ? "" : ", ") + std::to_string(d);
      corrupt(where + ": tensor \"" + t.name + "\" has shape [" + have + "], expected [" + want + "]");
    }
  }

  // The first dimension of a 2-D tensor whose second dimension must be cols.
  int64_t rows_of_matrix(int tensor, int64_t cols, const std::string& where) {
    const TensorInfo& t = plan_.tensors[tensor];
    if (t.shape.size() != 2 || t.shape[1] != cols) {
      corrupt(where + ": tensor \"" + t.name + "\" must be a matrix with " + std::to_string(cols) + " columns");
    }
    return t.shape[0];
  }

  float eps_field(const json::Value& op, const std::string& where) {
    double eps = F::number(op, "eps", where);
    if (!(eps > 0) || !(static_cast<float>(eps) > 0) || !std::isfinite(static_cast<float>(eps))) {
      corrupt(where + ".eps must be a positive finite float");
    }
    return static_cast<float>(eps);
  }

  const BufferInfo& buffer(int index) const { return plan_.buffers[index]; }

  void expect_rows(int index, RowsKind kind, const std::string& where) {
    if (buffer(index).rows != kind) {
      corrupt(where + ": buffer \"" + buffer(index).name + "\" must have " + rows_kind_name(kind) + " rows, not " +
              rows_kind_name(buffer(index).rows));
    }
  }

  void expect_cols(int index, int64_t cols, const std::string& where) {
    if (buffer(index).cols != cols) {
      corrupt(where + ": buffer \"" + buffer(index).name + "\" has " + std::to_string(buffer(index).cols) +
              " columns, expected " + std::to_string(cols));
    }
  }

  // `out8` of a layernorm op: an fp8 buffer shaped as `out`.
  int out8_field(const json::Value& json, int out, const std::string& where) {
    const int out8 = buffer_field(json, "out8", where, false);
    if (out8 < 0) return -1;
    if (!buffer(out8).fp8) corrupt(where + ".out8 names buffer \"" + buffer(out8).name + "\", which is not f8e4m3");
    expect_rows(out8, buffer(out).rows, where + ".out8");
    expect_cols(out8, buffer(out).cols, where + ".out8");
    return out8;
  }

  // fp8 buffers are written by attention, GEMMs with an E4M3 weight and
  // `out8`, and read only by GEMMs with an E4M3 weight.
  void expect_fp8_rules(const PlanOp& op, const std::string& where) {
    const bool fp8_gemm = op.type == OpType::kGemm && plan_.tensors[op.weight].dtype == DType::kF8E4M3;
    if (op.type == OpType::kGemm && op.in >= 0 && buffer(op.in).fp8 != fp8_gemm) {
      corrupt(where + ": a gemm " + (fp8_gemm ? "with an f8e4m3 weight reads an f8e4m3 buffer, not \""
                                              : "with a float weight reads a float buffer, not \"") +
              buffer(op.in).name + "\"");
    }
    if (op.type != OpType::kGemm && op.in >= 0 && buffer(op.in).fp8) {
      corrupt(where + " reads f8e4m3 buffer \"" + buffer(op.in).name + "\": only gemms with an f8e4m3 weight may");
    }
    if (op.residual >= 0 && buffer(op.residual).fp8) {
      corrupt(where + " reads f8e4m3 buffer \"" + buffer(op.residual).name + "\" as residual");
    }
    if (buffer(op.out).fp8 && !fp8_gemm && op.type != OpType::kAttention) {
      corrupt(where + " writes f8e4m3 buffer \"" + buffer(op.out).name +
              "\" as out: only attention and gemms with an f8e4m3 weight may");
    }
  }

  void expect_distinct(int in, int out, const std::string& where) {
    if (in == out) corrupt(where + " must not write its input buffer \"" + buffer(in).name + "\"");
  }

  void validate_embed(const json::Value& json, PlanOp& op, const std::string& where) {
    op.word = tensor_field(json, "word", where, true);
    op.position = tensor_field(json, "position", where, true);
    op.token_type = tensor_field(json, "tokenType", where, true);
    op.gamma = tensor_field(json, "gamma", where, true);
    op.beta = tensor_field(json, "beta", where, true);
    op.eps = eps_field(json, where);
    op.out = buffer_field(json, "out", where, true);
    expect_rows(op.out, RowsKind::kTokens, where);
    const int64_t hidden = buffer(op.out).cols;
    const PlanConfig& config = plan_.config;
    if (rows_of_matrix(op.word, hidden, where) != config.vocab_size) {
      corrupt(where + ": word table rows disagree with config.vocabSize " + std::to_string(config.vocab_size));
    }
    if (rows_of_matrix(op.position, hidden, where) < config.max_seq) {
      corrupt(where + ": position table has fewer rows than config.maxSeq " + std::to_string(config.max_seq));
    }
    if (rows_of_matrix(op.token_type, hidden, where) != config.type_vocab_size) {
      corrupt(where + ": token type table rows disagree with config.typeVocabSize " +
              std::to_string(config.type_vocab_size));
    }
    expect_shape(op.gamma, {hidden}, where);
    expect_shape(op.beta, {hidden}, where);
    op.out8 = out8_field(json, op.out, where);
  }

  void validate_gemm(const json::Value& json, PlanOp& op, const std::string& where) {
    op.in = read_buffer(json, "in", where, true);
    op.weight = tensor_field(json, "weight", where, true, true);
    op.bias = tensor_field(json, "bias", where, false);
    op.out = buffer_field(json, "out", where, true);
    expect_distinct(op.in, op.out, where);
    const std::string& activation = F::string(json, "activation", where);
    if (activation == "none") {
      op.activation = Activation::kNone;
    } else if (activation == "gelu") {
      op.activation = Activation::kGelu;
    } else if (activation == "gelu_tanh") {
      op.activation = Activation::kGeluTanh;
    } else if (activation == "relu") {
      op.activation = Activation::kRelu;
    } else if (activation == "tanh") {
      op.activation = Activation::kTanh;
    } else {
      corrupt(where + " has unknown activation \"" + activation + "\"");
    }
    const int64_t n = buffer(op.out).cols;
    expect_shape(op.weight, {n, buffer(op.in).cols}, where);
    if (op.bias >= 0) expect_shape(op.bias, {n}, where);
    expect_rows(op.out, buffer(op.in).rows, where);
  }

  void validate_attention(const json::Value& json, PlanOp& op, const std::string& where) {
    op.in = read_buffer(json, "in", where, true);
    op.out = buffer_field(json, "out", where, true);
    expect_distinct(op.in, op.out, where);
    op.heads = F::integer(json, "heads", 1, kMaxDim, where);
    op.head_dim = F::integer(json, "headDim", 1, kMaxDim, where);
    double scale = F::number(json, "scale", where);
    op.scale = static_cast<float>(scale);
    if (!std::isfinite(op.scale)) corrupt(where + ".scale must be a finite float");
    if (op.heads != plan_.config.num_heads) {
      corrupt(where + ".heads " + std::to_string(op.heads) + " disagrees with config.numHeads " +
              std::to_string(plan_.config.num_heads));
    }
    if (op.heads * op.head_dim > kMaxDim) corrupt(where + ": heads * headDim is too large");
    // Without `select` every token is a query; with it only the chosen rows
    // are, against all keys of their sequence.
    op.select = F::optional(json, "select") ? read_select(json, op.out, where) : RowSelect::kAll;
    if (op.select == RowSelect::kAll) expect_rows(op.out, RowsKind::kTokens, where);
    expect_rows(op.in, RowsKind::kTokens, where);
    expect_cols(op.in, 3 * op.heads * op.head_dim, where);
    expect_cols(op.out, op.heads * op.head_dim, where);
  }

  void validate_add_layernorm(const json::Value& json, PlanOp& op, const std::string& where) {
    op.in = read_buffer(json, "in", where, true);
    op.residual = read_buffer(json, "residual", where, false);
    op.bias = tensor_field(json, "bias", where, false);
    op.gamma = tensor_field(json, "gamma", where, true);
    op.beta = tensor_field(json, "beta", where, true);
    op.eps = eps_field(json, where);
    op.out = buffer_field(json, "out", where, true);
    const int64_t cols = buffer(op.in).cols;
    const RowsKind rows = buffer(op.in).rows;
    expect_cols(op.out, cols, where);
    expect_rows(op.out, rows, where);
    if (op.residual >= 0) {
      expect_cols(op.residual, cols, where);
      expect_rows(op.residual, rows, where);
    }
    if (op.bias >= 0) expect_shape(op.bias, {cols}, where);
    expect_shape(op.gamma, {cols}, where);
    expect_shape(op.beta, {cols}, where);
    op.out8 = out8_field(json, op.out, where);
  }

  // "first" or "selected", with `out` a buffer of the matching rows kind.
  RowSelect read_select(const json::Value& json, int out, const std::string& where) {
    const std::string& select = F::string(json, "select", where);
    if (select == "first") {
      expect_rows(out, RowsKind::kSequences, where);
      return RowSelect::kFirst;
    }
    if (select == "selected") {
      expect_rows(out, RowsKind::kSelected, where);
      return RowSelect::kSelected;
    }
    corrupt(where + " has unknown select \"" + select + "\"");
  }

  void validate_gather(const json::Value& json, PlanOp& op, const std::string& where) {
    op.in = read_buffer(json, "in", where, true);
    op.out = buffer_field(json, "out", where, true);
    expect_distinct(op.in, op.out, where);
    op.select = read_select(json, op.out, where);
    expect_rows(op.in, RowsKind::kTokens, where);
    expect_cols(op.out, buffer(op.in).cols, where);
  }

  void validate_mean_rows(const json::Value& json, PlanOp& op, const std::string& where) {
    op.in = read_buffer(json, "in", where, true);
    op.out = buffer_field(json, "out", where, true);
    expect_distinct(op.in, op.out, where);
    expect_rows(op.in, RowsKind::kTokens, where);
    expect_rows(op.out, RowsKind::kSequences, where);
    expect_cols(op.out, buffer(op.in).cols, where);
  }

  void validate_ops() {
    const auto& entries = F::array(root_, "ops", "header");
    if (entries.empty()) corrupt("header.ops is empty");
    written_.assign(plan_.buffers.size(), false);
    for (size_t i = 0; i < entries.size(); ++i) {
      const json::Value& json = entries[i];
      std::string where = "header.ops[" + std::to_string(i) + "]";
      F::expect_type(json, json::Type::kObject, where);
      const std::string& type = F::string(json, "type", where);
      where += " (" + type + ")";
      PlanOp op;
      if (type == "embed_layernorm") {
        op.type = OpType::kEmbedLayerNorm;
        validate_embed(json, op, where);
      } else if (type == "gemm") {
        op.type = OpType::kGemm;
        validate_gemm(json, op, where);
      } else if (type == "attention") {
        op.type = OpType::kAttention;
        validate_attention(json, op, where);
      } else if (type == "add_layernorm") {
        op.type = OpType::kAddLayerNorm;
        validate_add_layernorm(json, op, where);
      } else if (type == "gather_rows") {
        op.type = OpType::kGatherRows;
        validate_gather(json, op, where);
      } else if (type == "mean_rows") {
        op.type = OpType::kMeanRows;
        validate_mean_rows(json, op, where);
      } else {
        corrupt(where + " has unknown op type");
      }
      expect_fp8_rules(op, where);
      written_[op.out] = true;
      if (op.out8 >= 0) written_[op.out8] = true;
      plan_.ops.push_back(op);
    }
  }

  void validate_outputs() {
    const auto& entries = F::array(root_, "outputs", "header");
    if (entries.empty()) corrupt("header.outputs is empty");
    for (size_t i = 0; i < entries.size(); ++i) {
      const std::string where = "header.outputs[" + std::to_string(i) + "]";
      F::expect_type(entries[i], json::Type::kObject, where);
      PlanOutput output;
      output.name = F::string(entries[i], "name", where);
      if (output.name.empty()) corrupt(where + ".name is empty");
      for (const auto& other : plan_.outputs) {
        if (other.name == output.name) corrupt("output \"" + output.name + "\" appears twice");
      }
      output.buffer = read_buffer(entries[i], "buffer", where, true);
      if (plan_.buffers[output.buffer].fp8) corrupt(where + " names f8e4m3 buffer \"" + plan_.buffers[output.buffer].name + "\"");
      plan_.outputs.push_back(std::move(output));
    }
  }

  const json::Value& root_;
  Plan& plan_;
  std::unordered_map<std::string, int> tensor_index_;
  std::unordered_map<std::string, int> buffer_index_;
  std::vector<bool> written_;
};

}  // namespace

const char* op_type_name(OpType type) {
  switch (type) {
    case OpType::kEmbedLayerNorm: return "embed_layernorm";
    case OpType::kGemm: return "gemm";
    case OpType::kAttention: return "attention";
    case OpType::kAddLayerNorm: return "add_layernorm";
    case OpType::kGatherRows: return "gather_rows";
    case OpType::kMeanRows: return "mean_rows";
  }
  return "unknown";
}

const char* rows_kind_name(RowsKind kind) {
  switch (kind) {
    case RowsKind::kTokens: return "tokens";
    case RowsKind::kSequences: return "sequences";
    case RowsKind::kSelected: return "selected";
  }
  return "unknown";
}

std::unique_ptr<PlanSource> open_plan_file(const std::string& path) {
  struct stat info {};
  if (::stat(path.c_str(), &info) != 0) {
    fail(ErrorCode::kPlanIo, "cannot open plan file " + path + ": " + std::strerror(errno));
  }
  if (!S_ISREG(info.st_mode)) fail(ErrorCode::kPlanIo, "plan path " + path + " is not a regular file");
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) fail(ErrorCode::kPlanIo, "cannot open plan file " + path + ": " + std::strerror(errno));
  return std::make_unique<FilePlanSource>(file, static_cast<uint64_t>(info.st_size), path);
}

std::unique_ptr<PlanSource> plan_from_bytes(std::vector<uint8_t> bytes) {
  return std::make_unique<MemoryPlanSource>(std::move(bytes));
}

Plan read_plan_header(PlanSource& source) {
  const uint64_t file_size = source.size();
  if (file_size < kPreambleBytes + kFooterBytes) corrupt("file too small (" + std::to_string(file_size) + " bytes)");
  uint8_t preamble[kPreambleBytes];
  source.read(0, preamble, sizeof(preamble));
  if (std::memcmp(preamble, kMagic, sizeof(kMagic)) != 0) corrupt("not a FusedRT plan (bad magic)");
  const uint32_t version = read_u32le(preamble + 8);
  if (version != kFormatVersion) {
    fail(ErrorCode::kPlanVersion, "plan format version " + std::to_string(version) +
                                      " is not supported (this build reads version 1); rebuild the plan");
  }
  const uint64_t header_length = read_u32le(preamble + 12);
  if (header_length < 1 || header_length > kMaxHeaderBytes ||
      header_length > file_size - kPreambleBytes - kFooterBytes) {
    corrupt("header length " + std::to_string(header_length) + " out of range for a file of " +
            std::to_string(file_size) + " bytes");
  }
  Plan plan;
  plan.header_json.resize(header_length);
  source.read(kPreambleBytes, plan.header_json.data(), header_length);

  json::Value root;
  try {
    root = json::parse(plan.header_json);
  } catch (const json::ParseError& e) {
    corrupt(std::string("header is not valid JSON (") + e.what() + ")");
  }
  F::expect_type(root, json::Type::kObject, "header");
  const json::Value& format = F::require(root, "format", "header");
  if (!format.is_string() || format.string() != "fusedrt-plan") corrupt("header.format is not \"fusedrt-plan\"");
  const json::Value& format_version = F::require(root, "formatVersion", "header");
  if (!format_version.is_number() || format_version.number() != kFormatVersion) {
    fail(ErrorCode::kPlanVersion, "header.formatVersion is not 1; rebuild the plan with this version of fusedrt");
  }

  plan.data_start = align_up(kPreambleBytes + header_length);
  plan.data_size = static_cast<uint64_t>(F::integer(root, "dataSize", 0, kMaxSafeInteger, "header"));
  if (plan.data_start + plan.data_size + kFooterBytes != file_size) {
    corrupt("file size " + std::to_string(file_size) + " does not match the header (data section " +
            std::to_string(plan.data_size) + " bytes); the file may be truncated");
  }
  uint8_t footer_magic[4];
  source.read(file_size - 4, footer_magic, sizeof(footer_magic));
  if (std::memcmp(footer_magic, kFooterMagic, sizeof(kFooterMagic)) != 0) corrupt("missing footer (file truncated?)");

  HeaderValidator(root, plan).validate();
  return plan;
}

void read_plan_data(PlanSource& source, const Plan& plan, const TensorSink& sink) {
  std::vector<uint8_t> chunk(kStreamChunkBytes);
  uint32_t crc = 0;
  // Reads [from, to) of the file into the CRC, and hands it to the sink when
  // it belongs to a tensor that ops use.
  auto stream = [&](uint64_t from, uint64_t to, int tensor) {
    for (uint64_t at = from; at < to;) {
      size_t n = static_cast<size_t>(std::min<uint64_t>(chunk.size(), to - at));
      source.read(at, chunk.data(), n);
      crc = crc32_update(crc, chunk.data(), n);
      if (tensor >= 0) sink(tensor, at - from, chunk.data(), n);
      at += n;
    }
  };
  std::vector<int> order(plan.tensors.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  std::sort(order.begin(), order.end(), [&](int a, int b) { return plan.tensors[a].offset < plan.tensors[b].offset; });

  uint64_t at = 0;
  stream(0, plan.data_start, -1);
  for (int index : order) {
    const TensorInfo& t = plan.tensors[index];
    stream(plan.data_start + at, plan.data_start + t.offset, -1);
    stream(plan.data_start + t.offset, plan.data_start + t.offset + t.size, t.used_by_ops ? index : -1);
    at = t.offset + t.size;
  }
  stream(plan.data_start + at, plan.data_start + plan.data_size, -1);

  uint8_t footer[4];
  source.read(plan.data_start + plan.data_size, footer, sizeof(footer));
  const uint32_t stored = read_u32le(footer);
  if (stored != crc) {
    char message[96];
    std::snprintf(message, sizeof(message), "checksum mismatch (stored %08x, computed %08x)", stored, crc);
    corrupt(message);
  }
}

uint32_t crc32_update(uint32_t crc, const uint8_t* bytes, size_t n) {
  // Reflected IEEE polynomial (what zlib computes), eight bytes per step
  // ("slicing-by-8"): table k advances the CRC over a byte followed by k
  // zero bytes. About 4x faster than one lookup per byte, which matters
  // because every byte of a plan is checksummed at load.
  static const auto tables = [] {
    std::array<std::array<uint32_t, 256>, 8> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[0][i] = c;
    }
    for (int k = 1; k < 8; ++k) {
      for (uint32_t i = 0; i < 256; ++i) t[k][i] = (t[k - 1][i] >> 8) ^ t[0][t[k - 1][i] & 0xFF];
    }
    return t;
  }();
  crc = ~crc;
  while (n >= 8) {
    const uint32_t lo = crc ^ read_u32le(bytes);
    const uint32_t hi = read_u32le(bytes + 4);
    crc = tables[7][lo & 0xFF] ^ tables[6][(lo >> 8) & 0xFF] ^ tables[5][(lo >> 16) & 0xFF] ^ tables[4][lo >> 24] ^
          tables[3][hi & 0xFF] ^ tables[2][(hi >> 8) & 0xFF] ^ tables[1][(hi >> 16) & 0xFF] ^ tables[0][hi >> 24];
    bytes += 8;
    n -= 8;
  }
  for (; n > 0; --n, ++bytes) crc = tables[0][(crc ^ *bytes) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

}  // namespace fusedrt
