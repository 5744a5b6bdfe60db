#include "xenlibs.h"

#include <dlfcn.h>

#include <mutex>
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

}  // namespace

const XenStore* LoadXenStore(Failure* failure) {
  static Cache<XenStore> cache;
  return cache.Get(kXenStore, FillXenStore, failure);
}

}  // namespace xenlibs
}  // namespace xenode
