// The life cycle of an XsHandle: opening, the request queue, watch events, loss of the
// connection, closing. See xenstore.h; the requests themselves are in xenstore_ops.cc.
#include "xenstore.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdlib>

#include "args.h"

namespace xenode {
namespace {

struct FreeDeleter {
  void operator()(void* p) const { std::free(p); }
};

// Watch events delivered per poll wake-up, so that a flood cannot starve the loop (the
// pipe stays readable while events remain).
constexpr int kMaxEventsPerWake = 64;

// libxenstore's reader thread does not signal the watch pipe when xenstored closes the
// connection, so a handle that only waits for events would wait forever. While a watch
// is registered, a timer looks every this many milliseconds (one mutex, no I/O).
constexpr uint64_t kLivenessCheckMs = 1000;

// What OpenOp hands to the XsHandle constructor.
struct OpenResult {
  const XsApi* api = nullptr;
  struct xs_handle* xsh = nullptr;  // owned by OpenOp until the constructor takes it
  int fd = -1;
  bool socket = false;
  Napi::FunctionReference on_event;
  Napi::FunctionReference on_lost;
};

template <typename T>
uv_handle_t* AsHandle(T* handle) {
  return reinterpret_cast<uv_handle_t*>(handle);
}

}  // namespace

// ---- The request queue ----

Napi::Value XsHandle::Submit(XsOp* op) {
  Napi::Value promise = op->Promise();
  if (phase_ != Phase::kOpen || lost_errno_ != 0) {
    op->Abandon(phase_ != Phase::kOpen ? op->ClosedFailure() : op->LostFailure(lost_errno_));
    delete op;  // never queued
    return promise;
  }
  queue_.push_back(op);
  Pump();
  return promise;
}

void XsHandle::Pump() {
  if (running_ != nullptr || queue_.empty() || phase_ != Phase::kOpen || state_->stopping()) return;
  running_ = queue_.front();
  queue_.pop_front();
  if (running_->pauses_events()) PauseEvents(true);
  running_->Queue();
}

void XsHandle::OpDone(XsOp* op) {
  running_ = nullptr;
  if (op->pauses_events()) PauseEvents(false);
  if (op->lost_errno() != 0) Lost(op->lost_errno(), op->op());
  if (phase_ == Phase::kClosing) {
    MaybeFinishClose();
  } else {
    Pump();
  }
}

// Rejects the requests not started yet: XEN_CLOSED, with the errno if the connection is lost.
void XsHandle::FailQueued() {
  while (!queue_.empty()) {
    XsOp* op = queue_.front();
    queue_.pop_front();
    op->Abandon(lost_errno_ != 0 ? op->LostFailure(lost_errno_) : op->ClosedFailure());
    delete op;  // never queued
  }
}

// xenstored is gone: every request from now on fails, the watches are gone with it, and
// JavaScript hears of it once, through onLost.
void XsHandle::Lost(int errnum, const char* op) {
  if (lost_errno_ != 0 || phase_ != Phase::kOpen) return;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  lost_errno_ = errnum;
  watches_ = 0;
  UpdateRef();
  FailQueued();
  if (on_lost_.IsEmpty() || state_->stopping()) return;
  Failure failure = errors::Closed(op);
  failure.errnum = errnum;
  failure.message = std::string(op) + ": the connection to xenstored was lost (" + errors::ErrnoName(errnum) + ")";
  Call(on_lost_, {errors::ToError(env, failure).Value()});
}

// ---- Watch events ----

void XsHandle::WatchCountChanged(int delta) {
  watches_ += delta;
  if (watches_ < 0) watches_ = 0;
  UpdateRef();
}

void XsHandle::UpdateRef() {
  bool watching = watches_ > 0 && phase_ == Phase::kOpen && lost_errno_ == 0;
  if (poll_ != nullptr) {
    if (watching) {
      uv_ref(AsHandle(poll_));
    } else {
      uv_unref(AsHandle(poll_));
    }
  }
  if (timer_ != nullptr) {
    if (!watching) {
      uv_timer_stop(timer_);
    } else if (!uv_is_active(AsHandle(timer_))) {
      uv_timer_start(timer_, OnLivenessCheck, kLivenessCheckMs, kLivenessCheckMs);
    }
  }
}

void XsHandle::PauseEvents(bool paused) {
  events_paused_ = paused;
  if (poll_ == nullptr || phase_ != Phase::kOpen) return;
  if (paused) {
    uv_poll_stop(poll_);
  } else {
    uv_poll_start(poll_, UV_READABLE, OnPoll);
  }
}

void XsHandle::OnPoll(uv_poll_t* poll, int status, int /*events*/) {
  auto* self = static_cast<XsHandle*>(poll->data);
  if (status < 0) {
    // The pipe itself failed: no event can come through it any more.
    uv_poll_stop(poll);
    return;
  }
  self->DrainWatchEvents();
}

void XsHandle::OnLivenessCheck(uv_timer_t* timer) { static_cast<XsHandle*>(timer->data)->DrainWatchEvents(); }

// char **xs_check_watch(struct xs_handle *h);
// Never blocks: NULL with errno EAGAIN once no event is pending, EINVAL once libxenstore's
// reader thread has found the connection closed.
void XsHandle::DrainWatchEvents() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  for (int i = 0; i < kMaxEventsPerWake; i++) {
    // The callback may have closed the handle or started a watch.
    if (phase_ != Phase::kOpen || events_paused_ || lost_errno_ != 0 || state_->stopping()) return;
    errno = 0;
    std::unique_ptr<char*, FreeDeleter> event(api_->xs_check_watch(xsh_));
    if (!event) {
      if (errno == EINVAL) Lost(EBADF, "xs_check_watch");
      return;
    }
    Call(on_event_, {Napi::String::New(env, event.get()[XS_WATCH_PATH]),
                     Napi::String::New(env, event.get()[XS_WATCH_TOKEN])});
  }
}

void XsHandle::Call(Napi::FunctionReference& callback, const std::initializer_list<napi_value>& args) {
  try {
    callback.MakeCallback(Value(), args, *async_context_);
  } catch (const Napi::Error& err) {
    // The callback threw: report it as Node reports an exception thrown by a timer.
    napi_fatal_exception(Env(), err.Value());
  }
}

// ---- Closing ----

// void xs_close(struct xs_handle *xsh);
// (joins libxenstore's reader thread, hence on the pool)
class XsCloseWork final : public Napi::AsyncWorker {
 public:
  XsCloseWork(Napi::Env env, XsHandle* owner)
      : Napi::AsyncWorker(env, "xs_close"), owner_(owner), api_(owner->api()), xsh_(owner->xsh()) {}

 private:
  void Execute() override { api_.xs_close(xsh_); }
  void OnOK() override { owner_->Closed(); }
  void OnError(const Napi::Error& /*err*/) override { owner_->Closed(); }

  XsHandle* const owner_;
  const XsApi& api_;
  struct xs_handle* const xsh_;
};

Napi::Value XsHandle::Close(const Napi::CallbackInfo& info) {
  Napi::Value promise = closers_.Promise(info.Env(), phase_ == Phase::kClosed);
  BeginClose();  // nothing to do unless open
  return promise;
}

void XsHandle::CloseForTeardown(std::function<void()> done) {
  if (phase_ == Phase::kClosed) return done();
  Napi::HandleScope scope(Env());
  closers_.AddTeardown(std::move(done));
  BeginClose();
}

void XsHandle::BeginClose() {
  if (phase_ != Phase::kOpen) return;
  phase_ = Phase::kClosing;
  FailQueued();
  if (running_ != nullptr) running_->Abandon(running_->ClosedFailure());
  if (poll_ != nullptr) uv_poll_stop(poll_);
  if (timer_ != nullptr) uv_timer_stop(timer_);
  CloseUvHandle(AsHandle(poll_));
  CloseUvHandle(AsHandle(timer_));
  MaybeFinishClose();
}

void XsHandle::CloseUvHandle(uv_handle_t* handle) {
  if (handle == nullptr || uv_is_closing(handle)) return;
  uv_close(handle, [](uv_handle_t* h) {
    auto* self = static_cast<XsHandle*>(h->data);
    if (h == AsHandle(self->poll_)) {
      self->poll_ = nullptr;
    } else {
      self->timer_ = nullptr;
    }
    std::free(h);
    self->uv_handles_--;
    Napi::HandleScope scope(self->Env());  // a libuv callback has none
    self->MaybeFinishClose();
  });
}

void XsHandle::MaybeFinishClose() {
  if (phase_ != Phase::kClosing || close_started_ || running_ != nullptr || uv_handles_ > 0) return;
  close_started_ = true;
  if (!state_->stopping()) {
    try {
      (new XsCloseWork(Env(), this))->Queue();
      return;
    } catch (const Napi::Error&) {
      // The environment is stopping after all: close right here.
    }
  }
  // No JavaScript runs any more: a thread join on the loop thread harms nobody.
  api_->xs_close(xsh_);
  Closed();
}

void XsHandle::Closed() {
  xsh_ = nullptr;
  phase_ = Phase::kClosed;
  Napi::Env env = Env();
  closers_.Resolve(env, state_);
  on_event_.Reset();
  on_lost_.Reset();
  async_context_.reset();
  state_->Untrack(this);
  std::vector<std::function<void()>> done = closers_.TakeTeardown();
  Unref();  // collectable from now on
  for (auto& callback : done) callback();
}

XsHandle::~XsHandle() {
  if (phase_ == Phase::kClosed) return;
  // Open handles are held strongly and closed by the cleanup hook before the environment
  // finalizes its objects; this only guards against that order ever changing.
  for (uv_handle_t* h : {AsHandle(poll_), AsHandle(timer_)}) {
    if (h == nullptr || uv_is_closing(h)) continue;
    uv_close(h, [](uv_handle_t* closed) { std::free(closed); });
  }
  if (xsh_ != nullptr && running_ == nullptr) api_->xs_close(xsh_);
  state_->Untrack(this);
}

// ---- Opening ----

Napi::Value XsHandle::IsClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), phase_ != Phase::kOpen);
}

Napi::Value XsHandle::Transport(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), socket_ ? "socket" : "device");
}

XsHandle::XsHandle(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<XsHandle>(info), state_(AddonState::Of(info.Env())) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(env, "XsHandle cannot be constructed directly: use openXenStore()");
  }
  OpenResult* open = info[0].As<Napi::External<OpenResult>>().Data();
  uv_loop_t* loop = nullptr;
  NAPI_THROW_IF_FAILED_VOID(env, napi_get_uv_event_loop(env, &loop));
  async_context_ = std::make_unique<Napi::AsyncContext>(env, "xenode:XsHandle");
  // malloc'ed, so that the destructor's last-resort close can free them without a type.
  auto* poll = static_cast<uv_poll_t*>(std::malloc(sizeof(uv_poll_t)));
  auto* timer = static_cast<uv_timer_t*>(std::malloc(sizeof(uv_timer_t)));
  int rc = poll == nullptr || timer == nullptr ? UV_ENOMEM : uv_poll_init(loop, poll, open->fd);
  if (rc != 0) {
    std::free(poll);
    std::free(timer);
    throw errors::ToError(env, errors::FromErrno(-rc, "uv_poll_init"));
  }

  // Nothing below can fail: take ownership.
  uv_timer_init(loop, timer);
  poll_ = poll;
  timer_ = timer;
  uv_handles_ = 2;
  poll_->data = this;
  timer_->data = this;
  uv_poll_start(poll_, UV_READABLE, OnPoll);
  uv_unref(AsHandle(poll_));
  uv_unref(AsHandle(timer_));  // the poll keeps the loop alive while watching, not the timer
  api_ = open->api;
  xsh_ = open->xsh;
  open->xsh = nullptr;
  socket_ = open->socket;
  on_event_ = std::move(open->on_event);
  on_lost_ = std::move(open->on_lost);
  state_->Track(this);
  Ref();  // an open handle is never collected
}

Napi::Function XsHandle::Define(Napi::Env env) {
  return DefineClass(env, "XsHandle",
                     {
                         InstanceMethod("read", &XsHandle::Read),
                         InstanceMethod("write", &XsHandle::Write),
                         InstanceMethod("mkdir", &XsHandle::Mkdir),
                         InstanceMethod("rm", &XsHandle::Rm),
                         InstanceMethod("directory", &XsHandle::Directory),
                         InstanceMethod("getPermissions", &XsHandle::GetPermissions),
                         InstanceMethod("setPermissions", &XsHandle::SetPermissions),
                         InstanceMethod("transactionStart", &XsHandle::TransactionStart),
                         InstanceMethod("transactionEnd", &XsHandle::TransactionEnd),
                         InstanceMethod("watch", &XsHandle::Watch),
                         InstanceMethod("unwatch", &XsHandle::Unwatch),
                         InstanceMethod("getDomainPath", &XsHandle::GetDomainPath),
                         InstanceMethod("close", &XsHandle::Close),
                         InstanceAccessor("closed", &XsHandle::IsClosed, nullptr),
                         InstanceAccessor("transport", &XsHandle::Transport, nullptr),
                     });
}

Napi::Function DefineXsHandle(Napi::Env env) { return XsHandle::Define(env); }

namespace {

Failure ConnectFailure(int errnum, const XsApi& api) {
  // const char *xs_daemon_socket(void);
  std::string socket = api.xs_daemon_socket();
  Failure f = errors::Unavailable(
      "xs_open", "cannot connect to xenstored (" + errors::ErrnoName(errnum) + ": " + uv_strerror(-errnum) +
                     "): tried the socket " + socket +
                     " and the xenbus device. This needs a Xen dom0 with xenstored running, and root; set "
                     "XENSTORED_PATH to another xenstored's socket, or use { backend: 'mock' }");
  f.errnum = errnum;
  f.path = socket;
  f.has_path = true;
  return f;
}

// Opening: libxenstore.so.4 is loaded (dlopen) on the pool as well.
class XsOpenOp final : public PromiseWorker {
 public:
  XsOpenOp(Napi::Env env, Napi::Function on_event, Napi::Value on_lost) : PromiseWorker(env, "xs_open") {
    result_.on_event = Napi::Persistent(on_event);
    if (on_lost.IsFunction()) result_.on_lost = Napi::Persistent(on_lost.As<Napi::Function>());
  }
  ~XsOpenOp() override {
    // Only when the handle could not be delivered (the environment is stopping).
    if (result_.xsh != nullptr) result_.api->xs_close(result_.xsh);
  }

 private:
  void Execute() override {
    Failure failure;
    const XsApi* api = xenlibs::LoadXenStore(&failure);
    if (api == nullptr) return Fail(failure);
    // XS_UNWATCH_FILTER: once xs_unwatch returns, no event of that watch is delivered.
    // struct xs_handle *xs_open(unsigned long flags);
    // int xs_fileno(struct xs_handle *h);
    struct xs_handle* xsh = api->xs_open(XS_UNWATCH_FILTER);
    if (xsh == nullptr) return Fail(ConnectFailure(errno, *api));
    int fd = api->xs_fileno(xsh);
    if (fd < 0) {
      Fail(errors::FromErrno(errno, "xs_fileno"));
      api->xs_close(xsh);
      return;
    }
    struct stat st;
    result_.socket = stat(api->xs_daemon_socket(), &st) == 0 && S_ISSOCK(st.st_mode);
    result_.api = api;
    result_.xsh = xsh;
    result_.fd = fd;
  }
  Napi::Value Result(Napi::Env env) override {
    return state()->xs_handle_class.New({Napi::External<OpenResult>::New(env, &result_)});
  }

  OpenResult result_;
};

}  // namespace

// struct xs_handle *xs_open(unsigned long flags);
// int xs_fileno(struct xs_handle *h);
Napi::Value OpenXenStore(const Napi::CallbackInfo& info) {
  Napi::Function on_event = args::Function(info, 0, "onWatchEvent");
  Napi::Value on_lost = args::At(info, 1);
  if (!on_lost.IsUndefined() && !on_lost.IsFunction()) {
    throw Napi::TypeError::New(info.Env(), "onLost must be a function");
  }
  auto* op = new XsOpenOp(info.Env(), on_event, on_lost);
  Napi::Value promise = op->Promise();
  op->Queue();
  return promise;
}

}  // namespace xenode
