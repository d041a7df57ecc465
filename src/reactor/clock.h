// Clock: the time timers and timeouts run on.
//
// A reactor reads its clock at the start of each loop turn (Reactor::now()) and fires timers, sleeps
// (Reactor::sleep_for) and per-request deadlines against it. The real clock is CLOCK_MONOTONIC. A
// ManualClock stands still until a test moves it, so code that waits seconds or minutes (a controller-loss
// timeout, a retry back-off, a rebuild's rate limit) is tested in milliseconds and without races
// against a busy machine:
//
//   ManualClock clock;
//   ReactorSetOptions o;  o.reactor.clock = &clock;
//   auto set = ReactorSet::Start(o);
//   ... arm a 30 s timeout ...
//   clock.advance(30'000'000'000);   // it fires now (the reactors are woken)
//
// Only time as seen by timers and Reactor::now() is manual: sockets, devices and the idle-spin decision
// keep real time. Code with a timeout reads Reactor::now() or arms a Timer — never common/clock.h's
// now_ns() — so that it follows the reactor's clock.
//
// Threads: now_ns() and advance() may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>

#include "common/clock.h"

namespace tern {

class ReactorSet;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual uint64_t now_ns() const = 0;
  // False for clocks that move only when told: reactors then sleep without a deadline, and moving the
  // clock wakes them.
  virtual bool real() const = 0;
  // A reactor set starts on this clock (a manual clock wakes its reactors when it moves).
  virtual void attach(ReactorSet*) {}
  virtual void detach(ReactorSet*) {}
};

class MonotonicClock final : public Clock {
 public:
  uint64_t now_ns() const override { return tern::now_ns(); }
  bool real() const override { return true; }
  static MonotonicClock& instance() {
    static MonotonicClock c;
    return c;
  }
};

class ManualClock final : public Clock {
 public:
  explicit ManualClock(uint64_t start_ns = 1'000'000'000) : now_(start_ns) {}
  uint64_t now_ns() const override { return now_.load(std::memory_order_acquire); }
  bool real() const override { return false; }
  void attach(ReactorSet* set) override { set_.store(set, std::memory_order_release); }
  void detach(ReactorSet* set) override {
    ReactorSet* s = set;
    set_.compare_exchange_strong(s, nullptr);
  }
  // Moves time forward and wakes every reactor of the attached set, which then fires what is due.
  void advance(uint64_t ns);

 private:
  std::atomic<uint64_t> now_;
  std::atomic<ReactorSet*> set_{nullptr};
};

}  // namespace tern
