#include "xenlibs.h"

#include <dirent.h>
#include <dlfcn.h>
#include <glob.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

namespace xenode {
namespace xenlibs {
namespace {

struct LibrarySpec {
  std::string soname;
  // The Debian package that ships it, for the fix in the error message.
  std::string package;
};

const LibrarySpec kXenStore = {"libxenstore.so.4", "libxenstore4"};

template <typename Fn>
bool Resolve(void* dl, const char* name, Fn* slot, std::string* missing) {
  void* sym = dlsym(dl, name);
  if (sym == nullptr) {
    *missing = name;
    return false;
  }
  *slot = reinterpret_cast<Fn>(sym);
  return true;
}

// One library's table, filled on the first successful load.
template <typename Table>
class Cache {
 public:
  using Fill = bool (*)(void* dl, Table* table, std::string* missing);
  // Explains a failed dlopen (given dlerror()) when the default explanation is not enough.
  using Explain = std::function<bool(const std::string& why, Failure* failure)>;

  const Table* Get(const LibrarySpec& spec, Fill fill, Failure* failure, const Explain& explain = nullptr) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (loaded_) return &table_;
    void* dl = dlopen(spec.soname.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (dl == nullptr) {
      const char* err = dlerror();
      std::string why = err ? err : "unknown error";
      if (explain && explain(why, failure)) return nullptr;
      *failure = errors::Unavailable(
          "dlopen", spec.soname + " cannot be loaded (" + why +
                        "): this needs Xen's libraries, as on a Xen dom0. Install them (Debian: apt-get install " +
                        spec.package + "), or use { backend: 'mock' }");
      return nullptr;
    }
    std::string missing;
    Table table;
    if (!fill(dl, &table, &missing)) {
      dlclose(dl);
      *failure = errors::Unavailable("dlsym", spec.soname + " has no " + missing +
                                                  ": it is older than the Xen " XENODE_XEN_VERSION
                                                  " xenode was built against. Update Xen's libraries, or use "
                                                  "{ backend: 'mock' }");
      return nullptr;
    }
    table_ = table;
    loaded_ = true;
    return &table_;
  }

 private:
  std::mutex mutex_;
  bool loaded_ = false;
  Table table_;
};

#define XENODE_RESOLVE(name) \
  if (!Resolve(dl, #name, &t->name, missing)) return false;

bool FillXenStore(void* dl, XenStore* t, std::string* missing) {
  XENODE_XENSTORE_SYMBOLS(XENODE_RESOLVE)
  return true;
}

bool FillToolLog(void* dl, ToolLog* t, std::string* missing) {
  XENODE_TOOLLOG_SYMBOLS(XENODE_RESOLVE)
  return true;
}

bool FillEvtchn(void* dl, Evtchn* t, std::string* missing) {
  XENODE_EVTCHN_SYMBOLS(XENODE_RESOLVE)
  return true;
}

bool FillGnttab(void* dl, Gnttab* t, std::string* missing) {
  XENODE_GNTTAB_SYMBOLS(XENODE_RESOLVE)
  return true;
}

bool FillXenCtrl(void* dl, XenCtrl* t, std::string* missing) {
  XENODE_XENCTRL_SYMBOLS(XENODE_RESOLVE)
  return true;
}

#undef XENODE_RESOLVE

const ToolLog* LoadToolLog(Failure* failure) {
  static Cache<ToolLog> cache;
  return cache.Get({"libxentoollog.so.1", "libxentoollog1"}, FillToolLog, failure);
}

// The libxenctrl.so.* of other Xen releases installed where the dynamic linker looks.
std::vector<std::string> OtherXenCtrls() {
  std::vector<std::string> dirs = {"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                                   "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
                                   "/usr/local/lib"};
  if (const char* ld = std::getenv("LD_LIBRARY_PATH")) {
    std::stringstream list(ld);
    std::string dir;
    while (std::getline(list, dir, ':')) {
      if (!dir.empty()) dirs.insert(dirs.begin(), dir);
    }
  }
  // Sonames only (libxenctrl.so.4.18, not .so.4.18.0), each once (/lib may be /usr/lib).
  std::vector<std::string> found;
  std::set<std::string> seen;
  for (const std::string& dir : dirs) {
    glob_t g;
    if (glob((dir + "/libxenctrl.so.*.*").c_str(), 0, nullptr, &g) == 0) {
      for (size_t i = 0; i < g.gl_pathc; i++) {
        std::string path = g.gl_pathv[i];
        std::string version = path.substr(path.rfind(".so.") + 4);
        if (std::count(version.begin(), version.end(), '.') != 1) continue;
        char* real = realpath(path.c_str(), nullptr);
        bool fresh = seen.insert(real != nullptr ? real : path).second;
        std::free(real);
        if (fresh) found.push_back(path);
      }
    }
    globfree(&g);
  }
  return found;
}

// "4.17" from "4.17.0".
std::string MajorMinor(const std::string& version) {
  size_t first = version.find('.');
  if (first == std::string::npos) return version;
  size_t second = version.find('.', first + 1);
  return second == std::string::npos ? version : version.substr(0, second);
}

thread_local std::string last_message;

void QuietVmessage(struct xentoollog_logger* /*logger*/, xentoollog_level level, int errnoval, const char* context,
                   const char* format, va_list al) {
  if (level < XTL_ERROR) return;
  char text[512];
  std::vsnprintf(text, sizeof text, format, al);
  last_message = context ? std::string(context) + ": " + text : std::string(text);
  (void)errnoval;
}

void QuietDestroy(struct xentoollog_logger* /*logger*/) {}

}  // namespace

const XenStore* LoadXenStore(Failure* failure) {
  static Cache<XenStore> cache;
  return cache.Get(kXenStore, FillXenStore, failure);
}

const Evtchn* LoadEvtchn(Failure* failure) {
  static Cache<Evtchn> cache;
  if (LoadToolLog(failure) == nullptr) return nullptr;
  return cache.Get({"libxenevtchn.so.1", "libxenevtchn1"}, FillEvtchn, failure);
}

const Gnttab* LoadGnttab(Failure* failure) {
  static Cache<Gnttab> cache;
  if (LoadToolLog(failure) == nullptr) return nullptr;
  return cache.Get({"libxengnttab.so.1", "libxengnttab1"}, FillGnttab, failure);
}

std::string BuildRelease() {
  const char* test = std::getenv("XENODE_TEST_XEN_BUILD_VERSION");
  return MajorMinor(test != nullptr && *test != '\0' ? test : XENODE_XEN_VERSION);
}

std::string XenCtrlSoname() { return "libxenctrl.so." + BuildRelease(); }

const XenCtrl* LoadXenCtrl(Failure* failure) {
  // One cache per release, so that the test seam cannot hand out another release's table.
  static std::mutex mutex;
  static std::map<std::string, Cache<XenCtrl>> caches;
  if (LoadToolLog(failure) == nullptr) return nullptr;
  const std::string release = BuildRelease();
  Cache<XenCtrl>* cache;
  {
    std::lock_guard<std::mutex> lock(mutex);
    cache = &caches[release];
  }
  const std::string soname = XenCtrlSoname();
  return cache->Get({soname, "libxenmisc" + release}, FillXenCtrl, failure,
                    [&](const std::string& why, Failure* out) {
                      std::vector<std::string> others = OtherXenCtrls();
                      if (others.empty()) return false;
                      std::string list;
                      for (const std::string& other : others) list += (list.empty() ? "" : ", ") + other;
                      *out = errors::VersionMismatch(
                          "dlopen", soname + " cannot be loaded (" + why + "), but this host has " + list +
                                        ": its Xen is not the Xen " + release +
                                        " xenode was built for. The toolstack part (xenctrl) needs a build for this "
                                        "host's Xen: install its libxen-dev and run npm rebuild xenode "
                                        "--build-from-source. XenStore, event channels and grant tables keep working");
                      return true;
                    });
}

Failure CheckHypervisorRelease(int xenver) {
  const std::string running = std::to_string(xenver >> 16) + "." + std::to_string(xenver & 0xffff);
  const std::string release = BuildRelease();
  if (running == release) return Failure();
  return errors::VersionMismatch(
      "xc_version", "the hypervisor is Xen " + running + " but xenode's toolstack part was built for Xen " + release +
                        ", whose hypercall interface differs. Install this host's libxen-dev and run npm rebuild "
                        "xenode --build-from-source. XenStore, event channels and grant tables keep working");
}

struct xentoollog_logger* QuietLogger() {
  static struct xentoollog_logger logger = {QuietVmessage, nullptr, QuietDestroy};
  return &logger;
}

std::string LastLibraryMessage() { return last_message; }

void ClearLibraryMessage() { last_message.clear(); }

// ---- libxl ----

bool FillLibxl(void* dl, Libxl* t, std::string* missing) {
#define XENODE_RESOLVE(name) \
  if (!Resolve(dl, #name, &t->name, missing)) return false;
  XENODE_LIBXL_SYMBOLS(XENODE_RESOLVE)
#undef XENODE_RESOLVE
  return true;
}

bool FillToollog(void* dl, Libxl* t, std::string* missing) {
#define XENODE_RESOLVE(name) \
  if (!Resolve(dl, #name, &t->name, missing)) return false;
  XENODE_TOOLLOG_SYMBOLS(XENODE_RESOLVE)
#undef XENODE_RESOLVE
  return true;
}

// The libxenlight.so.<major.minor> sonames present in the usual library directories, other
// than `expected`: the Xen this host actually has, when the one xenode was built for is absent.
std::string OtherLibxlVersions(const std::string& expected) {
  std::string found;
  std::vector<std::string> dirs;
  const char* env = std::getenv("LD_LIBRARY_PATH");
  for (std::string rest = env ? env : ""; !rest.empty();) {
    size_t colon = rest.find(':');
    dirs.push_back(rest.substr(0, colon));
    rest = colon == std::string::npos ? "" : rest.substr(colon + 1);
  }
  for (const char* dir : {"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                          "/usr/local/lib", "/usr/local/lib64"}) {
    dirs.push_back(dir);
  }
  for (const std::string& dir : dirs) {
    DIR* d = opendir(dir.c_str());
    if (d == nullptr) continue;
    while (struct dirent* e = readdir(d)) {
      std::string name = e->d_name;
      const std::string prefix = "libxenlight.so.";
      if (name.compare(0, prefix.size(), prefix) != 0 || name == expected) continue;
      // Only the soname itself (two numbers), not libxenlight.so.4.18.0.
      std::string version = name.substr(prefix.size());
      if (std::count(version.begin(), version.end(), '.') != 1) continue;
      if (found.find(name) == std::string::npos) found += (found.empty() ? "" : ", ") + dir + "/" + name;
    }
    closedir(d);
  }
  return found;
}


std::string LibxlSoname() {
  std::string version = XENODE_XEN_VERSION;
  size_t first = version.find('.');
  size_t second = first == std::string::npos ? std::string::npos : version.find('.', first + 1);
  return "libxenlight.so." + version.substr(0, second);
}

const Libxl* LoadLibxl(Failure* failure) {
  static std::mutex mutex;
  static bool loaded = false;
  static Libxl table;
  static const std::string soname = LibxlSoname();
  std::lock_guard<std::mutex> lock(mutex);
  if (loaded) return &table;
  Libxl t;
  // libxentoollog first: libxenlight needs it, and its absence has its own fix.
  static const LibrarySpec toollog = {"libxentoollog.so.1", "libxentoollog1"};
  static Cache<Libxl> toollog_cache;
  const Libxl* tl = toollog_cache.Get(toollog, FillToollog, failure);
  if (tl == nullptr) return nullptr;
  t.xtl_level_to_string = tl->xtl_level_to_string;
  static const std::string package = "libxenmisc" + soname.substr(soname.rfind(".so.") + 4);
  const LibrarySpec spec = {soname.c_str(), package.c_str()};
  Cache<Libxl> cache;  // failures are not remembered; success is kept in `table`
  const Libxl* xl = cache.Get(spec, FillLibxl, failure);
  if (xl == nullptr) {
    std::string others = failure->op == "dlopen" ? OtherLibxlVersions(soname) : "";
    if (!others.empty()) {
      Failure f;
      f.code = "XEN_VERSION_MISMATCH";
      f.op = "dlopen";
      f.message = std::string("this host has ") + others + " but xenode was built against Xen " XENODE_XEN_VERSION " (" +
                  soname + "): libxl's ABI changes with every Xen release, so rebuild xenode here (npm rebuild xenode " +
                  "--build-from-source, with libxen-dev installed). XenStore, event channels and grant tables work " +
                  "regardless";
      *failure = f;
    }
    return nullptr;
  }
  table = *xl;
  table.xtl_level_to_string = t.xtl_level_to_string;
  loaded = true;
  return &table;
}

}  // namespace xenlibs
}  // namespace xenode
