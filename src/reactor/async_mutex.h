// AsyncMutex: mutual exclusion between coroutines of ONE reactor (no atomics: every user runs on the
// same thread). Waiters resume in arrival order. Used by control-plane code on the primary reactor to
// run multi-step operations on one object (check, then change) without another interleaving at a
// co_await point.
//
//   auto guard = co_await mu.lock();   // released when `guard` goes out of scope
//
// Releasing hands the lock to the first waiter and resumes it inline, before release returns: an owner
// about to destroy the object can mark it dead, release, and know every waiter has seen the mark.
#pragma once

#include <coroutine>
#include <deque>
#include <utility>

namespace tern {

class AsyncMutex {
 public:
  class Guard {
   public:
    Guard() = default;
    explicit Guard(AsyncMutex* m) : m_(m) {}
    Guard(Guard&& o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
    Guard& operator=(Guard&& o) noexcept {
      if (this != &o) {
        release();
        m_ = std::exchange(o.m_, nullptr);
      }
      return *this;
    }
    ~Guard() { release(); }
    void release() {
      if (m_) std::exchange(m_, nullptr)->unlock();
    }

   private:
    AsyncMutex* m_ = nullptr;
  };

  struct LockAwaiter {
    AsyncMutex* m;
    bool await_ready() noexcept {
      if (m->locked_) return false;
      m->locked_ = true;
      return true;
    }
    void await_suspend(std::coroutine_handle<> h) { m->waiters_.push_back(h); }
    // Ownership passes straight from the unlocker to the first waiter (locked_ stays true).
    Guard await_resume() noexcept { return Guard(m); }
  };

  LockAwaiter lock() { return LockAwaiter{this}; }
  bool locked() const { return locked_; }

 private:
  void unlock() {
    if (waiters_.empty()) {
      locked_ = false;
      return;
    }
    auto h = waiters_.front();
    waiters_.pop_front();
    h.resume();
  }
  bool locked_ = false;
  std::deque<std::coroutine_handle<>> waiters_;
};

}  // namespace tern
