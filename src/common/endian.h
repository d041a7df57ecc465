// Little-endian integers in byte buffers (on-disk and on-wire formats), written out byte by byte so they
// are correct on any host byte order and need no alignment; and rounding up to a multiple.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace tern {

template <typename T>
inline T load_le(const uint8_t* p) {
  static_assert(std::is_unsigned_v<T>);
  T v = 0;
  for (size_t i = 0; i < sizeof(T); ++i) v |= T(T(p[i]) << (8 * i));
  return v;
}

template <typename T>
inline void store_le(uint8_t* p, T v) {
  static_assert(std::is_unsigned_v<T>);
  for (size_t i = 0; i < sizeof(T); ++i) p[i] = uint8_t(v >> (8 * i));
}

template <typename T>
constexpr T align_up(T v, T a) {
  return (v + a - 1) / a * a;
}

}  // namespace tern
