// The verify pattern (ioperf writes it, the engine's test hooks write and check it; namespace ioperf for its
// origin): every 512-byte sector carries a header (magic, the byte offset
// it was written to, a generation number) followed by pseudo-random bytes derived from both. A sector
// read back proves where it was meant to go and which write put it there, so misdirected, lost, stale and
// torn writes all show up as a mismatch that names what was expected and what was found.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace tern::ioperf {

inline constexpr uint64_t kPatternMagic = 0x5946525653524554ull;  // "TERSVRFY"
inline constexpr size_t kSector = 512;

struct SectorHeader {
  uint64_t magic;
  uint64_t offset;  // device byte offset of this sector
  uint64_t gen;
  uint64_t check;   // offset ^ gen ^ magic, a cheap self-check of the header
};

// Fills `len` bytes (a multiple of 512) destined for device byte offset `offset`.
void fill_pattern(uint8_t* buf, size_t len, uint64_t offset, uint64_t gen);

struct Mismatch {
  uint64_t offset = 0;          // device byte offset of the first bad sector
  uint64_t expected_gen = 0;
  uint64_t found_offset = 0;    // what the sector's header claims (0 if the header is not ours)
  uint64_t found_gen = 0;
  bool header_valid = false;
  size_t first_bad_byte = 0;    // within the sector
  // "LBA 2048 (byte offset 1048576): expected generation 7, found ..." for a device of `block_size`.
  std::string describe(uint32_t block_size = 512) const;
};

// Checks `len` bytes read from `offset` against generation `gen`. Uses `scratch` (len bytes).
bool check_pattern(const uint8_t* buf, size_t len, uint64_t offset, uint64_t gen, uint8_t* scratch, Mismatch* out);

}  // namespace tern::ioperf
