// EvtchnHandle: an open /dev/xen/evtchn through libxenevtchn (`xenevtchn_handle *`).
//
// Binding, notifying and unbinding are ioctls on the device, run on the pool. Events
// are read on the loop thread: a uv_poll watches xenevtchn_fd (made non-blocking), and
// each wake-up drains up to kMaxEventsPerWake ports with xenevtchn_pending, unmasks each
// (the kernel masks a port when it fires) and calls onEvent(port). The poll is ref'd
// only while JavaScript says it listens (keepAlive), so an idle handle does not keep
// the process alive. Closing the device unbinds every port it bound.
#ifndef XENODE_EVTCHN_H
#define XENODE_EVTCHN_H

#include <napi.h>
#include <uv.h>

#include "pool_handle.h"
#include "xenlibs.h"

namespace xenode {

// The EvtchnHandle class, for the module's exports.
Napi::Function DefineEvtchnHandle(Napi::Env env);

// openEventChannels(onEvent: (port) => void): Promise<EvtchnHandle>
Napi::Value OpenEventChannels(const Napi::CallbackInfo& info);

class EvtchnHandle : public PoolHandle<EvtchnHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit EvtchnHandle(const Napi::CallbackInfo& info);

 private:
  Napi::Value BindUnbound(const Napi::CallbackInfo& info);
  Napi::Value BindInterdomain(const Napi::CallbackInfo& info);
  Napi::Value BindVirq(const Napi::CallbackInfo& info);
  Napi::Value Notify(const Napi::CallbackInfo& info);
  Napi::Value Unbind(const Napi::CallbackInfo& info);
  Napi::Value KeepAlive(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info) { return CloseMethod(info); }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return IsClosed(info); }

  void StopEvents(std::function<void()> done) override;
  void ReleaseNative() override;
  void Drain();
  static void OnPoll(uv_poll_t* poll, int status, int events);

  const xenlibs::Evtchn* api_ = nullptr;
  xenevtchn_handle* xce_ = nullptr;
  uv_poll_t* poll_ = nullptr;
  std::function<void()> poll_closed_;
  Napi::FunctionReference on_event_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
};

}  // namespace xenode

#endif  // XENODE_EVTCHN_H
