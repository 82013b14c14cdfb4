// The boundary between C++ errors and JS errors: every N-API entry point and
// every AsyncWorker catches whatever was thrown and turns it into a JS Error
// whose `code` is one of src/errors.ts, so no C++ exception reaches V8.
#pragma once

#include <napi.h>

#include <new>
#include <string>

#include "errors.h"

namespace fusedrt {

struct ErrorInfo {
  std::string code;
  std::string message;
};

// Call only inside a catch block: describes the exception being handled.
inline ErrorInfo describe_current_exception() {
  try {
    throw;
  } catch (const FusedError& e) {
    return {error_code_name(e.code()), e.what()};
  } catch (const std::bad_alloc&) {
    return {"E_OOM", "out of memory"};
  } catch (const Napi::Error& e) {
    return {"E_NATIVE", e.Message()};
  } catch (const std::exception& e) {
    return {"E_NATIVE", std::string("internal error: ") + e.what()};
  } catch (...) {
    return {"E_NATIVE", "unknown internal error"};
  }
}

inline Napi::Value make_js_error(Napi::Env env, const ErrorInfo& info) {
  Napi::Error error = Napi::Error::New(env, info.message);
  error.Set("code", Napi::String::New(env, info.code));
  return error.Value();
}

// An AsyncWorker settling a Promise: execute() runs off the event loop,
// result() on it; any exception from either rejects the Promise with a code.
class PromiseWorker : public Napi::AsyncWorker {
 public:
  Napi::Promise promise() { return deferred_.Promise(); }

 protected:
  PromiseWorker(Napi::Env env, const char* name) : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)) {}

  virtual void execute() = 0;
  virtual Napi::Value result(Napi::Env env) = 0;
  // Runs on the JS thread after the Promise is settled, whatever the outcome.
  virtual void finished() {}

 private:
  void Execute() override {
    try {
      execute();
    } catch (...) {
      error_ = describe_current_exception();
      SetError(error_.message);
    }
  }

  void OnOK() override {
    try {
      deferred_.Resolve(result(Env()));
    } catch (...) {
      deferred_.Reject(make_js_error(Env(), describe_current_exception()));
    }
    finished();
  }

  void OnError(const Napi::Error&) override {
    deferred_.Reject(make_js_error(Env(), error_));
    finished();
  }

  Napi::Promise::Deferred deferred_;
  ErrorInfo error_;
};

// A Promise already rejected with the exception being handled.
inline Napi::Value rejected_promise(Napi::Env env) {
  ErrorInfo info = describe_current_exception();
  Napi::Promise::Deferred deferred = Napi::Promise::Deferred::New(env);
  deferred.Reject(make_js_error(env, info));
  return deferred.Promise();
}

}  // namespace fusedrt
