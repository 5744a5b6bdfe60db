// Per-environment state. The main thread and every worker thread that loads the addon
// get their own AddonState (napi instance data); nothing native is shared between them
// except the dlopen tables of xenlibs.h, which are process-wide by nature.
#ifndef XENODE_ADDON_H
#define XENODE_ADDON_H

#include <napi.h>

#include <cstddef>
#include <functional>
#include <vector>

namespace xenode {

// A native handle that must be closed when its environment is torn down (a worker thread
// exits, the process ends) if JavaScript did not close it first.
class NativeHandle {
 public:
  virtual ~NativeHandle() = default;
  // Releases everything without running JavaScript, then calls `done` (possibly before
  // returning). Called once, on the loop thread, while the loop still runs.
  virtual void CloseForTeardown(std::function<void()> done) = 0;
};

class AddonState {
 public:
  static AddonState* Of(Napi::Env env) { return env.GetInstanceData<AddonState>(); }

  // True once the environment is being torn down: JavaScript can no longer run, so
  // promises are left unsettled and callbacks are not called.
  bool stopping() const { return stopping_; }
  void MarkStopping() { stopping_ = true; }

  // Open handles, closed by the environment's cleanup hook.
  void Track(NativeHandle* handle);
  void Untrack(NativeHandle* handle);

  // Registers the environment cleanup hook. Called once, from the module's init.
  void InstallCleanupHook(Napi::Env env);

  Napi::FunctionReference xs_handle_class;
  // The hypervisor-interface handles (evtchn.cc, gnttab.cc, xenctrl.cc).
  Napi::FunctionReference evtchn_handle_class;
  Napi::FunctionReference gnt_handle_class;
  Napi::FunctionReference xc_handle_class;
  Napi::FunctionReference xl_handle_class;  // libxl.cc

 private:
  static void OnEnvCleanup(napi_async_cleanup_hook_handle hook, void* arg);
  void CleanupStep();

  bool stopping_ = false;
  std::vector<NativeHandle*> handles_;
  napi_async_cleanup_hook_handle hook_ = nullptr;
  std::size_t cleanup_pending_ = 0;
};

// What waits for a handle to finish closing: the promises of its close() calls and the
// cleanup hook's callbacks. Loop thread only. Every handle class keeps one, so that
// "close twice is harmless" and "the cleanup hook waits for the close" hold alike.
class CloseWaiters {
 public:
  // close(): a promise, resolved at once when the handle is closed already, else by Resolve().
  Napi::Value Promise(Napi::Env env, bool closed) {
    napi_deferred deferred;
    napi_value promise;
    NAPI_THROW_IF_FAILED(env, napi_create_promise(env, &deferred, &promise), Napi::Value());
    if (closed) {
      NAPI_THROW_IF_FAILED(env, napi_resolve_deferred(env, deferred, env.Undefined()), Napi::Value());
    } else {
      promises_.push_back(deferred);
    }
    return Napi::Value(env, promise);
  }

  void AddTeardown(std::function<void()> done) { teardown_.push_back(std::move(done)); }

  // Once the handle has closed: resolves the close() promises, unless the environment is
  // stopping (then no JavaScript can run and they stay unsettled).
  void Resolve(Napi::Env env, AddonState* state) {
    std::vector<napi_deferred> promises = std::move(promises_);
    promises_.clear();
    if (state->stopping()) return;
    Napi::HandleScope scope(env);
    for (napi_deferred deferred : promises) {
      if (napi_resolve_deferred(env, deferred, env.Undefined()) != napi_ok) state->MarkStopping();
    }
  }

  // The cleanup hook's callbacks, to call last: they may free the addon state.
  std::vector<std::function<void()>> TakeTeardown() {
    std::vector<std::function<void()>> done = std::move(teardown_);
    teardown_.clear();
    return done;
  }

 private:
  std::vector<napi_deferred> promises_;
  std::vector<std::function<void()>> teardown_;
};

}  // namespace xenode

#endif  // XENODE_ADDON_H
