// PromiseWorker: the base of every asynchronous operation. Each operation is one small
// subclass that owns the Promise it hands to JavaScript:
//
//   class ReadOp : public PromiseWorker {
//     void Execute() override {                    // a libuv pool thread: no JS here
//       data_.reset(api.xs_read(h, tx, path, &len_));
//       if (!data_) Fail(errors::FromErrno(errno, "xs_read", path));
//     }
//     Napi::Value Result(Napi::Env env) override { // the loop thread, on success only
//       return Napi::Buffer<char>::Copy(env, data_.get(), len_);
//     }
//   };
//
// Lifecycle, all on the loop thread except Execute():
// 1. Construct it in the JS method and return Promise() from that method.
// 2. Queue() it, or Abandon() and delete it without queuing.
// 3. After Execute(), the base settles the promise: rejects with the recorded Failure
//    (the one place it becomes a JS error: errors::ToError), else resolves with Result().
//    Abandon() may settle it earlier (XEN_CLOSED when the handle closes): the work still
//    runs to completion and its outcome is dropped.
// 4. Finished() runs last, in every case (for bookkeeping such as starting the next
//    queued operation); then the worker deletes itself.
//
// Whatever Execute() produces must be held in RAII members (std::unique_ptr with
// free(), std::string …): Result() is not called when the outcome is dropped.
//
// When the environment is being torn down, JavaScript cannot run: the promise is left
// unsettled (nothing can observe it any more) and the environment is marked stopping.
#ifndef XENODE_WORKER_H
#define XENODE_WORKER_H

#include <napi.h>

#include <utility>

#include "addon.h"
#include "errors.h"

namespace xenode {

class PromiseWorker : public Napi::AsyncWorker {
 public:
  // The promise, as a value of the current handle scope: return it from the JS method
  // that created this worker.
  Napi::Value Promise() const { return Napi::Value(Env(), promise_); }

  // Rejects the promise now with `failure`, unless it is already settled.
  void Abandon(const Failure& failure) {
    if (settled_) return;
    if (state_->stopping()) {
      settled_ = true;
      return;
    }
    Napi::Env env = Env();
    Napi::HandleScope scope(env);
    Reject(errors::ToError(env, failure).Value());
  }

  bool settled() const { return settled_; }

 protected:
  PromiseWorker(Napi::Env env, const char* resource_name)
      : Napi::AsyncWorker(env, resource_name), state_(AddonState::Of(env)) {
    NAPI_THROW_IF_FAILED_VOID(env, napi_create_promise(env, &deferred_, &promise_));
  }

  // Pool thread: records why Execute() failed.
  void Fail(Failure failure) { failure_ = std::move(failure); }
  const Failure& failure() const { return failure_; }

  // Loop thread: the value the promise resolves with, after a successful Execute().
  virtual Napi::Value Result(Napi::Env env) { return env.Undefined(); }

  // Loop thread: runs last, whatever the outcome.
  virtual void Finished() {}

  AddonState* state() const { return state_; }

 private:
  void OnOK() final {
    Napi::Env env = Env();
    if (!settled_ && !state_->stopping()) {
      try {
        if (failure_.failed()) {
          Reject(errors::ToError(env, failure_).Value());
        } else {
          Resolve(Result(env));
        }
      } catch (const Napi::Error& err) {
        Reject(err.Value());
      }
    }
    Finished();
  }

  // Only for a C++ exception escaping Execute() (e.g. std::bad_alloc).
  void OnError(const Napi::Error& err) final {
    if (!settled_ && !state_->stopping()) Reject(err.Value());
    Finished();
  }

  void Resolve(napi_value value) { Conclude(napi_resolve_deferred(Env(), deferred_, value)); }
  void Reject(napi_value value) { Conclude(napi_reject_deferred(Env(), deferred_, value)); }

  void Conclude(napi_status status) {
    settled_ = true;
    // Settling only fails once JavaScript can no longer run here.
    if (status != napi_ok) state_->MarkStopping();
  }

  AddonState* state_;
  napi_deferred deferred_ = nullptr;
  napi_value promise_ = nullptr;
  Failure failure_;
  bool settled_ = false;
};

}  // namespace xenode

#endif  // XENODE_WORKER_H
