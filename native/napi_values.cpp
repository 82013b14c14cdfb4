#include "napi_values.h"

#include <algorithm>
#include <cmath>

#include "errors.h"

namespace fusedrt {

int64_t integer_option(const Napi::Object& options, const char* key, int64_t fallback, int64_t min, int64_t max) {
  Napi::Value value = options.Get(key);
  if (value.IsUndefined()) return fallback;
  if (!value.IsNumber()) fail(ErrorCode::kInput, std::string("option ") + key + " must be a number");
  double v = value.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(v) || std::floor(v) != v || v < static_cast<double>(min) || v > static_cast<double>(max)) {
    fail(ErrorCode::kInput, std::string("option ") + key + " must be an integer in [" + std::to_string(min) + ", " +
                                std::to_string(max) + "]");
  }
  return static_cast<int64_t>(v);
}

std::vector<int32_t> int32_array(const Napi::Object& request, const char* key, bool required, bool* present) {
  Napi::Value value = request.Get(key);
  *present = !(value.IsUndefined() || value.IsNull());
  if (!*present) {
    if (required) fail(ErrorCode::kInput, std::string(key) + " is required");
    return {};
  }
  if (!value.IsTypedArray() || value.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array) {
    fail(ErrorCode::kInput, std::string(key) + " must be an Int32Array");
  }
  Napi::Int32Array array = value.As<Napi::Int32Array>();
  return std::vector<int32_t>(array.Data(), array.Data() + array.ElementLength());
}

std::vector<std::string> string_list(const Napi::Object& request, const char* key) {
  Napi::Value value = request.Get(key);
  if (!value.IsArray()) fail(ErrorCode::kInput, std::string(key) + " must be an array of output names");
  Napi::Array array = value.As<Napi::Array>();
  std::vector<std::string> names;
  for (uint32_t i = 0; i < array.Length(); ++i) {
    Napi::Value name = array.Get(i);
    if (!name.IsString()) fail(ErrorCode::kInput, std::string(key) + "[" + std::to_string(i) + "] must be a string");
    names.push_back(name.As<Napi::String>().Utf8Value());
  }
  return names;
}

int device_ordinal(const std::string& name) {
  if (name == "cpu") return -1;
  if (name == "cuda") return 0;
  const std::string prefix = "cuda:";
  const std::string digits = name.substr(std::min(name.size(), prefix.size()));
  if (name.compare(0, prefix.size(), prefix) == 0 && !digits.empty() && digits.size() <= 4 &&
      digits.find_first_not_of("0123456789") == std::string::npos) {
    return std::stoi(digits);
  }
  fail(ErrorCode::kInput, "unknown device \"" + name + "\" (use cpu, cuda or cuda:N)");
}

bool boolean_option(const Napi::Object& options, const char* key, bool fallback) {
  Napi::Value value = options.Get(key);
  if (value.IsUndefined()) return fallback;
  if (!value.IsBoolean()) fail(ErrorCode::kInput, std::string("option ") + key + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

}  // namespace fusedrt
