#include <gtest/gtest.h>

#include "reactor/reactor_set.h"
#include "test_util.h"

namespace tern {
namespace {

TEST(CoreList, ParsesListsRangesAndMasks) {
  auto cores = test::test_cores(1);
  int c = cores[0];
  EXPECT_EQ(*parse_core_list(std::to_string(c)), std::vector<int>{c});
  auto all = allowed_cores_string();
  EXPECT_FALSE(all.empty());
  // Build specs from what this machine allows so the test runs anywhere.
  cpu_set_t cs;
  CPU_ZERO(&cs);
  sched_getaffinity(0, sizeof(cs), &cs);
  std::vector<int> allowed;
  for (int i = 0; i < 64; ++i)
    if (CPU_ISSET(i, &cs)) allowed.push_back(i);
  uint64_t mask = 0;
  for (int a : allowed) mask |= 1ull << a;
  EXPECT_EQ(*parse_core_list(fmt::format("0x{:x}", mask)), allowed);
  EXPECT_EQ(*parse_core_list(fmt::format("0X{:X}", mask)), allowed);
  if (allowed.size() >= 2 && allowed[1] == allowed[0] + 1) {
    EXPECT_EQ(*parse_core_list(fmt::format("{}-{}", allowed[0], allowed[1])), (std::vector<int>{allowed[0], allowed[1]}));
    EXPECT_EQ(*parse_core_list(fmt::format("{},{}", allowed[1], allowed[0])), (std::vector<int>{allowed[1], allowed[0]}));
  }
}

TEST(CoreList, RejectsBadSpecsWithReasons) {
  struct Case {
    std::string spec;
    const char* fragment;
  } cases[] = {
      {"", "empty core list"},
      {"a", "'a' is not a core number"},
      {"0,", "'' is not a core number"},
      {"-1", "is not a core number"},
      {"3-1", "is reversed"},
      {"0x", "'0x' is not a core number"},
      {"0xg", "not a hex digit"},
      {"0x0", "selects no core"},
      {"0,0", "names core 0 twice"},
      {"1000", "not available to this process"},
  };
  for (auto& c : cases) {
    auto r = parse_core_list(c.spec);
    ASSERT_FALSE(r.ok()) << c.spec;
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << c.spec << " -> " << r.status();
  }
}

}  // namespace
}  // namespace tern
