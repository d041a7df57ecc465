#include "metrics/http_session.h"

#include <gtest/gtest.h>

#include <string>

#include "metrics/exposition.h"

namespace tern::metrics {
namespace {

class HttpSessionTest : public ::testing::Test {
 protected:
  MetricsHandler handler = [this]() -> Result<std::string> {
    ++calls;
    if (fail) return Status(Errc::kShutdown, "engine stopping");
    return std::string("page\n");
  };
  int calls = 0;
  bool fail = false;
  HttpSession s{handler, 8192};

  std::string drain() {
    std::string out(s.pending());
    s.consume(out.size());
    return out;
  }
};

const std::string kOk =
    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: 5\r\n"
    "Connection: keep-alive\r\n\r\npage\n";

TEST_F(HttpSessionTest, GetMetrics) {
  s.on_data("GET /metrics HTTP/1.1\r\nHost: a\r\n\r\n");
  EXPECT_EQ(drain(), kOk);
  EXPECT_EQ(calls, 1);
  EXPECT_FALSE(s.closing());
  EXPECT_EQ(s.requests(), 1u);
  EXPECT_EQ(s.errors(), 0u);
}

TEST_F(HttpSessionTest, ByteAtATime) {
  std::string req = "GET /metrics HTTP/1.1\r\n\r\n";
  for (char c : req) s.on_data(std::string_view(&c, 1));
  EXPECT_EQ(drain(), kOk);
}

TEST_F(HttpSessionTest, HeadHasTheLengthButNoBody) {
  s.on_data("HEAD /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(drain(), kOk.substr(0, kOk.size() - 5));
  EXPECT_EQ(calls, 1);
}

TEST_F(HttpSessionTest, IndexNotFoundAndMethodNotAllowed) {
  s.on_data("GET / HTTP/1.1\r\n\r\n");
  std::string index = drain();
  EXPECT_TRUE(index.starts_with("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n"));
  EXPECT_NE(index.find("href=\"/metrics\""), std::string::npos);
  s.on_data("GET /metrics/ HTTP/1.1\r\n\r\n");
  EXPECT_EQ(drain(),
            "HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 10\r\n"
            "Connection: keep-alive\r\n\r\nNot Found\n");
  s.on_data("DELETE /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(drain(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 19\r\n"
            "Allow: GET, HEAD\r\nConnection: keep-alive\r\n\r\nMethod Not Allowed\n");
  EXPECT_EQ(calls, 0);
  EXPECT_FALSE(s.closing());
  EXPECT_EQ(s.errors(), 2u);
}

TEST_F(HttpSessionTest, GarbageIsAnswered400AndTheRestIgnored) {
  s.on_data("hello there\r\n\r\nGET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_EQ(drain(),
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 12\r\n"
            "Connection: close\r\n\r\nBad Request\n");
  EXPECT_TRUE(s.closing());
  s.on_data("GET /metrics HTTP/1.1\r\n\r\n");
  EXPECT_TRUE(s.pending().empty());
  EXPECT_EQ(calls, 0);
}

TEST_F(HttpSessionTest, OversizedHeadIs431) {
  s.on_data("GET /metrics HTTP/1.1\r\n");
  for (int i = 0; i < 100 && !s.closing(); ++i) s.on_data("X-Filler: " + std::string(100, 'x') + "\r\n");
  EXPECT_TRUE(drain().starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
  EXPECT_TRUE(s.closing());
}

TEST_F(HttpSessionTest, ConnectionCloseAndBodiesEndTheConnection) {
  s.on_data("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n");
  EXPECT_NE(drain().find("Connection: close\r\n"), std::string::npos);
  EXPECT_TRUE(s.closing());

  HttpSession b(handler, 8192);
  b.on_data("POST /metrics HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET ");
  std::string out(b.pending());
  EXPECT_TRUE(out.starts_with("HTTP/1.1 405"));
  EXPECT_NE(out.find("Connection: close\r\n"), std::string::npos);
  EXPECT_TRUE(b.closing());
}

TEST_F(HttpSessionTest, PipelinedRequestsAreAnsweredOneAtATime) {
  s.on_data("GET /metrics HTTP/1.1\r\n\r\nHEAD /metrics HTTP/1.1\r\n\r\nGET /nope HTTP/1.1\r\n\r\n");
  EXPECT_EQ(calls, 1);  // the second waits until the first response is sent
  EXPECT_EQ(s.pending(), kOk);
  s.consume(10);
  EXPECT_EQ(calls, 1);
  std::string rest = drain();
  EXPECT_EQ(rest, kOk.substr(10));
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(drain(), kOk.substr(0, kOk.size() - 5));
  EXPECT_TRUE(drain().starts_with("HTTP/1.1 404"));
  EXPECT_TRUE(s.pending().empty());
  EXPECT_FALSE(s.has_buffered_input());
}

TEST_F(HttpSessionTest, EofAnswersWhatIsCompleteAndDropsTheRest) {
  s.on_data("GET /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\nGET /met");
  s.on_eof();
  EXPECT_FALSE(s.closing());  // two complete requests still to answer
  EXPECT_EQ(drain(), kOk);
  EXPECT_EQ(drain(), kOk);
  EXPECT_TRUE(s.closing());
  EXPECT_TRUE(s.pending().empty());
  EXPECT_EQ(calls, 2);
}

TEST_F(HttpSessionTest, HandlerErrorIs500) {
  fail = true;
  s.on_data("GET /metrics HTTP/1.1\r\n\r\n");
  std::string out = drain();
  EXPECT_TRUE(out.starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
  EXPECT_NE(out.find("engine stopping"), std::string::npos);
  EXPECT_FALSE(s.closing());
}

TEST_F(HttpSessionTest, HandlerExceptionIs500) {
  MetricsHandler throwing = []() -> Result<std::string> { throw std::runtime_error("boom"); };
  HttpSession t(throwing, 8192);
  t.on_data("GET /metrics HTTP/1.1\r\n\r\n");
  std::string out(t.pending());
  EXPECT_TRUE(out.starts_with("HTTP/1.1 500"));
  EXPECT_NE(out.find("boom"), std::string::npos);
}

TEST_F(HttpSessionTest, Http2PrefaceIs505) {
  s.on_data("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
  EXPECT_TRUE(drain().starts_with("HTTP/1.1 505 HTTP Version Not Supported\r\n"));
  EXPECT_TRUE(s.closing());
}

}  // namespace
}  // namespace tern::metrics
