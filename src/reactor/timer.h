// Timer: a one-shot or periodic callback on the reactor that armed it.
//
// Timers are intrusive: the Timer object is the heap node, so arming one never allocates. A Timer
// belongs to the reactor it was armed on; arm, cancel and destroy it there. Destroying an armed
// timer cancels it. Callbacks run on the reactor thread between I/O completions; a periodic timer
// is re-armed (from its previous deadline, so it does not drift) before its callback runs.
#pragma once

#include <cstddef>
#include <cstdint>

#include "common/small_function.h"

namespace tern {

class Reactor;

class Timer {
 public:
  using Callback = SmallFunction<void(), 24>;

  Timer() = default;
  explicit Timer(Callback cb) : cb_(std::move(cb)) {}
  ~Timer() { cancel(); }
  Timer(const Timer&) = delete;
  Timer& operator=(const Timer&) = delete;

  void set_callback(Callback cb) { cb_ = std::move(cb); }
  // Arms on the calling thread's reactor (re-arming moves the deadline). `period_ns` > 0 repeats.
  void arm(uint64_t delay_ns, uint64_t period_ns = 0);
  void cancel();
  bool armed() const { return heap_index_ != kNotArmed; }
  uint64_t deadline_ns() const { return deadline_; }

 private:
  friend class Reactor;
  static constexpr size_t kNotArmed = ~size_t(0);
  Callback cb_;
  uint64_t deadline_ = 0;
  uint64_t period_ = 0;
  uint64_t seq_ = 0;  // arm order, so equal deadlines fire first-armed first
  size_t heap_index_ = kNotArmed;
  Reactor* owner_ = nullptr;
};

}  // namespace tern
