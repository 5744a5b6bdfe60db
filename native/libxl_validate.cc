// validateLibxlJson(type, json): runs libxl's own JSON parser (libxl_<type>_from_json) on
// JSON that xenode generates, and returns libxl's re-serialisation of what it understood,
// on any machine with libxenlight installed: no hypervisor, no xenstored, no root.
//
// libxl's parsers need a libxl_ctx (for memory and logging), and libxl_ctx_alloc opens the
// hypervisor (xc_interface_open) and xenstored (xs_open), which fail off a dom0. So the
// validator loads a private copy of libxenlight and its dependencies into a new link-map
// namespace (dlmopen LM_ID_NEWLM) and points that copy's GOT entries for those four
// functions at stand-ins that succeed without doing anything — the technique libvirt's
// tests use with LD_PRELOAD (tests/libxlmock.c), confined here to the private copy, so the
// real libxenlight that XlHandle uses is never touched. A context made this way can
// parse and print, and is never used for anything else.
#include <dlfcn.h>
#include <elf.h>
#include <link.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <mutex>

#include "args.h"
#include "libxl.h"
#include "worker.h"

namespace xenode {
namespace {

// The stand-ins. A distinct non-null address each; libxl only stores and passes them on.
char fake_xc_handle;
char fake_xs_handle;
// (xc_interface is opaque to libxl's users; xenctrl.h is not needed for a pointer.)
void* FakeXcInterfaceOpen(xentoollog_logger*, xentoollog_logger*, unsigned) { return &fake_xc_handle; }
int FakeXcInterfaceClose(void*) { return 0; }
struct xs_handle* FakeXsOpen(unsigned long) { return reinterpret_cast<struct xs_handle*>(&fake_xs_handle); }
void FakeXsClose(struct xs_handle*) {}

struct Redirect {
  const char* symbol;
  void* to;
};

const Redirect kRedirects[] = {
    {"xc_interface_open", reinterpret_cast<void*>(&FakeXcInterfaceOpen)},
    {"xc_interface_close", reinterpret_cast<void*>(&FakeXcInterfaceClose)},
    {"xs_open", reinterpret_cast<void*>(&FakeXsOpen)},
    {"xs_close", reinterpret_cast<void*>(&FakeXsClose)},
};

#if defined(__x86_64__)
constexpr unsigned kJumpSlot = R_X86_64_JUMP_SLOT;
constexpr unsigned kGlobDat = R_X86_64_GLOB_DAT;
#elif defined(__aarch64__)
constexpr unsigned kJumpSlot = R_AARCH64_JUMP_SLOT;
constexpr unsigned kGlobDat = R_AARCH64_GLOB_DAT;
#else
#define XENODE_NO_GOT_PATCH 1
#endif

#ifndef XENODE_NO_GOT_PATCH
// The PT_GNU_RELRO range of the object loaded at `base`, or {0, 0}.
struct Range {
  uintptr_t begin = 0;
  uintptr_t end = 0;
};

Range RelroOf(ElfW(Addr) base) {
  struct Query {
    ElfW(Addr) base;
    Range range;
  } q{base, {}};
  dl_iterate_phdr(
      [](struct dl_phdr_info* info, size_t, void* data) -> int {
        auto* q = static_cast<Query*>(data);
        if (info->dlpi_addr != q->base) return 0;
        for (int i = 0; i < info->dlpi_phnum; i++) {
          const ElfW(Phdr)& ph = info->dlpi_phdr[i];
          if (ph.p_type != PT_GNU_RELRO) continue;
          q->range.begin = info->dlpi_addr + ph.p_vaddr;
          q->range.end = q->range.begin + ph.p_memsz;
          return 1;
        }
        return 0;
      },
      &q);
  return q.range;
}

// Writes `to` into every GOT slot of `map` bound to `symbol` (libxenlight is linked with
// -z now, so every slot is already bound; RELRO makes them read-only, hence mprotect).
int PatchGot(struct link_map* map, const Redirect& r) {
  const ElfW(Sym)* symtab = nullptr;
  const char* strtab = nullptr;
  const ElfW(Rela)* tables[2] = {nullptr, nullptr};
  size_t sizes[2] = {0, 0};
  // glibc relocates the d_ptr values in place on these architectures; be safe either way.
  auto addr = [map](ElfW(Addr) p) { return p < map->l_addr ? p + map->l_addr : p; };
  for (const ElfW(Dyn)* d = map->l_ld; d->d_tag != DT_NULL; d++) {
    switch (d->d_tag) {
      case DT_SYMTAB: symtab = reinterpret_cast<const ElfW(Sym)*>(addr(d->d_un.d_ptr)); break;
      case DT_STRTAB: strtab = reinterpret_cast<const char*>(addr(d->d_un.d_ptr)); break;
      case DT_JMPREL: tables[0] = reinterpret_cast<const ElfW(Rela)*>(addr(d->d_un.d_ptr)); break;
      case DT_PLTRELSZ: sizes[0] = d->d_un.d_val; break;
      case DT_RELA: tables[1] = reinterpret_cast<const ElfW(Rela)*>(addr(d->d_un.d_ptr)); break;
      case DT_RELASZ: sizes[1] = d->d_un.d_val; break;
      default: break;
    }
  }
  if (symtab == nullptr || strtab == nullptr) return 0;
  int patched = 0;
  long page = sysconf(_SC_PAGESIZE);
  const Range relro = RelroOf(map->l_addr);
  for (int t = 0; t < 2; t++) {
    if (tables[t] == nullptr) continue;
    for (size_t i = 0; i < sizes[t] / sizeof(ElfW(Rela)); i++) {
      const ElfW(Rela)& rel = tables[t][i];
      unsigned type = ELF64_R_TYPE(rel.r_info);
      if (type != kJumpSlot && type != kGlobDat) continue;
      const char* name = strtab + symtab[ELF64_R_SYM(rel.r_info)].st_name;
      if (std::strcmp(name, r.symbol) != 0) continue;
      auto* slot = reinterpret_cast<void**>(map->l_addr + rel.r_offset);
      auto base = reinterpret_cast<uintptr_t>(slot) & ~static_cast<uintptr_t>(page - 1);
      if (mprotect(reinterpret_cast<void*>(base), page, PROT_READ | PROT_WRITE) != 0) return -1;
      *slot = r.to;
      // Read-only again if it was (RELRO); a page outside RELRO was writable already.
      if (base >= relro.begin && base < relro.end) mprotect(reinterpret_cast<void*>(base), page, PROT_READ);
      patched++;
    }
  }
  return patched;
}
#endif

// The private copy: the parser functions, and free() of that copy's libc.
struct Validator {
#define XENODE_VALIDATOR_SYMBOLS(X)   \
  X(libxl_ctx_alloc)                  \
  X(libxl_ctx_free)                   \
  X(libxl_domain_config_init)         \
  X(libxl_domain_config_dispose)      \
  X(libxl_domain_config_from_json)    \
  X(libxl_domain_config_to_json)      \
  X(libxl_device_disk_init)           \
  X(libxl_device_disk_dispose)        \
  X(libxl_device_disk_from_json)      \
  X(libxl_device_disk_to_json)        \
  X(libxl_device_nic_init)            \
  X(libxl_device_nic_dispose)         \
  X(libxl_device_nic_from_json)       \
  X(libxl_device_nic_to_json)         \
  X(libxl_device_pci_init)            \
  X(libxl_device_pci_dispose)         \
  X(libxl_device_pci_from_json)       \
  X(libxl_device_pci_to_json)         \
  X(libxl_domain_restore_params_init) \
  X(libxl_domain_restore_params_dispose) \
  X(libxl_domain_restore_params_from_json) \
  X(libxl_domain_restore_params_to_json) \
  X(libxl_domain_remus_info_init)     \
  X(libxl_domain_remus_info_dispose)  \
  X(libxl_domain_remus_info_from_json) \
  X(libxl_domain_remus_info_to_json)
  XENODE_VALIDATOR_SYMBOLS(XENODE_TABLE_FIELD)
  void (*free)(void*) = nullptr;
};

const Validator* LoadValidator(Failure* failure) {
  static std::mutex mutex;
  static bool loaded = false;
  static Validator table;
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded) return &table;
#ifdef XENODE_NO_GOT_PATCH
  *failure = errors::Unavailable("validateLibxlJson", "libxl JSON validation is implemented for x86_64 and aarch64 only");
  return nullptr;
#else
  // libxentoollog and libxenlight in the main namespace first: their absence, or another
  // Xen's libxenlight, gets the same error as the toolstack itself.
  if (xenlibs::LoadLibxl(failure) == nullptr) return nullptr;
  const std::string soname = xenlibs::LibxlSoname();
  void* dl = dlmopen(LM_ID_NEWLM, soname.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (dl == nullptr) {
    const char* why = dlerror();
    *failure = errors::Unavailable("dlmopen", soname + " cannot be loaded privately for validation (" +
                                                  (why ? why : "unknown error") + ")");
    return nullptr;
  }
  struct link_map* map = nullptr;
  if (dlinfo(dl, RTLD_DI_LINKMAP, &map) != 0 || map == nullptr) {
    *failure = errors::Unavailable("dlinfo", "cannot find the private copy of " + soname);
    return nullptr;
  }
  for (const Redirect& r : kRedirects) {
    if (PatchGot(map, r) <= 0) {
      // Left loaded: a namespace cannot be reclaimed reliably, and retrying cannot help.
      *failure = errors::Unavailable("dlmopen", "cannot redirect " + std::string(r.symbol) + " in the private copy of " +
                                                    soname + " (its relocations are not what xenode expects)");
      return nullptr;
    }
  }
  Validator t;
  std::string missing;
#define XENODE_RESOLVE(name)                                       \
  t.name = reinterpret_cast<decltype(t.name)>(dlsym(dl, #name)); \
  if (t.name == nullptr) missing = #name;
  XENODE_VALIDATOR_SYMBOLS(XENODE_RESOLVE)
#undef XENODE_RESOLVE
  t.free = reinterpret_cast<void (*)(void*)>(dlsym(dl, "free"));
  if (!missing.empty() || t.free == nullptr) {
    *failure = errors::Unavailable("dlsym", soname + " has no " + (missing.empty() ? "free" : missing));
    return nullptr;
  }
  table = t;
  loaded = true;
  return &table;
#endif
}

// Parses `json` as a libxl_<T> and prints it back, in a context of the private copy.
// For each type T named in XENODE_VALIDATOR_SYMBOLS (domain_config, device_disk, device_nic,
// device_pci, domain_restore_params, domain_remus_info), from _libxl_types.h:
// void libxl_<T>_init(libxl_<T> *p);
// void libxl_<T>_dispose(libxl_<T> *p);
// int libxl_<T>_from_json(libxl_ctx *ctx, libxl_<T> *p, const char *s);
// char *libxl_<T>_to_json(libxl_ctx *ctx, libxl_<T> *p);
template <typename T>
int RoundTrip(const Validator& v, libxl_ctx* ctx, void (*init)(T*), void (*dispose)(T*),
              int (*from_json)(libxl_ctx*, T*, const char*), char* (*to_json)(libxl_ctx*, T*), const std::string& json,
              std::string* out) {
  T value;
  init(&value);
  int rc = from_json(ctx, &value, json.c_str());
  if (rc == 0) {
    char* text = to_json(ctx, &value);
    if (text == nullptr) {
      rc = ERROR_FAIL;
    } else {
      *out = text;
      v.free(text);
    }
  }
  dispose(&value);
  return rc;
}

class ValidateOp final : public PromiseWorker {
 public:
  ValidateOp(Napi::Env env, std::string type, std::string json)
      : PromiseWorker(env, "validateLibxlJson"), type_(std::move(type)), json_(std::move(json)) {}

 private:
  void Execute() override {
    Failure failure;
    const Validator* v = LoadValidator(&failure);
    if (v == nullptr) return Fail(failure);
    XlLog log;
    libxl_ctx* ctx = nullptr;
    // int libxl_ctx_alloc(libxl_ctx **pctx, int version, unsigned flags, xentoollog_logger *lg);
    // int libxl_ctx_free(libxl_ctx *ctx);
    int rc = v->libxl_ctx_alloc(&ctx, LIBXL_VERSION, 0, log.logger());
    if (rc != 0) return Fail(errors::FromLibxl(rc, "libxl_ctx_alloc", log.Since(0)));
    std::string op = "libxl_" + type_ + "_from_json";
#define XENODE_ROUND_TRIP(t)                                                                             \
  RoundTrip<libxl_##t>(*v, ctx, v->libxl_##t##_init, v->libxl_##t##_dispose, v->libxl_##t##_from_json, \
                       v->libxl_##t##_to_json, json_, &result_)
    if (type_ == "domain_config") {
      rc = XENODE_ROUND_TRIP(domain_config);
    } else if (type_ == "device_disk") {
      rc = XENODE_ROUND_TRIP(device_disk);
    } else if (type_ == "device_nic") {
      rc = XENODE_ROUND_TRIP(device_nic);
    } else if (type_ == "device_pci") {
      rc = XENODE_ROUND_TRIP(device_pci);
    } else if (type_ == "domain_restore_params") {
      rc = XENODE_ROUND_TRIP(domain_restore_params);
    } else {
      rc = XENODE_ROUND_TRIP(domain_remus_info);
    }
#undef XENODE_ROUND_TRIP
    if (rc != 0) {
      op_ = op;
      Fail(errors::FromLibxl(rc, op_.c_str(), log.Since(0)));
    }
    v->libxl_ctx_free(ctx);
  }
  Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, result_); }

  std::string type_;
  std::string json_;
  std::string op_;
  std::string result_;
};

}  // namespace

Napi::Value ValidateLibxlJson(const Napi::CallbackInfo& info) {
  std::string type = args::CString(info, 0, "type");
  if (type != "domain_config" && type != "device_disk" && type != "device_nic" && type != "device_pci" &&
      type != "domain_restore_params" && type != "domain_remus_info") {
    throw Napi::TypeError::New(info.Env(),
                               "type must be one of 'domain_config', 'device_disk', 'device_nic', 'device_pci', "
                               "'domain_restore_params', 'domain_remus_info'");
  }
  std::string json = args::CString(info, 1, "json");
  auto* op = new ValidateOp(info.Env(), std::move(type), std::move(json));
  Napi::Value promise = op->Promise();
  op->Queue();
  return promise;
}

}  // namespace xenode
