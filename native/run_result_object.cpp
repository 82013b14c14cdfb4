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

// The run's host timing, packed: building an object of twelve named
// properties took a third of a small result's JS-thread time. runTiming()
// (src/engine/run-result.ts) unpacks it; the order is its TIMING_FIELDS.
enum TimingField {
  kQueueUs, kValidateUs, kContextWaitUs, kStageUs, kLaunchUs, kDeviceWaitUs, kCollectUs, kDeliverUs,
  kLandedOutputs, kIssuedOnJsThread, kSpinWait, kJsThreadUs, kTimingFields
};

Napi::Float64Array packed_timing(Napi::Env env, const RunTiming& t, const HostPhases& phases) {
  Napi::Float64Array timing = Napi::Float64Array::New(env, kTimingFields);
  double* v = timing.Data();
  v[kQueueUs] = phases.queue_us;
  v[kValidateUs] = t.validate_us;
  v[kContextWaitUs] = t.context_wait_us;
  v[kStageUs] = t.stage_us;
  v[kLaunchUs] = t.launch_us;
  v[kDeviceWaitUs] = t.device_wait_us;
  v[kCollectUs] = t.collect_us;
  v[kDeliverUs] = phases.deliver_us;  // issued on the JS thread: queueUs then overlaps deviceWaitUs
  v[kLandedOutputs] = static_cast<double>(t.landed_outputs);
  v[kIssuedOnJsThread] = phases.issued_on_js_thread ? 1 : 0;
  v[kSpinWait] = phases.polled ? 1 : 0;
  v[kJsThreadUs] = 0;  // set last, when the object is built
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
  Napi::Float64Array timing = packed_timing(env, result.timing, phases);
  // Not enumerable: iterating a result visits its outputs only.
  object.DefineProperty(Napi::PropertyDescriptor::Value("timing", timing, napi_default));
  if (result.gpu_ms >= 0) {
    const Napi::Number gpu_ms = Napi::Number::New(env, result.gpu_ms);
    object.DefineProperty(Napi::PropertyDescriptor::Value("gpuMs", gpu_ms, napi_default));
  }
  // The JS thread's share of the run: run(), the read-out when it polled,
  // and building this object.
  const double building_us =
      std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - building).count();
  const double polled_us = phases.polled ? result.timing.collect_us : 0;
  timing.Data()[kJsThreadUs] = phases.js_call_us + polled_us + building_us;
  return object;
}

}  // namespace fusedrt
