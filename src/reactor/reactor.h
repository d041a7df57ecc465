// Reactor: one pinned thread, one io_uring, and everything that runs on it.
//
// Threads: a Reactor object is created by ReactorSet; all its methods run on its own thread except
// those marked "any thread". It owns its ring (all disk and socket I/O started on this thread goes
// through it), its timers, its pollers, its deferred-work list and the inbox through which other threads
// reach it. Nothing here is shared with other reactors on the I/O path.
//
// One loop turn: messages -> timers -> pollers -> ring completions -> deferred work (up to a few passes,
// so completion chains finish in the turn) -> one
// io_uring_submit for everything prepared during the turn. In adaptive mode, a reactor that found no work
// for `idle_spin_ns` sleeps inside io_uring_enter until a completion, a message (eventfd) or its next timer,
// so an idle reactor costs ~0 % CPU; in busy mode it never sleeps.
#pragma once

#include <liburing.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <coroutine>
#include <cstdint>
#include <deque>
#include <string>
#include <thread>
#include <vector>

#include "common/result.h"
#include "common/small_function.h"
#include "reactor/clock.h"
#include "reactor/mpsc_queue.h"
#include "reactor/timer.h"

namespace tern {

class ReactorSet;

// An operation submitted to a reactor's ring. Embed it in the request's own state and set
// `on_complete`; it receives the CQE's result and flags on the reactor that submitted it.
struct RingOp {
  void (*on_complete)(RingOp* self, int res, uint32_t cqe_flags) = nullptr;
};

// Work to run later in this loop turn (or the next), queued without allocation. Completions are never
// delivered from inside the call that started an operation; Deferred is how synchronous backends obey.
struct Deferred {
  Deferred* next = nullptr;
  void (*run)(Deferred* self) = nullptr;
};

// A Deferred that knows its owner, for members of classes (offsetof does not work on them).
template <typename T>
struct OwnedDeferred : Deferred {
  T* owner = nullptr;
};

enum class PollMode { kAdaptive, kBusy };

struct ReactorOptions {
  unsigned ring_entries = 1024;             // SQ size; the CQ is 4x
  PollMode poll_mode = PollMode::kAdaptive;
  // Adaptive mode: spin this long without work before sleeping. Short on purpose: long spins burn CPU and,
  // on virtual machines, slow the device emulation down (docs/benchmarks.md measures it).
  uint64_t idle_spin_ns = 20'000;
  // Adaptive mode, while the reactor awaits an answer from a peer over the network (awaiting() > 0: an
  // NVMe/TCP command sent by our initiator and not yet answered): spin this long without work before
  // sleeping. A remote answer is due within one round trip plus the peer's device time, and a sleeping
  // reactor pays a wake-up on top of it (tens of microseconds in a VM): docs/design/reactor.md,
  // "Awaiting peers". Device I/O does not count: spinning through a disk request slows virtual disks.
  uint64_t await_spin_ns = 250'000;
  unsigned fixed_files = 1024;              // slots in the ring's registered-file table
  uint64_t drain_timeout_ns = 10'000'000'000;  // on stop: wait this long for in-flight I/O, then cancel it
  // The time timers, sleep_for and now() run on (clock.h); null is CLOCK_MONOTONIC. Tests pass a
  // ManualClock to move time by hand.
  Clock* clock = nullptr;
};

struct ReactorCounters {
  uint64_t loops = 0;
  uint64_t sleeps = 0;
  uint64_t messages = 0;
  uint64_t completions = 0;
  uint64_t submit_calls = 0;
  uint64_t sqes = 0;
  uint64_t taskrun_enters = 0;  // kernel entries to run completions parked by COOP_TASKRUN
  uint64_t yields = 0;          // empty turns spent yielding the core while awaiting a peer's answer
  uint64_t idle_ns = 0;         // time asleep in the kernel waiting for work (the rest is busy, spin included)
  uint64_t started_ns = 0;      // when the loop started (now_ns clock)
};

class Reactor {
 public:
  using Message = SmallFunction<void(), 48>;
  static constexpr size_t kInboxCapacity = 4096;
  static constexpr unsigned kDeferredPassesPerTurn = 4;

  // The reactor running on the calling thread, or nullptr on any other thread. Any thread.
  static Reactor* current() noexcept;

  unsigned id() const { return id_; }
  int cpu() const { return cpu_; }
  ReactorSet& set() const { return *set_; }
  const ReactorOptions& options() const { return opts_; }
  // The reactor clock's time (clock.h) at the start of the current loop turn: what timers and
  // timeouts are measured against.
  uint64_t now() const { return tnow_; }
  Clock& clock() const { return *clock_; }

  // --- ring ---
  // A free SQE; when the SQ is full the pending entries are submitted first. Never returns null.
  io_uring_sqe* get_sqe();
  // Tags a prepared SQE with its op; it goes to the kernel at the end of this loop turn.
  void commit(io_uring_sqe* sqe, RingOp* op) {
    io_uring_sqe_set_data(sqe, op);
    ++inflight_;
  }
  // Registers `fd` in the ring's fixed-file table; returns the slot, or -1 when unavailable (use the fd).
  int register_file(int fd);
  void unregister_file(int slot);
  // Ring operations submitted and not yet completed.
  uint64_t inflight() const { return inflight_; }

  // --- answers awaited from peers ---
  // Owners count requests sent to a peer whose answer is due soon (an NVMe/TCP initiator's commands);
  // while any is counted, an adaptive reactor spins up to `await_spin_ns` before it sleeps. Reactor thread.
  void await_begin() noexcept { ++awaiting_; }
  void await_end(uint64_t n = 1) noexcept { awaiting_ -= n; }
  uint64_t awaiting() const { return awaiting_; }

  // --- deferred work and local messages ---
  void defer(Deferred* d) {
    d->next = nullptr;
    if (deferred_tail_) deferred_tail_->next = d; else deferred_head_ = d;
    deferred_tail_ = d;
  }
  // Sends `m` to reactor `target` (itself included). Any thread; see ReactorSet::post.
  void send(unsigned target, Message m);

  // --- pollers ---
  using PollerId = uint64_t;
  // `fn` runs every loop turn while the reactor is awake and returns whether it did work. A poller is
  // not called while the reactor sleeps: anything that must wake it has to be a ring op, message or timer.
  PollerId add_poller(SmallFunction<bool()> fn);
  void remove_poller(PollerId id);

  const ReactorCounters& counters() const { return counters_; }
  // True once ReactorSet::stop began: reactors keep running until the whole set is quiescent.
  bool stop_requested() const { return stop_requested_.load(std::memory_order_relaxed); }

  // Awaitables for coroutines running on this reactor.
  struct YieldAwaiter {
    Deferred d;  // first member: the Deferred pointer is the awaiter's address
    std::coroutine_handle<> h;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> hh) noexcept;
    void await_resume() const noexcept {}
  };
  // Lets other work run; resumes in the deferred phase of this or the next loop turn.
  static YieldAwaiter yield() { return {}; }

  struct SleepAwaiter {
    uint64_t ns;
    Timer t;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h);
    void await_resume() const noexcept {}
  };
  static SleepAwaiter sleep_for(uint64_t ns) { return SleepAwaiter{ns, {}}; }

  Reactor(const Reactor&) = delete;
  Reactor& operator=(const Reactor&) = delete;
  ~Reactor();

 private:
  friend class ReactorSet;
  friend class Timer;
  // Start-up handshake between ReactorSet::Start and the new thread.
  struct ReadyState {
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    Status status;
  };

  Reactor(ReactorSet* set, unsigned id, int cpu, const ReactorOptions& opts);
  void thread_main(ReadyState* ready, bool pin);
  Status init_ring();
  void loop();
  bool drain_inbox();
  bool flush_outbound();
  bool run_timers();
  bool run_pollers();
  bool reap_completions();
  bool run_deferred();
  void flush_submissions();
  void sleep();
  // Stop protocol (driven by ReactorSet::stop): a snapshot of this reactor's activity.
  struct Activity {
    bool idle;
    uint64_t sent;
    uint64_t processed;
  };
  Activity activity() const;
  void cancel_all_inflight();
  void stash_completions();
  void dispatch(uint64_t user_data, int res, uint32_t flags);
  // Any thread: wakes the reactor if it sleeps.
  void wake();
  bool push_inbox(Message& m) { return inbox_.try_push(std::move(m)); }

  // Timer heap.
  void timer_arm(Timer* t, uint64_t delay_ns, uint64_t period_ns);
  void timer_cancel(Timer* t);
  void heap_up(size_t i);
  void heap_down(size_t i);
  bool timer_less(const Timer* a, const Timer* b) const {
    return a->deadline_ != b->deadline_ ? a->deadline_ < b->deadline_ : a->seq_ < b->seq_;
  }
  void heap_swap(size_t a, size_t b);

  ReactorSet* set_;
  const unsigned id_;
  const int cpu_;
  const ReactorOptions opts_;
  io_uring ring_{};
  bool ring_ready_ = false;
  bool running_ = false;  // the loop runs (set before Start's handshake completes)
  int wake_fd_ = -1;
  // Ring ops the reactor issues for itself; not counted as in-flight work.
  struct OwnOp : RingOp {
    Reactor* owner = nullptr;
  };
  OwnOp wake_op_;    // the eventfd read that wakes a sleeping reactor
  OwnOp cancel_op_;  // the cancel-all issued when draining at shutdown times out
  uint64_t wake_buf_ = 0;
  bool wake_armed_ = false;
  uint64_t inflight_ = 0;
  uint64_t awaiting_ = 0;  // answers awaited from peers (await_begin/await_end)
  uint64_t now_ = 0;   // real monotonic time at the start of the turn (spinning and sleeping decisions)
  uint64_t tnow_ = 0;  // the clock's time at the start of the turn (timers): now_ unless the clock is manual
  Clock* clock_;
  bool manual_clock_;
  uint64_t last_work_ = 0;
  uint64_t wake_margin_ns_ = 0;  // how late timed sleeps wake up, learned; timers are woken for this early
  std::thread thread_;

  // Fixed-file table.
  std::vector<int> free_file_slots_;
  bool fixed_files_ok_ = false;

  // CQEs moved out of a full CQ while getting an SQE, dispatched in the next completion phase.
  struct StashedCqe {
    uint64_t user_data;
    int32_t res;
    uint32_t flags;
  };
  std::vector<StashedCqe> stash_;

  Deferred* deferred_head_ = nullptr;
  Deferred* deferred_tail_ = nullptr;

  BoundedMpscQueue<Message> inbox_{kInboxCapacity};
  // Messages to reactors whose inbox was full; flushed in order each loop turn.
  std::vector<std::deque<Message>> outbound_;
  size_t outbound_pending_ = 0;

  std::vector<Timer*> timers_;
  uint64_t timer_seq_ = 0;

  struct PollerEntry {
    PollerId id;
    SmallFunction<bool()> fn;
  };
  std::vector<PollerEntry> pollers_;
  PollerId next_poller_id_ = 1;

  alignas(64) std::atomic<bool> sleeping_{false};
  std::atomic<bool> stop_requested_{false};
  std::atomic<bool> exit_now_{false};
  uint64_t msgs_sent_ = 0;
  uint64_t probes_ = 0;
  ReactorCounters counters_;
  // Spare buffer for the completion stash, so draining it never allocates.
  std::vector<StashedCqe> stash_spare_;
};

}  // namespace tern
