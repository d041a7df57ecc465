// SmallFunction<R(Args...), N>: a move-only type-erased callable that stores callables of up to N
// bytes inline, so posting a message or arming a timer with a small lambda does not allocate.
// Larger callables fall back to the heap (fine on control paths; the I/O path keeps captures small).
#pragma once

#include <cstddef>
#include <new>
#include <type_traits>
#include <utility>

namespace tern {

template <typename Sig, size_t N = 48>
class SmallFunction;

template <typename R, typename... Args, size_t N>
class SmallFunction<R(Args...), N> {
 public:
  SmallFunction() noexcept = default;
  SmallFunction(std::nullptr_t) noexcept {}  // NOLINT

  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, SmallFunction>>>
  SmallFunction(F&& f) {  // NOLINT: implicit like std::function
    using Fn = std::decay_t<F>;
    if constexpr (sizeof(Fn) <= N && alignof(Fn) <= alignof(std::max_align_t) &&
                  std::is_nothrow_move_constructible_v<Fn>) {
      new (&storage_) Fn(std::forward<F>(f));
      ops_ = &InlineOps<Fn>::kOps;
    } else {
      *reinterpret_cast<Fn**>(&storage_) = new Fn(std::forward<F>(f));
      ops_ = &HeapOps<Fn>::kOps;
    }
  }

  SmallFunction(SmallFunction&& o) noexcept : ops_(o.ops_) {
    if (ops_) {
      ops_->move(&o.storage_, &storage_);
      o.ops_ = nullptr;
    }
  }
  SmallFunction& operator=(SmallFunction&& o) noexcept {
    if (this != &o) {
      reset();
      ops_ = o.ops_;
      if (ops_) {
        ops_->move(&o.storage_, &storage_);
        o.ops_ = nullptr;
      }
    }
    return *this;
  }
  SmallFunction(const SmallFunction&) = delete;
  SmallFunction& operator=(const SmallFunction&) = delete;
  ~SmallFunction() { reset(); }

  void reset() noexcept {
    if (ops_) {
      ops_->destroy(&storage_);
      ops_ = nullptr;
    }
  }
  explicit operator bool() const noexcept { return ops_ != nullptr; }
  R operator()(Args... args) { return ops_->call(&storage_, std::forward<Args>(args)...); }

 private:
  struct Ops {
    R (*call)(void*, Args&&...);
    void (*move)(void* from, void* to) noexcept;
    void (*destroy)(void*) noexcept;
  };
  template <typename Fn>
  struct InlineOps {
    static R call(void* s, Args&&... a) { return (*static_cast<Fn*>(s))(std::forward<Args>(a)...); }
    static void move(void* from, void* to) noexcept {
      new (to) Fn(std::move(*static_cast<Fn*>(from)));
      static_cast<Fn*>(from)->~Fn();
    }
    static void destroy(void* s) noexcept { static_cast<Fn*>(s)->~Fn(); }
    static constexpr Ops kOps{&call, &move, &destroy};
  };
  template <typename Fn>
  struct HeapOps {
    static R call(void* s, Args&&... a) { return (**static_cast<Fn**>(s))(std::forward<Args>(a)...); }
    static void move(void* from, void* to) noexcept {
      *static_cast<Fn**>(to) = *static_cast<Fn**>(from);
      *static_cast<Fn**>(from) = nullptr;
    }
    static void destroy(void* s) noexcept { delete *static_cast<Fn**>(s); }
    static constexpr Ops kOps{&call, &move, &destroy};
  };

  alignas(std::max_align_t) unsigned char storage_[N < sizeof(void*) ? sizeof(void*) : N];
  const Ops* ops_ = nullptr;
};

}  // namespace tern
