// Module init, per-environment state and the environment cleanup hook.
//
// Exports:
//   openXenStore(onWatchEvent, onLost?) → Promise<XsHandle>   (xenstore.cc)
//   XsHandle      the class of the handles (not constructible from JS)
//   xenVersion    the Xen version the addon was built against
//   openEventChannels(onEvent) → Promise<EvtchnHandle>, EvtchnHandle   (evtchn.cc)
//   openGrants() → Promise<GntHandle>, GntHandle                       (gnttab.cc)
//   openXenCtrl() → Promise<XcHandle>, XcHandle, checkXenRelease       (xenctrl.cc)
//   openLibxl(onEvent, onError) → Promise<XlHandle>          (libxl.cc)
//   XlHandle      the class of libxl contexts (not constructible from JS)
//   validateLibxlJson(type, json) → Promise<string>          (libxl_validate.cc)
//   makePipe() → [readFd, writeFd]   a close-on-exec pipe, for libxl's save/restore streams
// lib/native/addon.ts is the typed contract of these exports.
#include <napi.h>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "addon.h"
#include "errors.h"
#include "evtchn.h"
#include "gnttab.h"
#include "xenctrl.h"
#include "libxl.h"
#include "xenlibs.h"
#include "xenstore.h"

namespace xenode {

void AddonState::Track(NativeHandle* handle) { handles_.push_back(handle); }

void AddonState::Untrack(NativeHandle* handle) {
  handles_.erase(std::remove(handles_.begin(), handles_.end(), handle), handles_.end());
}

void AddonState::InstallCleanupHook(Napi::Env env) {
  // An async hook: closing a uv_poll handle and joining libxenstore's reader thread
  // finish on later loop turns, and the environment's loop must not be closed (a worker
  // thread aborts on a loop with open handles) before they have.
  NAPI_THROW_IF_FAILED_VOID(env, napi_add_async_cleanup_hook(env, OnEnvCleanup, this, &hook_));
}

void AddonState::OnEnvCleanup(napi_async_cleanup_hook_handle hook, void* arg) {
  auto* state = static_cast<AddonState*>(arg);
  state->hook_ = hook;
  state->MarkStopping();
  // A handle removes itself from handles_ when it finishes closing, so walk a copy.
  std::vector<NativeHandle*> open = state->handles_;
  state->cleanup_pending_ = open.size() + 1;
  for (NativeHandle* handle : open) handle->CloseForTeardown([state] { state->CleanupStep(); });
  state->CleanupStep();
}

void AddonState::CleanupStep() {
  if (--cleanup_pending_ == 0) napi_remove_async_cleanup_hook(hook_);
}

// exchangeFiles(a, b): fsops.cc
Napi::Value ExchangeFiles(const Napi::CallbackInfo& info);

// int pipe2(int pipefd[2], int flags);
// libxl reads and writes a migration stream on a file descriptor of its own (in its save
// helper process); JavaScript carries the bytes between that pipe and the user's stream.
// Both ends close on exec, so no other child inherits them (libxl passes its end on).
static Napi::Value MakePipe(const Napi::CallbackInfo& info) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    throw errors::ToError(info.Env(), errors::FromErrno(errno, "pipe2"));
  }
  Napi::Array out = Napi::Array::New(info.Env(), 2);
  out.Set(uint32_t{0}, Napi::Number::New(info.Env(), fds[0]));
  out.Set(uint32_t{1}, Napi::Number::New(info.Env(), fds[1]));
  return out;
}

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  auto* state = new AddonState();
  env.SetInstanceData<AddonState>(state);
  state->InstallCleanupHook(env);

  Napi::Function xs_handle = DefineXsHandle(env);
  state->xs_handle_class = Napi::Persistent(xs_handle);

  exports.Set("XsHandle", xs_handle);
  exports.Set("openXenStore", Napi::Function::New(env, OpenXenStore, "openXenStore"));
  exports.Set("xenVersion", Napi::String::New(env, XENODE_XEN_VERSION));

  // The hypervisor interfaces: event channels, grant tables, xenctrl.
  Napi::Function evtchn_handle = DefineEvtchnHandle(env);
  state->evtchn_handle_class = Napi::Persistent(evtchn_handle);
  exports.Set("EvtchnHandle", evtchn_handle);
  exports.Set("openEventChannels", Napi::Function::New(env, OpenEventChannels, "openEventChannels"));
  Napi::Function gnt_handle = DefineGntHandle(env);
  state->gnt_handle_class = Napi::Persistent(gnt_handle);
  exports.Set("GntHandle", gnt_handle);
  exports.Set("openGrants", Napi::Function::New(env, OpenGrants, "openGrants"));
  Napi::Function xc_handle = DefineXcHandle(env);
  state->xc_handle_class = Napi::Persistent(xc_handle);
  exports.Set("XcHandle", xc_handle);
  exports.Set("openXenCtrl", Napi::Function::New(env, OpenXenCtrl, "openXenCtrl"));
  exports.Set("checkXenRelease", Napi::Function::New(env, CheckXenRelease, "checkXenRelease"));
  // libxl
  Napi::Function xl_handle = DefineXlHandle(env);
  state->xl_handle_class = Napi::Persistent(xl_handle);
  exports.Set("XlHandle", xl_handle);
  exports.Set("openLibxl", Napi::Function::New(env, OpenLibxl, "openLibxl"));
  exports.Set("validateLibxlJson", Napi::Function::New(env, ValidateLibxlJson, "validateLibxlJson"));
  exports.Set("makePipe", Napi::Function::New(env, MakePipe, "makePipe"));
  exports.Set("exchangeFiles", Napi::Function::New(env, ExchangeFiles, "exchangeFiles"));
  return exports;
}

}  // namespace xenode

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) { return xenode::Init(env, exports); }

NODE_API_MODULE(xenode, InitModule)
