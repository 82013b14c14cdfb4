// NativeEngine: the JS object that owns one loaded Runtime.
//
// loadEngine() reads and validates the plan in an AsyncWorker and resolves
// with a NativeEngine; run() executes in an AsyncWorker that holds a
// reference on the engine while it runs; dispose() waits for runs in flight
// (it resolves when the last one settles), then frees the runtime. The
// engine's bytes are reported to V8 as external memory while it is alive.
#pragma once

#include <napi.h>

#include <memory>
#include <vector>

#include "runtime.h"

namespace fusedrt {

class EngineObject : public Napi::ObjectWrap<EngineObject> {
 public:
  // Defines the class and exports loadEngine(plan, options).
  static void Init(Napi::Env env, Napi::Object exports);

  // JS cannot construct engines: the constructor needs the runtime that
  // loadEngine() passes as an External.
  explicit EngineObject(const Napi::CallbackInfo& info);
  ~EngineObject() override;

 private:
  static Napi::Value LoadEngine(const Napi::CallbackInfo& info);
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<Runtime> runtime);

  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  // Called on the JS thread when a run settles.
  void run_settled();
  void release_runtime();

  std::shared_ptr<Runtime> runtime_;
  int64_t external_bytes_ = 0;
  int runs_in_flight_ = 0;
  bool disposed_ = false;
  std::vector<Napi::Promise::Deferred> dispose_waiters_;

  friend class RunWorker;
  friend class LoadWorker;
};

}  // namespace fusedrt
