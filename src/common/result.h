// Result<T>: a T or a non-OK Status. The return type of fallible functions that produce a value.
#pragma once

#include <cassert>
#include <type_traits>
#include <utility>
#include <variant>

#include "common/status.h"

namespace tern {

template <typename T>
class [[nodiscard]] Result {
  static_assert(!std::is_same_v<std::decay_t<T>, Status>, "use Status for value-less results");

 public:
  Result(T value) : v_(std::in_place_index<1>, std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::in_place_index<0>, std::move(status)) {  // NOLINT
    assert(!std::get<0>(v_).ok() && "a Result built from a Status must carry an error");
  }
  Result(Errc code) requires(!std::is_same_v<T, Errc>) : Result(Status(code)) {}  // NOLINT

  bool ok() const noexcept { return v_.index() == 1; }
  explicit operator bool() const noexcept { return ok(); }

  // The error; Status::Ok() when a value is held.
  Status status() const { return ok() ? Status() : std::get<0>(v_); }
  Errc code() const { return ok() ? Errc::kOk : std::get<0>(v_).code(); }
  // Moves the error out (only valid when !ok()).
  Status take_status() && { return std::move(std::get<0>(v_)); }

  T& value() & { return std::get<1>(v_); }
  const T& value() const& { return std::get<1>(v_); }
  T&& value() && { return std::get<1>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }

  T value_or(T fallback) const& { return ok() ? std::get<1>(v_) : std::move(fallback); }

 private:
  std::variant<Status, T> v_;
};

}  // namespace tern

#define TERN_CONCAT_INNER(a, b) a##b
#define TERN_CONCAT(a, b) TERN_CONCAT_INNER(a, b)

// Returns the Status of `expr` from the enclosing function if it is not OK.
#define TERN_RETURN_IF_ERROR(expr)                \
  do {                                            \
    ::tern::Status tern_st_ = (expr);             \
    if (!tern_st_.ok()) return tern_st_;          \
  } while (0)

// `TERN_ASSIGN_OR_RETURN(auto x, f())`: binds the value, or returns the error.
#define TERN_ASSIGN_OR_RETURN(lhs, expr) TERN_ASSIGN_OR_RETURN_IMPL(TERN_CONCAT(tern_r_, __LINE__), lhs, expr)
#define TERN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return std::move(tmp).take_status(); \
  lhs = std::move(tmp).value()

// Coroutine variants.
#define TERN_CO_RETURN_IF_ERROR(expr)             \
  do {                                            \
    ::tern::Status tern_st_ = (expr);             \
    if (!tern_st_.ok()) co_return tern_st_;       \
  } while (0)
#define TERN_CO_ASSIGN_OR_RETURN(lhs, expr) TERN_CO_ASSIGN_OR_RETURN_IMPL(TERN_CONCAT(tern_r_, __LINE__), lhs, expr)
#define TERN_CO_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                  \
  if (!tmp.ok()) co_return std::move(tmp).take_status(); \
  lhs = std::move(tmp).value()
