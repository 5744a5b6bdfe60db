// XlHandle: one libxl context (`libxl_ctx *`), driven without blocking the event loop.
// libxl.cc holds its life cycle (open, the event thread, events, closing); libxl_ops.cc
// the operations; libxl_validate.cc the JSON validation that needs no hypervisor.
//
// Threads. libxl calls can block (xenstore round trips, hypercalls, file I/O while
// building or saving a domain), so none runs on the loop thread:
// - operations start on the libuv pool (XlCall). Short ones run to completion there.
//   Long ones (create, restore, destroy, suspend, Remus, devices) are libxl asynchronous
//   operations ("ao") started with a libxl_asyncop_how callback, so no pool thread waits
//   for them: they return once started, and complete later on another thread;
// - one event thread per context runs libxl's own poll loop (libxl_osevent_beforepoll /
//   poll / _afterpoll). libxl wakes it through its poller pipe whenever another thread
//   adds an fd or timeout (libxl's "baton", libxl_event.c), so the continuations of every
//   ao, xenstore watch and child process run there;
// - libxl's callbacks (ao completion, event_occurs, disaster) may come on any of those
//   threads; they queue what happened in XlShared and wake the loop thread through a
//   thread-safe function, which settles promises and calls the JS callbacks.
// The alternative, libxl_osevent_register_hooks on uv_poll/uv_timer, would run libxl's
// continuations (and their blocking I/O) on the loop thread, and its register hooks would
// be called from pool threads, where libuv handles cannot be touched.
//
// SIGCHLD. libxl runs children (hotplug scripts, bootloaders, device models). In Node,
// libuv owns SIGCHLD and reaps only the pids of its own child processes, one waitpid each.
// The context is set to libxl_sigchld_owner_mainloop, so libxl installs no handler; a
// uv_signal handle on SIGCHLD (libuv lets any number watch a signal) wakes the event
// thread, which calls libxl_childproc_sigchld_occurred: libxl then waitpid()s each of its
// own children and nothing else. Neither side can reap the other's children.
// (libxl_childproc_reaped would need us to reap with waitpid(-1), stealing Node's.)
//
// Disaster. libxl_event_register_callbacks always gets a `disaster` callback (without one
// libxl calls exit()); it reaches JavaScript as the onError callback, and the context
// should then be closed.
//
// Closing: pending promises reject with XEN_CLOSED at once; then, once no pool thread
// uses the context, a pool thread aborts the aos in flight (libxl_ao_abort), waits for
// them to complete, disables the death watches, stops and joins the event thread and
// frees the context. The environment's cleanup hook does the same for handles left open.
#ifndef XENODE_LIBXL_H
#define XENODE_LIBXL_H

#include <napi.h>
#include <uv.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "xenlibs.h"

namespace xenode {

using XlApi = xenlibs::Libxl;

// The XlHandle class, for the module's exports.
Napi::Function DefineXlHandle(Napi::Env env);

// openLibxl(onEvent: (json) => void, onError: (err) => void): Promise<XlHandle>
Napi::Value OpenLibxl(const Napi::CallbackInfo& info);

// validateLibxlJson(type, json): Promise<string> (libxl_validate.cc)
Napi::Value ValidateLibxlJson(const Napi::CallbackInfo& info);

class XlCall;
class XlHandle;

// What libxl logs at error level, kept so that a failure can say why.
class XlLog {
 public:
  XlLog();
  xentoollog_logger* logger() { return &logger_.base; }
  uint64_t seq();
  // The messages logged after `since` (the last few), joined with "; ".
  std::string Since(uint64_t since);
  // The errno of the last message that had one, after `since`; 0 if none.
  int ErrnoSince(uint64_t since);

 private:
  struct Logger {
    xentoollog_logger base;
    XlLog* self;
  };
  static void VMessage(xentoollog_logger* logger, xentoollog_level level, int errnoval, const char* context,
                       const char* format, va_list al);
  static void Progress(xentoollog_logger*, const char*, const char*, int, unsigned long, unsigned long) {}
  static void Destroy(xentoollog_logger*) {}

  struct Entry {
    uint64_t seq;
    int errnum;
    std::string text;
  };
  Logger logger_;
  std::mutex mutex_;
  uint64_t seq_ = 0;
  std::deque<Entry> entries_;
};

// The state of one context that more than one thread touches.
struct XlShared {
  const XlApi* api = nullptr;
  libxl_ctx* ctx = nullptr;
  XlLog log;

  std::mutex mutex;              // guards everything below (never held while calling libxl)
  std::condition_variable cv;    // aos_in_flight changed
  int aos_in_flight = 0;
  std::set<XlCall*> aos;         // started and not yet complete
  std::vector<XlCall*> completed;
  std::vector<std::string> events;  // libxl_event_to_json of each event
  std::vector<Failure> disasters;
  bool notify_pending = false;
  bool notify_closed = false;
  bool tsfn_gone = false;         // finalized: Node frees it at teardown, released or not
  Napi::ThreadSafeFunction tsfn;  // wakes XlHandle::Drain on the loop thread

  // The event thread.
  std::thread thread;
  int wake[2] = {-1, -1};
  std::atomic<bool> stop{false};
  std::atomic<bool> sigchld{false};

  // Loop thread only: the handle that drains, null once it is gone.
  XlHandle* owner = nullptr;

  ~XlShared();
  // Any thread: queue-side changes are done; wake the loop thread (once per batch).
  void Notify();
  // Loop thread: from the thread-safe function's finalizer; no call may follow.
  void TsfnFinalized();
  // Loop thread: false once finalized (Ref/Unref/Release would touch freed memory).
  bool TsfnUsable();
  // Any thread: wake the event thread.
  void Wake();
  void EventLoop();
};

class XlHandle : public Napi::ObjectWrap<XlHandle>, public NativeHandle {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit XlHandle(const Napi::CallbackInfo& info);
  ~XlHandle() override;

  XlShared& shared() { return *shared_; }
  const XlApi& api() const { return *shared_->api; }
  libxl_ctx* ctx() const { return shared_->ctx; }
  bool open() const { return phase_ == Phase::kOpen; }

  // Loop thread, from XlCall.
  Napi::Value Submit(XlCall* call);
  void Started(XlCall* call);   // Execute() has returned (OnOK)
  void Forget(XlCall* call);    // settled: no longer abandoned on close
  void KeepAliveChanged();
  // Loop thread, from the thread-safe function.
  void Drain();

  void CloseForTeardown(std::function<void()> done) override;
  void Closed();

  // Death watches: watch id → evgen (loop thread; the evgens are used on the pool).
  std::map<uint32_t, libxl_evgen_domain_death*>& watches() { return watches_; }
  uint32_t NextWatchId() { return ++last_watch_id_; }

 private:
  enum class Phase { kOpen, kClosing, kClosed };

  // Operations (libxl_ops.cc).
  Napi::Value CreateDomain(const Napi::CallbackInfo& info);
  Napi::Value RestoreDomain(const Napi::CallbackInfo& info);
  Napi::Value DestroyDomain(const Napi::CallbackInfo& info);
  Napi::Value ShutdownDomain(const Napi::CallbackInfo& info);
  Napi::Value RebootDomain(const Napi::CallbackInfo& info);
  Napi::Value PauseDomain(const Napi::CallbackInfo& info);
  Napi::Value UnpauseDomain(const Napi::CallbackInfo& info);
  Napi::Value ListDomains(const Napi::CallbackInfo& info);
  Napi::Value DomainInfo(const Napi::CallbackInfo& info);
  Napi::Value DomainConfig(const Napi::CallbackInfo& info);
  Napi::Value SetMemoryTarget(const Napi::CallbackInfo& info);
  Napi::Value SetMaxMemory(const Napi::CallbackInfo& info);
  Napi::Value SetVcpuCount(const Napi::CallbackInfo& info);
  Napi::Value AddDevice(const Napi::CallbackInfo& info);
  Napi::Value RemoveDevice(const Napi::CallbackInfo& info);
  Napi::Value Suspend(const Napi::CallbackInfo& info);
  Napi::Value Resume(const Napi::CallbackInfo& info);
  Napi::Value RemusStart(const Napi::CallbackInfo& info);
  Napi::Value WatchDomain(const Napi::CallbackInfo& info);
  Napi::Value UnwatchDomain(const Napi::CallbackInfo& info);
  Napi::Value ConsoleTty(const Napi::CallbackInfo& info);
  Napi::Value RenameDomain(const Napi::CallbackInfo& info);

  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value IsClosed(const Napi::CallbackInfo& info);
  Napi::Value XenVersion(const Napi::CallbackInfo& info);

  void BeginClose();
  void MaybeFinishClose();
  void Call(Napi::FunctionReference& callback, const std::initializer_list<napi_value>& args);
  static void OnSigchld(uv_signal_t* handle, int signum);

  AddonState* state_;
  std::shared_ptr<XlShared> shared_;
  std::string xen_version_;
  Phase phase_ = Phase::kOpen;
  bool close_started_ = false;
  bool signal_open_ = false;
  uv_signal_t* signal_ = nullptr;
  int running_ = 0;             // XlCalls whose Execute() has not returned
  std::set<XlCall*> unsettled_;  // promises to reject when closing
  int waiting_aos_ = 0;         // started aos whose promise waits for completion
  bool ref_ = false;
  std::map<uint32_t, libxl_evgen_domain_death*> watches_;
  uint32_t last_watch_id_ = 0;
  CloseWaiters closers_;
  Napi::FunctionReference on_event_;
  Napi::FunctionReference on_error_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
};

// One operation on a context: its promise, its libxl call (on the pool) and, for an ao,
// its completion. Sync calls settle when Execute() returns; ao calls settle once both
// Execute() has returned and libxl has called back (in either order).
class XlCall : public Napi::AsyncWorker {
 public:
  enum class Kind { kUndefined, kNumber, kString };
  // Pool thread: the libxl call. Returns libxl's rc; for an ao, pass call.how().
  using Run = std::function<int(XlCall& call)>;

  XlCall(Napi::Env env, XlHandle* owner, const char* op, long domid, bool ao, Run run);
  ~XlCall() override;

  Napi::Value Promise() const { return Napi::Value(Env(), promise_); }
  const char* op() const { return op_; }
  // Pool thread, inside Run: the libxl function failures are reported against.
  void SetOp(const char* op) { op_ = op; }
  bool ao() const { return ao_; }
  const libxl_asyncop_how* how() const { return &how_; }
  libxl_asyncop_how how_copy() const { return how_; }
  const XlApi& api() const { return owner_->api(); }
  libxl_ctx* ctx() const { return owner_->ctx(); }
  XlShared& shared() { return owner_->shared(); }

  // Pool thread, inside Run: the value to resolve with.
  void SetNumber(double n) {
    kind_ = Kind::kNumber;
    number_ = n;
  }
  void SetString(std::string s) {
    kind_ = Kind::kString;
    string_ = std::move(s);
  }
  // Pool thread, inside Run: fail with a failure other than a libxl rc (Run must then
  // return non-zero, and must not have started an ao).
  void SetFailure(Failure f) { failure_ = std::move(f); }
  // Storage libxl writes while an ao runs (the new domid of create/restore).
  uint32_t domid_out = 0;
  // Run on destruction: disposes what libxl used until the ao completed.
  void OnDispose(std::function<void()> fn) { disposers_.push_back(std::move(fn)); }
  // Loop thread, after success: runs before the promise resolves.
  std::function<void(XlCall&)> on_success;

  // Rejects now with `failure` (closing), unless settled.
  void Abandon(const Failure& failure);
  // Loop thread: settle once both halves are in.
  void CompletionSeen();

  // libxl's ao callback (any thread).
  static void AoDone(libxl_ctx* ctx, int rc, void* for_callback);

 private:
  void Execute() override;
  void OnOK() override;
  void OnError(const Napi::Error& err) override;
  void Settle();
  void Resolve(napi_value value);
  void Reject(napi_value value);

  XlHandle* const owner_;
  AddonState* const state_;
  const char* op_;
  const long domid_;
  const bool ao_;
  Run run_;
  libxl_asyncop_how how_{};
  napi_deferred deferred_ = nullptr;
  napi_value promise_ = nullptr;
  uint64_t log_seq_ = 0;
  int rc_ = 0;          // of the initiating call
  int ao_rc_ = 0;       // of the completion
  bool started_ = false;     // OnOK ran (loop thread)
  bool completed_ = false;   // completion drained (loop thread)
  bool settled_ = false;
  Failure failure_;
  std::string detail_;
  Kind kind_ = Kind::kUndefined;
  double number_ = 0;
  std::string string_;
  std::vector<std::function<void()>> disposers_;
};

}  // namespace xenode

#endif  // XENODE_LIBXL_H
