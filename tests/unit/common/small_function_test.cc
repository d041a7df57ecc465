#include "common/small_function.h"

#include <gtest/gtest.h>

#include <array>
#include <memory>

namespace tern {
namespace {

TEST(SmallFunction, InlineAndHeapCallables) {
  int hits = 0;
  SmallFunction<void()> small([&hits] { ++hits; });
  small();
  std::array<int, 64> big{};
  big[63] = 5;
  SmallFunction<int()> large([big] { return big[63]; });
  EXPECT_EQ(large(), 5);
  SmallFunction<int(int, int)> add([](int a, int b) { return a + b; });
  EXPECT_EQ(add(2, 3), 5);
  EXPECT_EQ(hits, 1);
}

TEST(SmallFunction, MoveTransfersAndDestroysOnce) {
  auto counter = std::make_shared<int>(0);
  {
    SmallFunction<int()> a([counter] { return ++*counter; });
    EXPECT_EQ(counter.use_count(), 2);
    SmallFunction<int()> b(std::move(a));
    EXPECT_FALSE(a);
    EXPECT_EQ(b(), 1);
    SmallFunction<int()> c;
    c = std::move(b);
    EXPECT_EQ(c(), 2);
    EXPECT_EQ(counter.use_count(), 2);
    c.reset();
    EXPECT_EQ(counter.use_count(), 1);
  }
  EXPECT_EQ(counter.use_count(), 1);
}

TEST(SmallFunction, MoveOnlyCaptures) {
  auto p = std::make_unique<int>(9);
  SmallFunction<int()> f([q = std::move(p)] { return *q; });
  SmallFunction<int()> g = std::move(f);
  EXPECT_EQ(g(), 9);
}

}  // namespace
}  // namespace tern
