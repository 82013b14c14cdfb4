#include "run_result_object.h"

#include <algorithm>
#include <chrono>
#include <memory>
#include <utility>
#include <vector>

namespace fusedrt {

namespace {

// A Float32Array over `values` itself: the one copy out of staging is the
// last; the array releases the buffer (to the pool, output_buffer.h) when it
// is collected. Saves a second copy on the JS thread (3.9 MB for 32 rows of
// BERT logits).
Napi::Float32Array float_array_taking(Napi::Env env, OutputBuffer&& values) {
  if (values.empty()) return Napi::Float32Array::New(env, 0);
  auto owned = std::make_unique<OutputBuffer>(std::move(values));
  const size_t count = owned->size();
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(
      env, owned->data(), count * sizeof(float),
      [](Napi::Env, void*, OutputBuffer* released) { delete released; }, owned.get());
  owned.release();  // the buffer's finalizer owns it now
  return Napi::Float32Array::New(env, count, buffer, 0);
}

template <class Array, class T>
Array typed_array_of(Napi::Env env, const std::vector<T>& values) {
  Array array = Array::New(env, values.size());
  std::copy(values.begin(), values.end(), array.Data());
  return array;
}

Napi::Object timing_object(Napi::Env env, const RunTiming& t, const HostPhases& phases) {
  Napi::Object timing = Napi::Object::New(env);
  const std::pair<const char*, double> values[] = {
      {"queueUs", phases.queue_us},         {"validateUs", t.validate_us},
      {"contextWaitUs", t.context_wait_us}, {"stageUs", t.stage_us},
      {"launchUs", t.launch_us},            {"deviceWaitUs", t.device_wait_us},
      {"collectUs", t.collect_us},          {"deliverUs", phases.deliver_us},
  };
  for (const auto& [name, value] : values) timing.Set(name, Napi::Number::New(env, value));
  // Issued on the JS thread: queueUs then overlaps deviceWaitUs.
  timing.Set("landedOutputs", Napi::Number::New(env, t.landed_outputs));
  timing.Set("issuedOnJsThread", Napi::Boolean::New(env, phases.issued_on_js_thread));
  timing.Set("spinWait", Napi::Boolean::New(env, phases.polled));
  return timing;
}

}  // namespace

Napi::Object run_result_object(Napi::Env env, RunResult& result, const HostPhases& phases) {
  const auto building = std::chrono::steady_clock::now();
  Napi::Object object = Napi::Object::New(env);
  for (RunOutput& out : result.outputs) {
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
    object.Set(out.name, tensor);
  }
  Napi::Object timing = timing_object(env, result.timing, phases);
  // The JS thread's share of the run: run(), the read-out when it polled,
  // and building this object.
  const double building_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - building).count();
  const double polled_us = phases.polled ? result.timing.collect_us : 0;
  timing.Set("jsThreadUs", Napi::Number::New(env, phases.js_call_us + polled_us + building_us));
  // Not enumerable: iterating a result visits its outputs only.
  object.DefineProperty(Napi::PropertyDescriptor::Value("timing", timing, napi_default));
  if (result.gpu_ms >= 0) {
    const Napi::Number gpu_ms = Napi::Number::New(env, result.gpu_ms);
    object.DefineProperty(Napi::PropertyDescriptor::Value("gpuMs", gpu_ms, napi_default));
  }
  return object;
}

}  // namespace fusedrt
