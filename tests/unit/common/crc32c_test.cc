#include "common/crc32c.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace tern {
namespace {

TEST(Crc32c, KnownVectors) {
  const char* check = "123456789";
  EXPECT_EQ(crc32c(check, 9), 0xE3069283u);
  EXPECT_EQ(crc32c_software(check, 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  // RFC 3720 B.4: 32 bytes of zeros, and of 0xff.
  std::vector<uint8_t> zeros(32, 0), ones(32, 0xff);
  EXPECT_EQ(crc32c(zeros.data(), 32), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), 32), 0x62A8AB43u);
  std::vector<uint8_t> inc(32);
  for (int i = 0; i < 32; ++i) inc[size_t(i)] = uint8_t(i);
  EXPECT_EQ(crc32c(inc.data(), 32), 0x46DD794Eu);
  EXPECT_EQ(crc32c_software(inc.data(), 32), 0x46DD794Eu);
}

TEST(Crc32c, FastAndSoftwareAgreeOnRandomData) {
  std::mt19937_64 rng(42);
  std::vector<uint8_t> buf(70000);
  for (auto& b : buf) b = uint8_t(rng());
  for (size_t len : {0ul, 1ul, 7ul, 8ul, 9ul, 63ul, 64ul, 65ul, 511ul, 4096ul, 65537ul, 70000ul}) {
    for (size_t off : {0ul, 1ul, 3ul}) {
      if (off + len > buf.size()) continue;
      EXPECT_EQ(crc32c(buf.data() + off, len), crc32c_software(buf.data() + off, len)) << len << "@" << off;
    }
  }
}

TEST(Crc32c, Chains) {
  std::vector<uint8_t> buf(1000);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = uint8_t(i * 7);
  uint32_t whole = crc32c(buf.data(), buf.size());
  for (size_t cut : {0ul, 1ul, 500ul, 999ul, 1000ul}) {
    EXPECT_EQ(crc32c(buf.data() + cut, buf.size() - cut, crc32c(buf.data(), cut)), whole);
    EXPECT_EQ(crc32c_software(buf.data() + cut, buf.size() - cut, crc32c_software(buf.data(), cut)), whole);
  }
}

TEST(Crc32c, DetectsSingleBitFlips) {
  std::vector<uint8_t> buf(512, 0x5a);
  uint32_t base = crc32c(buf.data(), buf.size());
  for (size_t bit = 0; bit < buf.size() * 8; bit += 37) {
    buf[bit / 8] ^= uint8_t(1u << (bit % 8));
    EXPECT_NE(crc32c(buf.data(), buf.size()), base);
    buf[bit / 8] ^= uint8_t(1u << (bit % 8));
  }
}

}  // namespace
}  // namespace tern
