// Awaiting a single io_uring operation from a coroutine:
//
//   int res = co_await ring_op([&](io_uring_sqe* sqe) { io_uring_prep_connect(sqe, fd, addr, len); });
//
// The SQE is prepared when the coroutine suspends and goes to the kernel with the rest of the loop
// turn's submissions; the coroutine resumes with the CQE's result. The awaiter lives in the coroutine
// frame, so the operation must complete before the frame goes away (cancel it rather than abandon it).
#pragma once

#include <coroutine>
#include <type_traits>

#include "reactor/reactor.h"

namespace tern {

template <typename Prep>
struct RingAwaiter : RingOp {
  Prep prep;
  int res = 0;
  uint32_t cqe_flags = 0;
  std::coroutine_handle<> h;

  explicit RingAwaiter(Prep p) : prep(std::move(p)) {
    on_complete = [](RingOp* op, int r, uint32_t f) {
      auto* self = static_cast<RingAwaiter*>(op);
      self->res = r;
      self->cqe_flags = f;
      self->h.resume();
    };
  }
  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> hh) {
    h = hh;
    Reactor* r = Reactor::current();
    io_uring_sqe* sqe = r->get_sqe();
    prep(sqe);
    r->commit(sqe, this);
  }
  int await_resume() const noexcept { return res; }
};

template <typename Prep>
RingAwaiter<Prep> ring_op(Prep p) {
  static_assert(std::is_trivially_copyable_v<Prep>, "ring_op: capture by reference (see ReactorSet::submit_to)");
  return RingAwaiter<Prep>(std::move(p));
}

// A completion target for operations whose result nobody needs (cancellations, best-effort closes).
RingOp* ignored_ring_op();

// Asks the kernel to cancel the operation tagged with `op` (best effort; the op still completes, with
// -ECANCELED if the cancellation won).
void cancel_ring_op(RingOp* op);

}  // namespace tern
