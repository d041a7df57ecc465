#include "store/http_client.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <deque>

#include "common/check.h"
#include "common/log.h"
#include "common/uri.h"
#include "net/socket.h"
#include "reactor/reactor.h"
#include "reactor/timer.h"

namespace tern::store {

namespace {

// "Connection refused" -> "connection refused": these end up inside longer sentences.
std::string describe_errno(Errc e) {
  std::string s = std::strerror(int(e));
  if (!s.empty() && s[0] >= 'A' && s[0] <= 'Z' && !(s.size() > 1 && s[1] >= 'A' && s[1] <= 'Z')) {
    s[0] = char(s[0] - 'A' + 'a');
  }
  return s;
}

Status timed_out(uint64_t timeout_ns) {
  return Status::Errorf(Errc::kTimedOut, "timed out after {} ms", timeout_ns / 1'000'000);
}

// Counts a request or stream in the client's scope for as long as it lives.
struct ScopeHold {
  TaskScope* scope;
  ~ScopeHold() {
    if (scope) scope->leave();
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------------
// HttpEndpoint

std::string HttpEndpoint::to_string() const {
  if (host.find(':') != std::string::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

Result<HttpEndpoint> HttpEndpoint::Parse(std::string_view text) {
  std::string full(text);
  if (full.find("://") == std::string::npos) full = "http://" + full;
  auto uri = Uri::Parse(full);
  if (!uri.ok()) return Status::Errorf(Errc::kInval, "invalid endpoint '{}': {}", text, uri.status().message());
  if (uri->scheme != "http") {
    return Status::Errorf(Errc::kInval, "invalid endpoint '{}': only http:// is supported (not {})", text, uri->scheme);
  }
  if (!uri->port) return Status::Errorf(Errc::kInval, "invalid endpoint '{}': no port (expected host:port)", text);
  if (!uri->path.empty() && uri->path != "/") {
    return Status::Errorf(Errc::kInval, "invalid endpoint '{}': unexpected path '{}'", text, uri->path);
  }
  if (!uri->query.empty()) return Status::Errorf(Errc::kInval, "invalid endpoint '{}': unexpected query", text);
  // The connection is made by address: resolving a name would block the reactor.
  if (auto sa = net::make_sockaddr(uri->host, *uri->port); !sa.ok()) {
    return Status::Errorf(Errc::kInval, "invalid endpoint '{}': {} (host names are not resolved)", text,
                          sa.status().message());
  }
  return HttpEndpoint{uri->host, *uri->port};
}

// ---------------------------------------------------------------------------------------------------
// HttpConn: one TCP connection and the exchange on it. Created by HttpClient::connect, freed by itself
// once its owner released it (HttpClient::retire) and its socket is closed.

namespace detail {

class HttpConn {
 public:
  HttpConn(HttpClient* client, HttpClient::Pool* pool, int fd, const HttpClientOptions& o)
      : client_(client), pool_(pool), reactor_(*Reactor::current()), limits_(o.limits) {
    wake_node_.owner = this;
    wake_node_.run = [](Deferred* d) {
      HttpConn* c = static_cast<OwnedDeferred<HttpConn>*>(d)->owner;
      c->wake_queued_ = false;
      if (auto h = std::exchange(c->waiter_, {})) {
        h.resume();  // may release and free `c`
      } else {
        c->maybe_free();
      }
    };
    item_.conn = this;
    item_.done = [](net::SendItem* it, Errc e) {
      HttpConn* c = static_cast<Item*>(it)->conn;
      if (e != Errc::kOk && c->active_) {
        c->fail(Status(e, fmt::format("sending the request failed: {}", describe_errno(e))));
      }
    };
    net::TcpConn::Callbacks cb;
    cb.on_data = [this](const uint8_t* data, size_t len) { return on_data(data, len); };
    cb.on_error = [this](Errc e) { on_error(e); };
    tcp_ = std::make_unique<net::TcpConn>(fd, o.recv_buffer_bytes, std::move(cb));
    tcp_->start();
  }

  HttpClient::Pool* pool() const { return pool_; }

  // Starts an exchange: sends `wire` and parses the answer. `streaming`: body pieces are queued for
  // next_piece() as they arrive instead of collected.
  void begin(const std::string& wire, bool streaming, bool head_request) {
    ++exchanges_;
    streaming_ = streaming;
    active_ = true;
    error_ = Status();
    complete_ = false;
    resp_ = HttpResponse();
    pieces_.clear();
    piece_.clear();
    HttpParserLimits l = limits_;
    if (streaming) l.max_body_bytes = 0;  // a stream is unbounded; each chunk is bounded below
    parser_ = HttpResponseParser(l);
    parser_.reset(head_request);
    if (broken_ || closing_) {
      fail(Status(Errc::kConnReset, "the connection was closed by the server"));
      return;
    }
    // The bytes must outlive the send even if the request gives up (a timeout): they live here.
    wire_ = wire;
    item_.iov[0] = iovec{wire_.data(), wire_.size()};
    item_.iovcnt = 1;
    tcp_->send(&item_);
  }

  // Ends the exchange with `st` and closes the connection (a timeout, a cancel, shutdown).
  void abort(Status st) {
    if (active_) {
      fail(std::move(st));
    } else {
      broken_ = true;
      close_socket();
    }
  }

  bool finished() const { return !active_; }
  bool head_done() const { return parser_.head_done(); }
  bool got_bytes() const { return parser_.started(); }
  const Status& error() const { return error_; }
  bool has_piece() const { return !pieces_.empty(); }
  std::string take_piece() {
    std::string s = std::move(pieces_.front());
    pieces_.pop_front();
    return s;
  }
  HttpResponse take_response() { return std::move(resp_); }
  const HttpResponseHead& head() const { return resp_.head; }
  // Can carry another request.
  bool reusable() const {
    return !active_ && error_.ok() && complete_ && parser_.reusable() && !broken_ && !closing_;
  }
  bool usable_idle() const { return !broken_ && !closing_; }

  // Resumes the awaiting coroutine once something changed (data, the end, an error). Callers loop on
  // their condition around it.
  struct WaitAwaiter {
    HttpConn* c;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> h) noexcept { c->waiter_ = h; }
    void await_resume() const noexcept {}
  };
  WaitAwaiter wait() { return WaitAwaiter{this}; }

  // The owner is done with it: close, and free once the socket is gone and no wake-up is queued.
  void release_and_close() {
    released_ = true;
    close_socket();
    maybe_free();
  }

 private:
  struct Item : net::SendItem {
    HttpConn* conn = nullptr;
  };

  size_t on_data(const uint8_t* data, size_t len) {
    if (!active_) {
      // Bytes nobody asked for: the server is confused (or this is a late answer); never reuse it.
      broken_ = true;
      if (pool_ && idle_in_pool_) client_->idle_failed(this);
      return len;
    }
    std::string_view in(reinterpret_cast<const char*>(data), len);
    while (active_) {
      auto s = parser_.next(in);
      in.remove_prefix(s.consumed);
      switch (s.event) {
        case HttpResponseParser::Event::kNeedMore:
          return len;
        case HttpResponseParser::Event::kHead:
          resp_.head = parser_.head();
          if (streaming_) wake();
          break;
        case HttpResponseParser::Event::kBody:
          if (!streaming_) {
            resp_.body.append(s.data);
            break;
          }
          piece_.append(s.data);
          if (limits_.max_body_bytes && piece_.size() > limits_.max_body_bytes) {
            fail(Status::Errorf(Errc::kProto, "malformed HTTP response: a chunk larger than {} bytes",
                                limits_.max_body_bytes));
            return len;
          }
          if (!parser_.head().chunked) push_piece();
          break;
        case HttpResponseParser::Event::kChunkEnd:
          if (streaming_) push_piece();
          break;
        case HttpResponseParser::Event::kComplete:
          if (streaming_ && !piece_.empty()) push_piece();
          complete_ = true;
          active_ = false;
          // More bytes after a complete response: the framing is off, do not trust the connection.
          if (!in.empty()) broken_ = true;
          wake();
          return len;
        case HttpResponseParser::Event::kError:
          fail(Status(Errc::kProto, "malformed HTTP response: " + parser_.error()));
          return len;
      }
    }
    return len;
  }

  void on_error(Errc e) {
    tcp_failed_ = true;
    broken_ = true;
    if (!active_) {
      if (pool_ && idle_in_pool_) client_->idle_failed(this);
      return;
    }
    auto s = parser_.finish();
    if (s.event == HttpResponseParser::Event::kComplete) {
      // A body delimited by the connection's end.
      if (streaming_ && !piece_.empty()) push_piece();
      complete_ = true;
      active_ = false;
      wake();
      return;
    }
    if (e == Errc::kConnReset || e == Errc::kShutdown) {
      std::string why = parser_.started() ? parser_.error() : "the server closed the connection before answering";
      fail(Status(Errc::kConnReset, why));
    } else {
      fail(Status(e, describe_errno(e)));
    }
  }

  void push_piece() {
    pieces_.push_back(std::move(piece_));
    piece_.clear();
    wake();
  }

  void fail(Status st) {
    if (!active_) return;
    active_ = false;
    error_ = std::move(st);
    broken_ = true;
    close_socket();
    wake();
  }

  void close_socket() {
    if (closing_) return;
    closing_ = true;
    tcp_->close([this] {
      tcp_closed_ = true;
      maybe_free();
    });
  }

  void wake() {
    if (!waiter_ || wake_queued_) return;
    // Never resume from inside the socket's callbacks: the resumed request may free this connection.
    wake_queued_ = true;
    reactor_.defer(&wake_node_);
  }

  void maybe_free() {
    if (!released_ || !tcp_closed_ || wake_queued_) return;
    TaskScope* scope = &client_->scope_;
    delete this;
    scope->leave();  // the hold HttpClient::retire took
  }

  friend class tern::store::HttpClient;

  HttpClient* client_;
  HttpClient::Pool* pool_;  // null for a stream's connection
  Reactor& reactor_;
  HttpParserLimits limits_;
  std::unique_ptr<net::TcpConn> tcp_;
  HttpResponseParser parser_;
  uint64_t exchanges_ = 0;
  bool streaming_ = false;
  bool active_ = false;     // an exchange is in progress
  bool complete_ = false;   // its response is complete
  bool broken_ = false;     // must not carry another request
  bool closing_ = false;    // the socket is closing
  bool tcp_closed_ = false;
  bool tcp_failed_ = false;
  bool released_ = false;
  bool idle_in_pool_ = false;
  Status error_;
  HttpResponse resp_;
  std::string piece_;
  std::deque<std::string> pieces_;
  std::string wire_;
  Item item_;
  std::coroutine_handle<> waiter_;
  bool wake_queued_ = false;
  OwnedDeferred<HttpConn> wake_node_;
};

}  // namespace detail

using detail::HttpConn;

// ---------------------------------------------------------------------------------------------------
// Pools

struct HttpClient::PoolWaiter {
  Pool* pool = nullptr;
  HttpConn* conn = nullptr;  // handed over by release(); null: a slot freed up (or shutdown)
  bool timed_out = false;
  bool queued = false;
  std::coroutine_handle<> h;
  PoolWaiter* next = nullptr;
  PoolWaiter* prev = nullptr;
  Timer timer;
  OwnedDeferred<PoolWaiter> node;

  bool await_ready() const noexcept { return false; }
  void await_suspend(std::coroutine_handle<> hh) noexcept { h = hh; }
  void await_resume() const noexcept {}
};

struct HttpClient::Pool {
  HttpEndpoint ep;
  std::vector<HttpConn*> idle;
  unsigned open = 0;  // request connections: connecting, busy or idle
  PoolWaiter* head = nullptr;
  PoolWaiter* tail = nullptr;

  void push(PoolWaiter* w) {
    w->queued = true;
    w->prev = tail;
    w->next = nullptr;
    if (tail) tail->next = w; else head = w;
    tail = w;
  }
  void unlink(PoolWaiter* w) {
    if (!w->queued) return;
    w->queued = false;
    if (w->prev) w->prev->next = w->next; else head = w->next;
    if (w->next) w->next->prev = w->prev; else tail = w->prev;
    w->next = w->prev = nullptr;
  }
};

HttpClient::HttpClient(HttpClientOptions opts) : opts_(std::move(opts)) {
  if (opts_.max_connections_per_endpoint == 0) opts_.max_connections_per_endpoint = 1;
}

HttpClient::~HttpClient() {
  TERN_CHECK(conns_.empty(), "http client destroyed with {} connection(s) open (await close() first)", conns_.size());
}

HttpClient::Pool* HttpClient::pool_for(const HttpEndpoint& ep) {
  std::string key = ep.to_string();
  auto it = pools_.find(key);
  if (it != pools_.end()) return it->second.get();
  auto p = std::make_unique<Pool>();
  p->ep = ep;
  Pool* raw = p.get();
  pools_.emplace(std::move(key), std::move(p));
  return raw;
}

bool HttpClient::hold() { return scope_.enter() || scope_.extend(); }

void HttpClient::wake_one(Pool* pool, HttpConn* handoff) {
  PoolWaiter* w = pool->head;
  if (!w) {
    if (handoff) retire(handoff);
    return;
  }
  pool->unlink(w);
  w->timer.cancel();
  w->conn = handoff;
  // Resumed from the loop: the caller (a request finishing) still runs.
  w->node.owner = w;
  w->node.run = [](Deferred* d) { static_cast<OwnedDeferred<PoolWaiter>*>(d)->owner->h.resume(); };
  Reactor::current()->defer(&w->node);
}

Task<Result<HttpConn*>> HttpClient::connect(const HttpEndpoint& ep, Pool* pool, uint64_t deadline) {
  Reactor* r = Reactor::current();
  uint64_t now = r->now();
  if (now >= deadline) co_return Status(Errc::kTimedOut, "timed out before connecting");
  uint64_t limit = std::min(opts_.connect_timeout_ns, deadline - now);
  auto fd = co_await net::tcp_connect(ep.host, ep.port, limit);
  if (!fd.ok()) {
    if (fd.code() == Errc::kTimedOut) {
      co_return Status::Errorf(Errc::kTimedOut, "connecting timed out after {} ms", limit / 1'000'000);
    }
    co_return Status(fd.code(), describe_errno(fd.code()));
  }
  if (shut_) {
    ::close(*fd);
    co_return Status(Errc::kShutdown, "the HTTP client is closing");
  }
  auto* c = new HttpConn(this, pool, *fd, opts_);
  conns_.insert(c);
  ++stats_.connections_opened;
  co_return c;
}

Task<Result<HttpConn*>> HttpClient::acquire(Pool* pool, uint64_t deadline, uint64_t timeout_ns) {
  while (true) {
    if (shut_) co_return Status(Errc::kShutdown, "the HTTP client is closing");
    while (!pool->idle.empty()) {
      HttpConn* c = pool->idle.back();
      pool->idle.pop_back();
      c->idle_in_pool_ = false;
      if (c->usable_idle()) co_return c;
      retire(c);
    }
    if (pool->open < opts_.max_connections_per_endpoint) {
      ++pool->open;
      auto c = co_await connect(pool->ep, pool, deadline);
      if (!c.ok()) {
        --pool->open;
        wake_one(pool, nullptr);
        co_return c.status();
      }
      co_return *c;
    }
    // Every connection is busy: wait in line for one (or for a free slot).
    Reactor* r = Reactor::current();
    uint64_t now = r->now();
    if (now >= deadline) co_return timed_out(timeout_ns);
    PoolWaiter w;
    w.pool = pool;
    pool->push(&w);
    w.timer.set_callback([wp = &w] {
      wp->pool->unlink(wp);
      wp->timed_out = true;
      wp->h.resume();
    });
    w.timer.arm(deadline - now);
    co_await w;
    if (w.timed_out) co_return timed_out(timeout_ns);
    if (w.conn) co_return w.conn;
  }
}

void HttpClient::release(HttpConn* c) {
  if (shut_ || !c->reusable()) {
    retire(c);
    return;
  }
  Pool* pool = c->pool();
  if (pool->head) {
    wake_one(pool, c);
    return;
  }
  if (pool->idle.size() >= opts_.max_idle_per_endpoint) {
    retire(c);
    return;
  }
  c->idle_in_pool_ = true;
  pool->idle.push_back(c);
}

void HttpClient::retire(HttpConn* c) {
  if (!conns_.erase(c)) return;  // already retired
  TERN_CHECK(hold(), "http client: a connection retired after close() completed");
  if (Pool* pool = c->pool()) {
    if (c->idle_in_pool_) {
      c->idle_in_pool_ = false;
      pool->idle.erase(std::find(pool->idle.begin(), pool->idle.end(), c));
    }
    --pool->open;
    if (!shut_) wake_one(pool, nullptr);
  }
  c->release_and_close();
}

void HttpClient::idle_failed(HttpConn* c) { retire(c); }

void HttpClient::shutdown() {
  if (shut_) return;
  shut_ = true;
  for (auto& [name, pool] : pools_) {
    while (PoolWaiter* w = pool->head) {
      pool->unlink(w);
      w->timer.cancel();
      w->conn = nullptr;
      w->node.owner = w;
      w->node.run = [](Deferred* d) { static_cast<OwnedDeferred<PoolWaiter>*>(d)->owner->h.resume(); };
      Reactor::current()->defer(&w->node);
    }
    std::vector<HttpConn*> idle = pool->idle;
    for (HttpConn* c : idle) retire(c);
  }
  std::vector<HttpConn*> busy(conns_.begin(), conns_.end());
  for (HttpConn* c : busy) c->abort(Status(Errc::kShutdown, "the HTTP client is closing"));
}

Task<void> HttpClient::close() {
  shutdown();
  co_await scope_.close();
}

// ---------------------------------------------------------------------------------------------------
// Requests

namespace {

std::string serialize(const HttpEndpoint& ep, const HttpRequest& req) {
  std::string head = fmt::format("{} {} HTTP/1.1\r\nHost: {}\r\n", req.method, req.path, ep.to_string());
  if (!req.body.empty() || req.method == "POST" || req.method == "PUT") {
    if (!req.content_type.empty()) head += fmt::format("Content-Type: {}\r\n", req.content_type);
    head += fmt::format("Content-Length: {}\r\n", req.body.size());
  }
  head += "\r\n";
  head += req.body;
  return head;
}

}  // namespace

Task<Result<HttpResponse>> HttpClient::request(const HttpEndpoint& ep, const HttpRequest& req, uint64_t timeout_ns,
                                               bool* sent) {
  if (sent) *sent = false;
  if (shut_ || !scope_.enter()) co_return Status(Errc::kShutdown, "the HTTP client is closing");
  ScopeHold request_hold{&scope_};
  ++stats_.requests;
  Reactor* r = Reactor::current();
  const uint64_t deadline = r->now() + timeout_ns;
  const std::string wire = serialize(ep, req);
  Pool* pool = pool_for(ep);
  for (int attempt = 0;; ++attempt) {
    auto got = co_await acquire(pool, deadline, timeout_ns);
    if (!got.ok()) co_return got.status();
    HttpConn* c = *got;
    const bool reused = c->exchanges_ > 0;
    if (reused) ++stats_.requests_on_reused_connections;
    uint64_t now = r->now();
    if (now >= deadline) {
      release(c);
      co_return timed_out(timeout_ns);
    }
    c->begin(wire, /*streaming=*/false, req.method == "HEAD");
    if (sent) *sent = true;
    Timer timer([c, timeout_ns] { c->abort(timed_out(timeout_ns)); });
    timer.arm(deadline - now);
    while (!c->finished()) co_await c->wait();
    timer.cancel();
    if (!c->error().ok()) {
      Status st = c->error();
      // A kept-alive connection the server had already closed: nothing of the request was processed.
      bool stale = reused && !c->got_bytes() && attempt == 0 && req.retry_on_stale_connection && !shut_ &&
                   st.code() != Errc::kTimedOut && st.code() != Errc::kShutdown;
      retire(c);
      if (stale) {
        ++stats_.stale_retries;
        continue;
      }
      co_return st;
    }
    HttpResponse resp = c->take_response();
    release(c);
    co_return resp;
  }
}

Task<Result<std::unique_ptr<HttpStream>>> HttpClient::open_stream(const HttpEndpoint& ep, const HttpRequest& req,
                                                                  uint64_t timeout_ns) {
  if (shut_ || !scope_.enter()) co_return Status(Errc::kShutdown, "the HTTP client is closing");
  ScopeHold request_hold{&scope_};
  ++stats_.requests;
  Reactor* r = Reactor::current();
  const uint64_t deadline = r->now() + timeout_ns;
  const std::string wire = serialize(ep, req);
  auto got = co_await connect(ep, nullptr, deadline);
  if (!got.ok()) co_return got.status();
  HttpConn* c = *got;
  uint64_t now = r->now();
  if (now >= deadline) {
    retire(c);
    co_return timed_out(timeout_ns);
  }
  c->begin(wire, /*streaming=*/true, false);
  Timer timer([c, timeout_ns] { c->abort(timed_out(timeout_ns)); });
  timer.arm(deadline - now);
  while (!c->head_done() && !c->finished()) co_await c->wait();
  timer.cancel();
  if (!c->head_done()) {
    Status st = c->error();
    retire(c);
    co_return st;
  }
  // The stream counts in the scope until its owner destroys it.
  TERN_CHECK(hold(), "http client: stream opened after close() completed");
  co_return std::unique_ptr<HttpStream>(new HttpStream(this, c));
}

// ---------------------------------------------------------------------------------------------------
// HttpStream

HttpStream::~HttpStream() {
  client_->retire(conn_);
  client_->scope_.leave();
}

const HttpResponseHead& HttpStream::head() const { return conn_->head(); }

Task<Result<std::optional<std::string>>> HttpStream::next() {
  while (!conn_->has_piece() && !conn_->finished()) co_await conn_->wait();
  if (conn_->has_piece()) co_return std::optional<std::string>(conn_->take_piece());
  if (!conn_->error().ok()) co_return conn_->error();
  co_return std::optional<std::string>();
}

void HttpStream::cancel() { conn_->abort(Status(Errc::kCanceled, "the stream was cancelled")); }

}  // namespace tern::store
