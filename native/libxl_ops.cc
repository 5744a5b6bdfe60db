// The operations of an XlHandle, one XlCall each (see libxl.h). libxl data crosses as
// JSON (libxl_<type>_from_json / _to_json): no C struct is marshalled by hand.
//
// Short calls run on the pool with ao_how NULL (libxl then waits on that thread, with the
// event thread making progress). Long ones are aos started with call.how(): what libxl
// reads while one runs (the config, the device) lives in the XlCall until it completes.
#include <climits>
#include <cmath>
#include <cstdlib>

#include "args.h"
#include "libxl.h"

namespace xenode {
namespace {

// DOMID_FIRST_RESERVED: ids from 0x7FF0 up are never domains.
constexpr uint32_t kMaxDomid = 0x7FEF;

uint32_t Domid(const Napi::CallbackInfo& info, size_t i) {
  uint32_t domid = args::Uint32(info, i, "domid");
  if (domid > kMaxDomid) throw Napi::RangeError::New(info.Env(), "domid must be an integer in 0..32751");
  return domid;
}

int Fd(const Napi::CallbackInfo& info, size_t i, const char* what) {
  uint32_t fd = args::Uint32(info, i, what);
  if (fd > INT_MAX) throw Napi::RangeError::New(info.Env(), std::string(what) + " must be a file descriptor");
  return static_cast<int>(fd);
}

// A whole number of KiB that may be negative (a relative memory target).
int64_t Kib(const Napi::CallbackInfo& info, size_t i, const char* what, bool allow_negative) {
  Napi::Value v = args::At(info, i);
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || std::fabs(d) > 9007199254740991.0 || (!allow_negative && d < 0)) {
    throw Napi::RangeError::New(info.Env(), std::string(what) + (allow_negative ? " must be a safe integer" : " must be a non-negative safe integer"));
  }
  return static_cast<int64_t>(d);
}

// JSON text from a libxl _to_json function (malloc'ed, NULL on failure).
int TakeJson(XlCall& call, char* json) {
  if (json == nullptr) return ERROR_FAIL;
  call.SetString(json);
  std::free(json);
  return 0;
}

// The three device kinds with JSON, add and remove in libxl 4.17.
template <typename Device>
struct DeviceKind {
  const char* name;
  void (*init)(Device*);
  void (*dispose)(Device*);
  int (*from_json)(libxl_ctx*, Device*, const char*);
  int (*add)(libxl_ctx*, uint32_t, Device*, const libxl_asyncop_how*);
  int (*remove)(libxl_ctx*, uint32_t, Device*, const libxl_asyncop_how*);
  const char* from_json_name;
  const char* add_name;
  const char* remove_name;
};

template <typename Device>
XlCall::Run DeviceRun(const DeviceKind<Device> kind, uint32_t domid, std::string json, bool add) {
  return [kind, domid, json, add](XlCall& c) -> int {
    auto* dev = new Device;
    kind.init(dev);
    c.OnDispose([kind, dev] {
      kind.dispose(dev);
      delete dev;
    });
    c.SetOp(kind.from_json_name);
    int rc = kind.from_json(c.ctx(), dev, json.c_str());
    if (rc != 0) return rc;
    c.SetOp(add ? kind.add_name : kind.remove_name);
    return (add ? kind.add : kind.remove)(c.ctx(), domid, dev, c.how());
  };
}

}  // namespace

// int libxl_domain_config_from_json(libxl_ctx *ctx, libxl_domain_config *p, const char *s);
// void libxl_domain_config_init(libxl_domain_config *d_config);
// void libxl_domain_config_dispose(libxl_domain_config *d_config);
// int libxl_domain_create_new(libxl_ctx *ctx, libxl_domain_config *d_config, uint32_t *domid,
//                             const libxl_asyncop_how *ao_how,
//                             const libxl_asyncprogress_how *aop_console_how);
Napi::Value XlHandle::CreateDomain(const Napi::CallbackInfo& info) {
  std::string json = args::CString(info, 0, "config");
  return Submit(new XlCall(info.Env(), this, "libxl_domain_create_new", -1, true, [json](XlCall& c) -> int {
    const XlApi* api = &c.api();
    auto* config = new libxl_domain_config;
    api->libxl_domain_config_init(config);
    c.OnDispose([api, config] {
      api->libxl_domain_config_dispose(config);
      delete config;
    });
    c.SetOp("libxl_domain_config_from_json");
    int rc = api->libxl_domain_config_from_json(c.ctx(), config, json.c_str());
    if (rc != 0) return rc;
    c.SetOp("libxl_domain_create_new");
    c.on_success = [](XlCall& call) { call.SetNumber(call.domid_out); };
    return api->libxl_domain_create_new(c.ctx(), config, &c.domid_out, c.how(), nullptr);
  }));
}

// void libxl_domain_restore_params_init(libxl_domain_restore_params *p);
// void libxl_domain_restore_params_dispose(libxl_domain_restore_params *p);
// int libxl_domain_restore_params_from_json(libxl_ctx *ctx, libxl_domain_restore_params *p, const char *s);
// int libxl_domain_create_restore(libxl_ctx *ctx, libxl_domain_config *d_config, uint32_t *domid,
//                                 int restore_fd, int send_back_fd,
//                                 const libxl_domain_restore_params *params,
//                                 const libxl_asyncop_how *ao_how,
//                                 const libxl_asyncprogress_how *aop_console_how);
Napi::Value XlHandle::RestoreDomain(const Napi::CallbackInfo& info) {
  std::string json = args::CString(info, 0, "config");
  int fd = Fd(info, 1, "fd");
  std::string params_json = args::At(info, 2).IsUndefined() ? "" : args::CString(info, 2, "params");
  return Submit(new XlCall(info.Env(), this, "libxl_domain_create_restore", -1, true, [json, fd, params_json](XlCall& c) -> int {
    const XlApi* api = &c.api();
    auto* config = new libxl_domain_config;
    auto* params = new libxl_domain_restore_params;
    api->libxl_domain_config_init(config);
    api->libxl_domain_restore_params_init(params);
    // libxl's default is stream version 1, the pre-4.6 format, which it converts by
    // running the convert-legacy-stream helper (python). libxl_domain_suspend writes
    // version 2, so that is what a restore reads unless params say otherwise.
    params->stream_version = 2;
    c.OnDispose([api, config, params] {
      api->libxl_domain_config_dispose(config);
      api->libxl_domain_restore_params_dispose(params);
      delete config;
      delete params;
    });
    c.SetOp("libxl_domain_config_from_json");
    int rc = api->libxl_domain_config_from_json(c.ctx(), config, json.c_str());
    if (rc != 0) return rc;
    if (!params_json.empty()) {
      c.SetOp("libxl_domain_restore_params_from_json");
      rc = api->libxl_domain_restore_params_from_json(c.ctx(), params, params_json.c_str());
      if (rc != 0) return rc;
    }
    c.SetOp("libxl_domain_create_restore");
    c.on_success = [](XlCall& call) { call.SetNumber(call.domid_out); };
    return api->libxl_domain_create_restore(c.ctx(), config, &c.domid_out, fd, -1, params, c.how(), nullptr);
  }));
}

// int libxl_domain_destroy(libxl_ctx *ctx, uint32_t domid, const libxl_asyncop_how *ao_how);
Napi::Value XlHandle::DestroyDomain(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  return Submit(new XlCall(info.Env(), this, "libxl_domain_destroy", domid, true,
                           [domid](XlCall& c) -> int { return c.api().libxl_domain_destroy(c.ctx(), domid, c.how()); }));
}

// int libxl_domain_shutdown(libxl_ctx *ctx, uint32_t domid, const libxl_asyncop_how *ao_how);
// (asks the guest through xenstore; completes once the guest acknowledges the request, or
// with ERROR_GUEST_TIMEDOUT after libxl's 60 s; watch the domain for its shutdown event).
// An ao, so that the wait holds no pool thread and closing aborts it.
Napi::Value XlHandle::ShutdownDomain(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  return Submit(new XlCall(info.Env(), this, "libxl_domain_shutdown", domid, true,
                           [domid](XlCall& c) -> int { return c.api().libxl_domain_shutdown(c.ctx(), domid, c.how()); }));
}

// int libxl_domain_reboot(libxl_ctx *ctx, uint32_t domid, const libxl_asyncop_how *ao_how);
// (an ao like libxl_domain_shutdown: it waits for the guest's acknowledgement)
Napi::Value XlHandle::RebootDomain(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  return Submit(new XlCall(info.Env(), this, "libxl_domain_reboot", domid, true,
                           [domid](XlCall& c) -> int { return c.api().libxl_domain_reboot(c.ctx(), domid, c.how()); }));
}

// int libxl_domain_pause(libxl_ctx *ctx, uint32_t domid, const libxl_asyncop_how *ao_how);
Napi::Value XlHandle::PauseDomain(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  return Submit(new XlCall(info.Env(), this, "libxl_domain_pause", domid, false,
                           [domid](XlCall& c) -> int { return c.api().libxl_domain_pause(c.ctx(), domid, nullptr); }));
}

// int libxl_domain_unpause(libxl_ctx *ctx, uint32_t domid, const libxl_asyncop_how *ao_how);
Napi::Value XlHandle::UnpauseDomain(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  return Submit(new XlCall(info.Env(), this, "libxl_domain_unpause", domid, false,
                           [domid](XlCall& c) -> int { return c.api().libxl_domain_unpause(c.ctx(), domid, nullptr); }));
}

// libxl_dominfo * libxl_list_domain(libxl_ctx*, int *nb_domain_out);
// char *libxl_dominfo_to_json(libxl_ctx *ctx, libxl_dominfo *p);
// void libxl_dominfo_list_free(libxl_dominfo *list, int nb_domain);
Napi::Value XlHandle::ListDomains(const Napi::CallbackInfo& info) {
  return Submit(new XlCall(info.Env(), this, "libxl_list_domain", -1, false, [](XlCall& c) -> int {
    int n = 0;
    libxl_dominfo* list = c.api().libxl_list_domain(c.ctx(), &n);
    if (list == nullptr) return ERROR_FAIL;
    std::string out = "[";
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
      char* json = c.api().libxl_dominfo_to_json(c.ctx(), &list[i]);
      if (json == nullptr) {
        rc = ERROR_FAIL;
        break;
      }
      out += (i > 0 ? "," : "") + std::string(json);
      std::free(json);
    }
    c.api().libxl_dominfo_list_free(list, n);
    if (rc == 0) c.SetString(out + "]");
    return rc;
  }));
}

// int libxl_domain_info(libxl_ctx*, libxl_dominfo *info_r, uint32_t domid);
// void libxl_dominfo_init(libxl_dominfo *p);
// void libxl_dominfo_dispose(libxl_dominfo *p);
Napi::Value XlHandle::DomainInfo(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  return Submit(new XlCall(info.Env(), this, "libxl_domain_info", domid, false, [domid](XlCall& c) -> int {
    libxl_dominfo di;
    c.api().libxl_dominfo_init(&di);
    int rc = c.api().libxl_domain_info(c.ctx(), &di, domid);
    if (rc == 0) rc = TakeJson(c, c.api().libxl_dominfo_to_json(c.ctx(), &di));
    c.api().libxl_dominfo_dispose(&di);
    return rc;
  }));
}

// int libxl_retrieve_domain_configuration(libxl_ctx *ctx, uint32_t domid,
//                                         libxl_domain_config *d_config,
//                                         const libxl_asyncop_how *ao_how);
// char *libxl_domain_config_to_json(libxl_ctx *ctx, libxl_domain_config *p);
Napi::Value XlHandle::DomainConfig(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  return Submit(new XlCall(info.Env(), this, "libxl_retrieve_domain_configuration", domid, false, [domid](XlCall& c) -> int {
    libxl_domain_config config;
    c.api().libxl_domain_config_init(&config);
    int rc = c.api().libxl_retrieve_domain_configuration(c.ctx(), domid, &config, nullptr);
    if (rc == 0) {
      c.SetOp("libxl_domain_config_to_json");
      rc = TakeJson(c, c.api().libxl_domain_config_to_json(c.ctx(), &config));
    }
    c.api().libxl_domain_config_dispose(&config);
    return rc;
  }));
}

// int libxl_set_memory_target(libxl_ctx *ctx, uint32_t domid, int64_t target_memkb, int relative, int enforce);
Napi::Value XlHandle::SetMemoryTarget(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  bool relative = args::Bool(info, 2, "relative");
  int64_t kib = Kib(info, 1, "targetKiB", relative);
  bool enforce = args::Bool(info, 3, "enforce");
  return Submit(new XlCall(info.Env(), this, "libxl_set_memory_target", domid, false, [=](XlCall& c) -> int {
    return c.api().libxl_set_memory_target(c.ctx(), domid, kib, relative ? 1 : 0, enforce ? 1 : 0);
  }));
}

// int libxl_domain_setmaxmem(libxl_ctx *ctx, uint32_t domid, uint64_t target_memkb);
Napi::Value XlHandle::SetMaxMemory(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  uint64_t kib = static_cast<uint64_t>(Kib(info, 1, "maxKiB", false));
  return Submit(new XlCall(info.Env(), this, "libxl_domain_setmaxmem", domid, false,
                           [=](XlCall& c) -> int { return c.api().libxl_domain_setmaxmem(c.ctx(), domid, kib); }));
}

// int libxl_set_vcpuonline(libxl_ctx *ctx, uint32_t domid, libxl_bitmap *cpumap,
//                          const libxl_asyncop_how *ao_how);
// (vcpus 0..count-1 online, the rest offline; count is at most the domain's max vcpus)
Napi::Value XlHandle::SetVcpuCount(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  uint32_t count = args::Uint32(info, 1, "count");
  if (count < 1 || count > 4096) throw Napi::RangeError::New(info.Env(), "count must be an integer in 1..4096");
  return Submit(new XlCall(info.Env(), this, "libxl_set_vcpuonline", domid, false, [=](XlCall& c) -> int {
    const XlApi& api = c.api();
    libxl_dominfo di;
    api.libxl_dominfo_init(&di);
    c.SetOp("libxl_domain_info");
    int rc = api.libxl_domain_info(c.ctx(), &di, domid);
    uint32_t max = di.vcpu_max_id + 1;
    api.libxl_dominfo_dispose(&di);
    if (rc != 0) return rc;
    if (count > max) {
      c.SetOp("libxl_set_vcpuonline");
      c.SetFailure(errors::FromLibxl(ERROR_INVAL, "libxl_set_vcpuonline",
                                     "domain " + std::to_string(domid) + " has at most " + std::to_string(max) +
                                         " vcpus (maxvcpus), asked for " + std::to_string(count),
                                     domid));
      return ERROR_INVAL;
    }
    // void libxl_bitmap_init(libxl_bitmap *map);
    // int libxl_bitmap_alloc(libxl_ctx *ctx, libxl_bitmap *bitmap, int n_bits);
    // void libxl_bitmap_set(libxl_bitmap *bitmap, int bit);
    // void libxl_bitmap_dispose(libxl_bitmap *map);
    libxl_bitmap map;
    api.libxl_bitmap_init(&map);
    c.SetOp("libxl_bitmap_alloc");
    rc = api.libxl_bitmap_alloc(c.ctx(), &map, static_cast<int>(max));
    if (rc == 0) {
      for (uint32_t i = 0; i < count; i++) api.libxl_bitmap_set(&map, static_cast<int>(i));
      c.SetOp("libxl_set_vcpuonline");
      rc = api.libxl_set_vcpuonline(c.ctx(), domid, &map, nullptr);
    }
    api.libxl_bitmap_dispose(&map);
    return rc;
  }));
}

namespace {

// void libxl_device_<kind>_init(libxl_device_<kind> *p);
// void libxl_device_<kind>_dispose(libxl_device_<kind> *p);
// int libxl_device_<kind>_from_json(libxl_ctx *ctx, libxl_device_<kind> *p, const char *s);
// int libxl_device_<kind>_add(libxl_ctx *ctx, uint32_t domid, libxl_device_<kind> *d,
//                             const libxl_asyncop_how *ao_how);
// int libxl_device_<kind>_remove(libxl_ctx *ctx, uint32_t domid, libxl_device_<kind> *d,
//                                const libxl_asyncop_how *ao_how);
XlCall::Run DeviceOp(const XlApi& api, const std::string& kind, uint32_t domid, const std::string& json, bool add,
                     const char** op) {
#define XENODE_DEVICE_KIND(k)                                                                                    \
  if (kind == #k) {                                                                                              \
    *op = add ? "libxl_device_" #k "_add" : "libxl_device_" #k "_remove";                                       \
    return DeviceRun(DeviceKind<libxl_device_##k>{#k, api.libxl_device_##k##_init, api.libxl_device_##k##_dispose, \
                                                   api.libxl_device_##k##_from_json, api.libxl_device_##k##_add,   \
                                                   api.libxl_device_##k##_remove,                                 \
                                                   "libxl_device_" #k "_from_json", "libxl_device_" #k "_add",     \
                                                   "libxl_device_" #k "_remove"},                                 \
                     domid, json, add);                                                                          \
  }
  XENODE_DEVICE_KIND(disk)
  XENODE_DEVICE_KIND(nic)
  XENODE_DEVICE_KIND(pci)
#undef XENODE_DEVICE_KIND
  return nullptr;
}

std::string DeviceKindArg(const Napi::CallbackInfo& info, size_t i) {
  std::string kind = args::CString(info, i, "kind");
  if (kind != "disk" && kind != "nic" && kind != "pci") {
    throw Napi::TypeError::New(info.Env(), "kind must be 'disk', 'nic' or 'pci'");
  }
  return kind;
}

}  // namespace

Napi::Value XlHandle::AddDevice(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  std::string kind = DeviceKindArg(info, 1);
  std::string json = args::CString(info, 2, "device");
  const char* op = "";
  XlCall::Run run = DeviceOp(api(), kind, domid, json, true, &op);
  return Submit(new XlCall(info.Env(), this, op, domid, true, std::move(run)));
}

Napi::Value XlHandle::RemoveDevice(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  std::string kind = DeviceKindArg(info, 1);
  std::string json = args::CString(info, 2, "device");
  const char* op = "";
  XlCall::Run run = DeviceOp(api(), kind, domid, json, false, &op);
  return Submit(new XlCall(info.Env(), this, op, domid, true, std::move(run)));
}

// int libxl_domain_suspend(libxl_ctx *ctx, uint32_t domid, int fd, int flags /* LIBXL_SUSPEND_* */,
//                          const libxl_asyncop_how *ao_how);
// (writes the domain's save stream to fd; the domain is left suspended: `xl save` then
// destroys it)
Napi::Value XlHandle::Suspend(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  int fd = Fd(info, 1, "fd");
  bool live = args::Bool(info, 2, "live");
  bool debug = args::Bool(info, 3, "debug");
  int flags = (live ? LIBXL_SUSPEND_LIVE : 0) | (debug ? LIBXL_SUSPEND_DEBUG : 0);
  return Submit(new XlCall(info.Env(), this, "libxl_domain_suspend", domid, true, [=](XlCall& c) -> int {
    return c.api().libxl_domain_suspend(c.ctx(), domid, fd, flags, c.how());
  }));
}

// int libxl_domain_resume(libxl_ctx *ctx, uint32_t domid, int suspend_cancel,
//                         const libxl_asyncop_how *ao_how);
// (brings back a domain left suspended by libxl_domain_suspend, as `xl migrate` does when
// the destination fails; suspend_cancel: the guest's co-operative resume, where it
// carries on from its suspend call)
Napi::Value XlHandle::Resume(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  bool cancel = args::Bool(info, 1, "suspendCancel");
  return Submit(new XlCall(info.Env(), this, "libxl_domain_resume", domid, true, [=](XlCall& c) -> int {
    return c.api().libxl_domain_resume(c.ctx(), domid, cancel ? 1 : 0, c.how());
  }));
}

// void libxl_domain_remus_info_init(libxl_domain_remus_info *p);
// void libxl_domain_remus_info_dispose(libxl_domain_remus_info *p);
// int libxl_domain_remus_info_from_json(libxl_ctx *ctx, libxl_domain_remus_info *p, const char *s);
// int libxl_domain_remus_start(libxl_ctx *ctx, libxl_domain_remus_info *info, uint32_t domid,
//                              int send_fd, int recv_fd, const libxl_asyncop_how *ao_how);
// (completes only when replication stops: failover, an error, or close())
Napi::Value XlHandle::RemusStart(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  std::string json = args::CString(info, 1, "info");
  int send_fd = Fd(info, 2, "sendFd");
  int recv_fd = Fd(info, 3, "recvFd");
  return Submit(new XlCall(info.Env(), this, "libxl_domain_remus_start", domid, true, [=](XlCall& c) -> int {
    const XlApi* api = &c.api();
    auto* remus = new libxl_domain_remus_info;
    api->libxl_domain_remus_info_init(remus);
    c.OnDispose([api, remus] {
      api->libxl_domain_remus_info_dispose(remus);
      delete remus;
    });
    c.SetOp("libxl_domain_remus_info_from_json");
    int rc = api->libxl_domain_remus_info_from_json(c.ctx(), remus, json.c_str());
    if (rc != 0) return rc;
    c.SetOp("libxl_domain_remus_start");
    return api->libxl_domain_remus_start(c.ctx(), remus, domid, send_fd, recv_fd, c.how());
  }));
}

// int libxl_evenable_domain_death(libxl_ctx *ctx, uint32_t domid, libxl_ev_user,
//                                 libxl_evgen_domain_death **evgen_out);
// (DOMAIN_SHUTDOWN and DOMAIN_DEATH events, with for_user = the watch id, reach onEvent)
Napi::Value XlHandle::WatchDomain(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  uint32_t id = NextWatchId();
  auto evgen = std::make_shared<libxl_evgen_domain_death*>(nullptr);
  auto* call = new XlCall(info.Env(), this, "libxl_evenable_domain_death", domid, false, [=](XlCall& c) -> int {
    return c.api().libxl_evenable_domain_death(c.ctx(), domid, id, evgen.get());
  });
  call->on_success = [this, id, evgen](XlCall& c) {
    watches_[id] = *evgen;
    KeepAliveChanged();
    c.SetNumber(id);
  };
  return Submit(call);
}

// void libxl_evdisable_domain_death(libxl_ctx *ctx, libxl_evgen_domain_death*);
// (an unknown id, or one already removed, is not an error)
Napi::Value XlHandle::UnwatchDomain(const Napi::CallbackInfo& info) {
  uint32_t id = args::Uint32(info, 0, "watchId");
  libxl_evgen_domain_death* evgen = nullptr;
  auto found = watches_.find(id);
  if (found != watches_.end() && phase_ == Phase::kOpen) {
    evgen = found->second;
    watches_.erase(found);
    KeepAliveChanged();
  }
  return Submit(new XlCall(info.Env(), this, "libxl_evdisable_domain_death", -1, false, [evgen](XlCall& c) -> int {
    if (evgen != nullptr) c.api().libxl_evdisable_domain_death(c.ctx(), evgen);
    return 0;
  }));
}

// int libxl_console_get_tty(libxl_ctx *ctx, uint32_t domid, int cons_num,
//                           libxl_console_type type, char **path);
Napi::Value XlHandle::ConsoleTty(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  uint32_t cons = args::Uint32(info, 1, "consoleNumber");
  std::string type = args::CString(info, 2, "type");
  if (type != "pv" && type != "serial") throw Napi::TypeError::New(info.Env(), "type must be 'pv' or 'serial'");
  if (cons > INT_MAX) throw Napi::RangeError::New(info.Env(), "consoleNumber is too large");
  libxl_console_type t = type == "pv" ? LIBXL_CONSOLE_TYPE_PV : LIBXL_CONSOLE_TYPE_SERIAL;
  return Submit(new XlCall(info.Env(), this, "libxl_console_get_tty", domid, false, [=](XlCall& c) -> int {
    char* path = nullptr;
    int rc = c.api().libxl_console_get_tty(c.ctx(), domid, static_cast<int>(cons), t, &path);
    if (rc == 0) rc = TakeJson(c, path);  // a plain string, taken the same way
    return rc;
  }));
}

// int libxl_domain_rename(libxl_ctx *ctx, uint32_t domid, const char *old_name, const char *new_name);
Napi::Value XlHandle::RenameDomain(const Napi::CallbackInfo& info) {
  uint32_t domid = Domid(info, 0);
  std::string name = args::CString(info, 1, "newName");
  bool has_old = !args::At(info, 2).IsUndefined();
  std::string old_name = has_old ? args::CString(info, 2, "oldName") : "";
  return Submit(new XlCall(info.Env(), this, "libxl_domain_rename", domid, false, [=](XlCall& c) -> int {
    return c.api().libxl_domain_rename(c.ctx(), domid, has_old ? old_name.c_str() : nullptr, name.c_str());
  }));
}

}  // namespace xenode
