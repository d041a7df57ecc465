#include "common/result.h"
#include "common/status.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

TEST(Status, OkIsDefaultAndCheap) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Errc::kOk);
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_TRUE(s.message().empty());
}

TEST(Status, CodeOnlyErrorDescribesItself) {
  Status s(Errc::kIo);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.ToString(), "EIO: Input/output error");
}

TEST(Status, MessageAndContext) {
  Status s = Status::Errorf(Errc::kNoSpc, "pool {} is full", "p0");
  EXPECT_EQ(s.ToString(), "ENOSPC: pool p0 is full");
  Status c = s.WithContext("create replica r1");
  EXPECT_EQ(c.code(), Errc::kNoSpc);
  EXPECT_EQ(c.message(), "create replica r1: pool p0 is full");
  EXPECT_EQ(Status(Errc::kIo).WithContext("read").message(), "read: Input/output error");
}

TEST(Status, CopyAndMove) {
  Status a(Errc::kInval, "bad");
  Status b = a;
  EXPECT_EQ(b.message(), "bad");
  Status c = std::move(a);
  EXPECT_EQ(c.message(), "bad");
  b = Status();
  EXPECT_TRUE(b.ok());
}

TEST(Status, FromErrnoAcceptsNegativeResults) {
  EXPECT_EQ(Status::FromErrno(-EAGAIN).code(), Errc::kAgain);
  EXPECT_EQ(Status::FromErrno(ENOENT, "x").ToString(), "ENOENT: x");
}

TEST(Status, ProjectCodesHaveNames) {
  EXPECT_EQ(errc_name(Errc::kMediaError), "MEDIA_ERROR");
  EXPECT_EQ(errc_name(Errc::kCorruption), "CORRUPTION");
  EXPECT_EQ(errc_name(static_cast<Errc>(99999)), "UNKNOWN_ERROR");
}

Result<int> half(int x) {
  if (x % 2) return Status::Errorf(Errc::kInval, "{} is odd", x);
  return x / 2;
}

Status quarter(int x, int* out) {
  TERN_ASSIGN_OR_RETURN(int h, half(x));
  TERN_ASSIGN_OR_RETURN(int q, half(h));
  *out = q;
  return Status::Ok();
}

TEST(Result, ValueOrError) {
  auto r = half(4);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(*r, 2);
  auto e = half(3);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.code(), Errc::kInval);
  EXPECT_EQ(e.status().message(), "3 is odd");
  EXPECT_EQ(e.value_or(7), 7);
}

TEST(Result, Macros) {
  int out = 0;
  EXPECT_TRUE(quarter(8, &out).ok());
  EXPECT_EQ(out, 2);
  Status s = quarter(6, &out);
  EXPECT_EQ(s.message(), "3 is odd");
}

TEST(Result, MoveOnlyValues) {
  Result<std::unique_ptr<int>> r(std::make_unique<int>(5));
  std::unique_ptr<int> p = std::move(r).value();
  EXPECT_EQ(*p, 5);
}

}  // namespace
}  // namespace tern
