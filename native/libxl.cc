// The life cycle of an XlHandle: opening, the event thread, libxl's callbacks, calls and
// their settlement, closing. See libxl.h; the operations are in libxl_ops.cc.
#include "libxl.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstring>

#include "args.h"

namespace xenode {
namespace {

// Error messages kept per context for failures to quote.
constexpr size_t kLogEntries = 16;
// Of those, how many a failure quotes.
constexpr size_t kLogQuoted = 3;

template <typename T>
uv_handle_t* AsHandle(T* handle) {
  return reinterpret_cast<uv_handle_t*>(handle);
}

}  // namespace

// ---- XlLog ----

XlLog::XlLog() {
  std::memset(&logger_, 0, sizeof(logger_));
  logger_.base.vmessage = VMessage;
  logger_.base.progress = Progress;
  logger_.base.destroy = Destroy;
  logger_.self = this;
}

void XlLog::VMessage(xentoollog_logger* logger, xentoollog_level level, int errnoval, const char* context,
                     const char* format, va_list al) {
  if (level < XTL_ERROR) return;
  XlLog* self = reinterpret_cast<Logger*>(logger)->self;
  char buf[512];
  vsnprintf(buf, sizeof(buf), format, al);
  std::string text = buf;
  while (!text.empty() && text.back() == '\n') text.pop_back();
  if (errnoval > 0) text += std::string(": ") + std::strerror(errnoval);
  std::lock_guard<std::mutex> lock(self->mutex_);
  self->entries_.push_back({++self->seq_, errnoval > 0 ? errnoval : 0, std::move(text)});
  if (self->entries_.size() > kLogEntries) self->entries_.pop_front();
}

uint64_t XlLog::seq() {
  std::lock_guard<std::mutex> lock(mutex_);
  return seq_;
}

std::string XlLog::Since(uint64_t since) {
  std::lock_guard<std::mutex> lock(mutex_);
  std::vector<const Entry*> newer;
  for (const Entry& e : entries_) {
    if (e.seq > since) newer.push_back(&e);
  }
  std::string out;
  size_t from = newer.size() > kLogQuoted ? newer.size() - kLogQuoted : 0;
  for (size_t i = from; i < newer.size(); i++) out += (out.empty() ? "" : "; ") + newer[i]->text;
  return out;
}

int XlLog::ErrnoSince(uint64_t since) {
  std::lock_guard<std::mutex> lock(mutex_);
  int errnum = 0;
  for (const Entry& e : entries_) {
    if (e.seq > since && e.errnum != 0) errnum = e.errnum;
  }
  return errnum;
}

// ---- XlShared: libxl's callbacks and the event thread ----

XlShared::~XlShared() {
  for (int fd : wake) {
    if (fd >= 0) close(fd);
  }
}

void XlShared::Notify() {
  // Under the mutex, so that the call cannot race with the thread-safe function's
  // finalization (which Node does at environment teardown even while threads still
  // call it); TsfnFinalized() sets notify_closed under the same mutex.
  std::lock_guard<std::mutex> lock(mutex);
  if (notify_pending || notify_closed) return;
  notify_pending = true;
  // The function's context keeps this state alive until it is finalized; the handle,
  // if still there, is found through `owner`.
  tsfn.NonBlockingCall(this, [](Napi::Env env, Napi::Function /*unused*/, XlShared* self) {
    if (env == nullptr) return;
    {
      std::lock_guard<std::mutex> lock(self->mutex);
      self->notify_pending = false;
    }
    if (self->owner != nullptr) self->owner->Drain();
  });
}

void XlShared::TsfnFinalized() {
  std::lock_guard<std::mutex> lock(mutex);
  notify_closed = true;
  tsfn_gone = true;
}

bool XlShared::TsfnUsable() {
  std::lock_guard<std::mutex> lock(mutex);
  return !tsfn_gone;
}

void XlShared::Wake() {
  char byte = 1;
  ssize_t n;
  do {
    n = write(wake[1], &byte, 1);
  } while (n < 0 && errno == EINTR);  // EAGAIN: a wake-up is pending already
}

// void libxl_osevent_beforepoll(...) / int poll(...) / void libxl_osevent_afterpoll(...)
void XlShared::EventLoop() {
  // Signals are left unblocked: libxl forks its children (hotplug scripts) from this
  // thread too, and they would inherit a blocked mask across exec.
  std::vector<struct pollfd> fds(16);
  while (!stop.load()) {
    int nfds = static_cast<int>(fds.size()) - 1;
    int timeout = -1;
    struct timeval now;
    gettimeofday(&now, nullptr);
    int rc = api->libxl_osevent_beforepoll(ctx, &nfds, fds.data() + 1, &timeout, now);
    if (rc == ERROR_BUFFERFULL) {
      fds.resize(nfds + 1);
      continue;
    }
    if (rc != 0) nfds = 0;
    fds[0].fd = wake[0];
    fds[0].events = POLLIN;
    fds[0].revents = 0;
    int n = poll(fds.data(), nfds + 1, timeout);
    if (n < 0 && errno != EINTR) timeout = 10;  // should not happen; do not spin
    if (fds[0].revents & POLLIN) {
      char buf[64];
      while (read(wake[0], buf, sizeof(buf)) > 0) {
      }
    }
    // void libxl_childproc_sigchld_occurred(libxl_ctx *ctx);
    if (sigchld.exchange(false)) api->libxl_childproc_sigchld_occurred(ctx);
    gettimeofday(&now, nullptr);
    api->libxl_osevent_afterpoll(ctx, nfds, fds.data() + 1, now);
  }
}

namespace {

// libxl_event_hooks.event_occurs: any thread in libxl. Calling libxl here is allowed.
// char *libxl_event_to_json(libxl_ctx *ctx, libxl_event *p);
// void libxl_event_free(libxl_ctx *ctx, libxl_event *event);
void EventOccurs(void* user, libxl_event* event) {
  auto* shared = static_cast<XlShared*>(user);
  char* json = shared->api->libxl_event_to_json(shared->ctx, event);
  shared->api->libxl_event_free(shared->ctx, event);
  if (json == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(shared->mutex);
    shared->events.emplace_back(json);
  }
  std::free(json);
  shared->Notify();
}

// libxl_event_hooks.disaster: any thread in libxl; must not call libxl.
void Disaster(void* user, libxl_event_type type, const char* msg, int errnoval) {
  auto* shared = static_cast<XlShared*>(user);
  Failure f;
  f.code = "XEN_LIBXL_DISASTER";
  f.op = "libxl";
  f.errnum = errnoval > 0 ? errnoval : 0;
  f.message = std::string("XEN_LIBXL_DISASTER: libxl cannot go on reporting events (") + (msg ? msg : "unknown") +
              (errnoval > 0 ? std::string(": ") + std::strerror(errnoval) : std::string()) +
              "); close this connection and open another";
  {
    std::lock_guard<std::mutex> lock(shared->mutex);
    shared->disasters.push_back(std::move(f));
  }
  shared->Notify();
}

const libxl_event_hooks kEventHooks = {LIBXL_EVENTMASK_ALL, EventOccurs, Disaster};
const libxl_childproc_hooks kChildprocHooks = {libxl_sigchld_owner_mainloop, nullptr, nullptr};

}  // namespace

// ---- XlCall ----

XlCall::XlCall(Napi::Env env, XlHandle* owner, const char* op, long domid, bool ao, Run run)
    : Napi::AsyncWorker(env, op), owner_(owner), state_(AddonState::Of(env)), op_(op), domid_(domid), ao_(ao),
      run_(std::move(run)) {
  SuppressDestruct();
  NAPI_THROW_IF_FAILED_VOID(env, napi_create_promise(env, &deferred_, &promise_));
  how_.callback = AoDone;
  how_.u.for_callback = this;
}

XlCall::~XlCall() {
  for (auto& dispose : disposers_) dispose();
}

void XlCall::Execute() {
  XlShared& s = shared();
  log_seq_ = s.log.seq();
  if (ao_) {
    std::lock_guard<std::mutex> lock(s.mutex);
    s.aos_in_flight++;
    s.aos.insert(this);
  }
  rc_ = run_(*this);
  if (rc_ != 0) detail_ = s.log.Since(log_seq_);
  if (ao_ && rc_ != 0) {
    // Not started: libxl will not call back.
    std::lock_guard<std::mutex> lock(s.mutex);
    s.aos_in_flight--;
    s.aos.erase(this);
    s.cv.notify_all();
  }
}

void XlCall::AoDone(libxl_ctx* /*ctx*/, int rc, void* for_callback) {
  auto* call = static_cast<XlCall*>(for_callback);
  XlShared& s = call->shared();
  std::string detail = rc != 0 ? s.log.Since(call->log_seq_) : std::string();
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    call->ao_rc_ = rc;
    if (rc != 0) call->detail_ = std::move(detail);
    s.aos_in_flight--;
    s.aos.erase(call);
    s.completed.push_back(call);
    s.cv.notify_all();
  }
  s.Notify();
}

void XlCall::OnOK() {
  started_ = true;
  owner_->Started(this);
  // An ao that started is deleted only once libxl has called back.
  if (!ao_ || rc_ != 0 || completed_) {
    Settle();
    delete this;
  }
}

void XlCall::OnError(const Napi::Error& err) {
  // A C++ exception escaped Execute(); an ao may still be running, so never delete then.
  started_ = true;
  owner_->Started(this);
  if (!settled_ && !state_->stopping()) Reject(err.Value());
  owner_->Forget(this);
  if (!ao_ || rc_ != 0) delete this;
}

void XlCall::CompletionSeen() {
  completed_ = true;
  if (started_) {
    Settle();
    delete this;
  }
}

void XlCall::Settle() {
  owner_->Forget(this);
  if (settled_ || state_->stopping()) return;
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  int rc = rc_ != 0 ? rc_ : ao_rc_;
  if (failure_.failed()) {
    Reject(errors::ToError(env, failure_).Value());
  } else if (rc != 0) {
    Reject(errors::ToError(env, errors::FromLibxl(rc, op_, detail_, domid_)).Value());
  } else {
    try {
      if (on_success) on_success(*this);
      switch (kind_) {
        case Kind::kNumber:
          Resolve(Napi::Number::New(env, number_));
          break;
        case Kind::kString:
          Resolve(Napi::String::New(env, string_));
          break;
        default:
          Resolve(env.Undefined());
      }
    } catch (const Napi::Error& err) {
      Reject(err.Value());
    }
  }
}

void XlCall::Abandon(const Failure& failure) {
  if (settled_) return;
  if (state_->stopping()) {
    settled_ = true;
    return;
  }
  Napi::HandleScope scope(Env());
  Reject(errors::ToError(Env(), failure).Value());
}

void XlCall::Resolve(napi_value value) {
  settled_ = true;
  if (napi_resolve_deferred(Env(), deferred_, value) != napi_ok) state_->MarkStopping();
}

void XlCall::Reject(napi_value value) {
  settled_ = true;
  if (napi_reject_deferred(Env(), deferred_, value) != napi_ok) state_->MarkStopping();
}

// ---- XlHandle: calls ----

Napi::Value XlHandle::Submit(XlCall* call) {
  Napi::Value promise = call->Promise();
  if (phase_ != Phase::kOpen) {
    call->Abandon(errors::Closed(call->op()));
    delete call;
    return promise;
  }
  unsettled_.insert(call);
  running_++;
  if (call->ao()) {
    waiting_aos_++;
    KeepAliveChanged();
  }
  call->Queue();
  return promise;
}

void XlHandle::Started(XlCall* call) {
  running_--;
  if (phase_ == Phase::kClosing) MaybeFinishClose();
}

void XlHandle::Forget(XlCall* call) {
  if (unsettled_.erase(call) > 0 && call->ao()) {
    waiting_aos_--;
    KeepAliveChanged();
  }
}

// An ao in flight or a death watch keeps the process alive; an idle context does not.
void XlHandle::KeepAliveChanged() {
  bool want = phase_ == Phase::kOpen && (waiting_aos_ > 0 || !watches_.empty());
  if (want == ref_ || !shared_->TsfnUsable()) return;
  ref_ = want;
  if (want) {
    shared_->tsfn.Ref(Env());
  } else {
    shared_->tsfn.Unref(Env());
  }
}

void XlHandle::Drain() {
  std::vector<XlCall*> completed;
  std::vector<std::string> events;
  std::vector<Failure> disasters;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    completed.swap(shared_->completed);
    events.swap(shared_->events);
    disasters.swap(shared_->disasters);
  }
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  for (XlCall* call : completed) call->CompletionSeen();
  if (state_->stopping() || phase_ != Phase::kOpen) return;
  for (const std::string& json : events) Call(on_event_, {Napi::String::New(env, json)});
  for (const Failure& f : disasters) {
    if (phase_ == Phase::kOpen) Call(on_error_, {errors::ToError(env, f).Value()});
  }
}

void XlHandle::Call(Napi::FunctionReference& callback, const std::initializer_list<napi_value>& args) {
  if (callback.IsEmpty()) return;
  try {
    callback.MakeCallback(Value(), args, *async_context_);
  } catch (const Napi::Error& err) {
    napi_fatal_exception(Env(), err.Value());
  }
}

void XlHandle::OnSigchld(uv_signal_t* handle, int /*signum*/) {
  auto* self = static_cast<XlHandle*>(handle->data);
  self->shared_->sigchld.store(true);
  self->shared_->Wake();
}

// ---- Closing ----

namespace {

// Everything that must happen off the loop thread to free a context (see libxl.h).
void ShutDownContext(XlShared& s, const std::vector<libxl_evgen_domain_death*>& evgens) {
  std::vector<libxl_asyncop_how> hows;
  {
    std::lock_guard<std::mutex> lock(s.mutex);
    for (XlCall* call : s.aos) hows.push_back(call->how_copy());
  }
  // int libxl_ao_abort(libxl_ctx *ctx, const libxl_asyncop_how *how);
  for (const libxl_asyncop_how& how : hows) s.api->libxl_ao_abort(s.ctx, &how);
  {
    std::unique_lock<std::mutex> lock(s.mutex);
    s.cv.wait(lock, [&s] { return s.aos_in_flight == 0; });
  }
  // void libxl_evdisable_domain_death(libxl_ctx *ctx, libxl_evgen_domain_death*);
  for (libxl_evgen_domain_death* evgen : evgens) s.api->libxl_evdisable_domain_death(s.ctx, evgen);
  s.stop.store(true);
  s.Wake();
  if (s.thread.joinable()) s.thread.join();
  // int libxl_ctx_free(libxl_ctx *ctx);
  s.api->libxl_ctx_free(s.ctx);
  s.ctx = nullptr;
}

class XlCloseWork final : public Napi::AsyncWorker {
 public:
  XlCloseWork(Napi::Env env, XlHandle* owner, std::vector<libxl_evgen_domain_death*> evgens)
      : Napi::AsyncWorker(env, "libxl_ctx_free"), owner_(owner), evgens_(std::move(evgens)) {}

 private:
  void Execute() override { ShutDownContext(owner_->shared(), evgens_); }
  void OnOK() override { owner_->Closed(); }
  void OnError(const Napi::Error& /*err*/) override { owner_->Closed(); }

  XlHandle* const owner_;
  std::vector<libxl_evgen_domain_death*> evgens_;
};

}  // namespace

Napi::Value XlHandle::Close(const Napi::CallbackInfo& info) {
  Napi::Value promise = closers_.Promise(info.Env(), phase_ == Phase::kClosed);
  BeginClose();  // nothing to do unless open
  return promise;
}

void XlHandle::CloseForTeardown(std::function<void()> done) {
  if (phase_ == Phase::kClosed) return done();
  Napi::HandleScope scope(Env());
  closers_.AddTeardown(std::move(done));
  BeginClose();
}

void XlHandle::BeginClose() {
  if (phase_ != Phase::kOpen) return;
  phase_ = Phase::kClosing;
  std::set<XlCall*> unsettled = unsettled_;
  for (XlCall* call : unsettled) call->Abandon(errors::Closed(call->op()));
  if (ref_ && shared_->TsfnUsable()) shared_->tsfn.Unref(Env());
  ref_ = false;
  if (signal_ != nullptr && signal_open_) {
    uv_signal_stop(signal_);
    uv_close(AsHandle(signal_), [](uv_handle_t* h) {
      auto* self = static_cast<XlHandle*>(h->data);
      std::free(h);
      self->signal_ = nullptr;
      self->signal_open_ = false;
      Napi::HandleScope scope(self->Env());
      self->MaybeFinishClose();
    });
  }
  MaybeFinishClose();
}

void XlHandle::MaybeFinishClose() {
  if (phase_ != Phase::kClosing || close_started_ || running_ > 0 || signal_open_) return;
  close_started_ = true;
  std::vector<libxl_evgen_domain_death*> evgens;
  for (auto& w : watches_) evgens.push_back(w.second);
  watches_.clear();
  if (!state_->stopping()) {
    try {
      (new XlCloseWork(Env(), this, evgens))->Queue();
      return;
    } catch (const Napi::Error&) {
      // The environment is stopping after all: close right here.
    }
  }
  // No JavaScript runs any more: waiting on the loop thread harms nobody.
  ShutDownContext(*shared_, evgens);
  Closed();
}

void XlHandle::Closed() {
  phase_ = Phase::kClosed;
  Napi::Env env = Env();
  // Completions that arrived after the last drain: the calls are settled already.
  std::vector<XlCall*> completed;
  {
    std::lock_guard<std::mutex> lock(shared_->mutex);
    completed.swap(shared_->completed);
    shared_->notify_closed = true;
  }
  for (XlCall* call : completed) call->CompletionSeen();
  shared_->owner = nullptr;
  if (shared_->TsfnUsable()) shared_->tsfn.Release();
  closers_.Resolve(env, state_);
  on_event_.Reset();
  on_error_.Reset();
  async_context_.reset();
  state_->Untrack(this);
  std::vector<std::function<void()>> done = closers_.TakeTeardown();
  Unref();  // collectable from now on
  for (auto& callback : done) callback();
}

XlHandle::~XlHandle() {
  if (phase_ == Phase::kClosed) return;
  // Open handles are held strongly and closed by the cleanup hook; this only guards
  // against that order ever changing.
  shared_->owner = nullptr;
  state_->Untrack(this);
}

// ---- Opening ----

namespace {

// What XlOpenOp hands to the XlHandle constructor.
struct XlOpenResult {
  std::shared_ptr<XlShared> shared;
  std::string xen_version;
  Napi::FunctionReference on_event;
  Napi::FunctionReference on_error;
};

Failure CtxAllocFailure(int rc, XlShared& s, uint64_t since) {
  std::string detail = s.log.Since(since);
  Failure f = errors::Unavailable(
      "libxl_ctx_alloc",
      "cannot create a libxl context (" + std::string(errors::LibxlCodeName(rc)) +
          (detail.empty() ? "" : ": " + detail) +
          "): libxl needs a Xen dom0 (/dev/xen/privcmd), root, and a running xenstored. Run this in dom0 as root "
          "(start Xen's services: /etc/init.d/xen start), or use { backend: 'mock' }");
  f.errnum = s.log.ErrnoSince(since);
  return f;
}

int VersionPart(const std::string& v, int index) {
  int part[2] = {0, 0};
  std::sscanf(v.c_str(), "%d.%d", &part[0], &part[1]);
  return part[index];
}

class XlOpenOp final : public Napi::AsyncWorker {
 public:
  XlOpenOp(Napi::Env env, Napi::Function on_event, Napi::Function on_error)
      : Napi::AsyncWorker(env, "libxl_ctx_alloc"), state_(AddonState::Of(env)) {
    NAPI_THROW_IF_FAILED_VOID(env, napi_create_promise(env, &deferred_, &promise_));
    result_.shared = std::make_shared<XlShared>();
    result_.on_event = Napi::Persistent(on_event);
    result_.on_error = Napi::Persistent(on_error);
    // The thread-safe function's context keeps the shared state alive until it is
    // finalized, so a late notification from a libxl thread never finds it freed.
    auto* keep = new std::shared_ptr<XlShared>(result_.shared);
    result_.shared->tsfn = Napi::ThreadSafeFunction::New(
        env, Napi::Function::New(env, [](const Napi::CallbackInfo&) {}), "xenode:libxl", 0, 1, keep,
        [](Napi::Env, std::shared_ptr<XlShared>* k) {
          (*k)->TsfnFinalized();
          delete k;
        });
    result_.shared->tsfn.Unref(env);
  }
  Napi::Value Promise() const { return Napi::Value(Env(), promise_); }

 private:
  void Execute() override {
    XlShared& s = *result_.shared;
    const XlApi* api = xenlibs::LoadLibxl(&failure_);
    if (api == nullptr) return;
    s.api = api;
    uint64_t since = s.log.seq();
    // int libxl_ctx_alloc(libxl_ctx **pctx, int version, unsigned flags, xentoollog_logger *lg);
    int rc = api->libxl_ctx_alloc(&s.ctx, LIBXL_VERSION, 0, s.log.logger());
    if (rc != 0) {
      s.ctx = nullptr;
      failure_ = CtxAllocFailure(rc, s, since);
      return;
    }
    // const libxl_version_info* libxl_get_version_info(libxl_ctx *ctx);
    const libxl_version_info* v = api->libxl_get_version_info(s.ctx);
    if (v != nullptr) {
      result_.xen_version = std::to_string(v->xen_version_major) + "." + std::to_string(v->xen_version_minor) +
                            (v->xen_version_extra ? v->xen_version_extra : "");
      std::string built = XENODE_XEN_VERSION;
      if (v->xen_version_major != VersionPart(built, 0) || v->xen_version_minor != VersionPart(built, 1)) {
        failure_.code = "XEN_VERSION_MISMATCH";
        failure_.op = "libxl_get_version_info";
        failure_.message = "this host runs Xen " + result_.xen_version + " but xenode's libxl binding was built against Xen " +
                           built + ": rebuild xenode on this host (npm rebuild xenode --build-from-source, with " +
                           "libxen-dev installed). XenStore, event channels and grant tables work regardless";
        api->libxl_ctx_free(s.ctx);
        s.ctx = nullptr;
        return;
      }
    }
    // Before anything could start a child or enable an event (both must come first).
    // void libxl_event_register_callbacks(libxl_ctx *ctx, const libxl_event_hooks *hooks, void *user);
    // void libxl_childproc_setmode(libxl_ctx *ctx, const libxl_childproc_hooks *hooks, void *user);
    api->libxl_event_register_callbacks(s.ctx, &kEventHooks, &s);
    api->libxl_childproc_setmode(s.ctx, &kChildprocHooks, &s);
    if (pipe2(s.wake, O_CLOEXEC | O_NONBLOCK) != 0) {
      failure_ = errors::FromErrno(errno, "pipe2");
      api->libxl_ctx_free(s.ctx);
      s.ctx = nullptr;
      return;
    }
    XlShared* raw = &s;
    s.thread = std::thread([raw] { raw->EventLoop(); });
  }

  void OnOK() override {
    Napi::Env env = Env();
    if (state_->stopping()) return Discard();
    if (failure_.failed()) {
      Discard();
      napi_reject_deferred(env, deferred_, errors::ToError(env, failure_).Value());
      return;
    }
    try {
      Napi::Object handle = state_->xl_handle_class.New({Napi::External<XlOpenResult>::New(env, &result_)});
      napi_resolve_deferred(env, deferred_, handle);
    } catch (const Napi::Error& err) {
      Discard();
      napi_reject_deferred(env, deferred_, err.Value());
    }
  }

  void OnError(const Napi::Error& err) override {
    Discard();
    if (!state_->stopping()) napi_reject_deferred(Env(), deferred_, err.Value());
  }

  // The context could not be handed over: free it here (loop thread; rare).
  void Discard() {
    XlShared& s = *result_.shared;
    if (s.ctx != nullptr) ShutDownContext(s, {});
    if (s.TsfnUsable()) s.tsfn.Release();
  }

  AddonState* state_;
  napi_deferred deferred_ = nullptr;
  napi_value promise_ = nullptr;
  Failure failure_;
  XlOpenResult result_;
};

}  // namespace

XlHandle::XlHandle(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<XlHandle>(info), state_(AddonState::Of(info.Env())) {
  Napi::Env env = info.Env();
  if (info.Length() != 1 || !info[0].IsExternal()) {
    throw Napi::TypeError::New(env, "XlHandle cannot be constructed directly: use openLibxl()");
  }
  XlOpenResult* open = info[0].As<Napi::External<XlOpenResult>>().Data();
  uv_loop_t* loop = nullptr;
  NAPI_THROW_IF_FAILED_VOID(env, napi_get_uv_event_loop(env, &loop));
  auto* signal = static_cast<uv_signal_t*>(std::malloc(sizeof(uv_signal_t)));
  int rc = signal == nullptr ? UV_ENOMEM : uv_signal_init(loop, signal);
  if (rc == 0) {
    signal->data = this;
    rc = uv_signal_start(signal, OnSigchld, SIGCHLD);
    if (rc != 0) uv_close(AsHandle(signal), [](uv_handle_t* h) { std::free(h); });
  } else {
    std::free(signal);
  }
  if (rc != 0) throw errors::ToError(env, errors::FromErrno(-rc, "uv_signal_start"));

  // Nothing below can fail: take ownership.
  uv_unref(AsHandle(signal));
  signal_ = signal;
  signal_open_ = true;
  async_context_ = std::make_unique<Napi::AsyncContext>(env, "xenode:XlHandle");
  shared_ = open->shared;
  shared_->owner = this;
  xen_version_ = open->xen_version;
  on_event_ = std::move(open->on_event);
  on_error_ = std::move(open->on_error);
  state_->Track(this);
  Ref();  // an open handle is never collected
  // Anything libxl reported between the event thread's start and now.
  shared_->Notify();
}

Napi::Value XlHandle::IsClosed(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), phase_ != Phase::kOpen);
}

Napi::Value XlHandle::XenVersion(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), xen_version_); }

Napi::Function XlHandle::Define(Napi::Env env) {
  return DefineClass(env, "XlHandle",
                     {
                         InstanceMethod("createDomain", &XlHandle::CreateDomain),
                         InstanceMethod("restoreDomain", &XlHandle::RestoreDomain),
                         InstanceMethod("destroyDomain", &XlHandle::DestroyDomain),
                         InstanceMethod("shutdownDomain", &XlHandle::ShutdownDomain),
                         InstanceMethod("rebootDomain", &XlHandle::RebootDomain),
                         InstanceMethod("pauseDomain", &XlHandle::PauseDomain),
                         InstanceMethod("unpauseDomain", &XlHandle::UnpauseDomain),
                         InstanceMethod("listDomains", &XlHandle::ListDomains),
                         InstanceMethod("domainInfo", &XlHandle::DomainInfo),
                         InstanceMethod("domainConfig", &XlHandle::DomainConfig),
                         InstanceMethod("setMemoryTarget", &XlHandle::SetMemoryTarget),
                         InstanceMethod("setMaxMemory", &XlHandle::SetMaxMemory),
                         InstanceMethod("setVcpuCount", &XlHandle::SetVcpuCount),
                         InstanceMethod("addDevice", &XlHandle::AddDevice),
                         InstanceMethod("removeDevice", &XlHandle::RemoveDevice),
                         InstanceMethod("suspendDomain", &XlHandle::Suspend),
                         InstanceMethod("resumeDomain", &XlHandle::Resume),
                         InstanceMethod("remusStart", &XlHandle::RemusStart),
                         InstanceMethod("watchDomain", &XlHandle::WatchDomain),
                         InstanceMethod("unwatchDomain", &XlHandle::UnwatchDomain),
                         InstanceMethod("consoleTty", &XlHandle::ConsoleTty),
                         InstanceMethod("renameDomain", &XlHandle::RenameDomain),
                         InstanceMethod("close", &XlHandle::Close),
                         InstanceAccessor("closed", &XlHandle::IsClosed, nullptr),
                         InstanceAccessor("xenVersion", &XlHandle::XenVersion, nullptr),
                     });
}

Napi::Function DefineXlHandle(Napi::Env env) { return XlHandle::Define(env); }

// openLibxl(onEvent, onError)
Napi::Value OpenLibxl(const Napi::CallbackInfo& info) {
  Napi::Function on_event = args::Function(info, 0, "onEvent");
  Napi::Function on_error = args::Function(info, 1, "onError");
  auto* op = new XlOpenOp(info.Env(), on_event, on_error);
  Napi::Value promise = op->Promise();
  op->Queue();
  return promise;
}

}  // namespace xenode
