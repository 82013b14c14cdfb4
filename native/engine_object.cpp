#include "engine_object.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <memory>
#include <optional>
#include <string>

#include "cpu/topk.h"
#include "cpu_backend.h"
#ifdef FUSEDRT_WITH_CUDA
#include "cuda_backend.h"
#endif
#include "napi_errors.h"

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

// A whole number option, or its default when absent.
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

// "cpu" -> -1, "cuda" -> 0, "cuda:N" -> N; anything else is rejected.
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

// A boolean option, or its default when absent.
bool boolean_option(const Napi::Object& options, const char* key, bool fallback) {
  Napi::Value value = options.Get(key);
  if (value.IsUndefined()) return fallback;
  if (!value.IsBoolean()) fail(ErrorCode::kInput, std::string("option ") + key + " must be a boolean");
  return value.As<Napi::Boolean>().Value();
}

std::unique_ptr<Backend> make_backend(int cuda_device, int threads, bool cuda_graphs) {
  if (cuda_device < 0) return std::make_unique<CpuBackend>(threads);
#ifdef FUSEDRT_WITH_CUDA
  return std::make_unique<CudaBackend>(cuda_device, cuda_graphs);
#else
  (void)cuda_graphs;
  fail(ErrorCode::kBackend, "device cuda:" + std::to_string(cuda_device) +
                                " is not available: this build has only the CPU backend");
#endif
}

// A Float32Array over `values` itself: the worker's one copy out of staging
// is the last; the array frees the vector when it is collected. Saves a
// second copy on the JS thread (3.9 MB for 32 rows of BERT logits).
Napi::Float32Array float_array_taking(Napi::Env env, std::vector<float>&& values) {
  if (values.empty()) return Napi::Float32Array::New(env, 0);
  auto owned = std::make_unique<std::vector<float>>(std::move(values));
  const size_t count = owned->size();
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
      env, owned->data(), count * sizeof(float),
      [](Napi::Env, void*, std::vector<float>* vector) { delete vector; }, owned.get());
  owned.release();  // the buffer's finalizer owns it now
  return Napi::Float32Array::New(env, count, buffer, 0);
}

template <class Array, class T>
Array typed_array_of(Napi::Env env, const std::vector<T>& values) {
  Array array = Array::New(env, values.size());
  std::copy(values.begin(), values.end(), array.Data());
  return array;
}

using Clock = std::chrono::steady_clock;

Napi::FunctionReference* engine_constructor(Napi::Env env) { return env.GetInstanceData<Napi::FunctionReference>(); }

}  // namespace

class LoadWorker : public PromiseWorker {
 public:
  LoadWorker(Napi::Env env, std::string path, std::vector<uint8_t> bytes, int cuda_device, int threads,
             bool cuda_graphs, RuntimeOptions options)
      : PromiseWorker(env, "fusedrt:loadEngine"),
        path_(std::move(path)),
        bytes_(std::move(bytes)),
        cuda_device_(cuda_device),
        threads_(threads),
        cuda_graphs_(cuda_graphs),
        options_(options) {}

 protected:
  void execute() override {
    std::unique_ptr<PlanSource> source = path_.empty() ? plan_from_bytes(std::move(bytes_)) : open_plan_file(path_);
    runtime_ = Runtime::load(*source, make_backend(cuda_device_, threads_, cuda_graphs_), options_);
  }

  Napi::Value result(Napi::Env env) override { return EngineObject::NewInstance(env, std::move(runtime_)); }

 private:
  std::string path_;
  std::vector<uint8_t> bytes_;
  int cuda_device_;  // -1: the CPU backend
  int threads_;
  bool cuda_graphs_;
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
  void set_call_time(Clock::time_point entered) {
    js_call_us_ = std::chrono::duration<double, std::micro>(Clock::now() - entered).count();
  }

 protected:
  void execute() override {
    started_ = Clock::now();
    result_ = issued_ ? runtime_->finish(*issued_) : runtime_->run(request_);
    finished_ = Clock::now();
  }

  Napi::Value result(Napi::Env env) override {
    const Clock::time_point building = Clock::now();
    Napi::Object result = Napi::Object::New(env);
    for (RunOutput& out : result_.outputs) {
      Napi::Object tensor = Napi::Object::New(env);
      if (out.k > 0) {
        tensor.Set("topIds", typed_array_of<Napi::Int32Array>(env, out.top_ids));
        tensor.Set("topScores", typed_array_of<Napi::Float32Array>(env, out.top_scores));
        tensor.Set("rows", Napi::Number::New(env, static_cast<double>(out.rows)));
        tensor.Set("k", Napi::Number::New(env, out.k));
      } else {
        tensor.Set("data", float_array_taking(env, std::move(out.data)));
        tensor.Set("rows", Napi::Number::New(env, static_cast<double>(out.rows)));
        tensor.Set("cols", Napi::Number::New(env, static_cast<double>(out.cols)));
      }
      result.Set(out.name, tensor);
    }
    Napi::Object timing_object = timing(env);
    // The JS thread's share of the run: run() and building this result.
    timing_object.Set("jsThreadUs", Napi::Number::New(env, js_call_us_ + std::chrono::duration<double, std::micro>(
                                                                          Clock::now() - building).count()));
    result.DefineProperty(Napi::PropertyDescriptor::Value("timing", timing_object, napi_default));
    if (result_.gpu_ms >= 0) {
      // Not enumerable: iterating a result visits its outputs only.
      result.DefineProperty(Napi::PropertyDescriptor::Value("gpuMs", Napi::Number::New(env, result_.gpu_ms), napi_default));
    }
    return result;
  }

  // The run's host time by phase (runtime.h, RunTiming), with the two hops
  // between the JS thread and the libuv worker around it.
  Napi::Object timing(Napi::Env env) const {
    const auto us = [](Clock::time_point from, Clock::time_point to) {
      return std::chrono::duration<double, std::micro>(to - from).count();
    };
    const RunTiming& t = result_.timing;
    Napi::Object timing = Napi::Object::New(env);
    const std::pair<const char*, double> phases[] = {
        {"queueUs", us(queued_, started_)},     {"validateUs", t.validate_us},
        {"contextWaitUs", t.context_wait_us},   {"stageUs", t.stage_us},
        {"launchUs", t.launch_us},              {"deviceWaitUs", t.device_wait_us},
        {"collectUs", t.collect_us},            {"deliverUs", us(finished_, Clock::now())},
    };
    for (const auto& [name, value] : phases) timing.Set(name, Napi::Number::New(env, value));
    // Issued on the JS thread: queueUs then overlaps deviceWaitUs.
    timing.Set("issuedOnJsThread", Napi::Boolean::New(env, issued_ != nullptr));
    return timing;
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

void EngineObject::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function constructor = DefineClass(env, "NativeEngine",
                                           {
                                               InstanceMethod<&EngineObject::Info>("info"),
                                               InstanceMethod<&EngineObject::Run>("run"),
                                               InstanceMethod<&EngineObject::Dispose>("dispose"),
                                           });
  env.SetInstanceData(new Napi::FunctionReference(Napi::Persistent(constructor)));
  exports.Set("loadEngine", Napi::Function::New<&EngineObject::LoadEngine>(env, "loadEngine"));
}

EngineObject::EngineObject(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineObject>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    Napi::Error error = Napi::Error::New(info.Env(), "NativeEngine cannot be constructed directly; use loadEngine()");
    error.Set("code", Napi::String::New(info.Env(), "E_INPUT"));
    throw error;
  }
  runtime_ = *info[0].As<Napi::External<std::shared_ptr<Runtime>>>().Data();
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

Napi::Object EngineObject::NewInstance(Napi::Env env, std::shared_ptr<Runtime> runtime) {
  auto external = Napi::External<std::shared_ptr<Runtime>>::New(env, &runtime);
  return engine_constructor(env)->New({external});
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
    int cuda_device = -1;
    if (!device.IsUndefined()) {
      if (!device.IsString()) fail(ErrorCode::kInput, "option device must be a string");
      cuda_device = device_ordinal(device.As<Napi::String>().Utf8Value());
    }
    RuntimeOptions runtime_options;
    int threads = static_cast<int>(integer_option(options, "threads", 0, 0, kMaxThreads));
    const bool cuda_graphs = boolean_option(options, "cudaGraphs", true);
    runtime_options.max_tokens = integer_option(options, "maxTokens", kDefaultMaxTokens, 1, INT32_MAX);
    runtime_options.max_sequences = integer_option(options, "maxSequences", kDefaultMaxSequences, 1, INT32_MAX - 1);
    runtime_options.max_selected_rows = std::min(
        integer_option(options, "maxSelectedRows", kDefaultMaxSelectedRows, 1, INT32_MAX), runtime_options.max_tokens);
    runtime_options.contexts = static_cast<int>(integer_option(
        options, "contexts", cuda_device < 0 ? kDefaultCpuContexts : kDefaultCudaContexts, 1, kMaxContexts));
    auto* worker = new LoadWorker(env, std::move(path), std::move(bytes), cuda_device, threads, cuda_graphs,
                                  runtime_options);
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

void EngineObject::release_runtime() {
  if (!runtime_) return;
  runtime_.reset();
  Napi::MemoryManagement::AdjustExternalMemory(Env(), -external_bytes_);
  external_bytes_ = 0;
}

}  // namespace fusedrt
