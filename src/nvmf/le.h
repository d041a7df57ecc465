// Little-endian wire integers: byte arrays with explicit load/store, so wire structs are correct on any
// host byte order and need no alignment (PDUs arrive at arbitrary offsets in receive buffers).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include "common/endian.h"

namespace tern::nvme {

template <typename T>
struct Le {
  static_assert(std::is_unsigned_v<T>);
  uint8_t b[sizeof(T)];

  T get() const { return load_le<T>(b); }
  void set(T v) { store_le<T>(b, v); }
  operator T() const { return get(); }  // NOLINT: reads like a plain integer
  Le& operator=(T v) {
    set(v);
    return *this;
  }
};
using le16 = Le<uint16_t>;
using le32 = Le<uint32_t>;
using le64 = Le<uint64_t>;
static_assert(sizeof(le16) == 2 && sizeof(le32) == 4 && sizeof(le64) == 8 && alignof(le64) == 1);

// Copies `s` into a fixed, space-padded ASCII field (serial/model/firmware numbers).
inline void set_ascii(char* field, size_t n, const char* s) {
  size_t len = std::strlen(s);
  if (len > n) len = n;
  std::memcpy(field, s, len);
  std::memset(field + len, ' ', n - len);
}
// Copies `s` into a fixed, NUL-padded field (NQNs, addresses).
inline void set_cstr(char* field, size_t n, const char* s) {
  size_t len = std::strlen(s);
  if (len > n - 1) len = n - 1;
  std::memcpy(field, s, len);
  std::memset(field + len, 0, n - len);
}
// Reads a NUL- or space-padded fixed field back as a string, trimming the padding.
inline std::string get_field(const char* field, size_t n) {
  size_t len = 0;
  while (len < n && field[len] != '\0') ++len;
  while (len > 0 && field[len - 1] == ' ') --len;
  return std::string(field, len);
}

}  // namespace tern::nvme
