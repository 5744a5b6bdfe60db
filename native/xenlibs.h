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
// libxl (libxenlight.so.<ver>, libxentoollog.so.1).
#include <libxl.h>
#include <libxl_event.h>
#include <libxl_utils.h>
// The hypervisor-interface libraries (evtchn.cc, gnttab.cc, xenctrl.cc).
#include <xenctrl.h>
#include <xenevtchn.h>
#include <xengnttab.h>
#include <xentoollog.h>
}

#include <string>

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

// ---- The hypervisor-interface libraries (event channels, grant tables, xenctrl) ----

// libxentoollog.so.1: stable ABI. Loaded before the others so that its absence is named
// as such; xenode passes its own logger (xenlibs.cc) to every library it opens.
#define XENODE_TOOLLOG_SYMBOLS(X) X(xtl_level_to_string)

// libxenevtchn.so.1: stable ABI.
#define XENODE_EVTCHN_SYMBOLS(X)  \
  X(xenevtchn_open)               \
  X(xenevtchn_close)              \
  X(xenevtchn_fd)                 \
  X(xenevtchn_notify)             \
  X(xenevtchn_bind_unbound_port)  \
  X(xenevtchn_bind_interdomain)   \
  X(xenevtchn_bind_virq)          \
  X(xenevtchn_unbind)             \
  X(xenevtchn_pending)            \
  X(xenevtchn_unmask)

// libxengnttab.so.1: stable ABI; gntdev (map) and gntalloc (share).
#define XENODE_GNTTAB_SYMBOLS(X)       \
  X(xengnttab_open)                    \
  X(xengnttab_close)                   \
  X(xengnttab_map_domain_grant_refs)   \
  X(xengnttab_unmap)                   \
  X(xengntshr_open)                    \
  X(xengntshr_close)                   \
  X(xengntshr_share_pages)             \
  X(xengntshr_unshare)

// libxenctrl.so.<major.minor>: its ABI (and the hypercall interface versions compiled
// into it) changes every Xen release, hence the versioned soname.
#define XENODE_XENCTRL_SYMBOLS(X)     \
  X(xc_interface_open)                \
  X(xc_interface_close)               \
  X(xc_version)                       \
  X(xc_physinfo)                      \
  X(xc_domain_getinfolist)            \
  X(xc_domain_pause)                  \
  X(xc_domain_unpause)                \
  X(xc_domain_setmaxmem)              \
  X(xc_get_max_cpus)                  \
  X(xc_vcpu_setaffinity)              \
  X(xc_vcpu_getaffinity)              \
  X(xc_memshr_control)                \
  X(xc_sharing_freed_pages)           \
  X(xc_sharing_used_frames)           \
  X(xc_mca_op)                        \
  X(xc__hypercall_buffer_alloc)       \
  X(xc__hypercall_buffer_free)

struct ToolLog {
  XENODE_TOOLLOG_SYMBOLS(XENODE_TABLE_FIELD)
};
struct Evtchn {
  XENODE_EVTCHN_SYMBOLS(XENODE_TABLE_FIELD)
};
struct Gnttab {
  XENODE_GNTTAB_SYMBOLS(XENODE_TABLE_FIELD)
};
struct XenCtrl {
  XENODE_XENCTRL_SYMBOLS(XENODE_TABLE_FIELD)
};

// As LoadXenStore. Each loads libxentoollog.so.1 first.
const Evtchn* LoadEvtchn(Failure* failure);
const Gnttab* LoadGnttab(Failure* failure);
// XEN_VERSION_MISMATCH when libxenctrl.so.<build major.minor> is absent but another
// release's libxenctrl.so.* is installed; XEN_UNAVAILABLE when none is.
const XenCtrl* LoadXenCtrl(Failure* failure);

// The Xen release the toolstack part is built for, "major.minor" (e.g. "4.17"): from
// XENODE_XEN_VERSION, or from $XENODE_TEST_XEN_BUILD_VERSION, a test seam that lets the
// version checks be exercised on a host without a hypervisor.
std::string BuildRelease();
// libxenctrl.so.<BuildRelease()>.
std::string XenCtrlSoname();
// A failure when the running hypervisor's release (xc_version(XENVER_version): major in
// the high 16 bits, minor in the low) is not BuildRelease(), else a Failure with no code.
Failure CheckHypervisorRelease(int xenver);

// The logger xenode hands to xc_interface_open, xenevtchn_open …: nothing reaches stderr;
// the last error message a library logged on the calling thread is kept for the error
// xenode raises (LastLibraryMessage).
struct xentoollog_logger* QuietLogger();
std::string LastLibraryMessage();
void ClearLibraryMessage();

// ---- libxl: libxentoollog.so.1 (stable) and libxenlight.so.<major.minor> ----
// libxenlight's ABI changes every Xen release, so its soname carries the version the
// addon was built against; another version on the host is XEN_VERSION_MISMATCH.

#define XENODE_LIBXL_SYMBOLS(X)            \
  X(libxl_ctx_alloc)                       \
  X(libxl_ctx_free)                        \
  X(libxl_get_version_info)                \
  X(libxl_event_register_callbacks)        \
  X(libxl_event_free)                      \
  X(libxl_event_to_json)                   \
  X(libxl_osevent_beforepoll)              \
  X(libxl_osevent_afterpoll)               \
  X(libxl_childproc_setmode)               \
  X(libxl_childproc_sigchld_occurred)      \
  X(libxl_ao_abort)                        \
  X(libxl_evenable_domain_death)           \
  X(libxl_evdisable_domain_death)          \
  X(libxl_domain_config_init)              \
  X(libxl_domain_config_dispose)           \
  X(libxl_domain_config_from_json)         \
  X(libxl_domain_config_to_json)           \
  X(libxl_domain_create_new)               \
  X(libxl_domain_create_restore)           \
  X(libxl_domain_restore_params_init)      \
  X(libxl_domain_restore_params_dispose)   \
  X(libxl_domain_restore_params_from_json) \
  X(libxl_domain_destroy)                  \
  X(libxl_domain_shutdown)                 \
  X(libxl_domain_reboot)                   \
  X(libxl_domain_pause)                    \
  X(libxl_domain_unpause)                  \
  X(libxl_domain_rename)                   \
  X(libxl_domain_suspend)                  \
  X(libxl_domain_resume)                   \
  X(libxl_domain_remus_info_init)          \
  X(libxl_domain_remus_info_dispose)       \
  X(libxl_domain_remus_info_from_json)     \
  X(libxl_domain_remus_start)              \
  X(libxl_domain_setmaxmem)                \
  X(libxl_set_memory_target)               \
  X(libxl_set_vcpuonline)                  \
  X(libxl_bitmap_init)                     \
  X(libxl_bitmap_alloc)                    \
  X(libxl_bitmap_set)                      \
  X(libxl_bitmap_dispose)                  \
  X(libxl_list_domain)                     \
  X(libxl_dominfo_list_free)               \
  X(libxl_dominfo_init)                    \
  X(libxl_dominfo_dispose)                 \
  X(libxl_dominfo_to_json)                 \
  X(libxl_domain_info)                     \
  X(libxl_retrieve_domain_configuration)   \
  X(libxl_console_get_tty)                 \
  X(libxl_device_disk_init)                \
  X(libxl_device_disk_dispose)             \
  X(libxl_device_disk_from_json)           \
  X(libxl_device_disk_add)                 \
  X(libxl_device_disk_remove)              \
  X(libxl_device_nic_init)                 \
  X(libxl_device_nic_dispose)              \
  X(libxl_device_nic_from_json)            \
  X(libxl_device_nic_add)                  \
  X(libxl_device_nic_remove)               \
  X(libxl_device_pci_init)                 \
  X(libxl_device_pci_dispose)              \
  X(libxl_device_pci_from_json)            \
  X(libxl_device_pci_add)                  \
  X(libxl_device_pci_remove)

struct Libxl {
  XENODE_TOOLLOG_SYMBOLS(XENODE_TABLE_FIELD)
  XENODE_LIBXL_SYMBOLS(XENODE_TABLE_FIELD)
};

// "libxenlight.so.4.17" for XENODE_XEN_VERSION "4.17.0".
std::string LibxlSoname();

// The libxl table, loading libxentoollog.so.1 and libxenlight.so.<ver> on first use.
// Returns nullptr and sets *failure when they cannot be loaded: XEN_UNAVAILABLE naming the
// library and the fix, or XEN_VERSION_MISMATCH when the host has another Xen's libxenlight.
// Any thread; call it from a pool thread.
const Libxl* LoadLibxl(Failure* failure);


}  // namespace xenlibs
}  // namespace xenode

#endif  // XENODE_XENLIBS_H
