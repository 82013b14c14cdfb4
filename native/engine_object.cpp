#include "engine_object.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "cpu/topk.h"
#include "cpu_backend.h"
#ifdef FUSEDRT_WITH_CUDA
#include "cuda_backend.h"
#endif
#include "napi_errors.h"
#include "napi_values.h"
#include "run_result_object.h"

namespace fusedrt {

namespace {

constexpr int64_t kDefaultMaxTokens = 8192;
constexpr int64_t kDefaultMaxSequences = 64;
constexpr int64_t kDefaultMaxSelectedRows = 256;
constexpr int kMaxThreads = 1024;
// The CPU's kernels use its whole pool, so a second context adds memory and
// little else; on a GPU a second context keeps the device busy while the host
// stages the next batch and reads the last one out (docs/runtime.md).
constexpr int kDefaultCpuContexts = 1;
constexpr int kDefaultCudaContexts = 2;
// Spin wait reads a run's outputs out on the JS thread: up to 1 MB of copies
// (about 0.1 ms; every top-k result, and full logits of a few rows; outputs
// that landed in their results cost none). Larger ones go to a worker, which
// keeps the event loop free of long copies.
constexpr size_t kSpinMaxOutputBytes = 1u << 20;

// What loadEngine() was asked for, backend by backend.
struct BackendChoice {
  int cuda_device = -1;  // -1: the CPU backend
  int threads = 0;
  bool background_threads = true;
  bool cuda_graphs = true;
};

std::unique_ptr<Backend> make_backend(const BackendChoice& choice) {
  const int cuda_device = choice.cuda_device;
  if (cuda_device < 0) return std::make_unique<CpuBackend>(choice.threads, choice.background_threads);
#ifdef FUSEDRT_WITH_CUDA
  return std::make_unique<CudaBackend>(cuda_device, choice.cuda_graphs);
#else
  fail(ErrorCode::kBackend, "device cuda:" + std::to_string(cuda_device) +
                                " is not available: this build has only the CPU backend");
#endif
}

// Option cpuPriority: "background" (the default) or "normal"; true for background.
bool background_threads_option(const Napi::Object& options) {
  const Napi::Value value = options.Get("cpuPriority");
  if (value.IsUndefined()) return true;
  const std::string priority = value.IsString() ? value.As<Napi::String>().Utf8Value() : "";
  if (priority != "background" && priority != "normal") {
    fail(ErrorCode::kInput, "option cpuPriority must be \"background\" or \"normal\"");
  }
  return priority == "background";
}

using Clock = std::chrono::steady_clock;

double us_between(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double, std::micro>(to - from).count();
}

// Per env (napi instance data). setImmediate is taken when the addon loads,
// so that fake timers installed later (tests) cannot stall spin waits.
struct AddonData {
  Napi::FunctionReference engine_constructor;
  Napi::FunctionReference set_immediate;  // empty where the env has none
};

AddonData* addon_data(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

}  // namespace

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string path, std::vector<uint8_t> bytes, BackendChoice backend, bool spin_wait,
             RuntimeOptions options)
      : PromiseWorker(env, "fusedrt:loadEngine"),
        path_(std::move(path)),
        bytes_(std::move(bytes)),
        backend_(backend),
        spin_wait_(spin_wait),
        options_(options) {}

 protected:
  void execute() override {
    std::unique_ptr<PlanSource> source = path_.empty() ? plan_from_bytes(std::move(bytes_)) : open_plan_file(path_);
    runtime_ = Runtime::load(*source, make_backend(backend_), options_);
  }

  Napi::Value result(Napi::Env env) override {
    return EngineObject::NewInstance(env, std::move(runtime_), spin_wait_);
  }

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  BackendChoice backend_;
  bool spin_wait_;
  RuntimeOptions options_;
  std::shared_ptr<Runtime> runtime_;
};

// A run on a libuv worker: the whole run there, or, when the JS thread has
// already issued it (Runtime::try_issue), only the wait for the device and
// the read-out, so the hop to the worker overlaps the device's work.
class RunWorker : public PromiseWorker {
 public:
  RunWorker(EngineObject* engine, RunRequest request, std::unique_ptr<Runtime::InFlight> issued)
      : PromiseWorker(engine->Env(), "fusedrt:run"),
        engine_(engine),
        engine_ref_(Napi::Persistent(engine->Value())),
        runtime_(engine->runtime_),
        request_(std::move(request)),
        issued_(std::move(issued)) {}

  // The JS thread's time in run() before this worker is queued (reading the
  // batch and, on the fast path, issuing the run).
  void set_call_time(Clock::time_point entered) { js_call_us_ = us_between(entered, Clock::now()); }

 protected:
  void execute() override {
    started_ = Clock::now();
    result_ = issued_ ? runtime_->finish(*issued_) : runtime_->run(request_);
    finished_ = Clock::now();
  }

  Napi::Value result(Napi::Env env) override {
    HostPhases phases;
    phases.queue_us = us_between(queued_, started_);
    phases.deliver_us = us_between(finished_, Clock::now());
    phases.js_call_us = js_call_us_;
    phases.issued_on_js_thread = issued_ != nullptr;
    return run_result_object(env, result_, phases);
  }

  void finished() override {
    // A run that failed after issuing still holds its context: give it back
    // while the runtime surely exists. Then drop our share of the runtime,
    // so a pending dispose really frees the memory.
    issued_.reset();
    runtime_.reset();
    engine_->run_settled();
  }

 private:
  EngineObject* engine_;
  Napi::ObjectReference engine_ref_;  // keeps engine_ alive while the run is in flight
  std::shared_ptr<Runtime> runtime_;
  RunRequest request_;
  std::unique_ptr<Runtime::InFlight> issued_;
  RunResult result_;
  Clock::time_point queued_ = Clock::now();
  double js_call_us_ = 0;
  Clock::time_point started_;
  Clock::time_point finished_;
};

// A run issued on the JS thread whose completion the JS thread polls for.
struct EngineObject::PolledRun {
  std::unique_ptr<Runtime::InFlight> issued;
  Napi::Promise::Deferred deferred;
  double js_call_us;  // in run()
};

void EngineObject::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function constructor = DefineClass(env, "NativeEngine",
                                           {
                                               InstanceMethod<&EngineObject::Info>("info"),
                                               InstanceMethod<&EngineObject::Run>("run"),
                                               InstanceMethod<&EngineObject::Dispose>("dispose"),
                                           });
  auto* data = new AddonData();
  data->engine_constructor = Napi::Persistent(constructor);
  const Napi::Value set_immediate = env.Global().Get("setImmediate");
  if (set_immediate.IsFunction()) data->set_immediate = Napi::Persistent(set_immediate.As<Napi::Function>());
  env.SetInstanceData(data);
  exports.Set("loadEngine", Napi::Function::New<&EngineObject::LoadEngine>(env, "loadEngine"));
}

EngineObject::EngineObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineObject>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    Napi::Error error = Napi::Error::New(info.Env(), "NativeEngine cannot be constructed directly; use loadEngine()");
    error.Set("code", Napi::String::New(info.Env(), "E_INPUT"));
    throw error;
  }
  const auto& [runtime, spin_wait] = *info[0].As<Napi::External<std::pair<std::shared_ptr<Runtime>, bool>>>().Data();
  runtime_ = runtime;
  spin_wait_ = spin_wait;
  external_bytes_ = runtime_->weight_bytes() + runtime_->workspace_bytes();
  Napi::MemoryManagement::AdjustExternalMemory(info.Env(), external_bytes_);
}

EngineObject::~EngineObject() {
  // Collected without dispose(): no run can be in flight (each holds a
  // reference on this object), so the runtime can go now.
  try {
    release_runtime();
  } catch (...) {
  }
}

Napi::Object EngineObject::NewInstance(Napi::Env env, std::shared_ptr<Runtime> runtime, bool spin_wait) {
  std::pair<std::shared_ptr<Runtime>, bool> setup{std::move(runtime), spin_wait};
  auto external = Napi::External<std::pair<std::shared_ptr<Runtime>, bool>>::New(env, &setup);
  return addon_data(env)->engine_constructor.New({external});
}

Napi::Value EngineObject::LoadEngine(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    std::string path;
    std::vector<uint8_t> bytes;
    if (info.Length() >= 1 && info[0].IsString()) {
      path = info[0].As<Napi::String>().Utf8Value();
      if (path.empty()) fail(ErrorCode::kInput, "plan path is empty");
    } else if (info.Length() >= 1 && info[0].IsTypedArray() &&
               info[0].As<Napi::TypedArray>().TypedArrayType() == napi_uint8_array) {
      // Copied: the caller may change or transfer its buffer while we load.
      Napi::Uint8Array array = info[0].As<Napi::Uint8Array>();
      bytes.assign(array.Data(), array.Data() + array.ByteLength());
    } else {
      fail(ErrorCode::kInput, "plan must be a file path or a Uint8Array of plan bytes");
    }
    Napi::Object options = Napi::Object::New(env);
    if (info.Length() >= 2 && !info[1].IsUndefined()) {
      if (!info[1].IsObject()) fail(ErrorCode::kInput, "options must be an object");
      options = info[1].As<Napi::Object>();
    }
    Napi::Value device = options.Get("device");
    BackendChoice backend;
    if (!device.IsUndefined()) {
      if (!device.IsString()) fail(ErrorCode::kInput, "option device must be a string");
      backend.cuda_device = device_ordinal(device.As<Napi::String>().Utf8Value());
    }
    backend.threads = static_cast<int>(integer_option(options, "threads", 0, 0, kMaxThreads));
    backend.background_threads = background_threads_option(options);
    backend.cuda_graphs = boolean_option(options, "cudaGraphs", true);
    const bool spin_wait = boolean_option(options, "spinWait", true);
    RuntimeOptions runtime_options;
    runtime_options.max_tokens = integer_option(options, "maxTokens", kDefaultMaxTokens, 1, INT32_MAX);
    runtime_options.max_sequences = integer_option(options, "maxSequences", kDefaultMaxSequences, 1, INT32_MAX - 1);
    runtime_options.max_selected_rows = std::min(
        integer_option(options, "maxSelectedRows", kDefaultMaxSelectedRows, 1, INT32_MAX), runtime_options.max_tokens);
    runtime_options.contexts = static_cast<int>(integer_option(
        options, "contexts", backend.cuda_device < 0 ? kDefaultCpuContexts : kDefaultCudaContexts, 1, kMaxContexts));
    auto* worker = new LoadWorker(env, std::move(path), std::move(bytes), backend, spin_wait, runtime_options);
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  } catch (...) {
    return rejected_promise(env);
  }
}

Napi::Value EngineObject::Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    if (disposed_ || !runtime_) fail(ErrorCode::kDisposed, "the engine was disposed");
    Napi::Object result = Napi::Object::New(env);
    result.Set("backend", Napi::String::New(env, runtime_->backend().name()));
    result.Set("threads", Napi::Number::New(env, runtime_->backend().threads()));
    result.Set("contexts", Napi::Number::New(env, runtime_->contexts()));
    result.Set("contextsOverlap", Napi::Boolean::New(env, runtime_->backend().contexts_overlap()));
    if (const std::optional<DeviceInfo> device = runtime_->backend().device_info()) {
      Napi::Object d = Napi::Object::New(env);
      d.Set("name", Napi::String::New(env, device->name));
      d.Set("ordinal", Napi::Number::New(env, device->ordinal));
      d.Set("engines", Napi::Number::New(env, device->engines));
      d.Set("multiprocessors", Napi::Number::New(env, device->multiprocessors));
      d.Set("memoryBytes", Napi::Number::New(env, static_cast<double>(device->memory_bytes)));
      result.Set("device", d);
    }
    result.Set("maxTokens", Napi::Number::New(env, static_cast<double>(runtime_->options().max_tokens)));
    result.Set("maxSequences", Napi::Number::New(env, static_cast<double>(runtime_->options().max_sequences)));
    result.Set("maxSelectedRows", Napi::Number::New(env, static_cast<double>(runtime_->options().max_selected_rows)));
    result.Set("weightBytes", Napi::Number::New(env, static_cast<double>(runtime_->weight_bytes())));
    result.Set("workspaceBytes", Napi::Number::New(env, static_cast<double>(runtime_->workspace_bytes())));
    result.Set("headerJson", Napi::String::New(env, runtime_->plan().header_json));
    return result;
  } catch (...) {
    Napi::Value error = make_js_error(env, describe_current_exception());
    throw Napi::Error(env, error);
  }
}

Napi::Value EngineObject::Run(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Clock::time_point entered = Clock::now();
  try {
    if (disposed_) fail(ErrorCode::kDisposed, "the engine was disposed");
    if (info.Length() < 1 || !info[0].IsObject()) fail(ErrorCode::kInput, "run() needs a batch object");
    Napi::Object batch = info[0].As<Napi::Object>();
    RunRequest request;
    bool present = false;
    request.input_ids = int32_array(batch, "inputIds", true, &present);
    std::vector<int32_t> types = int32_array(batch, "tokenTypeIds", false, &present);
    if (present) request.token_type_ids = std::move(types);
    request.cu_seqlens = int32_array(batch, "cuSeqlens", true, &present);
    request.selected_rows = int32_array(batch, "selectedRows", false, &present);
    request.outputs = string_list(batch, "outputs");
    request.top_k = static_cast<int>(integer_option(batch, "topK", 0, 1, cpu::kMaxTopK));
    // Reading the batch ran JS (getters, proxies) that may have disposed us.
    if (disposed_) fail(ErrorCode::kDisposed, "the engine was disposed");
    std::unique_ptr<Runtime::InFlight> issued = runtime_->try_issue(request);
    if (issued && spin_wait_ && issued->output_bytes() <= kSpinMaxOutputBytes &&
        !addon_data(env)->set_immediate.IsEmpty()) {
      auto run = std::make_unique<PolledRun>(PolledRun{std::move(issued), Napi::Promise::Deferred::New(env), 0});
      Napi::Promise promise = run->deferred.Promise();
      schedule_poll(env);
      run->js_call_us = us_between(entered, Clock::now());
      polled_.push_back(std::move(run));
      ++runs_in_flight_;
      return promise;
    }
    auto* worker = new RunWorker(this, std::move(request), std::move(issued));
    Napi::Promise promise = worker->promise();
    worker->set_call_time(entered);
    worker->Queue();
    ++runs_in_flight_;
    return promise;
  } catch (...) {
    return rejected_promise(env);
  }
}

Napi::Value EngineObject::Dispose(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  disposed_ = true;
  if (runs_in_flight_ == 0) {
    release_runtime();
    deferred.Resolve(env.Undefined());
  } else {
    dispose_waiters_.push_back(deferred);
  }
  return deferred.Promise();
}

void EngineObject::run_settled() {
  --runs_in_flight_;
  if (runs_in_flight_ > 0 || !disposed_) return;
  release_runtime();
  std::vector<Napi::Promise::Deferred> waiters;
  waiters.swap(dispose_waiters_);
  for (auto& waiter : waiters) waiter.Resolve(Env().Undefined());
}

void EngineObject::poll_callback(const Napi::CallbackInfo& info) {
  auto* engine = static_cast<EngineObject*>(info.Data());
  try {
    engine->poll_runs(info.Env());
  } catch (...) {
    // The next turn could not be queued (the environment is shutting down):
    // nothing may be thrown at the event loop, so workers wait for the runs
    // left, as without spin wait.
    engine->hand_polled_to_workers();
  }
}

void EngineObject::hand_polled_to_workers() {
  std::vector<std::unique_ptr<PolledRun>> runs;
  runs.swap(polled_);
  self_.Reset();
  for (std::unique_ptr<PolledRun>& run : runs) {
    try {
      // The worker settles the run (run_settled() included); its promise
      // settles ours.
      auto* worker = new RunWorker(this, RunRequest{}, std::move(run->issued));
      run->deferred.Resolve(worker->promise());
      worker->Queue();
    } catch (...) {
      // Nothing left to settle it with; the InFlight, if still here, waits
      // for the device as it goes.
    }
  }
}

void EngineObject::schedule_poll(Napi::Env env) {
  if (poll_scheduled_) return;
  if (poll_function_.IsEmpty()) {
    poll_function_ = Napi::Persistent(Napi::Function::New(env, &EngineObject::poll_callback, "fusedrtPoll", this));
  }
  addon_data(env)->set_immediate.Call({poll_function_.Value()});
  poll_scheduled_ = true;
  if (self_.IsEmpty()) self_ = Napi::Persistent(Value());
  last_poll_ = Clock::now();
}

// One turn of the event loop's check phase: settles the runs that have
// finished (their promise reactions run when this callback returns), then
// queues the next turn while any is left. Other callbacks run between turns,
// so the loop is never held for longer than a read-out.
void EngineObject::poll_runs(Napi::Env env) {
  poll_scheduled_ = false;
  for (size_t i = 0; i < polled_.size();) {
    bool ready = true;
    try {
      ready = runtime_->ready(*polled_[i]->issued);
    } catch (...) {
      // finish() meets the same error and rejects the run with it.
    }
    if (!ready) {
      ++i;
      continue;
    }
    std::unique_ptr<PolledRun> run = std::move(polled_[i]);
    polled_.erase(polled_.begin() + static_cast<std::ptrdiff_t>(i));
    settle_polled(env, *run);
  }
  if (polled_.empty()) {
    self_.Reset();
  } else {
    schedule_poll(env);
  }
}

void EngineObject::settle_polled(Napi::Env env, PolledRun& run) {
  try {
    HostPhases phases;
    // At most this late: the run was still going at the previous turn.
    phases.deliver_us = us_between(last_poll_, Clock::now());
    phases.js_call_us = run.js_call_us;
    phases.issued_on_js_thread = true;
    phases.polled = true;
    RunResult result = runtime_->finish(*run.issued);
    run.deferred.Resolve(run_result_object(env, result, phases));
  } catch (...) {
    run.deferred.Reject(make_js_error(env, describe_current_exception()));
  }
  run.issued.reset();  // gives the context back, if finish() did not
  run_settled();
}

void EngineObject::release_runtime() {
  if (!runtime_) return;
  runtime_.reset();
  Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
  external_bytes_ = 0;
}

}  // namespace fusedrt
