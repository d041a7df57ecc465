// Replaces the global operator new/delete with versions that call `note_alloc()` (defined by the
// including test) before each allocation. Include it in exactly one file of a test binary of its own:
// the replacement affects the whole binary.
#pragma once

#include <cstdlib>
#include <new>

void note_alloc();

namespace counting_new_detail {
// noinline: GCC 12 otherwise sees through the allocation and warns falsely (array-bounds) at its users.
[[gnu::noinline]] inline void* counted(size_t n) {
  note_alloc();
  void* p = std::malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}
[[gnu::noinline]] inline void* counted_aligned(size_t n, std::align_val_t a) {
  note_alloc();
  size_t al = static_cast<size_t>(a);
  void* p = std::aligned_alloc(al, (n + al - 1) / al * al);
  if (!p) throw std::bad_alloc();
  return p;
}
inline void* counted_nothrow(size_t n) noexcept {
  try {
    return counted(n);
  } catch (...) {
    return nullptr;
  }
}
}  // namespace counting_new_detail

void* operator new(size_t n) { return counting_new_detail::counted(n); }
void* operator new[](size_t n) { return counting_new_detail::counted(n); }
void* operator new(size_t n, const std::nothrow_t&) noexcept { return counting_new_detail::counted_nothrow(n); }
void* operator new[](size_t n, const std::nothrow_t&) noexcept { return counting_new_detail::counted_nothrow(n); }
void* operator new(size_t n, std::align_val_t a) { return counting_new_detail::counted_aligned(n, a); }
void* operator new[](size_t n, std::align_val_t a) { return counting_new_detail::counted_aligned(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, size_t, std::align_val_t) noexcept { std::free(p); }
