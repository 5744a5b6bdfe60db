// File-system calls Node's fs module lacks, for the VHD engine (lib/vhd/files.ts).
//
// exchangeFiles(a, b): renameat2(a, b, RENAME_EXCHANGE), atomically swapping two names.
// The engine puts a finished temporary image in place by exchanging it with the old
// image and then removing the old one under the temporary name. Unlike rename(2) over an
// existing file, this does not make ext4 (auto_da_alloc) write out the new file's
// delayed-allocation data inside the call: a 1 GiB import otherwise spends a few hundred
// milliseconds in rename() alone.
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "args.h"
#include "worker.h"

#ifndef RENAME_EXCHANGE
#define RENAME_EXCHANGE (1 << 1)
#endif

namespace xenode {

namespace {

class ExchangeOp : public PromiseWorker {
 public:
  ExchangeOp(Napi::Env env, std::string a, std::string b)
      : PromiseWorker(env, "xenode.exchangeFiles"), a_(std::move(a)), b_(std::move(b)) {}

  void Execute() override {
    // The raw system call: glibc's renameat2() wrapper needs glibc 2.28.
    if (syscall(SYS_renameat2, AT_FDCWD, a_.c_str(), AT_FDCWD, b_.c_str(), RENAME_EXCHANGE) != 0) {
      Fail(errors::FromErrno(errno, "renameat2", b_));
    }
  }

 private:
  std::string a_;
  std::string b_;
};

}  // namespace

Napi::Value ExchangeFiles(const Napi::CallbackInfo& info) {
  std::string a = args::CString(info, 0, "a");
  std::string b = args::CString(info, 1, "b");
  auto* op = new ExchangeOp(info.Env(), std::move(a), std::move(b));
  Napi::Value promise = op->Promise();
  op->Queue();
  return promise;
}

}  // namespace xenode
