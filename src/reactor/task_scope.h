// TaskScope: the one rule for work that runs detached from its caller.
//
//   class Thing {                       // lives on one reactor
//     TaskScope scope_{"thing"};
//     void poke() { scope_.spawn(work(this)); }      // starts now; counted by the scope
//     Task<void> stop() { co_await scope_.close(); } // ...and the owner awaits this before it goes away
//   };
//
// A detached task references objects its caller does not keep alive. The scope makes the owner of those
// objects wait for it: close() refuses new work and resumes its awaiters once every task spawned into the
// scope, and every hold taken with enter(), has ended. Then, and only then, may the owner be destroyed.
//
// Rules (docs/design/reactor.md, "Detached work"):
//  - Every detached task lives in a scope. Bare spawn() (task.h) is the documented exception for tasks
//    whose caller awaits their end some other way (ReactorSet::submit_to's own plumbing).
//  - A scope belongs to one reactor, its home: the reactor of its first spawn/enter. Tasks may hop to
//    other reactors (submit_to) but end at home, and enter/leave happen at home; a check enforces it.
//    An object whose work runs on several reactors keeps one scope per reactor (PerReactorScopes).
//  - Work that is not a coroutine (a callback chain: a device request in flight, a send) is counted
//    with enter()/leave(), the same way. enter() is refused once the scope is closing; extend() attaches
//    work to work still running, even while closing.
//  - Spawning into a closing scope does not start the task (it is destroyed unstarted) and returns false.
//  - close() may be awaited by several coroutines and again after it completed (it then returns at once).
//    Awaiters are resumed from the reactor loop (deferred phase), never from inside the call stack of the
//    task that ended last, so an owner resumed by close() may destroy what that stack still unwinds through.
//  - Destroying a scope with work still running is a bug and aborts, naming the scope.
#pragma once

#include <coroutine>
#include <cstdint>
#include <optional>
#include <type_traits>
#include <vector>

#include "common/check.h"
#include "reactor/reactor.h"
#include "reactor/reactor_set.h"
#include "reactor/task.h"

namespace tern {

class TaskScope {
 public:
  explicit TaskScope(const char* name = "task scope") : name_(name) { drain_.owner = this; }
  ~TaskScope() {
    TERN_CHECK(active_ == 0, "task scope '{}' destroyed with {} task(s) or hold(s) still running (close() it first)",
               name_, active_);
  }
  TaskScope(const TaskScope&) = delete;
  TaskScope& operator=(const TaskScope&) = delete;

  // Starts `t` now; it runs until its first suspension. False (and `t` never runs) once closing.
  bool spawn(Task<void> t) {
    if (closing_) return false;
    arrive();
    [](TaskScope* s, Task<void> inner) -> detail::Detached {
      co_await inner;
      s->depart();
    }(this, std::move(t));
    return true;
  }

  // spawn() whose result goes to `done` (on the home reactor) before the task counts as ended.
  template <typename T, typename F>
  bool spawn_then(Task<T> t, F done) {
    if (closing_) return false;
    arrive();
    [](TaskScope* s, Task<T> inner, F cb) -> detail::Detached {
      if constexpr (std::is_void_v<T>) {
        co_await inner;
        cb();
      } else {
        cb(co_await inner);
      }
      s->depart();
    }(this, std::move(t), std::move(done));
    return true;
  }

  // Counts work that is not a coroutine. False once closing (the work must not start).
  bool enter() {
    if (closing_) return false;
    arrive();
    return true;
  }
  // Counts work that belongs to work already running in the scope (a reset joining the requests it
  // aborts): allowed while anything is still active, even when closing — close() then waits for it
  // too. False once the scope is empty.
  bool extend() {
    if (active_ == 0) return false;
    arrive();
    return true;
  }
  void leave() { depart(); }

  // Refuses new work; resumes once everything in the scope has ended.
  struct CloseAwaiter {
    TaskScope* s;
    bool closes;
    std::coroutine_handle<> h;
    CloseAwaiter* next = nullptr;
    bool await_ready() noexcept {
      TERN_CHECK(!s->home_ || Reactor::current() == s->home_, "task scope '{}' awaited away from its home reactor",
                 s->name_);
      if (closes) s->closing_ = true;
      return s->active_ == 0;
    }
    void await_suspend(std::coroutine_handle<> hh) noexcept {
      h = hh;
      next = s->waiters_;
      s->waiters_ = this;
    }
    void await_resume() const noexcept {}
  };
  CloseAwaiter close() { return CloseAwaiter{this, true, {}}; }
  // Resumes once nothing is running, without refusing new work (for owners that keep the scope open,
  // such as a registry that outlives a shutdown of its devices).
  CloseAwaiter idle() { return CloseAwaiter{this, false, {}}; }

  bool closing() const { return closing_; }
  // Tasks and holds not yet ended.
  uint32_t active() const { return active_; }
  const char* name() const { return name_; }

 private:
  void arrive() {
    Reactor* r = Reactor::current();
    if (!home_) home_ = r;
    TERN_CHECK(r == home_, "task scope '{}' belongs to reactor {}; used from {}", name_, home_ ? int(home_->id()) : -1,
               r ? int(r->id()) : -1);
    ++active_;
  }
  void depart() {
    TERN_CHECK(Reactor::current() == home_, "task scope '{}': work ended away from its home reactor {}", name_,
               home_ ? int(home_->id()) : -1);
    TERN_CHECK(active_ > 0, "task scope '{}': more ends than starts", name_);
    if (--active_ > 0 || !waiters_ || drain_queued_) return;
    if (home_) {
      drain_queued_ = true;
      drain_.run = [](Deferred* d) { static_cast<DrainNode*>(d)->owner->resume_closers(); };
      home_->defer(&drain_);
    } else {
      resume_closers();  // not on a reactor (tests driving a scope by hand)
    }
  }
  void resume_closers() {
    drain_queued_ = false;
    if (active_ > 0) return;  // new work arrived meanwhile? impossible once closing; kept for safety
    CloseAwaiter* w = waiters_;
    waiters_ = nullptr;
    // A resumed closer may destroy this scope: read every link before resuming anyone.
    std::vector<std::coroutine_handle<>> hs;
    for (; w; w = w->next) hs.push_back(w->h);
    for (auto h : hs) h.resume();
  }

  struct DrainNode : Deferred {
    TaskScope* owner = nullptr;
  };

  const char* name_;
  Reactor* home_ = nullptr;
  uint32_t active_ = 0;
  bool closing_ = false;
  bool drain_queued_ = false;
  CloseAwaiter* waiters_ = nullptr;
  DrainNode drain_;
};

// One scope per reactor, for objects whose detached work runs on every reactor (a device's per-I/O
// tasks). local() is the calling reactor's scope; close() (awaited on any reactor of `set`) closes each
// scope on its own reactor and returns once all are empty.
class PerReactorScopes {
 public:
  PerReactorScopes(const char* name, unsigned reactors) : scopes_(reactors) {
    for (auto& s : scopes_) s.emplace(name);
  }
  TaskScope& local() { return *scopes_[Reactor::current()->id()]; }
  TaskScope& on(unsigned reactor) { return *scopes_[reactor]; }
  unsigned size() const { return unsigned(scopes_.size()); }

  Task<void> close(ReactorSet& set) {
    for (unsigned r = 0; r < scopes_.size(); ++r) {
      TaskScope* s = &*scopes_[r];
      co_await set.submit_to(r, [s]() -> Task<void> { co_await s->close(); });
    }
  }

 private:
  std::vector<std::optional<TaskScope>> scopes_;
};

// Fan-out: runs every task concurrently on this reactor and resumes once all have ended, with their
// results in order. The tasks start in order, each running until its first suspension.
namespace detail {
struct JoinCounter {
  size_t left;
  std::coroutine_handle<> parent;
  void arrive() {
    if (--left == 0 && parent) parent.resume();
  }
  bool await_ready() const noexcept { return left == 0; }
  void await_suspend(std::coroutine_handle<> h) noexcept { parent = h; }
  void await_resume() const noexcept {}
};
}  // namespace detail

template <typename T>
Task<std::vector<T>> when_all(std::vector<Task<T>> tasks) {
  std::vector<std::optional<T>> slots(tasks.size());
  detail::JoinCounter join{tasks.size(), {}};
  for (size_t i = 0; i < tasks.size(); ++i) {
    [](Task<T> t, std::optional<T>* slot, detail::JoinCounter* j) -> detail::Detached {
      slot->emplace(co_await t);
      j->arrive();
    }(std::move(tasks[i]), &slots[i], &join);
  }
  co_await join;
  std::vector<T> out;
  out.reserve(slots.size());
  for (auto& s : slots) out.push_back(std::move(*s));
  co_return out;
}

inline Task<void> when_all(std::vector<Task<void>> tasks) {
  detail::JoinCounter join{tasks.size(), {}};
  for (auto& task : tasks) {
    [](Task<void> t, detail::JoinCounter* j) -> detail::Detached {
      co_await t;
      j->arrive();
    }(std::move(task), &join);
  }
  co_await join;
}

}  // namespace tern
