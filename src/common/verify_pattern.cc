#include "common/verify_pattern.h"

#include <cstring>

#include <fmt/format.h>

namespace tern::ioperf {
namespace {

inline uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

void fill_sector(uint8_t* s, uint64_t offset, uint64_t gen) {
  SectorHeader h{kPatternMagic, offset, gen, offset ^ gen ^ kPatternMagic};
  std::memcpy(s, &h, sizeof(h));
  uint64_t state = offset * 0x9e3779b97f4a7c15ull ^ gen;
  for (size_t i = sizeof(h); i < kSector; i += 8) {
    uint64_t v = splitmix(state);
    std::memcpy(s + i, &v, 8);
  }
}

}  // namespace

void fill_pattern(uint8_t* buf, size_t len, uint64_t offset, uint64_t gen) {
  for (size_t i = 0; i < len; i += kSector) fill_sector(buf + i, offset + i, gen);
}

bool check_pattern(const uint8_t* buf, size_t len, uint64_t offset, uint64_t gen, uint8_t* scratch, Mismatch* out) {
  fill_pattern(scratch, len, offset, gen);
  if (std::memcmp(buf, scratch, len) == 0) return true;
  for (size_t i = 0; i < len; i += kSector) {
    if (std::memcmp(buf + i, scratch + i, kSector) == 0) continue;
    Mismatch m;
    m.offset = offset + i;
    m.expected_gen = gen;
    SectorHeader h;
    std::memcpy(&h, buf + i, sizeof(h));
    m.header_valid = h.magic == kPatternMagic && h.check == (h.offset ^ h.gen ^ kPatternMagic);
    if (m.header_valid) {
      m.found_offset = h.offset;
      m.found_gen = h.gen;
    }
    for (size_t b = 0; b < kSector; ++b) {
      if (buf[i + b] != scratch[i + b]) {
        m.first_bad_byte = b;
        break;
      }
    }
    *out = m;
    return false;
  }
  return true;
}

std::string Mismatch::describe(uint32_t block_size) const {
  std::string found;
  if (!header_valid) {
    found = "a sector that ioperf did not write (no valid header)";
  } else if (found_offset != offset) {
    found = fmt::format("data written for byte offset {} (generation {}): a misdirected write", found_offset, found_gen);
  } else if (found_gen != expected_gen) {
    found = fmt::format("generation {} (a {} write)", found_gen, found_gen < expected_gen ? "lost or stale" : "newer unexpected");
  } else {
    found = fmt::format("the right header but different data from byte {} of the sector (torn or corrupted)",
                        first_bad_byte);
  }
  return fmt::format("LBA {} (byte offset {}, {}-byte blocks): expected generation {}, found {}", offset / block_size,
                     offset, block_size, expected_gen, found);
}

}  // namespace tern::ioperf
