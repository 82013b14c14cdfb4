// Entry point of build/Release/fusedrt.node: process-wide functions and the
// registration of the N-API classes (one per file).
#include <napi.h>

#include <string>

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
// the CUDA backend and the machine has a GPU its kernels run on, then "cpu".
Napi::Value Backends(const Napi::CallbackInfo& info) {
  Napi::Array names = Napi::Array::New(info.Env());
#ifdef FUSEDRT_WITH_CUDA
  for (const CudaDeviceSummary& device : cuda_devices()) {
    if (cuda_unsupported_reason(device).empty()) {
      names.Set(names.Length(), Napi::String::New(info.Env(), "cuda"));
      break;
    }
  }
#endif
  names.Set(names.Length(), Napi::String::New(info.Env(), "cpu"));
  return names;
}

// The CUDA devices this process sees, each as { ordinal, name,
// computeCapability ("8.6"), unsupported (why the CUDA backend cannot run
// there, "" when it can) }; empty without the CUDA backend, a driver or a GPU.
Napi::Value CudaDevices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array list = Napi::Array::New(env);
#ifdef FUSEDRT_WITH_CUDA
  for (const CudaDeviceSummary& device : cuda_devices()) {
    Napi::Object entry = Napi::Object::New(env);
    entry.Set("ordinal", device.ordinal);
    entry.Set("name", device.name);
    entry.Set("computeCapability",
              std::to_string(device.compute_capability / 10) + "." + std::to_string(device.compute_capability % 10));
    entry.Set("unsupported", cuda_unsupported_reason(device));
    list.Set(list.Length(), entry);
  }
#endif
  return list;
}

Napi::Value GemmImplementation(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cpu::gemm_implementation());
}

Napi::Value NativeMemoryBytes(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(native_memory_bytes()));
}

// Why CUDA cannot start although a driver is installed (cuda_backend.h);
// "" when it starts, without a driver or a GPU, and without the CUDA backend.
Napi::Value CudaUnavailable(const Napi::CallbackInfo& info) {
#ifdef FUSEDRT_WITH_CUDA
  return Napi::String::New(info.Env(), cuda_unavailable_reason());
#else
  return Napi::String::New(info.Env(), "");
#endif
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("backends", Napi::Function::New<Backends>(env, "backends"));
  exports.Set("cudaDevices", Napi::Function::New<CudaDevices>(env, "cudaDevices"));
  exports.Set("cudaUnavailable", Napi::Function::New<CudaUnavailable>(env, "cudaUnavailable"));
  exports.Set("gemmImplementation", Napi::Function::New<GemmImplementation>(env, "gemmImplementation"));
  exports.Set("nativeMemoryBytes", Napi::Function::New<NativeMemoryBytes>(env, "nativeMemoryBytes"));
  EngineObject::Init(env, exports);
  return exports;
}

}  // namespace
}  // namespace fusedrt

static Napi::Object InitFusedrt(Napi::Env env, Napi::Object exports) { return fusedrt::Init(env, exports); }

NODE_API_MODULE(fusedrt, InitFusedrt)
