// MetricsHttpServer: serves GET /metrics (and a small index page) over HTTP/1.1 on its own thread.
//
// One thread runs poll() over a stop eventfd, the listening socket and at most `max_connections`
// non-blocking client sockets; the reactors are not involved. The handler runs on that thread, once per
// GET or HEAD of /metrics, so a scrape costs whatever the handler does and nothing else. Protocol
// decisions live in HttpSession; this file only moves bytes and enforces limits:
//
//   - a request head must arrive within `read_timeout_ms` of the connection becoming idle (accepted, or
//     its last response sent); idle keep-alive connections close after the same time. A client that
//     trickles one byte at a time gains nothing.
//   - a response must be fully sent within `write_timeout_ms` of being produced.
//   - over `max_connections`, new connections wait in the listen backlog.
//   - after a response that ends the connection, the write side is shut and input is discarded for a
//     moment (up to 1 s) before closing, so the client reads the response instead of a reset.
//
// Stop() wakes the thread through the eventfd and joins it: it returns as soon as the handler (if one
// is running) returns, whatever the clients do.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "common/result.h"
#include "metrics/http_session.h"

namespace tern::metrics {

struct MetricsHttpServerOptions {
  size_t max_connections = 8;
  size_t max_head_bytes = 8192;
  uint64_t read_timeout_ms = 5000;
  uint64_t write_timeout_ms = 10000;
};

class MetricsHttpServer {
 public:
  // Binds host:port and starts serving. `host` is a numeric IPv4 or IPv6 address (brackets allowed),
  // "localhost" (127.0.0.1) or empty (every address); port 0 picks a free port. Fails with EADDRINUSE
  // (the address in the message) if the port is taken, EINVAL for a host that is not an address.
  static Result<std::unique_ptr<MetricsHttpServer>> Start(std::string_view host, uint16_t port,
                                                          MetricsHandler handler,
                                                          MetricsHttpServerOptions options = {});
  ~MetricsHttpServer();  // Stop()
  MetricsHttpServer(const MetricsHttpServer&) = delete;
  MetricsHttpServer& operator=(const MetricsHttpServer&) = delete;

  // The bound port (the chosen one when Start was given 0) and "host:port" for messages.
  uint16_t port() const { return port_; }
  const std::string& address() const { return address_; }

  // Stops serving, closes every connection and the listening socket, joins the thread. Idempotent.
  void Stop();

  struct Stats {
    uint64_t connections = 0;  // accepted
    uint64_t requests = 0;     // answered, including errors
    uint64_t errors = 0;       // answered with a status >= 400
    uint64_t timeouts = 0;     // connections closed by a read or write timeout
  };
  // Readable from any thread.
  Stats stats() const;

 private:
  struct Conn;
  MetricsHttpServer() = default;
  void run();
  void accept_all(std::vector<std::unique_ptr<Conn>>& conns, uint64_t now);
  void service(Conn& c, short revents);
  void advance(Conn& c);

  MetricsHandler handler_;
  MetricsHttpServerOptions opt_;
  int listen_fd_ = -1;
  int stop_fd_ = -1;
  uint16_t port_ = 0;
  std::string address_;
  std::thread thread_;
  uint64_t accept_paused_until_ns_ = 0;  // server thread only
  std::atomic<uint64_t> connections_{0}, requests_{0}, errors_{0}, timeouts_{0};
};

}  // namespace tern::metrics
