// XsHandle: one connection to xenstored through libxenstore (`struct xs_handle *`).
// xenstore.cc holds its life cycle (open, request queue, watch events, close);
// xenstore_ops.cc the requests, one small PromiseWorker each.
//
// Requests run one at a time, in call order, on the libuv thread pool. libxenstore holds
// its request mutex across each round trip anyway, so a per-handle FIFO costs nothing: it
// keeps the order of the calls (a read issued after a write sees it) and ties up at most
// one pool thread per handle.
//
// Watch events are read on the loop thread. libxenstore's reader thread signals them on a
// pipe (xs_fileno), which a uv_poll watches; xs_check_watch then drains them without
// blocking. The poll is ref'd only while a watch is registered, so an idle handle does
// not keep the process alive.
//
// Closing: close() rejects every queued and running request with XEN_CLOSED at once and
// closes the libuv handles; xs_close runs only after the running request has come back
// from the pool and those handles are closed, so no thread uses the xs_handle once it is
// freed. While open, the JS object is held strongly (an open handle is never collected,
// like a socket); the environment's cleanup hook closes whatever JavaScript left open.
#ifndef XENODE_XENSTORE_H
#define XENODE_XENSTORE_H

#include <napi.h>
#include <uv.h>

#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "addon.h"
#include "errors.h"
#include "worker.h"
#include "xenlibs.h"

namespace xenode {

using XsApi = xenlibs::XenStore;

// The XsHandle class, for the module's exports.
Napi::Function DefineXsHandle(Napi::Env env);

// openXenStore(onWatchEvent: (path, token) => void, onLost?: (err) => void): Promise<XsHandle>
Napi::Value OpenXenStore(const Napi::CallbackInfo& info);

class XsOp;

class XsHandle : public Napi::ObjectWrap<XsHandle>, public NativeHandle {
 public:
  static Napi::Function Define(Napi::Env env);
  explicit XsHandle(const Napi::CallbackInfo& info);
  ~XsHandle() override;

  const XsApi& api() const { return *api_; }
  struct xs_handle* xsh() const { return xsh_; }

  // Loop thread, from the operations.
  Napi::Value Submit(XsOp* op);
  void OpDone(XsOp* op);
  void WatchCountChanged(int delta);

  void CloseForTeardown(std::function<void()> done) override;
  // After xs_close.
  void Closed();

 private:
  enum class Phase { kOpen, kClosing, kClosed };

  // The requests (xenstore_ops.cc).
  Napi::Value Read(const Napi::CallbackInfo& info);
  Napi::Value Write(const Napi::CallbackInfo& info);
  Napi::Value Mkdir(const Napi::CallbackInfo& info);
  Napi::Value Rm(const Napi::CallbackInfo& info);
  Napi::Value Directory(const Napi::CallbackInfo& info);
  Napi::Value GetPermissions(const Napi::CallbackInfo& info);
  Napi::Value SetPermissions(const Napi::CallbackInfo& info);
  Napi::Value TransactionStart(const Napi::CallbackInfo& info);
  Napi::Value TransactionEnd(const Napi::CallbackInfo& info);
  Napi::Value Watch(const Napi::CallbackInfo& info);
  Napi::Value Unwatch(const Napi::CallbackInfo& info);
  Napi::Value GetDomainPath(const Napi::CallbackInfo& info);

  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value IsClosed(const Napi::CallbackInfo& info);
  Napi::Value Transport(const Napi::CallbackInfo& info);

  void Pump();
  void FailQueued();
  void Lost(int errnum, const char* op);
  void PauseEvents(bool paused);
  void UpdateRef();
  void BeginClose();
  void CloseUvHandle(uv_handle_t* handle);
  void MaybeFinishClose();
  void DrainWatchEvents();
  void Call(Napi::FunctionReference& callback, const std::initializer_list<napi_value>& args);
  static void OnPoll(uv_poll_t* poll, int status, int events);
  static void OnLivenessCheck(uv_timer_t* timer);

  AddonState* state_;
  const XsApi* api_ = nullptr;
  struct xs_handle* xsh_ = nullptr;
  bool socket_ = false;
  Phase phase_ = Phase::kOpen;
  int lost_errno_ = 0;  // set once xenstored is gone
  bool close_started_ = false;
  uv_poll_t* poll_ = nullptr;     // until its close callback has run
  uv_timer_t* timer_ = nullptr;   // likewise
  int uv_handles_ = 0;            // of the two above, those not closed yet
  bool events_paused_ = false;
  int watches_ = 0;
  std::deque<XsOp*> queue_;
  XsOp* running_ = nullptr;
  CloseWaiters closers_;
  Napi::FunctionReference on_event_;
  Napi::FunctionReference on_lost_;
  std::unique_ptr<Napi::AsyncContext> async_context_;
};

// The base of the requests on an open handle: they run in the handle's FIFO.
class XsOp : public PromiseWorker {
 public:
  // The C function, e.g. "xs_read": the `op` of its errors.
  const char* op() const { return op_; }
  // Watch-event delivery pauses while this runs (see WatchOp).
  virtual bool pauses_events() const { return false; }
  // The errno with which the connection to xenstored was found lost, else 0.
  int lost_errno() const { return lost_errno_; }

  Failure ClosedFailure() const;
  Failure LostFailure(int errnum) const;

 protected:
  XsOp(Napi::Env env, XsHandle* owner, const char* op, std::string path, bool has_path)
      : PromiseWorker(env, op), path_(std::move(path)), owner_(owner), op_(op), has_path_(has_path) {}

  // Pool thread: the libxenstore call failed with `errnum`.
  void FailWith(int errnum);

  const XsApi& api() const { return owner_->api(); }
  struct xs_handle* xsh() const { return owner_->xsh(); }

  // Loop thread, after a successful Execute().
  virtual void Succeeded() {}

  const std::string path_;
  XsHandle* const owner_;

 private:
  Failure WithPath(Failure f) const;
  void Finished() override;

  const char* const op_;
  const bool has_path_;
  int lost_errno_ = 0;
};

}  // namespace xenode

#endif  // XENODE_XENSTORE_H
