// The JS object a run resolves with: one entry per output ({topIds,
// topScores, rows, k} or {data, rows, cols}) and, not enumerable, gpuMs and
// timing, a Float64Array that runTiming() unpacks (src/engine/run-result.ts).
// Built on the JS thread, for runs a libuv worker finished and for runs the
// JS thread polled (EngineObject).
#pragma once

#include <napi.h>

#include "runtime.h"

namespace fusedrt {

// The host phases outside the runtime (RunTiming has the rest), in
// microseconds.
struct HostPhases {
  double queue_us = 0;    // engine.run() to a libuv worker starting the run; 0 when none did
  double deliver_us = 0;  // the run finished to this object being built
  double js_call_us = 0;  // the JS thread's time in engine.run()
  bool issued_on_js_thread = false;
  bool polled = false;  // finished on the JS thread (spinWait): collectUs was spent there too
};

// Takes the outputs' float data out of result (no copy).
Napi::Object run_result_object(Napi::Env env, RunResult& result, const HostPhases& phases);

}  // namespace fusedrt
