#include "xenlibs.h"

#include <dirent.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <vector>
#include <string>

namespace xenode {
namespace xenlibs {
namespace {

struct LibrarySpec {
  const char* soname;
  // The Debian package that ships it, for the fix in the error message.
  const char* package;
};

constexpr LibrarySpec kXenStore = {"libxenstore.so.4", "libxenstore4"};

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

  const Table* Get(const LibrarySpec& spec, Fill fill, Failure* failure) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (loaded_) return &table_;
    void* dl = dlopen(spec.soname, RTLD_NOW | RTLD_LOCAL);
    if (dl == nullptr) {
      const char* why = dlerror();
      *failure = errors::Unavailable(
          "dlopen", std::string(spec.soname) + " cannot be loaded (" + (why ? why : "unknown error") +
                        "): this needs Xen's libraries, as on a Xen dom0. Install them (Debian: apt-get install " +
                        spec.package + "), or use { backend: 'mock' }");
      return nullptr;
    }
    std::string missing;
    Table table;
    if (!fill(dl, &table, &missing)) {
      dlclose(dl);
      *failure = errors::Unavailable("dlsym", std::string(spec.soname) + " has no " + missing +
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

bool FillXenStore(void* dl, XenStore* t, std::string* missing) {
#define XENODE_RESOLVE(name) \
  if (!Resolve(dl, #name, &t->name, missing)) return false;
  XENODE_XENSTORE_SYMBOLS(XENODE_RESOLVE)
#undef XENODE_RESOLVE
  return true;
}

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

}  // namespace

const XenStore* LoadXenStore(Failure* failure) {
  static Cache<XenStore> cache;
  return cache.Get(kXenStore, FillXenStore, failure);
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
