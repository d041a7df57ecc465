// Task<T>: the one model for asynchronous work in this code base — a C++20 coroutine.
//
//   Task<Result<Bdev*>> open_it(...) { auto r = co_await something(); ...; co_return value; }
//
// Rules (docs/design/reactor.md has the reasoning):
//  - A Task is lazy: it starts when awaited, or when handed to a TaskScope (task_scope.h). Its frame comes from the
//    per-thread frame pool, so steady-state coroutines do not touch the heap.
//  - A coroutine runs on the reactor that resumed it; nothing resumes it on another thread unless it
//    asks to move (ReactorSet::submit_to runs a function elsewhere and resumes the caller back home).
//  - Completion resumes the awaiting coroutine by symmetric transfer (no stack growth in chains).
//  - Errors are values (Status/Result). An exception escaping a coroutine is a bug: it is carried to
//    the awaiter and rethrown there; escaping a spawned task, it terminates the process.
//  - The lowest layer (a ring completion, a bdev I/O completion) is a plain callback; awaitables
//    wrap those callbacks so that higher layers write straight-line code.
#pragma once

#include <coroutine>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

#include "reactor/frame_pool.h"

namespace tern {

template <typename T = void>
class Task;

namespace detail {

struct PromiseAlloc {
  static void* operator new(size_t n) { return frame_pool::allocate(n); }
  static void operator delete(void* p, size_t n) noexcept { frame_pool::deallocate(p, n); }
};

struct PromiseBase : PromiseAlloc {
  std::coroutine_handle<> continuation;
  std::exception_ptr exception;

  std::suspend_always initial_suspend() noexcept { return {}; }
  struct FinalAwaiter {
    bool await_ready() noexcept { return false; }
    template <typename P>
    std::coroutine_handle<> await_suspend(std::coroutine_handle<P> h) noexcept {
      auto c = h.promise().continuation;
      return c ? c : std::noop_coroutine();
    }
    void await_resume() noexcept {}
  };
  FinalAwaiter final_suspend() noexcept { return {}; }
  void unhandled_exception() noexcept { exception = std::current_exception(); }
};

template <typename T>
struct Promise : PromiseBase {
  std::optional<T> value;
  Task<T> get_return_object() noexcept;
  template <typename U>
  void return_value(U&& v) {
    value.emplace(std::forward<U>(v));
  }
  T take() {
    if (exception) std::rethrow_exception(exception);
    return std::move(*value);
  }
};

template <>
struct Promise<void> : PromiseBase {
  Task<void> get_return_object() noexcept;
  void return_void() noexcept {}
  void take() {
    if (exception) std::rethrow_exception(exception);
  }
};

}  // namespace detail

template <typename T>
class [[nodiscard]] Task {
 public:
  using promise_type = detail::Promise<T>;
  using value_type = T;

  Task() noexcept = default;
  explicit Task(std::coroutine_handle<promise_type> h) noexcept : h_(h) {}
  Task(Task&& o) noexcept : h_(std::exchange(o.h_, {})) {}
  Task& operator=(Task&& o) noexcept {
    if (this != &o) {
      if (h_) h_.destroy();
      h_ = std::exchange(o.h_, {});
    }
    return *this;
  }
  Task(const Task&) = delete;
  Task& operator=(const Task&) = delete;
  ~Task() {
    if (h_) h_.destroy();
  }

  bool valid() const noexcept { return bool(h_); }

  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<> awaiting) noexcept {
    h_.promise().continuation = awaiting;
    return h_;
  }
  T await_resume() { return h_.promise().take(); }

 private:
  std::coroutine_handle<promise_type> h_;
};

namespace detail {
template <typename T>
Task<T> Promise<T>::get_return_object() noexcept {
  return Task<T>(std::coroutine_handle<Promise<T>>::from_promise(*this));
}
inline Task<void> Promise<void>::get_return_object() noexcept {
  return Task<void>(std::coroutine_handle<Promise<void>>::from_promise(*this));
}

// A coroutine that starts at once and frees itself when done; the vehicle for spawn().
struct Detached {
  struct promise_type : PromiseAlloc {
    Detached get_return_object() noexcept { return {}; }
    std::suspend_never initial_suspend() noexcept { return {}; }
    std::suspend_never final_suspend() noexcept { return {}; }
    void return_void() noexcept {}
    void unhandled_exception() noexcept { std::terminate(); }
  };
};

template <typename T>
struct is_task : std::false_type {};
template <typename T>
struct is_task<Task<T>> : std::true_type {};

}  // namespace detail

template <typename T>
inline constexpr bool is_task_v = detail::is_task<std::decay_t<T>>::value;

namespace detail {
template <typename R>
struct unwrap_task {
  using type = R;
};
template <typename T>
struct unwrap_task<Task<T>> {
  using type = T;
};
}  // namespace detail

// The value type a callable yields once awaited: R for R(), and T for Task<T>().
template <typename F>
using awaited_result_t = typename detail::unwrap_task<std::invoke_result_t<F>>::type;

// Starts `t` now on the calling thread; it runs until its first suspension and finishes on whichever
// reactor resumes it. Nothing waits for it: the caller must keep everything the task references alive
// until it ends. Detached work belongs in a TaskScope (task_scope.h), whose owner awaits close() before
// it goes away; bare spawn is the exception, for plumbing whose caller awaits the task's end some other
// way (ReactorSet::submit_to and run_sync resume their caller from the task's last step).
inline void spawn(Task<void> t) {
  [](Task<void> inner) -> detail::Detached { co_await inner; }(std::move(t));
}

// spawn() for a task whose result is handed to `done` when it finishes.
template <typename T, typename F>
void spawn_then(Task<T> t, F done) {
  [](Task<T> inner, F cb) -> detail::Detached {
    if constexpr (std::is_void_v<T>) {
      co_await inner;
      cb();
    } else {
      cb(co_await inner);
    }
  }(std::move(t), std::move(done));
}

}  // namespace tern
