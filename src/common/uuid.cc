#include "common/uuid.h"

#include <sys/random.h>

#include <cstring>
#include <ostream>
#include <stdexcept>

namespace tern {

Uuid Uuid::Generate() {
  std::array<uint8_t, 16> b;
  size_t got = 0;
  while (got < b.size()) {
    ssize_t n = getrandom(b.data() + got, b.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      // getrandom cannot fail on Linux >= 3.17 once the pool is initialised; a failure here
      // is a broken platform, not a runtime condition to handle.
      throw std::runtime_error(std::string("getrandom failed: ") + std::strerror(errno));
    }
    got += size_t(n);
  }
  b[6] = uint8_t((b[6] & 0x0f) | 0x40);
  b[8] = uint8_t((b[8] & 0x3f) | 0x80);
  return Uuid(b);
}

Uuid Uuid::Derive(const Uuid& base, std::string_view name) {
  auto fnv = [&](uint64_t h) {
    auto mix = [&h](uint8_t c) {
      h ^= c;
      h *= 0x100000001b3ull;
    };
    for (uint8_t c : base.bytes()) mix(c);
    mix(0xff);  // separates base from name
    for (char c : name) mix(uint8_t(c));
    return h;
  };
  const uint64_t a = fnv(0xcbf29ce484222325ull), b2 = fnv(0x84222325cbf29ce4ull);
  std::array<uint8_t, 16> b;
  for (int i = 0; i < 8; ++i) {
    b[i] = uint8_t(a >> (8 * i));
    b[8 + i] = uint8_t(b2 >> (8 * i));
  }
  b[6] = uint8_t((b[6] & 0x0f) | 0x80);
  b[8] = uint8_t((b[8] & 0x3f) | 0x80);
  return Uuid(b);
}

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<Uuid> Uuid::Parse(std::string_view s) {
  if (s.size() != 36) {
    return Status::Errorf(Errc::kInval, "invalid UUID '{}': expected 36 characters (8-4-4-4-12 hex), got {}", s,
                          s.size());
  }
  std::array<uint8_t, 16> b{};
  size_t bi = 0;
  for (size_t i = 0; i < 36;) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (s[i] != '-') return Status::Errorf(Errc::kInval, "invalid UUID '{}': expected '-' at position {}", s, i);
      ++i;
      continue;
    }
    int hi = hexval(s[i]), lo = hexval(s[i + 1]);
    if (hi < 0 || lo < 0) {
      return Status::Errorf(Errc::kInval, "invalid UUID '{}': non-hex character at position {}", s, hi < 0 ? i : i + 1);
    }
    b[bi++] = uint8_t(hi << 4 | lo);
    i += 2;
  }
  return Uuid(b);
}

bool Uuid::is_nil() const {
  for (uint8_t x : bytes_)
    if (x) return false;
  return true;
}

std::string Uuid::ToString() const {
  static const char* hex = "0123456789abcdef";
  std::string out;
  out.reserve(36);
  for (size_t i = 0; i < 16; ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(hex[bytes_[i] >> 4]);
    out.push_back(hex[bytes_[i] & 15]);
  }
  return out;
}

std::ostream& operator<<(std::ostream& os, const Uuid& u) { return os << u.ToString(); }

}  // namespace tern
