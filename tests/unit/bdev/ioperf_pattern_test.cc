// ioperf's verify pattern must catch every kind of wrong data it claims to catch.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "common/verify_pattern.h"

namespace tern::ioperf {
namespace {

TEST(VerifyPattern, GoodDataPasses) {
  std::vector<uint8_t> buf(4096), scratch(4096);
  fill_pattern(buf.data(), buf.size(), 8192, 5);
  Mismatch m;
  EXPECT_TRUE(check_pattern(buf.data(), buf.size(), 8192, 5, scratch.data(), &m));
}

TEST(VerifyPattern, DetectsStaleMisdirectedTornAndForeignData) {
  std::vector<uint8_t> buf(4096), scratch(4096);
  Mismatch m;
  // Stale: an older generation.
  fill_pattern(buf.data(), buf.size(), 8192, 4);
  ASSERT_FALSE(check_pattern(buf.data(), buf.size(), 8192, 5, scratch.data(), &m));
  EXPECT_EQ(m.offset, 8192u);
  EXPECT_EQ(m.found_gen, 4u);
  EXPECT_NE(m.describe().find("lost or stale"), std::string::npos) << m.describe();
  EXPECT_NE(m.describe(4096).find("LBA 2 (byte offset 8192, 4096-byte blocks)"), std::string::npos) << m.describe(4096);
  EXPECT_NE(m.describe().find("LBA 16 (byte offset 8192"), std::string::npos) << m.describe();
  // Misdirected: data meant for another place.
  fill_pattern(buf.data(), buf.size(), 0, 5);
  ASSERT_FALSE(check_pattern(buf.data(), buf.size(), 8192, 5, scratch.data(), &m));
  EXPECT_EQ(m.found_offset, 0u);
  EXPECT_NE(m.describe().find("misdirected"), std::string::npos);
  // Torn: the third sector keeps old content.
  fill_pattern(buf.data(), buf.size(), 8192, 5);
  fill_pattern(buf.data() + 1024, 512, 8192 + 1024, 4);
  ASSERT_FALSE(check_pattern(buf.data(), buf.size(), 8192, 5, scratch.data(), &m));
  EXPECT_EQ(m.offset, 8192u + 1024);
  // Corrupted payload with an intact header.
  fill_pattern(buf.data(), buf.size(), 8192, 5);
  buf[600] ^= 1;
  ASSERT_FALSE(check_pattern(buf.data(), buf.size(), 8192, 5, scratch.data(), &m));
  EXPECT_EQ(m.offset, 8192u + 512);
  EXPECT_EQ(m.first_bad_byte, 88u);
  EXPECT_NE(m.describe().find("torn or corrupted"), std::string::npos);
  // Zeros: not ours at all.
  std::memset(buf.data(), 0, buf.size());
  ASSERT_FALSE(check_pattern(buf.data(), buf.size(), 8192, 5, scratch.data(), &m));
  EXPECT_FALSE(m.header_valid);
  EXPECT_NE(m.describe().find("did not write"), std::string::npos);
}

}  // namespace
}  // namespace tern::ioperf
