#include "errors.h"

#include <uv.h>

#include <cerrno>

#include "xenlibs.h"
extern "C" {
#include <libxl.h>
}

namespace xenode {
namespace errors {

std::string ErrnoName(int errnum) {
  // libuv's names are the system's (UV_ENOENT is -ENOENT on every platform Xen runs on).
  return uv_err_name(-errnum);
}

static std::string Where(const std::string& op, const std::string& path, bool has_path) {
  return has_path ? " (" + op + " " + path + ")" : " (" + op + ")";
}

Failure FromErrno(int errnum, const char* op) {
  Failure f;
  f.code = ErrnoName(errnum);
  f.errnum = errnum;
  f.op = op;
  f.message = f.code + ": " + uv_strerror(-errnum) + Where(f.op, f.path, false);
  return f;
}

Failure FromErrno(int errnum, const char* op, const std::string& path) {
  Failure f = FromErrno(errnum, op);
  f.path = path;
  f.has_path = true;
  f.message = f.code + ": " + uv_strerror(-errnum) + Where(f.op, f.path, true);
  return f;
}

Failure Unavailable(const char* op, std::string message) {
  Failure f;
  f.code = "XEN_UNAVAILABLE";
  f.op = op;
  f.message = std::move(message);
  return f;
}

Failure Closed(const char* op) {
  Failure f;
  f.code = "XEN_CLOSED";
  f.op = op;
  f.message = std::string(op) + ": the handle is closed";
  return f;
}

Failure VersionMismatch(const char* op, std::string message) {
  Failure f;
  f.code = "XEN_VERSION_MISMATCH";
  f.op = op;
  f.message = std::move(message);
  return f;
}

Failure FromXenCall(int errnum, const char* op, long domid, long port) {
  if (errnum <= 0) errnum = EIO;  // a library that failed without setting errno
  Failure f = FromErrno(errnum, op);
  f.domid = domid;
  f.port = port;
  std::string detail = xenlibs::LastLibraryMessage();
  xenlibs::ClearLibraryMessage();
  std::string where = op;
  if (domid >= 0) where += " domid " + std::to_string(domid);
  if (port >= 0) where += " port " + std::to_string(port);
  f.message = f.code + ": " + uv_strerror(-errnum) + " (" + where + ")" + (detail.empty() ? "" : ": " + detail);
  return f;
}

// ---- libxl ----

const char* LibxlCodeName(int rc) {
  // Every ERROR_* of libxl 4.17's libxl_error (_libxl_types.h), spelled out so that each
  // code is greppable (test/docs/error-codes.test.ts checks docs/errors.md has them all).
  static const struct {
    int rc;
    const char* code;
  } kCodes[] = {
      {ERROR_NONSPECIFIC, "XEN_ERROR_NONSPECIFIC"},
      {ERROR_VERSION, "XEN_ERROR_VERSION"},
      {ERROR_FAIL, "XEN_ERROR_FAIL"},
      {ERROR_NI, "XEN_ERROR_NI"},
      {ERROR_NOMEM, "XEN_ERROR_NOMEM"},
      {ERROR_INVAL, "XEN_ERROR_INVAL"},
      {ERROR_BADFAIL, "XEN_ERROR_BADFAIL"},
      {ERROR_GUEST_TIMEDOUT, "XEN_ERROR_GUEST_TIMEDOUT"},
      {ERROR_TIMEDOUT, "XEN_ERROR_TIMEDOUT"},
      {ERROR_NOPARAVIRT, "XEN_ERROR_NOPARAVIRT"},
      {ERROR_NOT_READY, "XEN_ERROR_NOT_READY"},
      {ERROR_OSEVENT_REG_FAIL, "XEN_ERROR_OSEVENT_REG_FAIL"},
      {ERROR_BUFFERFULL, "XEN_ERROR_BUFFERFULL"},
      {ERROR_UNKNOWN_CHILD, "XEN_ERROR_UNKNOWN_CHILD"},
      {ERROR_LOCK_FAIL, "XEN_ERROR_LOCK_FAIL"},
      {ERROR_JSON_CONFIG_EMPTY, "XEN_ERROR_JSON_CONFIG_EMPTY"},
      {ERROR_DEVICE_EXISTS, "XEN_ERROR_DEVICE_EXISTS"},
      {ERROR_CHECKPOINT_DEVOPS_DOES_NOT_MATCH, "XEN_ERROR_CHECKPOINT_DEVOPS_DOES_NOT_MATCH"},
      {ERROR_CHECKPOINT_DEVICE_NOT_SUPPORTED, "XEN_ERROR_CHECKPOINT_DEVICE_NOT_SUPPORTED"},
      {ERROR_VNUMA_CONFIG_INVALID, "XEN_ERROR_VNUMA_CONFIG_INVALID"},
      {ERROR_DOMAIN_NOTFOUND, "XEN_ERROR_DOMAIN_NOTFOUND"},
      {ERROR_ABORTED, "XEN_ERROR_ABORTED"},
      {ERROR_NOTFOUND, "XEN_ERROR_NOTFOUND"},
      {ERROR_DOMAIN_DESTROYED, "XEN_ERROR_DOMAIN_DESTROYED"},
      {ERROR_FEATURE_REMOVED, "XEN_ERROR_FEATURE_REMOVED"},
      {ERROR_PROTOCOL_ERROR_QMP, "XEN_ERROR_PROTOCOL_ERROR_QMP"},
      {ERROR_UNKNOWN_QMP_ERROR, "XEN_ERROR_UNKNOWN_QMP_ERROR"},
      {ERROR_QMP_GENERIC_ERROR, "XEN_ERROR_QMP_GENERIC_ERROR"},
      {ERROR_QMP_COMMAND_NOT_FOUND, "XEN_ERROR_QMP_COMMAND_NOT_FOUND"},
      {ERROR_QMP_DEVICE_NOT_ACTIVE, "XEN_ERROR_QMP_DEVICE_NOT_ACTIVE"},
      {ERROR_QMP_DEVICE_NOT_FOUND, "XEN_ERROR_QMP_DEVICE_NOT_FOUND"},
      {ERROR_QEMU_API, "XEN_ERROR_QEMU_API"},
  };
  for (const auto& c : kCodes) {
    if (c.rc == rc) return c.code;
  }
  return "XEN_ERROR_UNKNOWN";
}

Failure FromLibxl(int rc, const char* op, const std::string& detail, long domid) {
  Failure f;
  f.code = LibxlCodeName(rc);
  f.op = op;
  f.domid = domid;
  std::string where = domid >= 0 ? " (" + std::string(op) + ", domain " + std::to_string(domid) + ")"
                                 : " (" + std::string(op) + ")";
  f.message = f.code + ": libxl error " + std::to_string(rc) + where + (detail.empty() ? "" : ": " + detail);
  return f;
}

Napi::Error ToError(Napi::Env env, const Failure& failure) {
  Napi::Error err = Napi::Error::New(env, failure.message);
  Napi::Object obj = err.Value();
  obj.Set("name", "XenError");
  obj.Set("code", failure.code);
  if (failure.errnum != 0) obj.Set("errno", failure.errnum);
  obj.Set("op", failure.op);
  if (failure.has_path) obj.Set("path", failure.path);
  if (failure.domid >= 0) obj.Set("domid", static_cast<double>(failure.domid));
  if (failure.port >= 0) obj.Set("port", static_cast<double>(failure.port));
  return err;
}

}  // namespace errors
}  // namespace xenode
