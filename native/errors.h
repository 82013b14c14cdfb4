// Errors inside the addon. Native code throws FusedError with one of the
// stable codes of src/errors.ts; the N-API layer (engine_object.cpp,
// addon.cc) catches every exception at the boundary and turns it into a JS
// Error with `code` set, so nothing C++ ever reaches the JS engine.
#pragma once

#include <stdexcept>
#include <string>

namespace fusedrt {

enum class ErrorCode {
  kInput,
  kShape,
  kPlanIo,
  kPlanCorrupt,
  kPlanVersion,
  kBackend,
  kDisposed,
  kNative,
  kOom,
};

inline const char* error_code_name(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInput: return "E_INPUT";
    case ErrorCode::kShape: return "E_SHAPE";
    case ErrorCode::kPlanIo: return "E_PLAN_IO";
    case ErrorCode::kPlanCorrupt: return "E_PLAN_CORRUPT";
    case ErrorCode::kPlanVersion: return "E_PLAN_VERSION";
    case ErrorCode::kBackend: return "E_BACKEND";
    case ErrorCode::kDisposed: return "E_DISPOSED";
    case ErrorCode::kNative: return "E_NATIVE";
    case ErrorCode::kOom: return "E_OOM";
  }
  return "E_NATIVE";
}

class FusedError : public std::runtime_error {
 public:
  FusedError(ErrorCode code, const std::string& message) : std::runtime_error(message), code_(code) {}
  ErrorCode code() const { return code_; }

 private:
  ErrorCode code_;
};

[[noreturn]] inline void fail(ErrorCode code, const std::string& message) { throw FusedError(code, message); }

}  // namespace fusedrt
