// The metrics HTTP server over real loopback sockets.
#include "metrics/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>
#include <string>
#include <thread>

#include "common/clock.h"
#include "metrics/exposition.h"

namespace tern::metrics {
namespace {

using namespace std::chrono_literals;

uint64_t ms_since(uint64_t t0) { return (now_ns() - t0) / 1'000'000; }

template <typename F>
bool wait_until(F f, uint64_t timeout_ms = 5000) {
  uint64_t t0 = now_ns();
  while (!f()) {
    if (ms_since(t0) > timeout_ms) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers;  // lower-case names
  std::string body;
};

// A blocking test client with a receive timeout, so a broken server fails the test instead of hanging it.
class Client {
 public:
  explicit Client(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  ~Client() { close(); }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool send(std::string_view s) {
    while (!s.empty()) {
      ssize_t n = ::send(fd_, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      s.remove_prefix(size_t(n));
    }
    return true;
  }

  // Reads one response; `head` for a HEAD request (no body follows the headers).
  Response read_response(bool head = false) {
    Response r;
    size_t end;
    while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return r;
    }
    std::string headers = buf_.substr(0, end + 2);
    buf_.erase(0, end + 4);
    r.status = std::stoi(headers.substr(9, 3));
    size_t pos = headers.find("\r\n") + 2;
    while (pos < headers.size()) {
      size_t eol = headers.find("\r\n", pos);
      std::string line = headers.substr(pos, eol - pos);
      size_t colon = line.find(':');
      std::string name = line.substr(0, colon);
      for (char& c : name) c = char(std::tolower(c));
      r.headers[name] = line.substr(colon + 2);
      pos = eol + 2;
    }
    size_t len = head ? 0 : std::stoul(r.headers["content-length"]);
    while (buf_.size() < len) {
      if (!fill()) return Response();
    }
    r.body = buf_.substr(0, len);
    buf_.erase(0, len);
    return r;
  }

  // True if the server closed the connection (EOF or reset) with nothing more to read.
  bool closed_by_peer() {
    char c;
    ssize_t n = ::recv(fd_, &c, 1, 0);
    return n == 0 || (n < 0 && errno == ECONNRESET);
  }

  // True if nothing arrives within `ms`.
  bool silent_for(int ms) {
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, ms) == 0;
  }

 private:
  bool fill() {
    char tmp[65536];
    ssize_t n = ::recv(fd_, tmp, sizeof(tmp), 0);
    if (n <= 0) return false;
    buf_.append(tmp, size_t(n));
    return true;
  }

  int fd_ = -1;
  bool connected_ = false;
  std::string buf_;
};

class HttpServerTest : public ::testing::Test {
 protected:
  void start(MetricsHttpServerOptions opt = {}) {
    auto s = MetricsHttpServer::Start("127.0.0.1", 0, [this]() -> Result<std::string> {
      handler_thread = std::this_thread::get_id();
      ++calls;
      if (fail) return Status(Errc::kShutdown, "engine stopping");
      return page;
    }, opt);
    ASSERT_TRUE(s.ok()) << s.status();
    server = std::move(*s);
    ASSERT_NE(server->port(), 0);
  }

  std::string page = "# HELP up Up.\n# TYPE up gauge\nup 1\n";
  std::atomic<int> calls{0};
  std::atomic<bool> fail{false};
  std::thread::id handler_thread;
  std::unique_ptr<MetricsHttpServer> server;
};

TEST_F(HttpServerTest, GetMetricsOnTheServerThread) {
  start();
  Client c(server->port());
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n"));
  Response r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_EQ(r.headers["content-length"], std::to_string(page.size()));
  EXPECT_EQ(r.body, page);
  EXPECT_EQ(calls, 1);
  EXPECT_NE(handler_thread, std::this_thread::get_id());
  EXPECT_EQ(server->stats().requests, 1u);
  EXPECT_EQ(server->stats().connections, 1u);
}

TEST_F(HttpServerTest, KeepAliveServesHeadIndex404And405OnOneConnection) {
  start();
  Client c(server->port());
  ASSERT_TRUE(c.send("HEAD /metrics HTTP/1.1\r\n\r\n"));
  Response head = c.read_response(true);
  EXPECT_EQ(head.status, 200);
  EXPECT_EQ(head.headers["content-length"], std::to_string(page.size()));
  EXPECT_EQ(head.body, "");
  ASSERT_TRUE(c.send("GET / HTTP/1.1\r\n\r\n"));
  Response index = c.read_response();
  EXPECT_EQ(index.status, 200);
  EXPECT_NE(index.body.find("/metrics"), std::string::npos);
  ASSERT_TRUE(c.send("GET /favicon.ico HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.read_response().status, 404);
  ASSERT_TRUE(c.send("PUT /metrics HTTP/1.1\r\n\r\n"));
  Response put = c.read_response();
  EXPECT_EQ(put.status, 405);
  EXPECT_EQ(put.headers["allow"], "GET, HEAD");
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.read_response().body, page);  // HEAD sent no body: the stream is still in step
  EXPECT_EQ(calls, 2);
  EXPECT_EQ(server->stats().connections, 1u);
  EXPECT_EQ(server->stats().requests, 5u);
  EXPECT_EQ(server->stats().errors, 2u);
}

TEST_F(HttpServerTest, PipelinedRequestsInOneSegment) {
  start();
  Client c(server->port());
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\n\r\nGET /metrics HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.read_response().body, page);
  EXPECT_EQ(c.read_response().body, page);
  EXPECT_EQ(c.read_response().status, 404);
}

TEST_F(HttpServerTest, ConnectionCloseAndHttp10Close) {
  start();
  {
    Client c(server->port());
    ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"));
    Response r = c.read_response();
    EXPECT_EQ(r.body, page);
    EXPECT_EQ(r.headers["connection"], "close");
    EXPECT_TRUE(c.closed_by_peer());
  }
  {
    Client c(server->port());
    ASSERT_TRUE(c.send("GET /metrics HTTP/1.0\r\n\r\n"));
    EXPECT_EQ(c.read_response().body, page);
    EXPECT_TRUE(c.closed_by_peer());
  }
}

TEST_F(HttpServerTest, GarbageGets400AndClose) {
  start();
  for (std::string garbage : {std::string("\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11),
                              std::string("hello\r\n\r\n"), std::string("GET / HTTP/1.1\r\nBad Header\r\n\r\n")}) {
    Client c(server->port());
    ASSERT_TRUE(c.send(garbage));
    EXPECT_EQ(c.read_response().status, 400);
    EXPECT_TRUE(c.closed_by_peer());
  }
  // The server is still fine.
  Client c(server->port());
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.read_response().status, 200);
}

TEST_F(HttpServerTest, OversizedHeadGets431AndClose) {
  start();
  Client c(server->port());
  std::string big = "GET /metrics HTTP/1.1\r\n";
  while (big.size() < 20000) big += "X-Filler: " + std::string(200, 'f') + "\r\n";
  (void)c.send(big);  // the server may close before taking it all
  EXPECT_EQ(c.read_response().status, 431);
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(calls, 0);
}

TEST_F(HttpServerTest, RequestWithBodyIsAnsweredThenClosed) {
  start();
  Client c(server->port());
  ASSERT_TRUE(c.send("POST /metrics HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"));
  EXPECT_EQ(c.read_response().status, 405);
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(HttpServerTest, SilentClientIsClosedAfterTheReadTimeout) {
  MetricsHttpServerOptions opt;
  opt.read_timeout_ms = 200;
  start(opt);
  Client c(server->port());
  uint64_t t0 = now_ns();
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_GE(ms_since(t0), 150u);
  EXPECT_LT(ms_since(t0), 3000u);
  EXPECT_TRUE(wait_until([&] { return server->stats().timeouts == 1; }));
}

TEST_F(HttpServerTest, TricklingClientGainsNothing) {
  MetricsHttpServerOptions opt;
  opt.read_timeout_ms = 300;
  start(opt);
  Client c(server->port());
  uint64_t t0 = now_ns();
  std::string req = "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
  bool closed = false;
  for (char ch : req) {
    if (!c.send(std::string_view(&ch, 1))) break;
    if (!c.silent_for(50)) {
      closed = c.closed_by_peer();
      break;
    }
  }
  EXPECT_TRUE(closed);
  EXPECT_LT(ms_since(t0), 2000u);
  EXPECT_EQ(calls, 0);
}

TEST_F(HttpServerTest, IdleKeepAliveConnectionIsClosedAfterTheTimeout) {
  MetricsHttpServerOptions opt;
  opt.read_timeout_ms = 200;
  start(opt);
  Client c(server->port());
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(c.read_response().status, 200);
  uint64_t t0 = now_ns();
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_GE(ms_since(t0), 150u);
}

TEST_F(HttpServerTest, StopIsPromptWithIdleAndHalfSentClients) {
  start();  // default 5 s read timeout
  Client idle(server->port());
  Client half(server->port());
  ASSERT_TRUE(half.send("GET /metr"));
  Client done(server->port());
  ASSERT_TRUE(done.send("GET /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(done.read_response().status, 200);
  ASSERT_TRUE(wait_until([&] { return server->stats().connections == 3; }));
  uint64_t t0 = now_ns();
  server->Stop();
  EXPECT_LT(ms_since(t0), 100u);
  EXPECT_TRUE(idle.closed_by_peer());
  EXPECT_TRUE(half.closed_by_peer());
  server->Stop();  // idempotent
  // The port is free again once Stop returns.
  Client refused(server->port());
  EXPECT_FALSE(refused.connected());
}

TEST_F(HttpServerTest, PortInUseIsAClearError) {
  start();
  auto second = MetricsHttpServer::Start("127.0.0.1", server->port(), [] { return Result<std::string>("x"); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.code(), Errc(EADDRINUSE));
  std::string msg(second.status().message());
  EXPECT_NE(msg.find("127.0.0.1:" + std::to_string(server->port())), std::string::npos) << msg;
  EXPECT_NE(msg.find("in use"), std::string::npos) << msg;
  // After a stop, the same port can be bound again at once (SO_REUSEADDR past TIME_WAIT).
  uint16_t port = server->port();
  {
    Client c(port);
    ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n"));
    EXPECT_EQ(c.read_response().status, 200);
  }
  server->Stop();
  auto again = MetricsHttpServer::Start("127.0.0.1", port, [] { return Result<std::string>("x"); });
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST_F(HttpServerTest, BadAddressesAreRefused) {
  auto s = MetricsHttpServer::Start("metrics.example", 0, [] { return Result<std::string>("x"); });
  EXPECT_EQ(s.code(), Errc::kInval);
  auto t = MetricsHttpServer::Start("192.0.2.1", 0, [] { return Result<std::string>("x"); });  // not ours
  EXPECT_EQ(t.code(), Errc(EADDRNOTAVAIL)) << t.status();
  MetricsHttpServerOptions bad;
  bad.max_connections = 0;
  EXPECT_EQ(MetricsHttpServer::Start("127.0.0.1", 0, [] { return Result<std::string>("x"); }, bad).code(),
            Errc::kInval);
}

TEST_F(HttpServerTest, HandlerErrorIs500) {
  start();
  fail = true;
  Client c(server->port());
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\n\r\n"));
  Response r = c.read_response();
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find("engine stopping"), std::string::npos);
}

TEST_F(HttpServerTest, ConnectionsBeyondTheLimitWaitTheirTurn) {
  MetricsHttpServerOptions opt;
  opt.max_connections = 2;
  start(opt);
  Client a(server->port()), b(server->port());
  ASSERT_TRUE(wait_until([&] { return server->stats().connections == 2; }));
  Client c(server->port());  // completes in the kernel's backlog
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_TRUE(c.silent_for(200));
  a.close();
  EXPECT_EQ(c.read_response().status, 200);
  EXPECT_EQ(server->stats().connections, 3u);
}

TEST_F(HttpServerTest, LargePageToASlowReader) {
  page.assign(8 << 20, 'x');  // larger than the socket buffers: many partial sends
  start();
  Client c(server->port());
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\n\r\n"));
  std::this_thread::sleep_for(100ms);
  Response r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body.size(), page.size());
  EXPECT_EQ(r.body, page);
}

TEST_F(HttpServerTest, ReaderThatNeverReadsIsClosedAfterTheWriteTimeout) {
  page.assign(16 << 20, 'x');
  MetricsHttpServerOptions opt;
  opt.write_timeout_ms = 300;
  start(opt);
  Client c(server->port());
  int small = 4096;
  ::setsockopt(c.fd(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  ASSERT_TRUE(c.send("GET /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_TRUE(wait_until([&] { return server->stats().timeouts == 1; }));
  // Meanwhile, others are served.
  Client d(server->port());
  page = "small\n";  // the handler reads `page` on the server thread only while serving d
  ASSERT_TRUE(d.send("GET /metrics HTTP/1.1\r\n\r\n"));
  EXPECT_EQ(d.read_response().body, "small\n");
}

}  // namespace
}  // namespace tern::metrics
