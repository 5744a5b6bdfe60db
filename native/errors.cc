#include "errors.h"

#include <uv.h>

#include <cerrno>

#include "xenlibs.h"

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
