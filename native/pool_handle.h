// PoolHandle: the life cycle shared by the handles of libxenevtchn, libxengnttab and
// libxenctrl (evtchn.cc, gnttab.cc, xenctrl.cc).
//
// Unlike libxenstore, these libraries are safe to call from several threads at once, so
// requests are not queued: each runs on the libuv pool as soon as it is made (CallOp).
// Closing rejects every running request with XEN_CLOSED at once, stops the handle's
// libuv handles (StopEvents), and releases the C handle (ReleaseNative, on the loop
// thread: it only closes file descriptors and unmaps memory) once every running request
// has come back from the pool, so no thread uses the C handle after it is freed.
// An open handle is held strongly (like a socket); the environment's cleanup hook closes
// whatever JavaScript left open.
#ifndef XENODE_POOL_HANDLE_H
#define XENODE_POOL_HANDLE_H

#include <napi.h>

#include <functional>
#include <set>
#include <utility>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "worker.h"

namespace xenode {

// One request whose work is a single C call: `execute` runs on the pool and returns a
// Failure (no code: success); `result` builds the resolved value on the loop thread. A
// lambda pair rather than a subclass per call, because each of these ~25 requests is one
// line of C; whatever `execute` produces lives in state the two lambdas share.
class CallOp final : public PromiseWorker {
 public:
  using Execute_ = std::function<Failure()>;
  using Result_ = std::function<Napi::Value(Napi::Env)>;

  CallOp(Napi::Env env, const char* op, Execute_ execute, Result_ result, std::function<void(CallOp*)> finished)
      : PromiseWorker(env, op),
        op_(op),
        execute_(std::move(execute)),
        result_(std::move(result)),
        finished_(std::move(finished)) {}

  const char* op() const { return op_; }

 private:
  void Execute() override {
    Failure f = execute_();
    if (f.failed()) Fail(std::move(f));
  }
  Napi::Value Result(Napi::Env env) override { return result_ ? result_(env) : env.Undefined(); }
  // The lambdas' captures are destroyed first, while the C handle is still open, so
  // that a capture's destructor may give back what an abandoned `execute` obtained.
  void Finished() override {
    execute_ = nullptr;
    result_ = nullptr;
    if (finished_) finished_(this);
  }

  const char* op_;
  Execute_ execute_;
  Result_ result_;
  std::function<void(CallOp*)> finished_;
};

template <typename T>
class PoolHandle : public Napi::ObjectWrap<T>, public NativeHandle {
 public:
  explicit PoolHandle(const Napi::CallbackInfo& info)
      : Napi::ObjectWrap<T>(info), state_(AddonState::Of(info.Env())) {}

  ~PoolHandle() override {
    if (phase_ != Phase::kClosed) state_->Untrack(this);
  }

  void CloseForTeardown(std::function<void()> done) override {
    if (phase_ == Phase::kClosed) return done();
    Napi::HandleScope scope(this->Env());
    closers_.AddTeardown(std::move(done));
    BeginClose();
  }

 protected:
  enum class Phase { kOpen, kClosing, kClosed };

  bool is_open() const { return phase_ == Phase::kOpen; }
  AddonState* state() const { return state_; }

  // Call from the subclass constructor once the C handle is owned.
  void Opened() {
    state_->Track(this);
    this->Ref();  // an open handle is never collected
  }

  // Runs `execute` on the pool; XEN_CLOSED (op `op`) once the handle is closing.
  Napi::Value Call(Napi::Env env, const char* op, CallOp::Execute_ execute, CallOp::Result_ result = nullptr) {
    auto* call = new CallOp(env, op, std::move(execute), std::move(result), [this](CallOp* done) {
      running_.erase(done);
      MaybeRelease();
    });
    Napi::Value promise = call->Promise();
    if (phase_ != Phase::kOpen) {
      call->Abandon(errors::Closed(op));
      delete call;  // never queued
      return promise;
    }
    running_.insert(call);
    call->Queue();
    return promise;
  }

  // Throws XEN_CLOSED synchronously, for the few methods that do not return a promise.
  void ThrowIfClosed(Napi::Env env, const char* op) const {
    if (phase_ != Phase::kOpen) throw errors::ToError(env, errors::Closed(op));
  }

  // close(): resolves once the C handle is released. Safe to call twice.
  Napi::Value CloseMethod(const Napi::CallbackInfo& info) {
    Napi::Value promise = closers_.Promise(info.Env(), phase_ == Phase::kClosed);
    BeginClose();  // nothing to do unless open
    return promise;
  }

  Napi::Value IsClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), phase_ != Phase::kOpen); }

  // Loop thread, once when closing begins: stop event sources (uv handles) and call
  // `done` once they are closed (possibly before returning).
  virtual void StopEvents(std::function<void()> done) { done(); }
  // Loop thread, once, when nothing uses the C handle any more: free it. No JavaScript
  // may run here (it is also called by the cleanup hook).
  virtual void ReleaseNative() = 0;

 private:
  void BeginClose() {
    if (phase_ != Phase::kOpen) return;
    phase_ = Phase::kClosing;
    for (CallOp* call : running_) call->Abandon(errors::Closed(call->op()));
    StopEvents([this] {
      events_stopped_ = true;
      MaybeRelease();
    });
  }

  void MaybeRelease() {
    if (phase_ != Phase::kClosing || !events_stopped_ || !running_.empty()) return;
    ReleaseNative();
    phase_ = Phase::kClosed;
    state_->Untrack(this);
    closers_.Resolve(this->Env(), state_);
    std::vector<std::function<void()>> done = closers_.TakeTeardown();
    this->Unref();  // collectable from now on
    for (auto& callback : done) callback();
  }

  AddonState* state_;
  Phase phase_ = Phase::kOpen;
  bool events_stopped_ = false;
  std::set<CallOp*> running_;
  CloseWaiters closers_;
};

}  // namespace xenode

#endif  // XENODE_POOL_HANDLE_H
