// Entry point of build/Release/fusedrt.node: process-wide functions and the
// registration of the N-API classes (one per file).
#include <napi.h>

#include "backend.h"
#include "cpu/ops.h"
#include "engine_object.h"
#include "napi_errors.h"

namespace fusedrt {
namespace {

// Backends compiled into this build, in order of preference.
Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Array names = Napi::Array::New(info.Env(), 1);
  names.Set(uint32_t{0}, Napi::String::New(info.Env(), "cpu"));
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
