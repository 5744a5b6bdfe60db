// Hypervisor control through libxenctrl. See xenctrl.h.
#include "xenctrl.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"

namespace xenode {
namespace {

// Domains returned by one domainList call at most (xl asks for 1024 at a time too).
constexpr uint32_t kMaxDomainsPerCall = 1024;

struct XcOpenResult {
  const xenlibs::XenCtrl* api = nullptr;
  xc_interface* xch = nullptr;  // owned by the request until the constructor takes it
};

uint32_t DomidArg(const Napi::CallbackInfo& info, size_t i) {
  uint32_t domid = args::Uint32(info, i, "domid");
  if (domid >= 0x7FF0) throw Napi::RangeError::New(info.Env(), "domid must be in 0..32751");
  return domid;
}

Napi::Number Num(Napi::Env env, uint64_t v) { return Napi::Number::New(env, static_cast<double>(v)); }

// The CPUs set in a cpumap of `bytes` bytes.
Napi::Array CpusOf(Napi::Env env, const std::vector<uint8_t>& map) {
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (size_t cpu = 0; cpu < map.size() * 8; cpu++) {
    if (map[cpu / 8] & (1u << (cpu % 8))) out.Set(n++, static_cast<double>(cpu));
  }
  return out;
}

// A cpumap from an array of CPU numbers, each below `max_cpus`.
std::vector<uint8_t> CpumapArg(const Napi::CallbackInfo& info, size_t i, const char* what, int max_cpus) {
  Napi::Value v = args::At(info, i);
  if (!v.IsArray()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be an array of CPU numbers");
  Napi::Array cpus = v.As<Napi::Array>();
  std::vector<uint8_t> map((max_cpus + 7) / 8, 0);
  for (uint32_t k = 0; k < cpus.Length(); k++) {
    Napi::Value c = cpus.Get(k);
    double d = c.IsNumber() ? c.As<Napi::Number>().DoubleValue() : -1;
    if (!(d >= 0 && d < max_cpus && static_cast<double>(static_cast<int>(d)) == d)) {
      throw Napi::RangeError::New(info.Env(), std::string(what) + " must hold CPU numbers in 0.." + std::to_string(max_cpus - 1));
    }
    int cpu = static_cast<int>(d);
    map[cpu / 8] |= static_cast<uint8_t>(1u << (cpu % 8));
  }
  return map;
}

}  // namespace

// int xc_version(xc_interface *xch, int cmd, void *arg);
Napi::Value XcHandle::Version(const Napi::CallbackInfo& info) {
  struct Out {
    int version = 0;
    xen_extraversion_t extra{};
    xen_capabilities_info_t caps{};
    xen_changeset_info_t changeset{};
  };
  auto out = std::make_shared<Out>();
  return Call(
      info.Env(), "xc_version",
      [this, out] {
        out->version = api_->xc_version(xch_, XENVER_version, nullptr);
        if (out->version < 0 || api_->xc_version(xch_, XENVER_extraversion, &out->extra) < 0 ||
            api_->xc_version(xch_, XENVER_capabilities, &out->caps) < 0 ||
            api_->xc_version(xch_, XENVER_changeset, &out->changeset) < 0) {
          return errors::FromXenCall(errno, "xc_version");
        }
        return Failure();
      },
      [out](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("major", out->version >> 16);
        o.Set("minor", out->version & 0xffff);
        o.Set("extra", std::string(out->extra, strnlen(out->extra, sizeof out->extra)));
        o.Set("capabilities", std::string(out->caps, strnlen(out->caps, sizeof out->caps)));
        o.Set("changeset", std::string(out->changeset, strnlen(out->changeset, sizeof out->changeset)));
        return o;
      });
}

// int xc_physinfo(xc_interface *xch, xc_physinfo_t *info);
Napi::Value XcHandle::Physinfo(const Napi::CallbackInfo& info) {
  auto out = std::make_shared<xc_physinfo_t>();
  return Call(
      info.Env(), "xc_physinfo",
      [this, out] {
        std::memset(out.get(), 0, sizeof *out);
        return api_->xc_physinfo(xch_, out.get()) < 0 ? errors::FromXenCall(errno, "xc_physinfo") : Failure();
      },
      [out](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("threadsPerCore", out->threads_per_core);
        o.Set("coresPerSocket", out->cores_per_socket);
        o.Set("nrCpus", out->nr_cpus);
        o.Set("maxCpuId", out->max_cpu_id);
        o.Set("nrNodes", out->nr_nodes);
        o.Set("maxNodeId", out->max_node_id);
        o.Set("cpuKhz", out->cpu_khz);
        o.Set("capabilities", out->capabilities);
        o.Set("totalPages", Num(env, out->total_pages));
        o.Set("freePages", Num(env, out->free_pages));
        o.Set("scrubPages", Num(env, out->scrub_pages));
        o.Set("outstandingPages", Num(env, out->outstanding_pages));
        o.Set("maxMfn", Num(env, out->max_mfn));
        Napi::Array hw = Napi::Array::New(env, 8);
        for (uint32_t i = 0; i < 8; i++) hw.Set(i, out->hw_cap[i]);
        o.Set("hwCap", hw);
        return o;
      });
}

// int xc_domain_getinfolist(xc_interface *xch, uint32_t first_domain, unsigned int max_domains,
//                           xc_domaininfo_t *info);
Napi::Value XcHandle::DomainList(const Napi::CallbackInfo& info) {
  uint32_t first = args::Uint32(info, 0, "firstDomid");
  uint32_t max = args::Uint32(info, 1, "max");
  if (max == 0 || max > kMaxDomainsPerCall) throw Napi::RangeError::New(info.Env(), "max must be in 1..1024");
  auto out = std::make_shared<std::vector<xc_domaininfo_t>>(max);
  auto count = std::make_shared<int>(0);
  return Call(
      info.Env(), "xc_domain_getinfolist",
      [this, out, count, first, max] {
        *count = api_->xc_domain_getinfolist(xch_, first, max, out->data());
        return *count < 0 ? errors::FromXenCall(errno, "xc_domain_getinfolist") : Failure();
      },
      [out, count](Napi::Env env) {
        Napi::Array list = Napi::Array::New(env, *count);
        for (int i = 0; i < *count; i++) {
          const xc_domaininfo_t& d = (*out)[i];
          Napi::Object o = Napi::Object::New(env);
          o.Set("domid", d.domain);
          o.Set("flags", d.flags);
          o.Set("dying", (d.flags & XEN_DOMINF_dying) != 0);
          o.Set("hvm", (d.flags & XEN_DOMINF_hvm_guest) != 0);
          o.Set("shutdown", (d.flags & XEN_DOMINF_shutdown) != 0);
          o.Set("shutdownReason", (d.flags >> XEN_DOMINF_shutdownshift) & XEN_DOMINF_shutdownmask);
          o.Set("paused", (d.flags & XEN_DOMINF_paused) != 0);
          o.Set("blocked", (d.flags & XEN_DOMINF_blocked) != 0);
          o.Set("running", (d.flags & XEN_DOMINF_running) != 0);
          o.Set("debugged", (d.flags & XEN_DOMINF_debugged) != 0);
          o.Set("xenstoreDomain", (d.flags & XEN_DOMINF_xs_domain) != 0);
          o.Set("hap", (d.flags & XEN_DOMINF_hap) != 0);
          o.Set("totPages", Num(env, d.tot_pages));
          o.Set("maxPages", Num(env, d.max_pages));
          o.Set("outstandingPages", Num(env, d.outstanding_pages));
          o.Set("sharedPages", Num(env, d.shr_pages));
          o.Set("pagedPages", Num(env, d.paged_pages));
          o.Set("cpuTimeNs", Num(env, d.cpu_time));
          o.Set("onlineVcpus", d.nr_online_vcpus);
          o.Set("maxVcpuId", d.max_vcpu_id);
          o.Set("ssidref", d.ssidref);
          o.Set("cpupool", d.cpupool);
          char uuid[37];
          const uint8_t* h = d.handle;
          std::snprintf(uuid, sizeof uuid, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", h[0],
                        h[1], h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9], h[10], h[11], h[12], h[13], h[14], h[15]);
          o.Set("handle", uuid);
          list.Set(i, o);
        }
        return list;
      });
}

// int xc_domain_pause(xc_interface *xch, uint32_t domid);
Napi::Value XcHandle::Pause(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  return Call(info.Env(), "xc_domain_pause", [this, domid] {
    return api_->xc_domain_pause(xch_, domid) < 0 ? errors::FromXenCall(errno, "xc_domain_pause", domid) : Failure();
  });
}

// int xc_domain_unpause(xc_interface *xch, uint32_t domid);
Napi::Value XcHandle::Unpause(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  return Call(info.Env(), "xc_domain_unpause", [this, domid] {
    return api_->xc_domain_unpause(xch_, domid) < 0 ? errors::FromXenCall(errno, "xc_domain_unpause", domid) : Failure();
  });
}

// int xc_domain_setmaxmem(xc_interface *xch, uint32_t domid, uint64_t max_memkb);
Napi::Value XcHandle::SetMaxMem(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  Napi::Value v = args::At(info, 1);
  if (!v.IsNumber()) throw Napi::TypeError::New(info.Env(), "maxMemKb must be a number");
  double kb = v.As<Napi::Number>().DoubleValue();
  if (!(kb >= 0 && kb <= 9007199254740991.0 && static_cast<double>(static_cast<uint64_t>(kb)) == kb)) {
    throw Napi::RangeError::New(info.Env(), "maxMemKb must be a non-negative safe integer");
  }
  uint64_t max_kb = static_cast<uint64_t>(kb);
  return Call(info.Env(), "xc_domain_setmaxmem", [this, domid, max_kb] {
    return api_->xc_domain_setmaxmem(xch_, domid, max_kb) < 0 ? errors::FromXenCall(errno, "xc_domain_setmaxmem", domid)
                                                              : Failure();
  });
}

// int xc_get_max_cpus(xc_interface *xch);
// int xc_vcpu_getaffinity(xc_interface *xch, uint32_t domid, int vcpu, xc_cpumap_t cpumap_hard,
//                         xc_cpumap_t cpumap_soft, uint32_t flags);
Napi::Value XcHandle::GetVcpuAffinity(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  uint32_t vcpu = args::Uint32(info, 1, "vcpu");
  struct Out {
    std::vector<uint8_t> hard, soft;
  };
  auto out = std::make_shared<Out>();
  return Call(
      info.Env(), "xc_vcpu_getaffinity",
      [this, out, domid, vcpu] {
        int max = api_->xc_get_max_cpus(xch_);
        if (max <= 0) return errors::FromXenCall(errno, "xc_get_max_cpus");
        out->hard.assign((max + 7) / 8, 0);
        out->soft.assign((max + 7) / 8, 0);
        int rc = api_->xc_vcpu_getaffinity(xch_, domid, static_cast<int>(vcpu), out->hard.data(), out->soft.data(),
                                           XEN_VCPUAFFINITY_HARD | XEN_VCPUAFFINITY_SOFT);
        return rc < 0 ? errors::FromXenCall(errno, "xc_vcpu_getaffinity", domid) : Failure();
      },
      [out](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("hard", CpusOf(env, out->hard));
        o.Set("soft", CpusOf(env, out->soft));
        return o;
      });
}

// int xc_vcpu_setaffinity(xc_interface *xch, uint32_t domid, int vcpu, xc_cpumap_t cpumap_hard_inout,
//                         xc_cpumap_t cpumap_soft_inout, uint32_t flags);
// setVcpuAffinity(domid, vcpu, hard: number[] | null, soft: number[] | null, maxCpus)
// (maxCpus from physinfo's maxCpuId + 1, so that the maps are checked here, synchronously)
Napi::Value XcHandle::SetVcpuAffinity(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  uint32_t vcpu = args::Uint32(info, 1, "vcpu");
  uint32_t max_cpus = args::Uint32(info, 4, "maxCpus");
  if (max_cpus == 0 || max_cpus > 65536) throw Napi::RangeError::New(info.Env(), "maxCpus must be in 1..65536");
  uint32_t flags = 0;
  struct In {
    std::vector<uint8_t> hard, soft;
  };
  auto in = std::make_shared<In>();
  if (!args::At(info, 2).IsNull()) {
    in->hard = CpumapArg(info, 2, "hard", static_cast<int>(max_cpus));
    flags |= XEN_VCPUAFFINITY_HARD;
  }
  if (!args::At(info, 3).IsNull()) {
    in->soft = CpumapArg(info, 3, "soft", static_cast<int>(max_cpus));
    flags |= XEN_VCPUAFFINITY_SOFT;
  }
  if (flags == 0) throw Napi::TypeError::New(info.Env(), "hard or soft affinity must be given");
  return Call(info.Env(), "xc_vcpu_setaffinity", [this, in, domid, vcpu, flags, max_cpus] {
    // libxenctrl copies xc_get_max_cpus() bits: give it maps of at least that size.
    int max = api_->xc_get_max_cpus(xch_);
    if (max <= 0) return errors::FromXenCall(errno, "xc_get_max_cpus");
    size_t bytes = std::max<size_t>((max + 7) / 8, (max_cpus + 7) / 8);
    in->hard.resize(bytes, 0);
    in->soft.resize(bytes, 0);
    int rc = api_->xc_vcpu_setaffinity(xch_, domid, static_cast<int>(vcpu), in->hard.data(), in->soft.data(), flags);
    return rc < 0 ? errors::FromXenCall(errno, "xc_vcpu_setaffinity", domid) : Failure();
  });
}

// int xc_memshr_control(xc_interface *xch, uint32_t domid, int enable);
Napi::Value XcHandle::MemshrControl(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  bool enable = args::Bool(info, 1, "enable");
  return Call(info.Env(), "xc_memshr_control", [this, domid, enable] {
    return api_->xc_memshr_control(xch_, domid, enable ? 1 : 0) < 0
               ? errors::FromXenCall(errno, "xc_memshr_control", domid)
               : Failure();
  });
}

// long xc_sharing_freed_pages(xc_interface *xch);
// long xc_sharing_used_frames(xc_interface *xch);
Napi::Value XcHandle::SharingStats(const Napi::CallbackInfo& info) {
  struct Out {
    long freed = 0, used = 0;
  };
  auto out = std::make_shared<Out>();
  return Call(
      info.Env(), "xc_sharing_freed_pages",
      [this, out] {
        out->freed = api_->xc_sharing_freed_pages(xch_);
        if (out->freed < 0) return errors::FromXenCall(errno, "xc_sharing_freed_pages");
        out->used = api_->xc_sharing_used_frames(xch_);
        if (out->used < 0) return errors::FromXenCall(errno, "xc_sharing_used_frames");
        return Failure();
      },
      [out](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("freedPages", static_cast<double>(out->freed));
        o.Set("usedFrames", static_cast<double>(out->used));
        return o;
      });
}

// int xc_mca_op(xc_interface *xch, struct xen_mc *mc);
// mcaFetch(urgent: boolean, ackFetchId: number | null): { flags, fetchId, data: Buffer }
// XEN_MC_fetch copies the telemetry into guest memory, which must be a hypercall buffer.
Napi::Value XcHandle::McaFetch(const Napi::CallbackInfo& info) {
  bool urgent = args::Bool(info, 0, "urgent");
  Napi::Value ack = args::At(info, 1);
  bool acking = !ack.IsNull() && !ack.IsUndefined();
  uint64_t ack_id = 0;
  if (acking) {
    if (!ack.IsNumber()) throw Napi::TypeError::New(info.Env(), "ackFetchId must be a number or null");
    ack_id = static_cast<uint64_t>(ack.As<Napi::Number>().DoubleValue());
  }
  struct Out {
    uint32_t flags = 0;
    uint64_t fetch_id = 0;
    std::vector<uint8_t> data;
  };
  auto out = std::make_shared<Out>();
  return Call(
      info.Env(), "xc_mca_op",
      [this, out, urgent, acking, ack_id] {
        xc_hypercall_buffer_t hb{};
        hb.ubuf = reinterpret_cast<void*>(-1);
        // void *xc__hypercall_buffer_alloc(xc_interface *xch, xc_hypercall_buffer_t *b, size_t size);
        // void xc__hypercall_buffer_free(xc_interface *xch, xc_hypercall_buffer_t *b);
        void* buf = api_->xc__hypercall_buffer_alloc(xch_, &hb, sizeof(mc_info_t));
        if (buf == nullptr) return errors::FromXenCall(errno, "xc_hypercall_buffer_alloc");
        std::memset(buf, 0, sizeof(mc_info_t));
        struct xen_mc mc;
        std::memset(&mc, 0, sizeof mc);
        mc.cmd = XEN_MC_fetch;
        // xc_mca_op sets interface_version only after copying `mc` into its bounce
        // buffer, so Xen would see 0 and refuse with EACCES: set it here.
        mc.interface_version = XEN_MCA_INTERFACE_VERSION;
        mc.u.mc_fetch.flags = (urgent ? XEN_MC_URGENT : XEN_MC_NONURGENT) | (acking ? XEN_MC_ACK : 0);
        mc.u.mc_fetch.fetch_id = ack_id;
        // The raw form: xenctrl.h redefines set_xen_guest_handle for its buffer macros.
        mc.u.mc_fetch.data.p = static_cast<mc_info_t*>(buf);
        int rc = api_->xc_mca_op(xch_, &mc);
        int errnum = errno;
        if (rc == 0) {
          out->flags = mc.u.mc_fetch.flags;
          out->fetch_id = mc.u.mc_fetch.fetch_id;
          const auto* bytes = static_cast<const uint8_t*>(buf);
          out->data.assign(bytes, bytes + sizeof(mc_info_t));
        }
        api_->xc__hypercall_buffer_free(xch_, &hb);
        return rc < 0 ? errors::FromXenCall(errnum, "xc_mca_op") : Failure();
      },
      [out](Napi::Env env) {
        Napi::Object o = Napi::Object::New(env);
        o.Set("flags", out->flags);
        o.Set("fetchId", Num(env, out->fetch_id));
        o.Set("data", Napi::Buffer<uint8_t>::Copy(env, out->data.data(), out->data.size()));
        return o;
      });
}

// int xc_interface_close(xc_interface *xch);
void XcHandle::ReleaseNative() {
  if (xch_ != nullptr) api_->xc_interface_close(xch_);
  xch_ = nullptr;
}

XcHandle::XcHandle(const Napi::CallbackInfo& info) : PoolHandle<XcHandle>(info) {
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(info.Env(), "XcHandle cannot be constructed directly: use openXenCtrl()");
  }
  auto* open = info[0].As<Napi::External<XcOpenResult>>().Data();
  api_ = open->api;
  xch_ = open->xch;
  open->xch = nullptr;
  Opened();
}

Napi::Function XcHandle::Define(Napi::Env env) {
  return DefineClass(env, "XcHandle",
                     {
                         InstanceMethod("version", &XcHandle::Version),
                         InstanceMethod("physinfo", &XcHandle::Physinfo),
                         InstanceMethod("domainList", &XcHandle::DomainList),
                         InstanceMethod("pause", &XcHandle::Pause),
                         InstanceMethod("unpause", &XcHandle::Unpause),
                         InstanceMethod("setMaxMem", &XcHandle::SetMaxMem),
                         InstanceMethod("getVcpuAffinity", &XcHandle::GetVcpuAffinity),
                         InstanceMethod("setVcpuAffinity", &XcHandle::SetVcpuAffinity),
                         InstanceMethod("memshrControl", &XcHandle::MemshrControl),
                         InstanceMethod("sharingStats", &XcHandle::SharingStats),
                         InstanceMethod("mcaFetch", &XcHandle::McaFetch),
                         InstanceMethod("close", &XcHandle::Close),
                         InstanceAccessor("closed", &XcHandle::Closed, nullptr),
                     });
}

Napi::Function DefineXcHandle(Napi::Env env) { return XcHandle::Define(env); }

namespace {

class XcOpenOp final : public PromiseWorker {
 public:
  explicit XcOpenOp(Napi::Env env) : PromiseWorker(env, "xc_interface_open") {}
  ~XcOpenOp() override {
    if (result_.xch != nullptr) result_.api->xc_interface_close(result_.xch);
  }

 private:
  // xc_interface *xc_interface_open(xentoollog_logger *logger, xentoollog_logger *dombuild_logger,
  //                                 unsigned open_flags);
  void Execute() override {
    Failure failure;
    const xenlibs::XenCtrl* api = xenlibs::LoadXenCtrl(&failure);
    if (api == nullptr) return Fail(failure);
    xc_interface* xch = api->xc_interface_open(xenlibs::QuietLogger(), xenlibs::QuietLogger(), 0);
    if (xch == nullptr) {
      int errnum = errno;
      Failure f = errors::Unavailable(
          "xc_interface_open", "cannot open the hypervisor interface /dev/xen/privcmd (" + errors::ErrnoName(errnum) +
                                   "): this needs a Xen dom0 with the xen-privcmd module loaded, and root; or use "
                                   "{ backend: 'mock' }");
      f.errnum = errnum;
      f.path = "/dev/xen/privcmd";
      f.has_path = true;
      return Fail(f);
    }
    int xenver = api->xc_version(xch, XENVER_version, nullptr);
    Failure mismatch = xenver < 0 ? errors::FromXenCall(errno, "xc_version") : xenlibs::CheckHypervisorRelease(xenver);
    if (mismatch.failed()) {
      api->xc_interface_close(xch);
      return Fail(mismatch);
    }
    result_.api = api;
    result_.xch = xch;
  }
  Napi::Value Result(Napi::Env env) override {
    return state()->xc_handle_class.New({Napi::External<XcOpenResult>::New(env, &result_)});
  }

  XcOpenResult result_;
};

}  // namespace

Napi::Value OpenXenCtrl(const Napi::CallbackInfo& info) {
  auto* op = new XcOpenOp(info.Env());
  Napi::Value promise = op->Promise();
  op->Queue();
  return promise;
}

Napi::Value CheckXenRelease(const Napi::CallbackInfo& info) {
  uint32_t xenver = args::Uint32(info, 0, "xenver");
  Failure f = xenlibs::CheckHypervisorRelease(static_cast<int>(xenver));
  if (!f.failed()) return info.Env().Null();
  return errors::ToError(info.Env(), f).Value();
}

}  // namespace xenode
