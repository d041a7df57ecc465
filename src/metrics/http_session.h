// HttpSession: the HTTP/1.1 protocol of one metrics connection, without sockets: received bytes in,
// bytes to send out. The server (http_server.h) only moves bytes and enforces time limits, so every
// protocol decision here is testable and fuzzable as a pure state machine.
//
// Routes: GET|HEAD /metrics -> 200 with the handler's page; GET|HEAD / -> a short HTML page linking to
// /metrics; other paths -> 404; other methods -> 405. A malformed head -> 400, a head over the limit ->
// 431, a version other than HTTP/1.x -> 505, each followed by closing. Keep-alive and pipelining work;
// a request with a body is answered and the connection closed (no body is ever read). One response is
// built at a time: the next buffered request is answered only when the previous response has been
// sent, so memory stays bounded whatever the client pipelines.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

#include "common/result.h"

namespace tern::metrics {

// Produces the /metrics page; an error becomes a 500 whose body is the error text.
using MetricsHandler = std::function<Result<std::string>()>;

class HttpSession {
 public:
  // `handler` must outlive the session.
  HttpSession(const MetricsHandler& handler, size_t max_head_bytes);

  // Bytes received. Requests are answered as far as the output allows; bytes after a response that
  // ends the connection are discarded.
  void on_data(std::string_view data);
  // The peer will send no more: an unfinished request is dropped, buffered complete ones still answered.
  void on_eof();

  // Bytes to send, and how many of them were sent.
  std::string_view pending() const { return std::string_view(out_).substr(out_pos_); }
  void consume(size_t n);

  // No further response will be produced; close once pending() is empty.
  bool closing() const { return closing_; }
  bool peer_closed() const { return eof_; }
  // A request has started arriving but is not complete (or is waiting behind a response).
  bool has_buffered_input() const { return !in_.empty(); }

  uint64_t requests() const { return requests_; }
  uint64_t errors() const { return errors_; }  // responses with status >= 400

 private:
  void process();
  void answer(std::string_view method, std::string_view path, bool keep_alive);
  void respond(int status, std::string_view content_type, std::string_view body, bool send_body,
               bool keep_alive, std::string_view extra_headers = {});

  const MetricsHandler& handler_;
  size_t max_head_bytes_;
  std::string in_;
  std::string out_;
  size_t out_pos_ = 0;
  bool closing_ = false;
  bool eof_ = false;
  uint64_t requests_ = 0;
  uint64_t errors_ = 0;
};

std::string_view http_reason(int status);

}  // namespace tern::metrics
