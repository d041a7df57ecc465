#include "common/uuid.h"

#include <gtest/gtest.h>

#include <set>

namespace tern {
namespace {

TEST(Uuid, RoundTrip) {
  auto u = Uuid::Parse("0F1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
  ASSERT_TRUE(u.ok()) << u.status();
  EXPECT_EQ(u->ToString(), "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0");
  EXPECT_EQ(u->bytes()[0], 0x0f);
  EXPECT_EQ(u->bytes()[15], 0xf0);
}

TEST(Uuid, GenerateIsVersion4AndUnique) {
  std::set<std::string> seen;
  for (int i = 0; i < 1000; ++i) {
    Uuid u = Uuid::Generate();
    EXPECT_EQ(u.bytes()[6] >> 4, 4);
    EXPECT_EQ(u.bytes()[8] & 0xc0, 0x80);
    EXPECT_TRUE(seen.insert(u.ToString()).second);
    EXPECT_EQ(*Uuid::Parse(u.ToString()), u);
  }
}

TEST(Uuid, NilAndCompare) {
  EXPECT_TRUE(Uuid().is_nil());
  EXPECT_FALSE(Uuid::Generate().is_nil());
  auto a = *Uuid::Parse("00000000-0000-0000-0000-000000000001");
  auto b = *Uuid::Parse("00000000-0000-0000-0000-000000000002");
  EXPECT_LT(a, b);
  EXPECT_NE(std::hash<Uuid>()(a), std::hash<Uuid>()(b));
}

TEST(Uuid, RejectsMalformed) {
  struct Case {
    const char* text;
    const char* fragment;
  } cases[] = {
      {"", "expected 36 characters"},
      {"0f1e2d3c4b5a69788796a5b4c3d2e1f0", "expected 36 characters"},
      {"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f", "expected 36 characters"},
      {"0f1e2d3c_4b5a-6978-8796-a5b4c3d2e1f0", "expected '-' at position 8"},
      {"0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1fg", "non-hex character at position 35"},
      {"{f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "non-hex character at position 0"},
  };
  for (auto& c : cases) {
    auto r = Uuid::Parse(c.text);
    ASSERT_FALSE(r.ok()) << c.text;
    EXPECT_EQ(r.code(), Errc::kInval);
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << r.status();
  }
}

TEST(Uuid, DeriveIsStableVersion8AndSeparatesItsInputs) {
  const Uuid base = *Uuid::Parse("6d0a3c1e-1111-4a2b-9c3d-000000000001");
  const Uuid a = Uuid::Derive(base, "snap-1");
  EXPECT_EQ(a, Uuid::Derive(base, "snap-1"));  // what a retry relies on
  EXPECT_EQ(a.bytes()[6] >> 4, 8);
  EXPECT_EQ(a.bytes()[8] & 0xc0, 0x80);
  EXPECT_NE(a, Uuid::Derive(base, "snap-2"));
  EXPECT_NE(a, Uuid::Derive(Uuid(), "snap-1"));
  EXPECT_NE(Uuid::Derive(base, ""), Uuid::Derive(base, std::string_view("\0", 1)));
  EXPECT_FALSE(a.is_nil());
}

}  // namespace
}  // namespace tern
