// HttpServer: a small HTTP/1.1 server for the agent's REST API — requests with bodies, keep-alive, one
// thread per connection (the control plane's calls may wait seconds on engines; a thread each keeps one
// slow call from holding up the others). Request heads are parsed by metrics::parse_http_request (pure,
// strict, fuzzed); bodies by Content-Length only (a Transfer-Encoding is answered 411).
//
// TLS (optional): with a certificate and key (PEM files) every connection is TLS 1.2 or newer, HTTP
// inside; a handshake that fails closes the connection. No client certificates.
//
// Limits: `max_connections` at once (more wait in the listen backlog), a head within
// `read_timeout_ms` of the connection becoming idle, bodies up to `max_body_bytes` (413 beyond).
//
// Threads: an acceptor thread and one per connection; the handler runs on the connection's thread and
// must be thread-safe. Stop() closes the listener and every connection and joins all threads; a
// handler already running is waited for.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"

struct ssl_ctx_st;  // OpenSSL's SSL_CTX

namespace tern::control {

struct HttpCall {
  std::string method;
  std::string path;   // without the query
  std::string query;  // after '?', raw
  std::string body;
  std::string content_type;
  std::string peer;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

using HttpHandler = std::function<HttpReply(const HttpCall&)>;

struct HttpServerOptions {
  size_t max_connections = 64;
  size_t max_head_bytes = 16384;
  size_t max_body_bytes = 1 << 20;
  uint64_t read_timeout_ms = 30000;
  std::string tls_cert_file;  // PEM certificate chain; with tls_key_file: HTTPS only
  std::string tls_key_file;   // PEM private key
};

class HttpServer {
 public:
  // `host`: a numeric address, "localhost" or empty (every address); port 0 picks a free port.
  static Result<std::unique_ptr<HttpServer>> Start(std::string_view host, uint16_t port, HttpHandler handler,
                                                   HttpServerOptions opts = {});
  ~HttpServer();
  void Stop();
  uint16_t port() const { return port_; }

 private:
  HttpServer() = default;
  void accept_loop();
  void serve(int fd, std::string peer);
  void serve_http(class Conn& c, const std::string& peer);

  HttpHandler handler_;
  HttpServerOptions opts_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  uint16_t port_ = 0;
  std::shared_ptr<::ssl_ctx_st> tls_;  // null: plain HTTP
  std::thread acceptor_;
  std::mutex mu_;
  std::map<int, std::thread> conns_;  // fd -> its thread
  std::vector<std::thread> finished_;
  std::atomic<bool> stopping_{false};
};

// An RFC 7807 problem document (application/problem+json): type about:blank, the status's reason as
// title, `detail` saying what is wrong, and `code`, the error's name (EINVAL, ENOENT, ...).
HttpReply problem(int status, std::string_view detail, std::string_view code);

// Percent-decoding of a path segment or query value; kInval for a bad escape.
Result<std::string> url_decode(std::string_view s);
// The query's parameters (later ones win).
std::map<std::string, std::string> parse_query(std::string_view q);

}  // namespace tern::control
