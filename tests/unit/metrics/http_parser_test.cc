#include "metrics/http_parser.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tern::metrics {
namespace {

constexpr size_t kMax = 8192;

ParseResult parse(std::string_view in) { return parse_http_request(in, kMax); }

int error_of(std::string_view in) {
  ParseResult r = parse(in);
  return r.state == ParseState::kError ? r.error_status : 0;
}

TEST(HttpParser, SimpleGet) {
  std::string in = "GET /metrics HTTP/1.1\r\nHost: x:9502\r\nAccept: */*\r\n\r\nNEXT";
  ParseResult r = parse(in);
  ASSERT_EQ(r.state, ParseState::kRequest);
  EXPECT_EQ(r.consumed, in.size() - 4);
  EXPECT_EQ(r.request.method, "GET");
  EXPECT_EQ(r.request.target, "/metrics");
  EXPECT_EQ(r.request.path, "/metrics");
  EXPECT_EQ(r.request.minor_version, 1);
  EXPECT_TRUE(r.request.keep_alive);
  EXPECT_FALSE(r.request.has_body);
}

TEST(HttpParser, EveryPrefixOfAValidHeadIsIncomplete) {
  for (std::string in : {"GET /metrics HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                         "\r\n\nHEAD / HTTP/1.0\nX: y\n\n", "GET / HTTP/1.1\r\n\r\n"}) {
    ASSERT_EQ(parse(in).state, ParseState::kRequest) << in;
    for (size_t n = 0; n < in.size(); ++n) {
      EXPECT_EQ(parse(in.substr(0, n)).state, ParseState::kIncomplete) << n << " of " << in;
    }
  }
}

TEST(HttpParser, ConnectionSemantics) {
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").request.keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nconnection: Keep-Alive, CLOSE\r\n\r\n").request.keep_alive);
  EXPECT_FALSE(parse("GET / HTTP/1.0\r\n\r\n").request.keep_alive);
  EXPECT_TRUE(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").request.keep_alive);
  EXPECT_TRUE(parse("GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n").request.keep_alive);
  EXPECT_EQ(parse("GET / HTTP/1.0\r\n\r\n").request.minor_version, 0);
}

TEST(HttpParser, Paths) {
  EXPECT_EQ(parse("GET /metrics?x=1 HTTP/1.1\r\n\r\n").request.path, "/metrics");
  EXPECT_EQ(parse("GET /metrics#frag HTTP/1.1\r\n\r\n").request.path, "/metrics");
  EXPECT_EQ(parse("GET http://h:9502/metrics?a HTTP/1.1\r\n\r\n").request.path, "/metrics");
  EXPECT_EQ(parse("GET HTTP://h HTTP/1.1\r\n\r\n").request.path, "/");
  EXPECT_EQ(parse("OPTIONS * HTTP/1.1\r\n\r\n").request.path, "*");
  EXPECT_EQ(parse("GET /%6Detrics HTTP/1.1\r\n\r\n").request.path, "/%6Detrics");  // no decoding
}

TEST(HttpParser, LenientWhereHarmless) {
  EXPECT_EQ(parse("GET / HTTP/1.1\n\n").state, ParseState::kRequest);
  EXPECT_EQ(parse("\r\n\r\nGET / HTTP/1.1\r\n\r\n").state, ParseState::kRequest);
  EXPECT_EQ(parse("get / HTTP/1.1\r\n\r\n").request.method, "get");  // a token; the router says 405
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nX:\r\nY:  spaced value \t\r\n\r\n").state, ParseState::kRequest);
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nUser-Agent: caf\xC3\xA9\r\n\r\n").state, ParseState::kRequest);
}

TEST(HttpParser, Malformed) {
  const std::vector<std::string> cases = {
           "GET\r\n\r\n", "GET /\r\n\r\n", "GET  / HTTP/1.1\r\n\r\n", "GET / HTTP/1.1 \r\n\r\n",
           "GET / HTTP/1.10\r\n\r\n", "GET / HTTP/11\r\n\r\n", "GET / http/1.1\r\n\r\n", "GET / FTP/1.1\r\n\r\n",
           "G(T / HTTP/1.1\r\n\r\n", " GET / HTTP/1.1\r\n\r\n", "GET /\x01 HTTP/1.1\r\n\r\n",
           "GET /\x80 HTTP/1.1\r\n\r\n", "GET / HTTP/1.1\rX\r\n\r\n",
           "GET / HTTP/1.1\r\nNoColon\r\n\r\n", "GET / HTTP/1.1\r\n: empty name\r\n\r\n",
           "GET / HTTP/1.1\r\nName : v\r\n\r\n", "GET / HTTP/1.1\r\nA: b\r\n folded\r\n\r\n",
           "GET / HTTP/1.1\r\nA: b\rc\r\n\r\n", std::string("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n", sizeof("GET / HTTP/1.1\r\nA: b\0c\r\n\r\n") - 1),
           "GET / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", "GET / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
           "GET / HTTP/1.1\r\nContent-Length:\r\n\r\n",
           "GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
  };
  for (const std::string& in : cases) {
    EXPECT_EQ(error_of(in), 400) << in;
  }
}

TEST(HttpParser, GarbageIsRefusedBeforeALineEnds) {
  EXPECT_EQ(error_of("\x16\x03\x01\x02\x00"), 400);  // a TLS ClientHello
  EXPECT_EQ(error_of("{\"json\""), 400);
  EXPECT_EQ(error_of(" "), 400);
  EXPECT_EQ(parse("GET /metr").state, ParseState::kIncomplete);
}

TEST(HttpParser, OtherVersionsAre505) {
  EXPECT_EQ(error_of("GET / HTTP/2.0\r\n\r\n"), 505);
  EXPECT_EQ(error_of("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), 505);
  EXPECT_EQ(error_of("GET / HTTP/0.9\r\n\r\n"), 505);
}

TEST(HttpParser, Bodies) {
  EXPECT_TRUE(parse("POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello").request.has_body);
  EXPECT_FALSE(parse("GET / HTTP/1.1\r\nContent-Length: 000\r\n\r\n").request.has_body);
  EXPECT_TRUE(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").request.has_body);
  EXPECT_TRUE(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n").request.has_body);
  EXPECT_EQ(parse("GET / HTTP/1.1\r\nContent-Length: 7\r\ncontent-length: 7\r\n\r\n").state, ParseState::kRequest);
}

TEST(HttpParser, SizeLimits) {
  std::string head = "GET / HTTP/1.1\r\nX: " + std::string(100, 'a') + "\r\n\r\n";
  EXPECT_EQ(parse_http_request(head, head.size()).state, ParseState::kRequest);
  EXPECT_EQ(parse_http_request(head, head.size() - 1).error_status, 431);
  // Incomplete and already at the limit: no point waiting for more.
  std::string partial = "GET / HTTP/1.1\r\nX: " + std::string(200, 'a');
  EXPECT_EQ(parse_http_request(partial, 300).state, ParseState::kIncomplete);
  EXPECT_EQ(parse_http_request(partial, partial.size()).error_status, 431);
  EXPECT_EQ(parse_http_request(std::string(300, '\n'), 100).error_status, 431);
  EXPECT_EQ(parse_http_request(std::string(99, '\n') + "\r\n", 100).error_status, 431);
  std::string many = "GET / HTTP/1.1\r\n";
  for (size_t i = 0; i <= kMaxHeaderLines; ++i) many += "A: b\r\n";
  EXPECT_EQ(error_of(many + "\r\n"), 431);
}

}  // namespace
}  // namespace tern::metrics
