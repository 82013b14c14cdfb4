// NativeEngine: the JS object that owns one loaded Runtime.
//
// loadEngine() reads and validates the plan in an AsyncWorker and resolves
// with a NativeEngine; run() executes in an AsyncWorker that holds a
// reference on the engine while it runs, or, with spinWait, issues a
// replayed run on the JS thread and settles it from setImmediate callbacks
// that poll for its completion (docs/runtime.md, "Spin wait"); dispose()
// waits for runs in flight (it resolves when the last one settles), then
// frees the runtime. The engine's bytes are reported to V8 as external
// memory while it is alive.
#pragma once

#include <napi.h>

#include <chrono>
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
  static Napi::Object NewInstance(Napi::Env env, std::shared_ptr<Runtime> runtime, bool spin_wait);

  Napi::Value Info(const Napi::CallbackInfo& info);
  Napi::Value Run(const Napi::CallbackInfo& info);
  Napi::Value Dispose(const Napi::CallbackInfo& info);

  // Called on the JS thread when a run settles.
  void run_settled();
  void release_runtime();

  struct PolledRun;
  static void poll_callback(const Napi::CallbackInfo& info);
  void schedule_poll(Napi::Env env);
  void poll_runs(Napi::Env env);
  void settle_polled(Napi::Env env, PolledRun& run);
  void hand_polled_to_workers();

  std::shared_ptr<Runtime> runtime_;
  bool spin_wait_ = false;
  // Spin wait: runs in flight, oldest first; while there are any, a
  // setImmediate callback is queued and self_ keeps this object alive.
  std::vector<std::unique_ptr<PolledRun>> polled_;
  bool poll_scheduled_ = false;
  std::chrono::steady_clock::time_point last_poll_;
  Napi::ObjectReference self_;
  Napi::FunctionReference poll_function_;
  int64_t external_bytes_ = 0;
  int runs_in_flight_ = 0;
  bool disposed_ = false;
  std::vector<Napi::Promise::Deferred> dispose_waiters_;

  friend class RunWorker;
  friend class LoadWorker;
};

}  // namespace fusedrt
