// XcHandle: the hypervisor's control interface through libxenctrl (`xc_interface *`).
//
// Every request is a hypercall (through /dev/xen/privcmd) run on the pool. Opening
// checks that the hypervisor is the Xen release the addon was built for
// (XEN_VERSION_MISMATCH otherwise): libxenctrl's hypercall interface versions are
// compiled in, so another release would fail every call in obscure ways.
#ifndef XENODE_XENCTRL_H
#define XENODE_XENCTRL_H

#include <napi.h>

#include "pool_handle.h"
#include "xenlibs.h"

namespace xenode {

Napi::Function DefineXcHandle(Napi::Env env);

// openXenCtrl(): Promise<XcHandle>
Napi::Value OpenXenCtrl(const Napi::CallbackInfo& info);

// The hypervisor-release check alone, for tests on hosts without Xen:
// checkXenRelease(xenver: number): RawXenError | null
Napi::Value CheckXenRelease(const Napi::CallbackInfo& info);

class XcHandle : public PoolHandle<XcHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit XcHandle(const Napi::CallbackInfo& info);

 private:
  Napi::Value Version(const Napi::CallbackInfo& info);
  Napi::Value Physinfo(const Napi::CallbackInfo& info);
  Napi::Value DomainList(const Napi::CallbackInfo& info);
  Napi::Value Pause(const Napi::CallbackInfo& info);
  Napi::Value Unpause(const Napi::CallbackInfo& info);
  Napi::Value SetMaxMem(const Napi::CallbackInfo& info);
  Napi::Value GetVcpuAffinity(const Napi::CallbackInfo& info);
  Napi::Value SetVcpuAffinity(const Napi::CallbackInfo& info);
  Napi::Value MemshrControl(const Napi::CallbackInfo& info);
  Napi::Value SharingStats(const Napi::CallbackInfo& info);
  Napi::Value McaFetch(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info) { return CloseMethod(info); }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return IsClosed(info); }

  void ReleaseNative() override;

  const xenlibs::XenCtrl* api_ = nullptr;
  xc_interface* xch_ = nullptr;
};

}  // namespace xenode

#endif  // XENODE_XENCTRL_H
