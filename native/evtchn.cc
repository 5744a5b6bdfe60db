// Event channels through libxenevtchn. See evtchn.h.
#include "evtchn.h"

#include <fcntl.h>

#include <cerrno>
#include <cstdlib>
#include <memory>

#include "args.h"

namespace xenode {
namespace {

// Ports delivered per poll wake-up, so that a flood cannot starve the loop (the device
// stays readable while ports remain pending).
constexpr int kMaxEventsPerWake = 64;

// What the open request hands to the EvtchnHandle constructor.
struct EvtchnOpenResult {
  const xenlibs::Evtchn* api = nullptr;
  xenevtchn_handle* xce = nullptr;  // owned by the request until the constructor takes it
  int fd = -1;
  Napi::FunctionReference on_event;
};

// Ports are evtchn_port_t (uint32_t); a domid is 0..DOMID_FIRST_RESERVED-1 (0x7FF0), and
// bind_unbound_port also accepts DOMID_SELF.
uint32_t DomidArg(const Napi::CallbackInfo& info, size_t i) {
  uint32_t domid = args::Uint32(info, i, "domid");
  if (domid >= 0x7FF0 && domid != DOMID_SELF) throw Napi::RangeError::New(info.Env(), "domid must be in 0..32751");
  return domid;
}

}  // namespace

// xenevtchn_port_or_error_t xenevtchn_bind_unbound_port(xenevtchn_handle *xce, uint32_t domid);
Napi::Value EvtchnHandle::BindUnbound(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  auto port = std::make_shared<int>(-1);
  return Call(
      info.Env(), "xenevtchn_bind_unbound_port",
      [this, domid, port] {
        *port = api_->xenevtchn_bind_unbound_port(xce_, domid);
        return *port < 0 ? errors::FromXenCall(errno, "xenevtchn_bind_unbound_port", domid) : Failure();
      },
      [port](Napi::Env env) { return Napi::Number::New(env, *port); });
}

// xenevtchn_port_or_error_t xenevtchn_bind_interdomain(xenevtchn_handle *xce, uint32_t domid,
//                                                      evtchn_port_t remote_port);
Napi::Value EvtchnHandle::BindInterdomain(const Napi::CallbackInfo& info) {
  uint32_t domid = DomidArg(info, 0);
  uint32_t remote = args::Uint32(info, 1, "remotePort");
  auto port = std::make_shared<int>(-1);
  return Call(
      info.Env(), "xenevtchn_bind_interdomain",
      [this, domid, remote, port] {
        *port = api_->xenevtchn_bind_interdomain(xce_, domid, remote);
        return *port < 0 ? errors::FromXenCall(errno, "xenevtchn_bind_interdomain", domid, remote) : Failure();
      },
      [port](Napi::Env env) { return Napi::Number::New(env, *port); });
}

// xenevtchn_port_or_error_t xenevtchn_bind_virq(xenevtchn_handle *xce, unsigned int virq);
Napi::Value EvtchnHandle::BindVirq(const Napi::CallbackInfo& info) {
  uint32_t virq = args::Uint32(info, 0, "virq");
  auto port = std::make_shared<int>(-1);
  return Call(
      info.Env(), "xenevtchn_bind_virq",
      [this, virq, port] {
        *port = api_->xenevtchn_bind_virq(xce_, virq);
        return *port < 0 ? errors::FromXenCall(errno, "xenevtchn_bind_virq") : Failure();
      },
      [port](Napi::Env env) { return Napi::Number::New(env, *port); });
}

// int xenevtchn_notify(xenevtchn_handle *xce, evtchn_port_t port);
Napi::Value EvtchnHandle::Notify(const Napi::CallbackInfo& info) {
  uint32_t port = args::Uint32(info, 0, "port");
  return Call(info.Env(), "xenevtchn_notify", [this, port] {
    return api_->xenevtchn_notify(xce_, port) < 0 ? errors::FromXenCall(errno, "xenevtchn_notify", -1, port) : Failure();
  });
}

// int xenevtchn_unbind(xenevtchn_handle *xce, evtchn_port_t port);
Napi::Value EvtchnHandle::Unbind(const Napi::CallbackInfo& info) {
  uint32_t port = args::Uint32(info, 0, "port");
  return Call(info.Env(), "xenevtchn_unbind", [this, port] {
    return api_->xenevtchn_unbind(xce_, port) < 0 ? errors::FromXenCall(errno, "xenevtchn_unbind", -1, port) : Failure();
  });
}

// keepAlive(on: boolean): whether the handle keeps the process alive (while ports are listened to).
Napi::Value EvtchnHandle::KeepAlive(const Napi::CallbackInfo& info) {
  bool on = args::Bool(info, 0, "on");
  if (poll_ != nullptr && is_open()) {
    if (on) {
      uv_ref(reinterpret_cast<uv_handle_t*>(poll_));
    } else {
      uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
    }
  }
  return info.Env().Undefined();
}

void EvtchnHandle::OnPoll(uv_poll_t* poll, int status, int /*events*/) {
  auto* self = static_cast<EvtchnHandle*>(poll->data);
  if (status < 0) {
    uv_poll_stop(poll);  // the device failed: nothing more can come through it
    return;
  }
  self->Drain();
}

// xenevtchn_port_or_error_t xenevtchn_pending(xenevtchn_handle *xce);
// int xenevtchn_unmask(xenevtchn_handle *xce, evtchn_port_t port);
// (the fd is non-blocking: pending fails with EAGAIN once no port is pending)
void EvtchnHandle::Drain() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  for (int i = 0; i < kMaxEventsPerWake; i++) {
    // The callback may have closed the handle.
    if (!is_open() || state()->stopping()) return;
    int port = api_->xenevtchn_pending(xce_);
    if (port < 0) return;
    api_->xenevtchn_unmask(xce_, port);
    try {
      on_event_.MakeCallback(Value(), {Napi::Number::New(env, port)}, *async_context_);
    } catch (const Napi::Error& err) {
      // The callback threw: report it as Node reports an exception thrown by a timer.
      napi_fatal_exception(env, err.Value());
    }
  }
}

void EvtchnHandle::StopEvents(std::function<void()> done) {
  if (poll_ == nullptr) return done();
  poll_closed_ = std::move(done);
  uv_poll_stop(poll_);
  uv_close(reinterpret_cast<uv_handle_t*>(poll_), [](uv_handle_t* h) {
    auto* self = static_cast<EvtchnHandle*>(h->data);
    std::free(h);
    self->poll_ = nullptr;
    std::function<void()> closed = std::move(self->poll_closed_);
    closed();
  });
}

// int xenevtchn_close(xenevtchn_handle *xce);
void EvtchnHandle::ReleaseNative() {
  if (xce_ != nullptr) api_->xenevtchn_close(xce_);
  xce_ = nullptr;
  on_event_.Reset();
  async_context_.reset();
}

EvtchnHandle::EvtchnHandle(const Napi::CallbackInfo& info) : PoolHandle<EvtchnHandle>(info) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(env, "EvtchnHandle cannot be constructed directly: use openEventChannels()");
  }
  auto* open = info[0].As<Napi::External<EvtchnOpenResult>>().Data();
  uv_loop_t* loop = nullptr;
  NAPI_THROW_IF_FAILED_VOID(env, napi_get_uv_event_loop(env, &loop));
  auto* poll = static_cast<uv_poll_t*>(std::malloc(sizeof(uv_poll_t)));
  int rc = poll == nullptr ? UV_ENOMEM : uv_poll_init(loop, poll, open->fd);
  if (rc != 0) {
    std::free(poll);
    throw errors::ToError(env, errors::FromErrno(-rc, "uv_poll_init"));
  }
  // Nothing below can fail: take ownership.
  async_context_ = std::make_unique<Napi::AsyncContext>(env, "xenode:EvtchnHandle");
  poll_ = poll;
  poll_->data = this;
  uv_poll_start(poll_, UV_READABLE, OnPoll);
  uv_unref(reinterpret_cast<uv_handle_t*>(poll_));
  api_ = open->api;
  xce_ = open->xce;
  open->xce = nullptr;
  on_event_ = std::move(open->on_event);
  Opened();
}

Napi::Function EvtchnHandle::Define(Napi::Env env) {
  return DefineClass(env, "EvtchnHandle",
                     {
                         InstanceMethod("bindUnbound", &EvtchnHandle::BindUnbound),
                         InstanceMethod("bindInterdomain", &EvtchnHandle::BindInterdomain),
                         InstanceMethod("bindVirq", &EvtchnHandle::BindVirq),
                         InstanceMethod("notify", &EvtchnHandle::Notify),
                         InstanceMethod("unbind", &EvtchnHandle::Unbind),
                         InstanceMethod("keepAlive", &EvtchnHandle::KeepAlive),
                         InstanceMethod("close", &EvtchnHandle::Close),
                         InstanceAccessor("closed", &EvtchnHandle::Closed, nullptr),
                     });
}

Napi::Function DefineEvtchnHandle(Napi::Env env) { return EvtchnHandle::Define(env); }

namespace {

// libxenevtchn.so.1 is loaded (dlopen) on the pool as well.
class EvtchnOpenOp final : public PromiseWorker {
 public:
  EvtchnOpenOp(Napi::Env env, Napi::Function on_event) : PromiseWorker(env, "xenevtchn_open") {
    result_.on_event = Napi::Persistent(on_event);
  }
  ~EvtchnOpenOp() override {
    // Only when the handle could not be delivered (the environment is stopping).
    if (result_.xce != nullptr) result_.api->xenevtchn_close(result_.xce);
  }

 private:
  // xenevtchn_handle *xenevtchn_open(struct xentoollog_logger *logger, unsigned int flags);
  // int xenevtchn_fd(xenevtchn_handle *xce);
  void Execute() override {
    Failure failure;
    const xenlibs::Evtchn* api = xenlibs::LoadEvtchn(&failure);
    if (api == nullptr) return Fail(failure);
    xenlibs::ClearLibraryMessage();
    xenevtchn_handle* xce = api->xenevtchn_open(xenlibs::QuietLogger(), 0);
    if (xce == nullptr) {
      int errnum = errno;
      Failure f = errors::Unavailable(
          "xenevtchn_open", "cannot open the event channel device /dev/xen/evtchn (" + errors::ErrnoName(errnum) +
                                "): this needs a Xen dom0 (or domU) with the xen-evtchn module loaded, and root; "
                                "or use { backend: 'mock' }");
      f.errnum = errnum;
      f.path = "/dev/xen/evtchn";
      f.has_path = true;
      return Fail(f);
    }
    int fd = api->xenevtchn_fd(xce);
    int flags = fd < 0 ? -1 : fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
      Fail(errors::FromErrno(errno, "xenevtchn_fd"));
      api->xenevtchn_close(xce);
      return;
    }
    result_.api = api;
    result_.xce = xce;
    result_.fd = fd;
  }
  Napi::Value Result(Napi::Env env) override {
    return state()->evtchn_handle_class.New({Napi::External<EvtchnOpenResult>::New(env, &result_)});
  }

  EvtchnOpenResult result_;
};

}  // namespace

Napi::Value OpenEventChannels(const Napi::CallbackInfo& info) {
  Napi::Function on_event = args::Function(info, 0, "onEvent");
  auto* op = new EvtchnOpenOp(info.Env(), on_event);
  Napi::Value promise = op->Promise();
  op->Queue();
  return promise;
}

}  // namespace xenode
