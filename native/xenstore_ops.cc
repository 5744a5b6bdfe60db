// The requests of an XsHandle: one PromiseWorker subclass each, above the JS method
// that starts it, under the C prototype it wraps. See xenstore.h.
#include <cerrno>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "xenstore.h"

namespace xenode {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};
template <typename T>
using CPtr = std::unique_ptr<T, FreeDeleter>;

// How libxenstore reports that xenstored closed the connection or that it broke: EBADF
// once it has closed its socket, EPIPE/ECONNRESET on the write that found it dead.
bool IsConnectionLost(int e) { return e == EBADF || e == EPIPE || e == ECONNRESET || e == ENOTCONN; }

}  // namespace

Failure XsOp::WithPath(Failure f) const {
  if (has_path_) {
    f.path = path_;
    f.has_path = true;
  }
  return f;
}

Failure XsOp::ClosedFailure() const { return WithPath(errors::Closed(op_)); }

Failure XsOp::LostFailure(int errnum) const {
  Failure f = errors::Closed(op_);
  f.errnum = errnum;
  f.message = std::string(op_) + ": the connection to xenstored was lost (" + errors::ErrnoName(errnum) + ")";
  return WithPath(f);
}

void XsOp::FailWith(int errnum) {
  if (IsConnectionLost(errnum)) {
    lost_errno_ = errnum;
    Fail(LostFailure(errnum));
  } else {
    Fail(has_path_ ? errors::FromErrno(errnum, op_, path_) : errors::FromErrno(errnum, op_));
  }
}

void XsOp::Finished() {
  if (!failure().failed()) Succeeded();
  owner_->OpDone(this);
}

// void *xs_read(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *len);
class XsReadOp final : public XsOp {
 public:
  XsReadOp(Napi::Env env, XsHandle* h, uint32_t tx, std::string path)
      : XsOp(env, h, "xs_read", std::move(path), true), tx_(tx) {}

 private:
  void Execute() override {
    void* value = api().xs_read(xsh(), tx_, path_.c_str(), &len_);
    if (value == nullptr) return FailWith(errno);
    value_.reset(static_cast<char*>(value));
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Buffer<char>::Copy(env, value_.get(), len_); }

  const uint32_t tx_;
  unsigned int len_ = 0;
  CPtr<char> value_;
};

Napi::Value XsHandle::Read(const Napi::CallbackInfo& info) {
  uint32_t tx = args::Uint32(info, 0, "tx");
  std::string path = args::CString(info, 1, "path");
  return Submit(new XsReadOp(info.Env(), this, tx, std::move(path)));
}

// bool xs_write(struct xs_handle *h, xs_transaction_t t, const char *path, const void *data, unsigned int len);
class XsWriteOp final : public XsOp {
 public:
  XsWriteOp(Napi::Env env, XsHandle* h, uint32_t tx, std::string path, std::vector<uint8_t> value)
      : XsOp(env, h, "xs_write", std::move(path), true), tx_(tx), value_(std::move(value)) {}

 private:
  void Execute() override {
    // libxenstore refuses payloads over 4096 bytes with E2BIG, long before this overflows.
    auto len = static_cast<unsigned int>(value_.size());
    if (!api().xs_write(xsh(), tx_, path_.c_str(), value_.data(), len)) FailWith(errno);
  }

  const uint32_t tx_;
  const std::vector<uint8_t> value_;
};

Napi::Value XsHandle::Write(const Napi::CallbackInfo& info) {
  uint32_t tx = args::Uint32(info, 0, "tx");
  std::string path = args::CString(info, 1, "path");
  std::vector<uint8_t> value = args::Bytes(info, 2, "value");
  return Submit(new XsWriteOp(info.Env(), this, tx, std::move(path), std::move(value)));
}

// bool xs_mkdir(struct xs_handle *h, xs_transaction_t t, const char *path);
// bool xs_rm(struct xs_handle *h, xs_transaction_t t, const char *path);
class XsPathOp final : public XsOp {
 public:
  using Call = bool (*)(const XsApi& api, struct xs_handle* h, uint32_t tx, const char* path);
  XsPathOp(Napi::Env env, XsHandle* h, const char* op, Call call, uint32_t tx, std::string path)
      : XsOp(env, h, op, std::move(path), true), call_(call), tx_(tx) {}

 private:
  void Execute() override {
    if (!call_(api(), xsh(), tx_, path_.c_str())) FailWith(errno);
  }

  const Call call_;
  const uint32_t tx_;
};

Napi::Value XsHandle::Mkdir(const Napi::CallbackInfo& info) {
  uint32_t tx = args::Uint32(info, 0, "tx");
  std::string path = args::CString(info, 1, "path");
  auto call = [](const XsApi& api, struct xs_handle* h, uint32_t t, const char* p) { return api.xs_mkdir(h, t, p); };
  return Submit(new XsPathOp(info.Env(), this, "xs_mkdir", call, tx, std::move(path)));
}

Napi::Value XsHandle::Rm(const Napi::CallbackInfo& info) {
  uint32_t tx = args::Uint32(info, 0, "tx");
  std::string path = args::CString(info, 1, "path");
  auto call = [](const XsApi& api, struct xs_handle* h, uint32_t t, const char* p) { return api.xs_rm(h, t, p); };
  return Submit(new XsPathOp(info.Env(), this, "xs_rm", call, tx, std::move(path)));
}

// char **xs_directory(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *num);
class XsDirectoryOp final : public XsOp {
 public:
  XsDirectoryOp(Napi::Env env, XsHandle* h, uint32_t tx, std::string path)
      : XsOp(env, h, "xs_directory", std::move(path), true), tx_(tx) {}

 private:
  void Execute() override {
    unsigned int num = 0;
    errno = 0;
    CPtr<char*> list(api().xs_directory(xsh(), tx_, path_.c_str(), &num));
    if (!list) {
      // No children: libxenstore's malloc(0) may return NULL without an error.
      if (errno != 0) FailWith(errno);
      return;
    }
    names_.assign(list.get(), list.get() + num);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, names_.size());
    for (size_t i = 0; i < names_.size(); i++) out.Set(i, names_[i]);
    return out;
  }

  const uint32_t tx_;
  std::vector<std::string> names_;
};

Napi::Value XsHandle::Directory(const Napi::CallbackInfo& info) {
  uint32_t tx = args::Uint32(info, 0, "tx");
  std::string path = args::CString(info, 1, "path");
  return Submit(new XsDirectoryOp(info.Env(), this, tx, std::move(path)));
}

// struct xs_permissions *xs_get_permissions(struct xs_handle *h, xs_transaction_t t, const char *path, unsigned int *num);
class XsGetPermissionsOp final : public XsOp {
 public:
  XsGetPermissionsOp(Napi::Env env, XsHandle* h, uint32_t tx, std::string path)
      : XsOp(env, h, "xs_get_permissions", std::move(path), true), tx_(tx) {}

 private:
  void Execute() override {
    struct xs_permissions* perms = api().xs_get_permissions(xsh(), tx_, path_.c_str(), &num_);
    if (perms == nullptr) return FailWith(errno);
    perms_.reset(perms);
  }
  Napi::Value Result(Napi::Env env) override {
    Napi::Array out = Napi::Array::New(env, num_);
    for (unsigned int i = 0; i < num_; i++) {
      Napi::Object p = Napi::Object::New(env);
      p.Set("domid", perms_.get()[i].id);
      p.Set("read", (perms_.get()[i].perms & XS_PERM_READ) != 0);
      p.Set("write", (perms_.get()[i].perms & XS_PERM_WRITE) != 0);
      out.Set(i, p);
    }
    return out;
  }

  const uint32_t tx_;
  unsigned int num_ = 0;
  CPtr<struct xs_permissions> perms_;
};

Napi::Value XsHandle::GetPermissions(const Napi::CallbackInfo& info) {
  uint32_t tx = args::Uint32(info, 0, "tx");
  std::string path = args::CString(info, 1, "path");
  return Submit(new XsGetPermissionsOp(info.Env(), this, tx, std::move(path)));
}

// bool xs_set_permissions(struct xs_handle *h, xs_transaction_t t, const char *path,
//                         struct xs_permissions *perms, unsigned int num_perms);
class XsSetPermissionsOp final : public XsOp {
 public:
  XsSetPermissionsOp(Napi::Env env, XsHandle* h, uint32_t tx, std::string path, std::vector<struct xs_permissions> perms)
      : XsOp(env, h, "xs_set_permissions", std::move(path), true), tx_(tx), perms_(std::move(perms)) {}

 private:
  void Execute() override {
    auto num = static_cast<unsigned int>(perms_.size());
    if (!api().xs_set_permissions(xsh(), tx_, path_.c_str(), perms_.data(), num)) FailWith(errno);
  }

  const uint32_t tx_;
  std::vector<struct xs_permissions> perms_;
};

static std::vector<struct xs_permissions> PermissionsArg(const Napi::CallbackInfo& info, size_t i) {
  Napi::Env env = info.Env();
  Napi::Value v = args::At(info, i);
  if (!v.IsArray()) throw Napi::TypeError::New(env, "perms must be an array of { domid, read, write }");
  Napi::Array list = v.As<Napi::Array>();
  std::vector<struct xs_permissions> perms;
  for (uint32_t k = 0; k < list.Length(); k++) {
    Napi::Value e = list.Get(k);
    if (!e.IsObject()) throw Napi::TypeError::New(env, "perms must be an array of { domid, read, write }");
    Napi::Object o = e.As<Napi::Object>();
    Napi::Value domid = o.Get("domid");
    Napi::Value read = o.Get("read");
    Napi::Value write = o.Get("write");
    if (!domid.IsNumber() || !read.IsBoolean() || !write.IsBoolean()) {
      throw Napi::TypeError::New(env, "each permission must be { domid: number, read: boolean, write: boolean }");
    }
    double d = domid.As<Napi::Number>().DoubleValue();
    if (!(d >= 0 && d <= 65535 && static_cast<double>(static_cast<unsigned int>(d)) == d)) {
      throw Napi::RangeError::New(env, "domid must be an integer in 0..65535");
    }
    unsigned int bits = (read.As<Napi::Boolean>().Value() ? XS_PERM_READ : 0) |
                        (write.As<Napi::Boolean>().Value() ? XS_PERM_WRITE : 0);
    perms.push_back({static_cast<unsigned int>(d), bits});
  }
  return perms;
}

Napi::Value XsHandle::SetPermissions(const Napi::CallbackInfo& info) {
  uint32_t tx = args::Uint32(info, 0, "tx");
  std::string path = args::CString(info, 1, "path");
  std::vector<struct xs_permissions> perms = PermissionsArg(info, 2);
  return Submit(new XsSetPermissionsOp(info.Env(), this, tx, std::move(path), std::move(perms)));
}

// xs_transaction_t xs_transaction_start(struct xs_handle *h);
class XsTransactionStartOp final : public XsOp {
 public:
  XsTransactionStartOp(Napi::Env env, XsHandle* h) : XsOp(env, h, "xs_transaction_start", "", false) {}

 private:
  void Execute() override {
    tx_ = api().xs_transaction_start(xsh());
    if (tx_ == XBT_NULL) FailWith(errno);
  }
  Napi::Value Result(Napi::Env env) override { return Napi::Number::New(env, tx_); }

  xs_transaction_t tx_ = XBT_NULL;
};

Napi::Value XsHandle::TransactionStart(const Napi::CallbackInfo& info) {
  return Submit(new XsTransactionStartOp(info.Env(), this));
}

// bool xs_transaction_end(struct xs_handle *h, xs_transaction_t t, bool abort);
// (false with errno EAGAIN when a commit conflicts with another writer)
class XsTransactionEndOp final : public XsOp {
 public:
  XsTransactionEndOp(Napi::Env env, XsHandle* h, uint32_t tx, bool commit)
      : XsOp(env, h, "xs_transaction_end", "", false), tx_(tx), commit_(commit) {}

 private:
  void Execute() override {
    if (!api().xs_transaction_end(xsh(), tx_, !commit_)) FailWith(errno);
  }

  const uint32_t tx_;
  const bool commit_;
};

Napi::Value XsHandle::TransactionEnd(const Napi::CallbackInfo& info) {
  uint32_t tx = args::Uint32(info, 0, "tx");
  bool commit = args::Bool(info, 1, "commit");
  return Submit(new XsTransactionEndOp(info.Env(), this, tx, commit));
}

// bool xs_watch(struct xs_handle *h, const char *path, const char *token);
// bool xs_unwatch(struct xs_handle *h, const char *path, const char *token);
class XsWatchOp final : public XsOp {
 public:
  XsWatchOp(Napi::Env env, XsHandle* h, bool add, std::string path, std::string token)
      : XsOp(env, h, add ? "xs_watch" : "xs_unwatch", std::move(path), true), add_(add), token_(std::move(token)) {}

  // xenstored acknowledges a watch before it sends the watch's first event, but the
  // acknowledgement reaches JS through the pool and the event through the poll, in
  // either order. Pausing the poll until the promise has settled keeps the daemon's order.
  bool pauses_events() const override { return add_; }

 private:
  void Execute() override {
    bool ok = add_ ? api().xs_watch(xsh(), path_.c_str(), token_.c_str())
                   : api().xs_unwatch(xsh(), path_.c_str(), token_.c_str());
    if (!ok) FailWith(errno);
  }
  void Succeeded() override { owner_->WatchCountChanged(add_ ? 1 : -1); }

  const bool add_;
  const std::string token_;
};

Napi::Value XsHandle::Watch(const Napi::CallbackInfo& info) {
  std::string path = args::CString(info, 0, "path");
  std::string token = args::CString(info, 1, "token");
  return Submit(new XsWatchOp(info.Env(), this, true, std::move(path), std::move(token)));
}

Napi::Value XsHandle::Unwatch(const Napi::CallbackInfo& info) {
  std::string path = args::CString(info, 0, "path");
  std::string token = args::CString(info, 1, "token");
  return Submit(new XsWatchOp(info.Env(), this, false, std::move(path), std::move(token)));
}

// char *xs_get_domain_path(struct xs_handle *h, unsigned int domid);
class XsGetDomainPathOp final : public XsOp {
 public:
  XsGetDomainPathOp(Napi::Env env, XsHandle* h, uint32_t domid)
      : XsOp(env, h, "xs_get_domain_path", "", false), domid_(domid) {}

 private:
  void Execute() override {
    CPtr<char> path(api().xs_get_domain_path(xsh(), domid_));
    if (!path) return FailWith(errno);
    result_ = path.get();
  }
  Napi::Value Result(Napi::Env env) override { return Napi::String::New(env, result_); }

  const uint32_t domid_;
  std::string result_;
};

Napi::Value XsHandle::GetDomainPath(const Napi::CallbackInfo& info) {
  uint32_t domid = args::Uint32(info, 0, "domid");
  return Submit(new XsGetDomainPathOp(info.Env(), this, domid));
}

}  // namespace xenode
