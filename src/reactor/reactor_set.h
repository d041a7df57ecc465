// ReactorSet: the reactors of a process, one per configured core, and the ways to reach them.
//
// Cross-reactor model (the only one; see docs/design/reactor.md):
//   - post(core, fn): fire-and-forget; fn runs on `core`'s thread. Any thread.
//   - co_await submit_to(core, fn): from a coroutine on a reactor; fn (a plain function or one returning
//     Task<T>) runs on `core`, and the caller resumes on its own reactor with fn's result.
//   - run_sync(core, fn): the same from a thread that is not a reactor (main, gRPC, tests); it blocks.
// Reactor 0 is the primary: control-plane state (device registry, pools, ...) lives there, and control
// operations are submitted to it.
#pragma once

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <coroutine>
#include <memory>
#include <optional>
#include <semaphore>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/result.h"
#include "reactor/reactor.h"
#include "reactor/task.h"

namespace tern {

// Parses a core list: "0,2,3", ranges "0-3", or a hex mask "0x5". Cores must be in this process's
// affinity set; an error names the offending core and the allowed set.
Result<std::vector<int>> parse_core_list(std::string_view spec);
// The cores this process may run on, e.g. "0-1".
std::string allowed_cores_string();

struct ReactorSetOptions {
  std::vector<int> cores{0};  // one reactor per entry, pinned to that CPU
  bool pin = true;
  ReactorOptions reactor;
};

class ReactorSet {
 public:
  // Starts the threads and waits until every ring is up; on failure, stops what started and says why.
  static Result<std::unique_ptr<ReactorSet>> Start(const ReactorSetOptions& opts);
  ~ReactorSet();

  unsigned size() const { return unsigned(reactors_.size()); }
  Reactor& reactor(unsigned i) { return *reactors_[i]; }
  Reactor& primary() { return *reactors_[0]; }

  // Runs `fn` on reactor `target`. Any thread. Returns false only once the set is stopped.
  bool post(unsigned target, Reactor::Message fn);

  template <typename F>
  auto submit_to(unsigned target, F fn);

  template <typename F>
  awaited_result_t<F> run_sync(unsigned target, F fn);

  // Stops every reactor: each finishes its queued messages and waits (bounded) for in-flight ring
  // operations, then its thread is joined. Idempotent. Callers first stop their own work (close
  // devices, stop workloads); this is the last step.
  void stop();
  bool stopped() const { return stopped_.load(); }

 private:
  explicit ReactorSet(const ReactorSetOptions& opts) : opts_(opts) {}
  static void probe(Reactor& r, SmallFunction<void()> fn);
  ReactorSetOptions opts_;
  std::vector<std::unique_ptr<Reactor>> reactors_;
  std::atomic<bool> stopped_{false};
  std::atomic<int> foreign_posts_{0};
};

namespace detail {

// Holds a value or the fact that a void function returned.
template <typename T>
struct ResultSlot {
  std::optional<T> v;
  template <typename F>
  void fill(F& f) { v.emplace(f()); }
  void set(T&& x) { v.emplace(std::move(x)); }
  T take() { return std::move(*v); }
};
template <>
struct ResultSlot<void> {
  template <typename F>
  void fill(F& f) { f(); }
  template <typename... A>
  void set(A&&...) {}  // never called; clang looks names up in discarded generic-lambda branches
  void take() {}
};

// Runs `fn` on the current reactor; `done()` is called once its result is in `slot`.
template <typename F, typename R, typename Done>
void run_into(F& fn, ResultSlot<R>& slot, Done done) {
  if constexpr (is_task_v<std::invoke_result_t<F&>>) {
    spawn_then(fn(), [&slot, done](auto&&... r) mutable {
      if constexpr (sizeof...(r) > 0) slot.set(std::forward<decltype(r)>(r)...);
      done();
    });
  } else {
    slot.fill(fn);
    done();
  }
}

template <typename F>
struct SubmitAwaiter {
  using R = awaited_result_t<F>;
  ReactorSet* set;
  unsigned target;
  F fn;
  unsigned origin = 0;
  std::coroutine_handle<> h;
  ResultSlot<R> slot;

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> hh) {
    h = hh;
    Reactor* cur = Reactor::current();
    origin = cur ? cur->id() : 0;
    set->post(target, [this] {
      run_into(fn, slot, [this] { set->post(origin, [this] { h.resume(); }); });
    });
  }
  R await_resume() { return slot.take(); }
};

}  // namespace detail

// The function must be trivially copyable (capture pointers or references to the caller's frame, or
// plain values): GCC 12 copies a capturing lambda written inside a co_await expression bitwise, which
// breaks captured strings, vectors and the like (a freed-but-not-allocated pointer under ASan).
template <typename F>
auto ReactorSet::submit_to(unsigned target, F fn) {
  static_assert(std::is_trivially_copyable_v<F>,
                "submit_to: capture only pointers, references or plain values (GCC 12 coroutine bug with "
                "non-trivial lambda captures inside co_await)");
  return detail::SubmitAwaiter<F>{this, target, std::move(fn), 0, {}, {}};
}

template <typename F>
awaited_result_t<F> ReactorSet::run_sync(unsigned target, F fn) {
  using R = awaited_result_t<F>;
  if (Reactor* cur = Reactor::current(); cur && &cur->set() == this) {
    // Blocking a reactor on work that may need it would deadlock; reactors await submit_to instead.
    std::fprintf(stderr, "ReactorSet::run_sync called on reactor %u; use co_await submit_to\n", cur->id());
    std::abort();
  }
  detail::ResultSlot<R> slot;
  std::binary_semaphore done(0);
  if (!post(target, [&] { detail::run_into(fn, slot, [&done] { done.release(); }); })) {
    // Waiting would never end: the reactors are gone. Calling into a stopped set is a bug.
    std::fprintf(stderr, "ReactorSet::run_sync called after stop()\n");
    std::abort();
  }
  done.acquire();
  return slot.take();
}

}  // namespace tern
