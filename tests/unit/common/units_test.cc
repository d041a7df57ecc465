#include "common/units.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(Units, Sizes) {
  EXPECT_EQ(*parse_size("512"), 512u);
  EXPECT_EQ(*parse_size("4k"), 4096u);
  EXPECT_EQ(*parse_size("4KiB"), 4096u);
  EXPECT_EQ(*parse_size("128K"), 131072u);
  EXPECT_EQ(*parse_size("1m"), 1048576u);
  EXPECT_EQ(*parse_size("1g"), 1073741824u);
  EXPECT_EQ(*parse_size("2T"), 2ull << 40);
  EXPECT_FALSE(parse_size("").ok());
  EXPECT_FALSE(parse_size("k").ok());
  EXPECT_NE(parse_size("4x").status().message().find("unknown unit 'x'"), std::string::npos);
  EXPECT_NE(parse_size("99999999999999t").status().message().find("too large"), std::string::npos);
}

TEST(Units, Durations) {
  EXPECT_EQ(*parse_duration_ns("10s"), 10'000'000'000u);
  EXPECT_EQ(*parse_duration_ns("10"), 10'000'000'000u);
  EXPECT_EQ(*parse_duration_ns("500ms"), 500'000'000u);
  EXPECT_EQ(*parse_duration_ns("250us"), 250'000u);
  EXPECT_EQ(*parse_duration_ns("1.5s"), 1'500'000'000u);
  EXPECT_EQ(*parse_duration_ns("2m"), 120'000'000'000u);
  EXPECT_EQ(*parse_duration_ns("0"), 0u);
  EXPECT_FALSE(parse_duration_ns("s").ok());
  EXPECT_FALSE(parse_duration_ns("-1s").ok());
  EXPECT_NE(parse_duration_ns("3 days").status().message().find("unknown unit"), std::string::npos);
}

TEST(Units, Format) {
  EXPECT_EQ(format_size(512), "512 B");
  EXPECT_EQ(format_size(4096), "4 KiB");
  EXPECT_EQ(format_size(1536 * 1024), "1.5 MiB");
  EXPECT_EQ(format_size(1ull << 30), "1 GiB");
}

}  // namespace
}  // namespace tern
