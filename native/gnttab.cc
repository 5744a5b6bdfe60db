// Grant tables through libxengnttab. See gnttab.h.
#include "gnttab.h"

#include <sys/mman.h>

#include <cerrno>
#include <vector>

#include "args.h"

namespace xenode {
namespace {

// Grants are always of 4 KiB pages, whatever the kernel's page size.
constexpr size_t kGrantPageSize = 4096;
// A bound on one request, well above what a PV ring needs (Linux's gntdev default limit).
constexpr uint32_t kMaxPages = 1024;

struct GntOpenResult {
  const xenlibs::Gnttab* api = nullptr;
  xengnttab_handle* xgt = nullptr;  // owned by the request until the constructor takes them
  xengntshr_handle* xgs = nullptr;
  int xgs_errno = 0;
};

uint32_t DomidArg(const Napi::CallbackInfo& info, size_t i) {
  uint32_t domid = args::Uint32(info, i, "domid");
  if (domid >= 0x7FF0) throw Napi::RangeError::New(info.Env(), "domid must be in 0..32751");
  return domid;
}

// Pages obtained on the pool, given back if they never reach JavaScript.
struct Pending {
  Pending(GntHandle* o, bool s) : owner(o), shared(s) {}
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;
  GntHandle* owner;
  bool shared;
  void* addr = nullptr;
  uint32_t count = 0;
  std::vector<uint32_t> refs;
  ~Pending() {
    if (addr != nullptr) owner->UnmapRaw(addr, count, shared);
  }
};

void FinalizeRegion(Napi::Env /*env*/, void* /*data*/, std::shared_ptr<GntRegion>* region) {
  if ((*region)->owner != nullptr) (*region)->owner->Release(*region, false);
  delete region;
}

}  // namespace

// void *xengntshr_share_pages(xengntshr_handle *xgs, uint32_t domid, int count,
//                             uint32_t *refs, int writable);
Napi::Value GntHandle::Share(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  uint32_t count = args::Uint32(info, 1, "count");
  bool writable = args::Bool(info, 2, "writable");
  if (count == 0 || count > kMaxPages) throw Napi::RangeError::New(info.Env(), "count must be in 1..1024");
  auto pending = std::make_shared<Pending>(this, true);
  pending->refs.resize(count);
  return Call(
      info.Env(), "xengntshr_share_pages",
      [this, pending, domid, count, writable] {
        if (xgs_ == nullptr) {
          Failure f = errors::Unavailable("xengntshr_open",
                                          "cannot open the grant allocation device /dev/xen/gntalloc (" +
                                              errors::ErrnoName(xgs_errno_) +
                                              "): load the xen-gntalloc module (modprobe xen-gntalloc)");
          f.errnum = xgs_errno_;
          return f;
        }
        void* addr = api_->xengntshr_share_pages(xgs_, domid, count, pending->refs.data(), writable ? 1 : 0);
        if (addr == nullptr) return errors::FromXenCall(errno, "xengntshr_share_pages", domid);
        pending->addr = addr;
        pending->count = count;
        return Failure();
      },
      [this, pending](Napi::Env env) {
        void* addr = pending->addr;
        pending->addr = nullptr;  // JavaScript owns it now
        return Deliver(env, addr, pending->count, true, &pending->refs);
      });
}

// void *xengnttab_map_domain_grant_refs(xengnttab_handle *xgt, uint32_t count, uint32_t domid,
//                                       uint32_t *refs, int prot);
Napi::Value GntHandle::Map(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint32_t domid = DomidArg(info, 0);
  Napi::Value list = args::At(info, 1);
  if (!list.IsArray()) throw Napi::TypeError::New(env, "refs must be an array of grant references");
  Napi::Array array = list.As<Napi::Array>();
  if (array.Length() == 0 || array.Length() > kMaxPages) throw Napi::RangeError::New(env, "refs must hold 1..1024 references");
  bool writable = args::Bool(info, 2, "writable");
  auto pending = std::make_shared<Pending>(this, false);
  for (uint32_t i = 0; i < array.Length(); i++) {
    Napi::Value v = array.Get(i);
    double d = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d <= 4294967295.0 && static_cast<double>(static_cast<uint32_t>(d)) == d)) {
      throw Napi::TypeError::New(env, "refs must be an array of integers in 0..4294967295");
    }
    pending->refs.push_back(static_cast<uint32_t>(d));
  }
  return Call(
      env, "xengnttab_map_domain_grant_refs",
      [this, pending, domid, writable] {
        uint32_t count = static_cast<uint32_t>(pending->refs.size());
        void* addr = api_->xengnttab_map_domain_grant_refs(xgt_, count, domid, pending->refs.data(),
                                                           writable ? PROT_READ | PROT_WRITE : PROT_READ);
        if (addr == nullptr) return errors::FromXenCall(errno, "xengnttab_map_domain_grant_refs", domid);
        pending->addr = addr;
        pending->count = count;
        return Failure();
      },
      [this, pending](Napi::Env env) {
        void* addr = pending->addr;
        pending->addr = nullptr;
        return Deliver(env, addr, pending->count, false, nullptr);
      });
}

// { id, buffer, refs? } for pages now owned by JavaScript.
Napi::Value GntHandle::Deliver(Napi::Env env, void* addr, uint32_t count, bool shared, const std::vector<uint32_t>* refs) {
  auto region = std::make_shared<GntRegion>();
  region->id = next_id_++;
  region->addr = addr;
  region->count = count;
  region->shared = shared;
  region->owner = this;
  regions_[region->id] = region;
  Napi::ArrayBuffer buffer = Napi::ArrayBuffer::New(env, addr, count * kGrantPageSize, FinalizeRegion,
                                                    new std::shared_ptr<GntRegion>(region));
  region->buffer = Napi::Reference<Napi::ArrayBuffer>::New(buffer, 0);
  Napi::Object out = Napi::Object::New(env);
  out.Set("id", region->id);
  out.Set("buffer", buffer);
  if (refs != nullptr) {
    Napi::Array list = Napi::Array::New(env, refs->size());
    for (uint32_t i = 0; i < refs->size(); i++) list.Set(i, (*refs)[i]);
    out.Set("refs", list);
  }
  return out;
}

// unmap(id): false when there is no such region (already unmapped).
// int xengnttab_unmap(xengnttab_handle *xgt, void *start_address, uint32_t count);
// int xengntshr_unshare(xengntshr_handle *xgs, void *start_address, uint32_t count);
Napi::Value GntHandle::Unmap(const Napi::CallbackInfo& info) {
  uint32_t id = args::Uint32(info, 0, "id");
  auto it = regions_.find(id);
  if (it == regions_.end()) return Napi::Boolean::New(info.Env(), false);
  Release(it->second, true);
  return Napi::Boolean::New(info.Env(), true);
}

void GntHandle::Release(const std::shared_ptr<GntRegion>& region, bool detach) {
  std::shared_ptr<GntRegion> keep = region;  // `region` may refer into regions_
  if (keep->owner == nullptr) return;
  keep->owner = nullptr;  // first: detaching may run the finalizer, which must do nothing
  regions_.erase(keep->id);
  if (detach && !keep->buffer.IsEmpty()) {
    Napi::HandleScope scope(Env());
    Napi::ArrayBuffer buffer = keep->buffer.Value();
    if (!buffer.IsEmpty() && !buffer.IsDetached()) buffer.Detach();
  }
  keep->buffer.Reset();
  UnmapRaw(keep->addr, keep->count, keep->shared);
  keep->addr = nullptr;
}

void GntHandle::UnmapRaw(void* addr, uint32_t count, bool shared) {
  if (shared) {
    api_->xengntshr_unshare(xgs_, addr, count);
  } else {
    api_->xengnttab_unmap(xgt_, addr, count);
  }
}

// int xengnttab_close(xengnttab_handle *xgt);
// int xengntshr_close(xengntshr_handle *xgs);
void GntHandle::ReleaseNative() {
  bool detach = !state()->stopping();
  while (!regions_.empty()) Release(regions_.begin()->second, detach);
  if (xgt_ != nullptr) api_->xengnttab_close(xgt_);
  if (xgs_ != nullptr) api_->xengntshr_close(xgs_);
  xgt_ = nullptr;
  xgs_ = nullptr;
}

GntHandle::GntHandle(const Napi::CallbackInfo& info) : PoolHandle<GntHandle>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "GntHandle cannot be constructed directly: use openGrants()");
  }
  auto* open = info[0].As<Napi::External<GntOpenResult>>().Data();
  api_ = open->api;
  xgt_ = open->xgt;
  xgs_ = open->xgs;
  xgs_errno_ = open->xgs_errno;
  open->xgt = nullptr;
  open->xgs = nullptr;
  Opened();
}

Napi::Function GntHandle::Define(Napi::Env env) {
  return DefineClass(env, "GntHandle",
                     {
                         InstanceMethod("share", &GntHandle::Share),
                         InstanceMethod("map", &GntHandle::Map),
                         InstanceMethod("unmap", &GntHandle::Unmap),
                         InstanceMethod("close", &GntHandle::Close),
                         InstanceAccessor("closed", &GntHandle::Closed, nullptr),
                     });
}

Napi::Function DefineGntHandle(Napi::Env env) { return GntHandle::Define(env); }

namespace {

class GntOpenOp final : public PromiseWorker {
 public:
  explicit GntOpenOp(Napi::Env env) : PromiseWorker(env, "xengnttab_open") {}
  ~GntOpenOp() override {
    if (result_.xgt != nullptr) result_.api->xengnttab_close(result_.xgt);
    if (result_.xgs != nullptr) result_.api->xengntshr_close(result_.xgs);
  }

 private:
  // xengnttab_handle *xengnttab_open(struct xentoollog_logger *logger, unsigned open_flags);
  // xengntshr_handle *xengntshr_open(struct xentoollog_logger *logger, unsigned open_flags);
  void Execute() override {
    Failure failure;
    const xenlibs::Gnttab* api = xenlibs::LoadGnttab(&failure);
    if (api == nullptr) return Fail(failure);
    xengnttab_handle* xgt = api->xengnttab_open(xenlibs::QuietLogger(), 0);
    if (xgt == nullptr) {
      int errnum = errno;
      Failure f = errors::Unavailable(
          "xengnttab_open", "cannot open the grant device /dev/xen/gntdev (" + errors::ErrnoName(errnum) +
                                "): this needs a Xen domain with the xen-gntdev module loaded, and root; or use "
                                "{ backend: 'mock' }");
      f.errnum = errnum;
      f.path = "/dev/xen/gntdev";
      f.has_path = true;
      return Fail(f);
    }
    result_.api = api;
    result_.xgt = xgt;
    // Sharing is optional: mapping works without the gntalloc device.
    result_.xgs = api->xengntshr_open(xenlibs::QuietLogger(), 0);
    if (result_.xgs == nullptr) result_.xgs_errno = errno;
  }
  Napi::Value Result(Napi::Env env) override {
    return state()->gnt_handle_class.New({Napi::External<GntOpenResult>::New(env, &result_)});
  }

  GntOpenResult result_;
};

}  // namespace

Napi::Value OpenGrants(const Napi::CallbackInfo& info) {
  auto* op = new GntOpenOp(info.Env());
  Napi::Value promise = op->Promise();
  op->Queue();
  return promise;
}

}  // namespace xenode
