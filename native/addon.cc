// Entry point of build/Release/fusedrt.node: process-wide functions and the
// registration of the N-API classes (one per file).
#include <napi.h>

#include "backend.h"
#include "cpu/ops.h"
#ifdef FUSEDRT_WITH_CUDA
#include "cuda_backend.h"
#endif
#include "engine_object.h"
#include "napi_errors.h"

namespace fusedrt {
namespace {

// Backends usable now, in order of preference: "cuda" when this build has
// the CUDA backend and the machine has a CUDA device, then "cpu".
Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Array names = Napi::Array::New(info.Env());
#ifdef FUSEDRT_WITH_CUDA
  if (cuda_device_count() > 0) names.Set(names.Length(), Napi::String::New(info.Env(), "cuda"));
#endif
  names.Set(names.Length(), Napi::String::New(info.Env(), "cpu"));
  return names;
}

Napi::Value GemmImplementation(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cpu::gemm_implementation());
}

Napi::Value NativeMemoryBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(native_memory_bytes()));
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backends", Napi::Function::New<Backends>(env, "backends"));
  exports.Set("gemmImplementation", Napi::Function::New<GemmImplementation>(env, "gemmImplementation"));
  exports.Set("nativeMemoryBytes", Napi::Function::New<NativeMemoryBytes>(env, "nativeMemoryBytes"));
  EngineObject::Init(env, exports);
  return exports;
}

}  // namespace
}  // namespace fusedrt

static Napi::Object InitFusedrt(Napi::Env env, Napi::Object exports) { return fusedrt::Init(env, exports); }

NODE_API_MODULE(fusedrt, InitFusedrt)
