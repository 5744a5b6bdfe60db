// GntHandle: grant tables through libxengnttab. One handle holds a gntdev handle
// (`xengnttab_handle *`: mapping other domains' grants) and a gntalloc handle
// (`xengntshr_handle *`: granting this domain's pages to another domain), opened together.
//
// share() and map() run on the pool and resolve with an external ArrayBuffer over the
// granted or mapped pages: zero-copy, the memory the other domain sees. unmap(id) first
// detaches that ArrayBuffer (every view of it becomes zero-length, so no JavaScript can
// touch the memory any more), then unmaps it; it runs on the loop thread because
// munmap of a few pages does not wait on anything. A region whose ArrayBuffer is
// garbage-collected without unmap() is unmapped then; closing the handle unmaps all.
#ifndef XENODE_GNTTAB_H
#define XENODE_GNTTAB_H

#include <napi.h>

#include <cstdint>
#include <map>
#include <memory>

#include "pool_handle.h"
#include "xenlibs.h"

namespace xenode {

Napi::Function DefineGntHandle(Napi::Env env);

// openGrants(): Promise<GntHandle>
Napi::Value OpenGrants(const Napi::CallbackInfo& info);

// One shared or mapped run of pages.
struct GntRegion {
  uint32_t id = 0;
  void* addr = nullptr;
  uint32_t count = 0;
  bool shared = false;  // by gntalloc (share), else mapped by gntdev
  class GntHandle* owner = nullptr;  // null once unmapped
  Napi::Reference<Napi::ArrayBuffer> buffer;  // weak
};

class GntHandle : public PoolHandle<GntHandle> {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit GntHandle(const Napi::CallbackInfo& info);

  // Unmaps `region` (detaching its ArrayBuffer when `detach`). Loop thread.
  void Release(const std::shared_ptr<GntRegion>& region, bool detach);
  // Unmaps pages obtained by a share or map whose result never reached JavaScript.
  void UnmapRaw(void* addr, uint32_t count, bool shared);

 private:
  Napi::Value Share(const Napi::CallbackInfo& info);
  Napi::Value Map(const Napi::CallbackInfo& info);
  Napi::Value Unmap(const Napi::CallbackInfo& info);
  Napi::Value Close(const Napi::CallbackInfo& info) { return CloseMethod(info); }
  Napi::Value Closed(const Napi::CallbackInfo& info) { return IsClosed(info); }
  Napi::Value Deliver(Napi::Env env, void* addr, uint32_t count, bool shared, const std::vector<uint32_t>* refs);

  void ReleaseNative() override;

  const xenlibs::Gnttab* api_ = nullptr;
  xengnttab_handle* xgt_ = nullptr;
  xengntshr_handle* xgs_ = nullptr;  // null when gntalloc could not be opened
  int xgs_errno_ = 0;
  uint32_t next_id_ = 1;
  std::map<uint32_t, std::shared_ptr<GntRegion>> regions_;
};

}  // namespace xenode

#endif  // XENODE_GNTTAB_H
