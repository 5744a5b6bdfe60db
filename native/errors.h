// The one place C failures become JavaScript errors.
//
// Pool threads record what went wrong in a Failure (plain data, no JS values); the loop
// thread turns it into an Error with ToError(). Every error the addon rejects or throws
// for a Xen failure is made here, so they all look alike:
//
//   name   'XenError'
//   code   an errno name ('ENOENT' …), 'XEN_UNAVAILABLE', 'XEN_CLOSED' or
//          'XEN_VERSION_MISMATCH'
//   errno  the numeric errno, when the failure came from one
//   op     the C function that failed ('xs_read', 'dlopen' …)
//   path   the XenStore path concerned, when there is one
//   domid  the domain concerned, when there is one
//   port   the event channel port concerned, when there is one
//
// lib/native/ re-creates these as instances of the TypeScript XenError class (so the
// stack is the caller's, captured when its await resumes).
#ifndef XENODE_ERRORS_H
#define XENODE_ERRORS_H

#include <napi.h>

#include <string>

namespace xenode {

struct Failure {
  std::string code;
  int errnum = 0;
  std::string op;
  std::string path;
  bool has_path = false;
  std::string message;
  // The domain and port concerned, or -1 (set by the evtchn/gnttab/xenctrl/libxl calls).
  long domid = -1;
  long port = -1;

  bool failed() const { return !code.empty(); }
};

namespace errors {

// A failed C call that set errno. `path` is the XenStore path it concerned, if any.
Failure FromErrno(int errnum, const char* op);
Failure FromErrno(int errnum, const char* op, const std::string& path);

// A Xen library (or the hypervisor interface behind it) cannot be used here.
Failure Unavailable(const char* op, std::string message);

// The handle was closed before or while the operation ran.
Failure Closed(const char* op);

// The toolstack part (libxenctrl) was built for another Xen release than the host runs.
Failure VersionMismatch(const char* op, std::string message);

// A failed call of libxenevtchn, libxengnttab or libxenctrl: the errno, and the message
// the library logged for it on this thread (xenlibs::LastLibraryMessage), if any. Pool
// thread, right after the call. `domid` / `port`: what it concerned, or -1.
Failure FromXenCall(int errnum, const char* op, long domid = -1, long port = -1);
// ---- libxl ----
// A libxl call returned `rc`, one of libxl's ERROR_* codes (negative): code
// XEN_ERROR_<NAME> (ERROR_FAIL → XEN_ERROR_FAIL), op the libxl function. `detail` is what
// libxl logged about it (may be empty); `domid` the domain concerned, or -1.
Failure FromLibxl(int rc, const char* op, const std::string& detail, long domid = -1);

// The XEN_ERROR_<NAME> code for a libxl ERROR_* value; XEN_ERROR_UNKNOWN for others.
const char* LibxlCodeName(int rc);

// The errno's name, e.g. "ENOENT" for ENOENT.
std::string ErrnoName(int errnum);

// Builds the JavaScript error for `failure`. Loop thread only.
Napi::Error ToError(Napi::Env env, const Failure& failure);

}  // namespace errors
}  // namespace xenode

#endif  // XENODE_ERRORS_H
