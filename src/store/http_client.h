// HttpClient: HTTP/1.1 requests over the reactor's sockets (net::TcpConn on io_uring), for the etcd client.
//
//   HttpClient http;                                   // on the reactor that will use it
//   HttpRequest req;  req.path = "/v3/kv/range";  req.body = R"({"key":"Zm9v"})";
//   Result<HttpResponse> r = co_await http.request(ep, req, 2'000'000'000);
//   ...
//   co_await http.close();                             // before it is destroyed
//
// What it does:
//  - Connections: per endpoint, a few kept-alive connections (max_connections_per_endpoint); a request
//    takes an idle one or opens one, and waits in a FIFO when all are busy. One request at a time per
//    connection (no pipelining): a slow answer delays nobody else. A connection goes back to the pool
//    when its response was complete and the server allowed keep-alive; otherwise it is closed. An idle
//    connection keeps a receive posted, so a server that closes it is noticed before it is reused; if
//    one still turns out dead (closed before answering a single byte), a request that allows it
//    (retry_on_stale_connection) is sent once more on a fresh connection.
//  - Timeouts: `timeout_ns` bounds the whole request (waiting for a connection, connecting, sending,
//    the whole response) on the reactor's clock (Reactor::now, Timer), so tests can drive it with a
//    ManualClock. A request that times out fails with kTimedOut and its connection is closed (a late
//    answer could otherwise be read as the next request's).
//  - Bodies: Content-Length, chunked (extensions skipped, trailers kept) or delimited by the close, parsed
//    by HttpResponseParser (http_parser.h).
//  - Streams: open_stream() sends a request on a connection of its own and resolves once the response's
//    head is in; HttpStream::next() then yields the body as it arrives, one chunk at a time when it is
//    chunked (etcd's watch answers with one JSON message per chunk).
//  - Errors are values. Messages say what happened without naming the endpoint ("connection refused",
//    "timed out after 500 ms", "malformed HTTP response: ..."): callers prefix the endpoint and the
//    operation, which they know better (the etcd client writes "etcd 127.0.0.1:2379: put '/x': ...").
//  - Hosts are numeric IPv4/IPv6 addresses or "localhost": resolving a name would block the reactor.
//
// Threads: an HttpClient, its connections and its streams belong to the reactor that created the client
// (for the etcd client, the primary) and are used only there; nothing here blocks it. Its TaskScope
// counts requests in progress, open streams and closing connections: close() fails what is in progress
// (kShutdown), waits for all of them, and only then may the client be destroyed. Streams must be
// destroyed by their owners for close() to finish.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "common/result.h"
#include "reactor/task.h"
#include "reactor/task_scope.h"
#include "store/http_parser.h"

namespace tern::store {

struct HttpEndpoint {
  std::string host;  // numeric IPv4/IPv6 (no brackets) or "localhost"
  uint16_t port = 0;

  // "127.0.0.1:2379", "[::1]:2379".
  std::string to_string() const;
  // "host:port", "[v6]:port" or "http://host:port" (a trailing "/" is allowed). https is not supported.
  static Result<HttpEndpoint> Parse(std::string_view text);
  friend bool operator==(const HttpEndpoint&, const HttpEndpoint&) = default;
};

struct HttpRequest {
  std::string method = "POST";
  std::string path = "/";
  std::string body;
  std::string content_type = "application/json";
  // May be sent again on a fresh connection when a kept-alive one turns out to have been closed by the
  // server before it answered anything. Leave it on for requests that are safe to repeat.
  bool retry_on_stale_connection = true;
};

struct HttpResponse {
  HttpResponseHead head;
  std::string body;
  int status() const { return head.status; }
};

struct HttpClientOptions {
  uint64_t connect_timeout_ns = 2'000'000'000;  // bounded by each request's own timeout
  unsigned max_connections_per_endpoint = 4;     // for requests; each stream has a connection of its own
  unsigned max_idle_per_endpoint = 2;            // kept-alive connections kept open while unused
  size_t recv_buffer_bytes = 64 * 1024;
  HttpParserLimits limits;  // max_body_bytes bounds a response, and each chunk of a stream
};

struct HttpClientStats {
  uint64_t connections_opened = 0;
  uint64_t requests = 0;
  uint64_t requests_on_reused_connections = 0;
  uint64_t stale_retries = 0;
};

namespace detail {
class HttpConn;
}
class HttpStream;

class HttpClient {
 public:
  explicit HttpClient(HttpClientOptions opts = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // One request and its whole response (any status: a 404 is a response, not an error). Arguments are
  // read while the task runs: keep them alive until it is done (await it at once). `sent`, when given, is
  // set once the request was handed to a connection: a failure before that (cannot connect, no free
  // connection in time) means the server never saw it, and the caller may safely try elsewhere.
  Task<Result<HttpResponse>> request(const HttpEndpoint& ep, const HttpRequest& req, uint64_t timeout_ns,
                                     bool* sent = nullptr);

  // Sends `req` on a connection of its own and resolves once the response's head is in (within
  // `timeout_ns`); the body is then read with HttpStream::next(), with no time limit.
  Task<Result<std::unique_ptr<HttpStream>>> open_stream(const HttpEndpoint& ep, const HttpRequest& req,
                                                        uint64_t timeout_ns);

  // Fails everything in progress (kShutdown), closes idle connections and refuses new requests.
  void shutdown();
  // shutdown(), then waits until every request has returned, every stream was destroyed and every
  // connection is closed. Required before destruction.
  Task<void> close();

  const HttpClientStats& stats() const { return stats_; }
  const HttpClientOptions& options() const { return opts_; }

 private:
  friend class detail::HttpConn;
  friend class HttpStream;
  struct Pool;
  struct PoolWaiter;

  Pool* pool_for(const HttpEndpoint& ep);
  Task<Result<detail::HttpConn*>> acquire(Pool* pool, uint64_t deadline, uint64_t timeout_ns);
  Task<Result<detail::HttpConn*>> connect(const HttpEndpoint& ep, Pool* pool, uint64_t deadline);
  // The request is done with `c`: back to the pool if it can carry another request, else retire().
  void release(detail::HttpConn* c);
  // Closes `c` and frees it once the socket is gone; its pool slot is free at once.
  void retire(detail::HttpConn* c);
  // A pool connection failed while idle (the server closed it).
  void idle_failed(detail::HttpConn* c);
  void wake_one(Pool* pool, detail::HttpConn* handoff);
  bool hold();

  HttpClientOptions opts_;
  TaskScope scope_{"http client"};
  bool shut_ = false;
  std::map<std::string, std::unique_ptr<Pool>> pools_;
  std::unordered_set<detail::HttpConn*> conns_;  // every live connection, for shutdown()
  HttpClientStats stats_;
};

// The body of a response opened with HttpClient::open_stream. Owned by the caller, on the client's
// reactor; destroying it closes its connection.
class HttpStream {
 public:
  ~HttpStream();
  HttpStream(const HttpStream&) = delete;
  HttpStream& operator=(const HttpStream&) = delete;

  const HttpResponseHead& head() const;
  // The next piece of the body: one whole chunk when the body is chunked, else what has arrived. nullopt
  // once the body ended; an error if the connection failed (or kCanceled after cancel()). One caller at
  // a time.
  Task<Result<std::optional<std::string>>> next();
  // Ends the stream: a pending or later next() returns kCanceled. Safe from anywhere on the reactor,
  // including a callback run by the stream's reader.
  void cancel();

 private:
  friend class HttpClient;
  HttpStream(HttpClient* client, detail::HttpConn* conn) : client_(client), conn_(conn) {}
  HttpClient* client_;
  detail::HttpConn* conn_;
};

}  // namespace tern::store
