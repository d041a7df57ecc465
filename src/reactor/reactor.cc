#include "reactor/reactor.h"

#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>

#include "common/clock.h"
#include "common/log.h"
#include "reactor/reactor_set.h"
#include "reactor/ring_awaiter.h"

namespace tern {
namespace {
thread_local Reactor* t_current = nullptr;
constexpr unsigned kMaxMessagesPerTurn = 256;
constexpr unsigned kCqeBatch = 64;
// Upper bound of the early wake-up for timers (and of any one lateness sample, so a rare multi-ms
// stall cannot push the reactor into spinning for every timer).
constexpr uint64_t kMaxWakeMarginNs = 100'000;
}  // namespace

Reactor* Reactor::current() noexcept { return t_current; }

Reactor::Reactor(ReactorSet* set, unsigned id, int cpu, const ReactorOptions& opts)
    : set_(set),
      id_(id),
      cpu_(cpu),
      opts_(opts),
      clock_(opts.clock ? opts.clock : &MonotonicClock::instance()),
      manual_clock_(!clock_->real()) {}

Reactor::~Reactor() {
  if (thread_.joinable()) thread_.join();
  if (wake_fd_ >= 0) close(wake_fd_);
}

Status Reactor::init_ring() {
  io_uring_params p{};
  // COOP_TASKRUN: completions that need our thread's context (socket receives, sends) are queued as
  // task work without interrupting a running reactor; TASKRUN_FLAG tells the spinning loop to pick them up
  // (liburing's peek enters the kernel only then). Without it every socket completion sends an IPI to a
  // busy reactor, which costs tens of microseconds in virtual machines.
  p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_COOP_TASKRUN |
            IORING_SETUP_TASKRUN_FLAG;
  p.cq_entries = opts_.ring_entries * 4;
  int rc = io_uring_queue_init_params(opts_.ring_entries, &ring_, &p);
  if (rc == -EINVAL) {
    // Before 5.19: no cooperative task running.
    p = io_uring_params{};
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_SINGLE_ISSUER;
    p.cq_entries = opts_.ring_entries * 4;
    rc = io_uring_queue_init_params(opts_.ring_entries, &ring_, &p);
  }
  if (rc == -EINVAL) {
    // Kernels before 6.0 lack SINGLE_ISSUER (and 5.18 SUBMIT_ALL): run without them.
    p = io_uring_params{};
    p.flags = IORING_SETUP_CQSIZE;
    p.cq_entries = opts_.ring_entries * 4;
    rc = io_uring_queue_init_params(opts_.ring_entries, &ring_, &p);
  }
  if (rc < 0) {
    return Status::FromErrno(
        rc, fmt::format("reactor {}: io_uring setup with {} entries failed: {}{}", id_, opts_.ring_entries,
                        std::strerror(-rc),
                        rc == -EPERM ? " (io_uring may be disabled: see /proc/sys/kernel/io_uring_disabled)"
                        : rc == -ENOMEM ? " (locked-memory limit too low? see ulimit -l)"
                                        : ""));
  }
  if (!(p.features & IORING_FEAT_NODROP)) {
    io_uring_queue_exit(&ring_);
    return Status(Errc::kNotSup, "kernel io_uring lacks IORING_FEAT_NODROP (Linux >= 5.5 required)");
  }
  ring_ready_ = true;
  if (opts_.fixed_files > 0 && io_uring_register_files_sparse(&ring_, opts_.fixed_files) == 0) {
    fixed_files_ok_ = true;
    free_file_slots_.reserve(opts_.fixed_files);
    for (int i = int(opts_.fixed_files) - 1; i >= 0; --i) free_file_slots_.push_back(i);
  }
  // Blocking on purpose: io_uring arms a poll (or an io-wq read) for it; a non-blocking eventfd can make
  // the read complete at once with -EAGAIN on kernels without nowait support, and the reactor would
  // never sleep.
  wake_fd_ = eventfd(0, EFD_CLOEXEC);
  if (wake_fd_ < 0) return Status::FromErrno(errno, "eventfd");
  wake_op_.owner = this;
  wake_op_.on_complete = [](RingOp* op, int, uint32_t) { static_cast<OwnOp*>(op)->owner->wake_armed_ = false; };
  cancel_op_.owner = this;
  cancel_op_.on_complete = [](RingOp*, int, uint32_t) {};
  stash_.reserve(size_t(opts_.ring_entries) * 8);
  stash_spare_.reserve(size_t(opts_.ring_entries) * 8);
  timers_.reserve(1024);
  outbound_.resize(set_->size());
  return Status::Ok();
}

void Reactor::thread_main(ReadyState* ready, bool pin) {
  t_current = this;
  Status st;
  if (pin) {
    cpu_set_t cs;
    CPU_ZERO(&cs);
    CPU_SET(cpu_, &cs);
    int rc = pthread_setaffinity_np(pthread_self(), sizeof(cs), &cs);
    if (rc != 0) {
      st = Status::FromErrno(rc, fmt::format("reactor {}: cannot pin to core {}: {} (cores allowed: {})", id_, cpu_,
                                             std::strerror(rc), allowed_cores_string()));
    }
  }
  // Sleeping reactors wake for their timers through io_uring's wait timeout, an hrtimer that the kernel
  // may defer by the thread's timer slack (50 us by default): far too coarse for I/O timeouts and
  // delays. 1 ns asks for precise wake-ups.
  prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  std::string name = fmt::format("reactor-{}", id_);
  pthread_setname_np(pthread_self(), name.c_str());
  if (st.ok()) st = init_ring();
  bool ok = st.ok();
  running_ = ok;
  {
    std::lock_guard lk(ready->mu);
    ready->status = std::move(st);
    ready->done = true;
  }
  ready->cv.notify_all();
  if (ok) {
    TLOG_DEBUG("reactor", "reactor {} running on core {}", id_, cpu_);
    loop();
  }
  if (ring_ready_) io_uring_queue_exit(&ring_);
  t_current = nullptr;
}

// ---------------------------------------------------------------------------------------------------
// Loop

void Reactor::loop() {
  now_ = now_ns();
  tnow_ = manual_clock_ ? clock_->now_ns() : now_;
  last_work_ = now_;
  counters_.started_ns = now_;
  for (;;) {
    now_ = now_ns();
    tnow_ = manual_clock_ ? clock_->now_ns() : now_;
    ++counters_.loops;
    if (exit_now_.load(std::memory_order_acquire)) break;
    bool work = drain_inbox();
    if (outbound_pending_) work |= flush_outbound();
    if (!timers_.empty()) work |= run_timers();
    if (!pollers_.empty()) work |= run_pollers();
    work |= reap_completions();
    // Deferred work chains (a device completion resumes a protocol handler, which queues a socket flush,
    // itself deferred): run a few passes so the whole chain's submissions share this turn's single
    // io_uring_enter, bounded so that something that keeps deferring cannot starve the rest.
    for (unsigned pass = 0; pass < kDeferredPassesPerTurn && deferred_head_; ++pass) work |= run_deferred();
    flush_submissions();
    if (work) {
      last_work_ = now_;
      continue;
    }
    if (exit_now_.load(std::memory_order_acquire)) break;
    const uint64_t idle = now_ - last_work_;
    if (opts_.poll_mode == PollMode::kAdaptive && awaiting_ && idle >= opts_.idle_spin_ns &&
        idle < opts_.await_spin_ns) {
      // Spinning for a peer's answer: give the core to anything else runnable on it each empty turn. The
      // peer we wait for may share this core (engines co-located on a node, a test on one machine), and a
      // pure spin would hold back the very answer it waits for.
      ::sched_yield();
      ++counters_.yields;
      continue;
    }
    if (opts_.poll_mode == PollMode::kAdaptive && idle >= opts_.idle_spin_ns) {
      // A timer due within the learned wake-up lateness is better served by spinning. (On a manual
      // clock nothing becomes due until the clock moves, and moving it wakes us.)
      if (manual_clock_ || timers_.empty() || timers_[0]->deadline_ > now_ + wake_margin_ns_) sleep();
    }
  }
}

bool Reactor::drain_inbox() {
  Message m;
  unsigned n = 0;
  while (n < kMaxMessagesPerTurn && inbox_.try_pop(m)) {
    ++counters_.messages;
    m();
    m.reset();
    ++n;
  }
  return n > 0;
}

bool Reactor::flush_outbound() {
  bool progress = false;
  for (unsigned t = 0; t < outbound_.size(); ++t) {
    auto& q = outbound_[t];
    Reactor& dst = set_->reactor(t);
    bool pushed = false;
    while (!q.empty() && dst.push_inbox(q.front())) {
      q.pop_front();
      --outbound_pending_;
      pushed = true;
    }
    if (pushed) {
      dst.wake();
      progress = true;
    }
  }
  return progress;
}

bool Reactor::run_timers() {
  bool fired = false;
  while (!timers_.empty() && timers_[0]->deadline_ <= tnow_) {
    Timer* t = timers_[0];
    if (t->period_) {
      // Re-arm from the old deadline to avoid drift, but never into the past (no bursts after a stall).
      uint64_t next = t->deadline_ + t->period_;
      if (next <= tnow_) next = tnow_ + t->period_;
      t->deadline_ = next;
      t->seq_ = ++timer_seq_;
      heap_down(0);
    } else {
      timer_cancel(t);
    }
    fired = true;
    t->cb_();  // may cancel, re-arm or destroy the timer
  }
  return fired;
}

bool Reactor::run_pollers() {
  bool work = false;
  // Index loop: a poller may add or remove pollers.
  for (size_t i = 0; i < pollers_.size(); ++i) {
    if (pollers_[i].fn) work |= pollers_[i].fn();
  }
  return work;
}

void Reactor::dispatch(uint64_t user_data, int res, uint32_t flags) {
  auto* op = reinterpret_cast<RingOp*>(user_data);
  if (op == &wake_op_ || op == &cancel_op_) {
    op->on_complete(op, res, flags);
    return;
  }
  if (!(flags & IORING_CQE_F_MORE)) --inflight_;
  ++counters_.completions;
  op->on_complete(op, res, flags);
}

bool Reactor::reap_completions() {
  bool work = false;
  if (!stash_.empty()) {
    // Dispatch may stash more; take the current batch first (swapping keeps both capacities).
    stash_spare_.swap(stash_);
    for (auto& c : stash_spare_) dispatch(c.user_data, c.res, c.flags);
    stash_spare_.clear();
    work = true;
  }
  // With COOP_TASKRUN the kernel parks completions as task work and raises SQ_TASKRUN instead of
  // interrupting us; run it here (one syscall, only when flagged) rather than trusting the library's
  // peek to do so, which depends on its version.
  if (IO_URING_READ_ONCE(*ring_.sq.kflags) & IORING_SQ_TASKRUN) {
    io_uring_get_events(&ring_);
    ++counters_.taskrun_enters;
  }
  io_uring_cqe* cqes[kCqeBatch];
  for (;;) {
    unsigned n = io_uring_peek_batch_cqe(&ring_, cqes, kCqeBatch);
    if (n == 0) break;
    work = true;
    // Copy out and release the CQ slots before running callbacks: callbacks submit new work.
    StashedCqe local[kCqeBatch];
    for (unsigned i = 0; i < n; ++i) local[i] = {cqes[i]->user_data, cqes[i]->res, cqes[i]->flags};
    io_uring_cq_advance(&ring_, n);
    for (unsigned i = 0; i < n; ++i) dispatch(local[i].user_data, local[i].res, local[i].flags);
    if (n < kCqeBatch) break;
  }
  return work;
}

bool Reactor::run_deferred() {
  // Run what was queued before this phase; anything deferred meanwhile waits for the next turn.
  Deferred* d = deferred_head_;
  Deferred* last = deferred_tail_;
  deferred_head_ = deferred_tail_ = nullptr;
  while (d) {
    Deferred* next = d->next;
    bool was_last = (d == last);
    d->run(d);
    if (was_last) break;
    d = next;
  }
  return true;
}

void Reactor::flush_submissions() {
  if (io_uring_sq_ready(&ring_) == 0) return;
  int rc = io_uring_submit(&ring_);
  ++counters_.submit_calls;
  if (rc > 0) counters_.sqes += unsigned(rc);
  if (rc == -EBUSY || rc == -EAGAIN) {
    // The kernel wants CQ space first; the next turn reaps and we retry then.
    return;
  }
  if (rc < 0 && rc != -EINTR) {
    TLOG_RL_ERROR("reactor", 1000, "reactor {}: io_uring_submit failed: {}", id_, std::strerror(-rc));
  }
}

void Reactor::stash_completions() {
  io_uring_cqe* cqe;
  while (io_uring_peek_cqe(&ring_, &cqe) == 0) {
    stash_.push_back({cqe->user_data, cqe->res, cqe->flags});
    io_uring_cqe_seen(&ring_, cqe);
  }
}

io_uring_sqe* Reactor::get_sqe() {
  for (int attempt = 0;; ++attempt) {
    if (io_uring_sqe* sqe = io_uring_get_sqe(&ring_)) return sqe;
    // SQ full: hand what is there to the kernel. If it pushes back (CQ backlog), move completions
    // aside (they are dispatched in the next completion phase) and retry.
    int rc = io_uring_submit(&ring_);
    ++counters_.submit_calls;
    if (rc > 0) counters_.sqes += unsigned(rc);
    if (rc < 0) {
      stash_completions();
      if (attempt > 1000) {
        TLOG_ERROR("reactor", "reactor {}: cannot get a submission entry: {}", id_, std::strerror(-rc));
        std::abort();
      }
    }
  }
}

void Reactor::sleep() {
  flush_submissions();
  if (!wake_armed_) {
    io_uring_sqe* sqe = get_sqe();
    io_uring_prep_read(sqe, wake_fd_, &wake_buf_, sizeof(wake_buf_), 0);
    io_uring_sqe_set_data(sqe, &wake_op_);
    wake_armed_ = true;
  }
  sleeping_.store(true, std::memory_order_relaxed);
  // Pairs with the fence in wake(): either the sender sees us sleeping and writes the eventfd, or we
  // see its message here and do not sleep.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (inbox_.has_ready() || deferred_head_ || outbound_pending_ || !stash_.empty() ||
      exit_now_.load(std::memory_order_relaxed) || io_uring_cq_ready(&ring_)) {
    sleeping_.store(false, std::memory_order_relaxed);
    io_uring_submit(&ring_);
    return;
  }
  __kernel_timespec ts{};
  __kernel_timespec* tsp = nullptr;
  uint64_t wake_at = 0;
  if (!timers_.empty() && !manual_clock_) {
    // Ask to wake a little before the deadline — by the lateness measured on earlier sleeps — and spin
    // the rest, so timers fire on time even where waking a sleeping CPU is slow (VMs, deep C-states).
    uint64_t now = now_ns();
    uint64_t deadline = timers_[0]->deadline_;
    wake_at = deadline > now + wake_margin_ns_ ? deadline - wake_margin_ns_ : now;
    uint64_t d = wake_at - now;
    ts.tv_sec = int64_t(d / 1000000000ull);
    ts.tv_nsec = int64_t(d % 1000000000ull);
    tsp = &ts;
  }
  io_uring_cqe* cqe = nullptr;
  ++counters_.sleeps;
  ++counters_.submit_calls;
  // Sleeps are rare next to I/O (an idle reactor, not a busy one), so timing them costs nothing that
  // matters and gives busy vs idle time for metrics.
  uint64_t slept_at = now_ns();
  int rc = io_uring_submit_and_wait_timeout(&ring_, &cqe, 1, tsp, nullptr);
  sleeping_.store(false, std::memory_order_relaxed);
  counters_.idle_ns += now_ns() - slept_at;
  if (rc == -ETIME && tsp) {
    // Woken by the timeout: learn how late the kernel woke us (moving average, capped).
    uint64_t now = now_ns();
    uint64_t late = std::min<uint64_t>(now > wake_at ? now - wake_at : 0, kMaxWakeMarginNs);
    wake_margin_ns_ = (wake_margin_ns_ * 7 + late) / 8;
  }
}

void Reactor::wake() {
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sleeping_.load(std::memory_order_relaxed)) {
    uint64_t one = 1;
    ssize_t n = ::write(wake_fd_, &one, sizeof(one));
    (void)n;  // EAGAIN means the counter is saturated: it is already signalled
  }
}

Reactor::Activity Reactor::activity() const {
  bool idle = !inbox_.has_ready() && !deferred_head_ && outbound_pending_ == 0 && stash_.empty() && inflight_ == 0;
  return {idle, msgs_sent_, counters_.messages - probes_};
}

void Reactor::cancel_all_inflight() {
  if (inflight_ == 0) return;
  TLOG_WARN("reactor", "reactor {}: cancelling {} operation(s) still in flight at shutdown", id_, inflight_);
  io_uring_sqe* sqe = get_sqe();
  io_uring_prep_cancel64(sqe, 0, IORING_ASYNC_CANCEL_ANY | IORING_ASYNC_CANCEL_ALL);
  io_uring_sqe_set_data(sqe, &cancel_op_);
}

// ---------------------------------------------------------------------------------------------------
// Files, messages, pollers

int Reactor::register_file(int fd) {
  if (!fixed_files_ok_ || free_file_slots_.empty()) return -1;
  int slot = free_file_slots_.back();
  if (io_uring_register_files_update(&ring_, unsigned(slot), &fd, 1) != 1) return -1;
  free_file_slots_.pop_back();
  return slot;
}

void Reactor::unregister_file(int slot) {
  if (slot < 0) return;
  int none = -1;
  io_uring_register_files_update(&ring_, unsigned(slot), &none, 1);
  free_file_slots_.push_back(slot);
}

void Reactor::send(unsigned target, Message m) {
  if (Reactor::current() != this) {
    // Not on this reactor's thread: behave like any other foreign sender.
    set_->post(target, std::move(m));
    return;
  }
  auto& q = outbound_[target];
  Reactor& dst = set_->reactor(target);
  ++msgs_sent_;
  if (q.empty() && dst.push_inbox(m)) {
    if (&dst != this) dst.wake();
    return;
  }
  q.push_back(std::move(m));
  ++outbound_pending_;
}

Reactor::PollerId Reactor::add_poller(SmallFunction<bool()> fn) {
  PollerId id = next_poller_id_++;
  pollers_.push_back({id, std::move(fn)});
  return id;
}

void Reactor::remove_poller(PollerId id) {
  for (size_t i = 0; i < pollers_.size(); ++i) {
    if (pollers_[i].id == id) {
      pollers_.erase(pollers_.begin() + long(i));
      return;
    }
  }
}

void Reactor::YieldAwaiter::await_suspend(std::coroutine_handle<> hh) noexcept {
  h = hh;
  d.run = [](Deferred* self) {
    auto* a = reinterpret_cast<YieldAwaiter*>(self);
    a->h.resume();
  };
  Reactor::current()->defer(&d);
}

void Reactor::SleepAwaiter::await_suspend(std::coroutine_handle<> h) {
  t.set_callback([h] { h.resume(); });
  t.arm(ns);
}

// ---------------------------------------------------------------------------------------------------
// Timers: an indexed binary min-heap of intrusive nodes.

void Timer::arm(uint64_t delay_ns, uint64_t period_ns) {
  Reactor* r = Reactor::current();
  if (!r) {
    TLOG_ERROR("reactor", "Timer::arm called outside a reactor thread");
    std::abort();
  }
  if (owner_ && owner_ != r) cancel();
  owner_ = r;
  r->timer_arm(this, delay_ns, period_ns);
}

void Timer::cancel() {
  if (armed() && owner_) owner_->timer_cancel(this);
}

void Reactor::timer_arm(Timer* t, uint64_t delay_ns, uint64_t period_ns) {
  t->deadline_ = (manual_clock_ ? clock_->now_ns() : now_ns()) + delay_ns;
  t->period_ = period_ns;
  t->seq_ = ++timer_seq_;
  if (t->armed()) {
    heap_up(t->heap_index_);
    heap_down(t->heap_index_);
    return;
  }
  t->heap_index_ = timers_.size();
  timers_.push_back(t);
  heap_up(t->heap_index_);
}

void Reactor::timer_cancel(Timer* t) {
  size_t i = t->heap_index_;
  size_t last = timers_.size() - 1;
  if (i != last) {
    heap_swap(i, last);
    timers_.pop_back();
    heap_up(i);
    heap_down(i);
  } else {
    timers_.pop_back();
  }
  t->heap_index_ = Timer::kNotArmed;
}

void Reactor::heap_swap(size_t a, size_t b) {
  std::swap(timers_[a], timers_[b]);
  timers_[a]->heap_index_ = a;
  timers_[b]->heap_index_ = b;
}

void Reactor::heap_up(size_t i) {
  while (i > 0) {
    size_t p = (i - 1) / 2;
    if (!timer_less(timers_[i], timers_[p])) break;
    heap_swap(i, p);
    i = p;
  }
}

void Reactor::heap_down(size_t i) {
  size_t n = timers_.size();
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, m = i;
    if (l < n && timer_less(timers_[l], timers_[m])) m = l;
    if (r < n && timer_less(timers_[r], timers_[m])) m = r;
    if (m == i) break;
    heap_swap(i, m);
    i = m;
  }
}

// ---------------------------------------------------------------------------------------------------
// Fire-and-forget operations

RingOp* ignored_ring_op() {
  static RingOp op{[](RingOp*, int, uint32_t) {}};
  return &op;
}

void cancel_ring_op(RingOp* target) {
  Reactor* r = Reactor::current();
  io_uring_sqe* sqe = r->get_sqe();
  io_uring_prep_cancel(sqe, target, 0);
  r->commit(sqe, ignored_ring_op());
}

}  // namespace tern
