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

}  // namespace xenode

#endif  // XENODE_ADDON_H
