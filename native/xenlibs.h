// Xen's C libraries, opened with dlopen at run time.
//
// The addon links against none of them, so it loads on any machine and the failure to
// find a library is an ordinary XEN_UNAVAILABLE error naming the library and the fix.
// Each library is a table of function pointers whose types come from the installed
// headers (decltype), so a prototype can never drift from the one it was built against.
//
// Tables are process-wide: a library is loaded once per process, on first use, shared by
// every worker thread and never unloaded (libxenstore starts threads of its own). A failed
// load is not remembered, so installing the library lets the next attempt succeed.
//
// Adding a library (libxenevtchn.so.1, libxengnttab.so.1, libxentoollog.so.1, and
// libxenctrl.so.<ver> / libxenlight.so.<ver>, whose ABI changes every Xen release and
// whose soname therefore carries XENODE_XEN_VERSION): list its symbols in an X-macro,
// declare its table with XENODE_TABLE_FIELD and a Load function below, and give its
// soname and Debian package in xenlibs.cc.
#ifndef XENODE_XENLIBS_H
#define XENODE_XENLIBS_H

extern "C" {
#include <xenstore.h>
}

#include "errors.h"

#ifndef XENODE_XEN_VERSION
#error "XENODE_XEN_VERSION (the Xen version the addon is built against) must be defined by binding.gyp"
#endif

namespace xenode {
namespace xenlibs {

#define XENODE_TABLE_FIELD(name) decltype(&::name) name = nullptr;

// libxenstore.so.4: stable ABI across Xen releases.
#define XENODE_XENSTORE_SYMBOLS(X) \
  X(xs_open)                       \
  X(xs_close)                      \
  X(xs_fileno)                     \
  X(xs_check_watch)                \
  X(xs_read)                       \
  X(xs_write)                      \
  X(xs_mkdir)                      \
  X(xs_rm)                         \
  X(xs_directory)                  \
  X(xs_get_permissions)            \
  X(xs_set_permissions)            \
  X(xs_transaction_start)          \
  X(xs_transaction_end)            \
  X(xs_watch)                      \
  X(xs_unwatch)                    \
  X(xs_get_domain_path)            \
  X(xs_daemon_socket)

struct XenStore {
  XENODE_XENSTORE_SYMBOLS(XENODE_TABLE_FIELD)
};

// The libxenstore table, loading the library on first use. Returns nullptr and sets
// *failure (XEN_UNAVAILABLE) when it cannot be loaded. Any thread; it may touch the disk,
// so call it from a pool thread.
const XenStore* LoadXenStore(Failure* failure);

}  // namespace xenlibs
}  // namespace xenode

#endif  // XENODE_XENLIBS_H
