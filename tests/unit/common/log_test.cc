#include "common/log.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(Log, LevelsPerModule) {
  ASSERT_TRUE(log::set_levels("warn,testmod=debug").ok());
  auto& m = log::module("testmod");
  auto& other = log::module("testother");
  EXPECT_TRUE(m.enabled(log::Level::kDebug));
  EXPECT_FALSE(m.enabled(log::Level::kTrace));
  EXPECT_FALSE(other.enabled(log::Level::kInfo));
  EXPECT_TRUE(other.enabled(log::Level::kWarn));
  ASSERT_TRUE(log::set_levels("info").ok());
  EXPECT_TRUE(other.enabled(log::Level::kInfo));
  EXPECT_TRUE(m.enabled(log::Level::kDebug)) << "overrides stay until changed";
  ASSERT_TRUE(log::set_levels("warn,testmod=warn").ok());
}

TEST(Log, BadSpecsChangeNothing) {
  ASSERT_TRUE(log::set_levels("warn").ok());
  auto& m = log::module("testmod2");
  Status s = log::set_levels("debug,testmod2=loud");
  EXPECT_EQ(s.code(), Errc::kInval);
  EXPECT_NE(s.message().find("unknown log level 'loud'"), std::string::npos) << s;
  EXPECT_FALSE(m.enabled(log::Level::kInfo));
  EXPECT_FALSE(log::set_levels("").ok());
  EXPECT_FALSE(log::set_levels("info,,x=debug").ok());
  EXPECT_FALSE(log::set_levels("=debug").ok());
}

TEST(Log, RateLimiterAdmitsFirstAndCountsTheRest) {
  log::RateLimit rl;
  uint64_t dropped = 99;
  EXPECT_TRUE(rl.admit(60000, &dropped));
  EXPECT_EQ(dropped, 0u);
  for (int i = 0; i < 10; ++i) EXPECT_FALSE(rl.admit(60000, &dropped));
  log::RateLimit fast;
  EXPECT_TRUE(fast.admit(0, &dropped));
  EXPECT_TRUE(fast.admit(0, &dropped));
}

TEST(Log, MacrosCompileAndRun) {
  ASSERT_TRUE(log::set_levels("error").ok());
  TLOG_INFO("testmod3", "not shown {}", 1);
  TLOG_ERROR("testmod3", "shown on stderr: {}", "ok");
  for (int i = 0; i < 5; ++i) TLOG_RL_ERROR("testmod3", 60000, "rate limited {}", i);
  log::set_format(log::Format::kJson);
  TLOG_ERROR("testmod3", "as json");
  log::set_format(log::Format::kText);
  ASSERT_TRUE(log::set_levels("warn").ok());
}

}  // namespace
}  // namespace tern
