// Invariant checks that stay on in release builds. A failed check is a bug in this program, never bad
// input (input gets a Status): it prints where and why to stderr and aborts, so the core dump and the
// sanitizers' reports point at the broken invariant rather than at the damage it does later.
//
//   TERN_CHECK(active_ == 0, "scope '{}' destroyed with {} task(s) running", name_, active_);
//
// TERN_DCHECK is the same in debug (and sanitizer) builds and nothing in release builds, for checks on
// paths hot enough that even a predictable branch matters.
#pragma once

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

namespace tern::detail {

template <typename... Args>
[[noreturn]] void check_failed(const char* file, int line, const char* cond, fmt::format_string<Args...> f,
                               Args&&... args) {
  std::string msg = fmt::format(f, std::forward<Args>(args)...);
  std::fprintf(stderr, "%s:%d: check failed: %s: %s\n", file, line, cond, msg.c_str());
  std::fflush(stderr);
  std::abort();
}

}  // namespace tern::detail

#define TERN_CHECK(cond, ...)                                                     \
  do {                                                                            \
    if (__builtin_expect(!(cond), 0)) {                                           \
      ::tern::detail::check_failed(__FILE__, __LINE__, #cond, __VA_ARGS__);       \
    }                                                                             \
  } while (0)

#ifdef NDEBUG
#define TERN_DCHECK(cond, ...)            \
  do {                                    \
    if (false) TERN_CHECK(cond, __VA_ARGS__); \
  } while (0)
#else
#define TERN_DCHECK(cond, ...) TERN_CHECK(cond, __VA_ARGS__)
#endif
