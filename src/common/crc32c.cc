#include "common/crc32c.h"

#include <array>
#include <cstring>

#include <isa-l/crc.h>

namespace tern {
namespace {

// Slicing-by-8 tables for the reflected Castagnoli polynomial.
struct Tables {
  uint32_t t[8][256];
  Tables() {
    constexpr uint32_t kPoly = 0x82F63B78u;
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ kPoly : c >> 1;
      t[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; ++i)
      for (int s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

const Tables& tables() {
  static const Tables t;
  return t;
}

}  // namespace

uint32_t crc32c_software(const void* data, size_t len, uint32_t prev) {
  const Tables& T = tables();
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~prev;
  while (len >= 8) {
    uint64_t w;
    std::memcpy(&w, p, 8);
    w ^= c;
    c = T.t[7][w & 0xff] ^ T.t[6][(w >> 8) & 0xff] ^ T.t[5][(w >> 16) & 0xff] ^ T.t[4][(w >> 24) & 0xff] ^
        T.t[3][(w >> 32) & 0xff] ^ T.t[2][(w >> 40) & 0xff] ^ T.t[1][(w >> 48) & 0xff] ^ T.t[0][w >> 56];
    p += 8;
    len -= 8;
  }
  while (len--) c = (c >> 8) ^ T.t[0][(c ^ *p++) & 0xff];
  return ~c;
}

uint32_t crc32c(const void* data, size_t len, uint32_t prev) {
  // isa-l's crc32_iscsi takes and returns the register without the final inversion.
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~prev;
  while (len > 0) {
    // its length parameter is an int: feed very large buffers in pieces.
    int chunk = len > (1u << 30) ? (1 << 30) : int(len);
    c = crc32_iscsi(const_cast<unsigned char*>(p), chunk, c);
    p += chunk;
    len -= size_t(chunk);
  }
  return ~c;
}

const char* crc32c_impl() { return "isa-l"; }

}  // namespace tern
