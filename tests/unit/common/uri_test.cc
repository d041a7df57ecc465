#include "common/uri.h"

#include <gtest/gtest.h>

namespace tern {
namespace {

struct Good {
  const char* text;
  const char* scheme;
  const char* host;
  int port;  // 0 = none
  const char* path;
  std::vector<std::pair<std::string, std::string>> query;
};

TEST(Uri, ParsesValidUris) {
  const Good cases[] = {
      {"uring:///dev/sdb", "uring", "", 0, "/dev/sdb", {}},
      {"aio:///var/tmp/disk.img?blk_size=4096", "aio", "", 0, "/var/tmp/disk.img", {{"blk_size", "4096"}}},
      {"malloc:///m0?size_mb=64&blk_size=512", "malloc", "", 0, "/m0", {{"size_mb", "64"}, {"blk_size", "512"}}},
      {"MALLOC:///m0?size_mb=1", "malloc", "", 0, "/m0", {{"size_mb", "1"}}},
      {"nvmf://10.0.0.2:8420/nqn.2019-05.io.openebs:r1?nsid=1", "nvmf", "10.0.0.2", 8420,
       "/nqn.2019-05.io.openebs:r1", {{"nsid", "1"}}},
      {"nvmf://node-a/nqn", "nvmf", "node-a", 0, "/nqn", {}},
      {"nvmf://[fe80::1]:4420/nqn", "nvmf", "fe80::1", 4420, "/nqn", {}},
      {"nvmf://[::1]/x", "nvmf", "::1", 0, "/x", {}},
      {"nvmf+tcp://h:1/x", "nvmf+tcp", "h", 1, "/x", {}},
      {"uring:///path%20with%20space", "uring", "", 0, "/path with space", {}},
      {"error:///e0?base=m0&rule=op=write,count=3", "error", "", 0, "/e0", {{"base", "m0"}, {"rule", "op=write,count=3"}}},
      {"x://h:65535", "x", "h", 65535, "", {}},
      {"bdev:///name?uuid=%41", "bdev", "", 0, "/name", {{"uuid", "A"}}},
      {"null:///n?empty=", "null", "", 0, "/n", {{"empty", ""}}},
  };
  for (auto& c : cases) {
    auto u = Uri::Parse(c.text);
    ASSERT_TRUE(u.ok()) << c.text << ": " << u.status();
    EXPECT_EQ(u->scheme, c.scheme) << c.text;
    EXPECT_EQ(u->host, c.host) << c.text;
    EXPECT_EQ(u->port.has_value(), c.port != 0) << c.text;
    if (c.port) {
      EXPECT_EQ(*u->port, c.port) << c.text;
    }
    EXPECT_EQ(u->path, c.path) << c.text;
    EXPECT_EQ(u->query, c.query) << c.text;
    EXPECT_EQ(u->text, c.text);
  }
}

struct Bad {
  const char* text;
  const char* fragment;  // must appear in the error message
};

TEST(Uri, RejectsMalformedUrisNamingTheProblem) {
  const Bad cases[] = {
      {"", "empty"},
      {"/dev/sdb", "missing '://'"},
      {"uring:/dev/sdb", "missing '://'"},
      {"://x", "missing scheme"},
      {"1ring:///x", "must start with a letter"},
      {"ur_ing:///x", "invalid character '_'"},
      {"uring:///x#frag", "fragments"},
      {"malloc:///m0?", "not followed by any query parameter"},
      {"malloc:///m0?size_mb=1&", "stray '&'"},
      {"malloc:///m0?&size_mb=1", "stray '&'"},
      {"malloc:///m0?size_mb", "'size_mb' has no value"},
      {"malloc:///m0?=5", "empty name"},
      {"malloc:///m0?size_mb=1&size_mb=2", "'size_mb' is given twice"},
      {"malloc:///m0?size_mb=%zz", "malformed percent-escape"},
      {"malloc:///m0?size_mb=%4", "malformed percent-escape"},
      {"uring:///a b", "space or control character"},
      {"nvmf://user@host/x", "user information"},
      {"nvmf://host:/x", "not followed by a port"},
      {"nvmf://host:0/x", "port '0'"},
      {"nvmf://host:65536/x", "port '65536'"},
      {"nvmf://host:12ab/x", "port '12ab'"},
      {"nvmf://:8420/x", "without a host"},
      {"nvmf://[fe80::1/x", "closing ']'"},
      {"nvmf://[zz::1]/x", "not a valid IPv6"},
      {"nvmf://[::1]x/y", "unexpected 'x'"},
      {"nvmf://ho$t/x", "invalid characters"},
  };
  for (auto& c : cases) {
    auto u = Uri::Parse(c.text);
    ASSERT_FALSE(u.ok()) << "accepted: " << c.text;
    EXPECT_EQ(u.code(), Errc::kInval);
    EXPECT_NE(u.status().message().find(c.fragment), std::string::npos)
        << c.text << " -> " << u.status() << " (wanted '" << c.fragment << "')";
    EXPECT_NE(u.status().message().find(std::string("'") + c.text + "'"), std::string::npos) << u.status();
  }
}

TEST(UriQuery, UnknownParameterIsNamedWithTheAcceptedOnes) {
  auto u = *Uri::Parse("malloc:///m0?size_mb=1&sise=2");
  auto q = UriQuery::Make(u, {"size_mb", "blk_size"});
  ASSERT_FALSE(q.ok());
  EXPECT_NE(q.status().message().find("unknown query parameter 'sise'"), std::string::npos) << q.status();
  EXPECT_NE(q.status().message().find("accepted: size_mb, blk_size"), std::string::npos) << q.status();
  auto none = UriQuery::Make(*Uri::Parse("x:///a?b=1"), {});
  EXPECT_NE(none.status().message().find("takes no parameters"), std::string::npos);
}

TEST(UriQuery, TypedValues) {
  auto u = *Uri::Parse("x:///a?n=42&big=99999999999999999999&neg=-1&b=true&f=0&bad=maybe&c=4096&s=hi");
  auto q = *UriQuery::Make(u, {"n", "big", "neg", "b", "f", "bad", "c", "s", "absent"});
  EXPECT_EQ(**q.u64("n"), 42u);
  EXPECT_FALSE(q.u64("absent")->has_value());
  EXPECT_NE(q.u64("big").status().message().find("non-negative integer"), std::string::npos);
  EXPECT_NE(q.u64("neg").status().message().find("'neg' has value '-1'"), std::string::npos);
  EXPECT_NE(q.u64("n", 0, 10).status().message().find("from 0 to 10"), std::string::npos);
  EXPECT_TRUE(**q.boolean("b"));
  EXPECT_FALSE(**q.boolean("f"));
  EXPECT_NE(q.boolean("bad").status().message().find("true or false"), std::string::npos);
  EXPECT_EQ(**q.choice("c", {"512", "4096"}), "4096");
  EXPECT_NE(q.choice("s", {"512", "4096"}).status().message().find("512 or 4096"), std::string::npos);
  EXPECT_EQ(*q.str("s"), "hi");
}

TEST(Uri, Authority) {
  EXPECT_EQ(Uri::Parse("nvmf://[::1]:8420/x")->authority(), "[::1]:8420");
  EXPECT_EQ(Uri::Parse("nvmf://h/x")->authority(), "h");
}

}  // namespace
}  // namespace tern
