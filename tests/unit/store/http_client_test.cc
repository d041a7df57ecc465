// HttpClient on a real reactor against a scripted loopback server: keep-alive reuse, chunked bodies in
// pieces, connection close, timeouts (real and manual clock), malformed answers, refused connections,
// the connection FIFO, streams, cancellation and shutdown.
#include "store/http_client.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "reactor/clock.h"
#include "script_server.h"
#include "store_env.h"

namespace tern::store {
namespace {

using test::eventually;
using test::ms;
using test::ScriptServer;

class HttpEnv {
 public:
  explicit HttpEnv(HttpClientOptions o = {}, Clock* clock = nullptr) {
    set = test::start_primary(clock);
    http = std::make_unique<HttpClient>(o);
  }
  ~HttpEnv() {
    if (!set) return;
    set->run_sync(0, [this]() -> Task<void> { co_await http->close(); });
    set->run_sync(0, [this] { http.reset(); });
    set->stop();
  }
  Result<HttpResponse> post(const std::string& endpoint, const std::string& path, const std::string& body,
                            uint64_t timeout_ns, bool* sent = nullptr) {
    auto ep = HttpEndpoint::Parse(endpoint);
    EXPECT_TRUE(ep.ok()) << ep.status();
    return set->run_sync(0, [&]() -> Task<Result<HttpResponse>> {
      HttpRequest req;
      req.path = path;
      req.body = body;
      co_return co_await http->request(*ep, req, timeout_ns, sent);
    });
  }

  std::unique_ptr<ReactorSet> set;
  std::unique_ptr<HttpClient> http;
};

// A port nobody listens on: bound once, then released.
uint16_t unused_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  EXPECT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len), 0);
  ::close(fd);
  return ntohs(a.sin_port);
}

TEST(HttpEndpoint, Parse) {
  auto a = HttpEndpoint::Parse("127.0.0.1:2379");
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->host, "127.0.0.1");
  EXPECT_EQ(a->port, 2379);
  EXPECT_EQ(a->to_string(), "127.0.0.1:2379");
  auto b = HttpEndpoint::Parse("http://[::1]:2380/");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->host, "::1");
  EXPECT_EQ(b->to_string(), "[::1]:2380");
  EXPECT_TRUE(HttpEndpoint::Parse("localhost:1").ok());
  auto https = HttpEndpoint::Parse("https://127.0.0.1:2379");
  EXPECT_NE(https.status().message().find("only http:// is supported"), std::string::npos) << https.status();
  auto noport = HttpEndpoint::Parse("127.0.0.1");
  EXPECT_NE(noport.status().message().find("no port"), std::string::npos) << noport.status();
  auto name = HttpEndpoint::Parse("etcd.example:2379");
  EXPECT_NE(name.status().message().find("host names are not resolved"), std::string::npos) << name.status();
  EXPECT_FALSE(HttpEndpoint::Parse("127.0.0.1:2379/v3").ok());
}

TEST(HttpClient, ContentLengthAndKeepAlive) {
  ScriptServer server([](const std::string&, unsigned) {
    ScriptServer::Reply r;
    r.pieces = {ScriptServer::ok("{\"n\":1}")};
    return r;
  });
  HttpEnv env;
  for (int i = 0; i < 3; ++i) {
    auto r = env.post(server.endpoint(), "/v3/kv/range", "{\"key\":\"Zm9v\"}", ms(2000));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->status(), 200);
    EXPECT_EQ(r->body, "{\"n\":1}");
    ASSERT_NE(r->head.header("content-type"), nullptr);
  }
  EXPECT_EQ(server.accepted(), 1u);  // one connection, kept alive
  EXPECT_EQ(env.http->stats().connections_opened, 1u);
  EXPECT_EQ(env.http->stats().requests_on_reused_connections, 2u);
  auto log = server.request_log();
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0], "POST /v3/kv/range HTTP/1.1\r\nHost: " + server.endpoint() +
                        "\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"key\":\"Zm9v\"}");
}

TEST(HttpClient, ChunkedBodyInSmallPieces) {
  const std::string wire =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
      "4;ext=\"a;b\"\r\nabcd\r\n3\r\nefg\r\n0\r\nX-Trailer: t\r\n\r\n";
  ScriptServer server([&](const std::string&, unsigned) {
    ScriptServer::Reply r;
    for (size_t i = 0; i < wire.size(); i += 3) r.pieces.push_back(wire.substr(i, 3));
    r.pause_ms = 1;
    return r;
  });
  HttpEnv env;
  for (int i = 0; i < 2; ++i) {
    auto r = env.post(server.endpoint(), "/", "{}", ms(5000));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->body, "abcdefg");
    EXPECT_TRUE(r->head.chunked);
  }
  EXPECT_EQ(server.accepted(), 1u);
}

TEST(HttpClient, ConnectionCloseAndCloseDelimitedBodies) {
  ScriptServer server([](const std::string&, unsigned conn) {
    ScriptServer::Reply r;
    if (conn == 0) {
      r.pieces = {ScriptServer::ok("first", "Connection: close\r\n")};
    } else {
      r.pieces = {"HTTP/1.1 200 OK\r\n\r\nuntil", " the end"};
      r.pause_ms = 5;
    }
    r.close_after = true;
    return r;
  });
  HttpEnv env;
  auto a = env.post(server.endpoint(), "/", "", ms(2000));
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_EQ(a->body, "first");
  auto b = env.post(server.endpoint(), "/", "", ms(2000));
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->body, "until the end");
  EXPECT_EQ(server.accepted(), 2u);
}

TEST(HttpClient, TimeoutFailsTheRequestAndClosesItsConnection) {
  std::atomic<bool> answer{false};
  ScriptServer server([&](const std::string&, unsigned) {
    ScriptServer::Reply r;
    if (answer) {
      r.pieces = {ScriptServer::ok("late but fine")};
    } else {
      r.silent = true;
    }
    return r;
  });
  HttpEnv env;
  auto t0 = std::chrono::steady_clock::now();
  auto r = env.post(server.endpoint(), "/", "", ms(200));
  double took = test::seconds_since(t0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kTimedOut);
  EXPECT_EQ(r.status().message(), "timed out after 200 ms");
  EXPECT_GE(took, 0.19);
  EXPECT_LT(took, 2.0);
  // The connection is closed: a late answer must never be taken for the next request's.
  EXPECT_TRUE(eventually([&] { return server.client_closes() == 1; }));
  answer = true;
  auto again = env.post(server.endpoint(), "/", "", ms(2000));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->body, "late but fine");
  EXPECT_EQ(server.accepted(), 2u);
}

TEST(HttpClient, TimeoutFollowsTheReactorClock) {
  ManualClock clock;
  ScriptServer server([](const std::string&, unsigned) {
    ScriptServer::Reply r;
    r.silent = true;
    return r;
  });
  HttpEnv env({}, &clock);
  std::atomic<bool> done{false};
  Result<HttpResponse> result = Status(Errc::kIo);
  std::thread caller([&] {
    result = env.post(server.endpoint(), "/", "", 30'000'000'000ull);  // 30 s on the manual clock
    done = true;
  });
  ASSERT_TRUE(eventually([&] { return server.requests() == 1; }));
  // Real time passes, the manual clock does not: the request waits.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(done.load());
  clock.advance(29'999'000'000ull);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_FALSE(done.load());
  clock.advance(1'000'000ull);
  EXPECT_TRUE(eventually([&] { return done.load(); }));
  caller.join();
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.code(), Errc::kTimedOut);
  EXPECT_EQ(result.status().message(), "timed out after 30000 ms");
}

TEST(HttpClient, MalformedAnswersAreProtocolErrors) {
  ScriptServer server([](const std::string& req, unsigned) {
    ScriptServer::Reply r;
    if (req.find("/conflict") != std::string::npos) {
      r.pieces = {"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello"};
    } else if (req.find("/truncated") != std::string::npos) {
      r.pieces = {"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"};
      r.close_after = true;
    } else if (req.find("/nothing") != std::string::npos) {
      r.close_after = true;
    } else {
      r.pieces = {"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"};
    }
    return r;
  });
  HttpEnv env;
  auto a = env.post(server.endpoint(), "/conflict", "", ms(2000));
  EXPECT_EQ(a.code(), Errc::kProto);
  EXPECT_EQ(a.status().message(), "malformed HTTP response: conflicting Content-Length values 5 and 6");
  auto b = env.post(server.endpoint(), "/truncated", "", ms(2000));
  EXPECT_EQ(b.code(), Errc::kConnReset);
  EXPECT_EQ(b.status().message(), "the connection closed after 3 of 10 body bytes");
  auto c = env.post(server.endpoint(), "/nothing", "", ms(2000));
  EXPECT_EQ(c.code(), Errc::kConnReset);
  EXPECT_EQ(c.status().message(), "the server closed the connection before answering");
  // Bytes after a complete response: the answer stands, the connection is not reused.
  unsigned before = server.accepted();
  auto d = env.post(server.endpoint(), "/extra", "", ms(2000));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->body, "ok");
  auto e = env.post(server.endpoint(), "/extra", "", ms(2000));
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(server.accepted(), before + 2);
}

TEST(HttpClient, ConnectionRefused) {
  HttpEnv env;
  bool sent = true;
  auto r = env.post("127.0.0.1:" + std::to_string(unused_port()), "/", "", ms(2000), &sent);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kConnRefused);
  EXPECT_EQ(r.status().message(), "connection refused");
  EXPECT_FALSE(sent);
}

TEST(HttpClient, RequestsQueueForABusyConnection) {
  ScriptServer server([](const std::string& req, unsigned) {
    ScriptServer::Reply r;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    r.pieces = {ScriptServer::ok(req.substr(req.find("\r\n\r\n") + 4))};
    return r;
  });
  HttpClientOptions o;
  o.max_connections_per_endpoint = 1;
  HttpEnv env(o);
  auto ep = HttpEndpoint::Parse(server.endpoint());
  ASSERT_TRUE(ep.ok());
  auto bodies = env.set->run_sync(0, [&]() -> Task<std::vector<std::string>> {
    std::vector<HttpRequest> reqs(5);
    std::vector<Task<Result<HttpResponse>>> tasks;
    for (size_t i = 0; i < reqs.size(); ++i) {
      reqs[i].body = "req" + std::to_string(i);
      tasks.push_back(env.http->request(*ep, reqs[i], ms(5000)));
    }
    auto results = co_await when_all(std::move(tasks));
    std::vector<std::string> out;
    for (auto& r : results) out.push_back(r.ok() ? r->body : r.status().ToString());
    co_return out;
  });
  EXPECT_EQ(bodies, (std::vector<std::string>{"req0", "req1", "req2", "req3", "req4"}));
  EXPECT_EQ(server.accepted(), 1u);
}

TEST(HttpClient, QueuedRequestTimesOutWaitingForAConnection) {
  ScriptServer server([](const std::string&, unsigned) {
    ScriptServer::Reply r;
    r.silent = true;
    return r;
  });
  HttpClientOptions o;
  o.max_connections_per_endpoint = 1;
  HttpEnv env(o);
  auto ep = HttpEndpoint::Parse(server.endpoint());
  ASSERT_TRUE(ep.ok());
  auto codes = env.set->run_sync(0, [&]() -> Task<std::vector<Errc>> {
    HttpRequest req;
    std::vector<Task<Result<HttpResponse>>> tasks;
    tasks.push_back(env.http->request(*ep, req, ms(300)));
    tasks.push_back(env.http->request(*ep, req, ms(100)));  // waits for the first one's connection
    auto results = co_await when_all(std::move(tasks));
    co_return std::vector<Errc>{results[0].code(), results[1].code()};
  });
  EXPECT_EQ(codes, (std::vector<Errc>{Errc::kTimedOut, Errc::kTimedOut}));
  EXPECT_EQ(server.requests(), 1u);
}

TEST(HttpClient, StreamDeliversChunksAsTheyArrive) {
  std::atomic<int> delivered{0};
  ScriptServer server([&](const std::string&, unsigned) {
    ScriptServer::Reply r;
    r.pieces = {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfir", "st\r\n", "6\r\nsecond\r\n",
                "0\r\n\r\n"};
    // The second chunk leaves only once the client has the first: it is delivered as it arrives.
    r.before_piece = [&](size_t i) {
      if (i == 2) eventually([&] { return delivered.load() >= 1; });
    };
    return r;
  });
  HttpEnv env;
  auto ep = HttpEndpoint::Parse(server.endpoint());
  ASSERT_TRUE(ep.ok());
  auto got = env.set->run_sync(0, [&]() -> Task<std::vector<std::string>> {
    HttpRequest req;
    req.path = "/v3/watch";
    std::vector<std::string> out;
    auto s = co_await env.http->open_stream(*ep, req, ms(2000));
    if (!s.ok()) {
      out.push_back(s.status().ToString());
      co_return out;
    }
    EXPECT_EQ((*s)->head().status, 200);
    while (true) {
      auto piece = co_await (*s)->next();
      if (!piece.ok()) {
        out.push_back(piece.status().ToString());
        break;
      }
      if (!*piece) break;
      out.push_back(**piece);
      delivered++;
    }
    co_return out;
  });
  EXPECT_EQ(got, (std::vector<std::string>{"first", "second"}));
}

TEST(HttpClient, StreamCancelAndShutdown) {
  ScriptServer server([](const std::string&, unsigned) {
    ScriptServer::Reply r;
    r.pieces = {"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"};  // then nothing
    return r;
  });
  HttpEnv env;
  auto ep = HttpEndpoint::Parse(server.endpoint());
  ASSERT_TRUE(ep.ok());
  auto code = env.set->run_sync(0, [&]() -> Task<Errc> {
    HttpRequest req;
    auto s = co_await env.http->open_stream(*ep, req, ms(2000));
    if (!s.ok()) co_return s.code();
    HttpStream* stream = s->get();
    Timer cancel([stream] { stream->cancel(); });
    cancel.arm(ms(50));
    auto piece = co_await stream->next();
    co_return piece.code();
  });
  EXPECT_EQ(code, Errc::kCanceled);

  // Shutdown fails what is in progress: a waiting request and a stream.
  auto codes = env.set->run_sync(0, [&]() -> Task<std::vector<Errc>> {
    HttpRequest req;
    auto s = co_await env.http->open_stream(*ep, req, ms(2000));
    if (!s.ok()) co_return std::vector<Errc>{s.code()};
    std::vector<Errc> out(2, Errc::kOk);
    TaskScope local("test");
    local.spawn([](HttpStream* st, Errc* e) -> Task<void> { *e = (co_await st->next()).code(); }(s->get(), &out[0]));
    HttpClient* http = env.http.get();
    local.spawn([](HttpClient* h, const HttpEndpoint* e, Errc* code) -> Task<void> {
      HttpRequest r;
      r.path = "/hangs";
      *code = (co_await h->request(*e, r, 10'000'000'000ull)).code();
    }(http, &*ep, &out[1]));
    co_await Reactor::sleep_for(ms(50));
    http->shutdown();
    co_await local.close();
    s->reset();
    co_return out;
  });
  EXPECT_EQ(codes, (std::vector<Errc>{Errc::kShutdown, Errc::kShutdown}));
}

}  // namespace
}  // namespace tern::store
