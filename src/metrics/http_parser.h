// parse_http_request: the request line and headers of one HTTP/1.x request, as a pure function of the
// bytes received so far (no I/O, no allocation; the result points into the input). It never reads past
// the input and answers every input with "incomplete", a request, or the status code to reply with.
//
// Strict where leniency could desynchronise the stream (bare CR, obs-fold, whitespace before a colon,
// conflicting Content-Length), lenient where it costs nothing (bare LF line ends, empty lines before the
// request line, no Host header).
#pragma once

#include <cstddef>
#include <string_view>

namespace tern::metrics {

struct HttpRequest {
  std::string_view method;  // a token, case-sensitive ("GET")
  std::string_view target;  // as sent
  std::string_view path;    // the target without query and fragment; "/" for "http://host"
  int minor_version = 1;    // HTTP/1.<minor>
  // The client allows the connection to stay open (HTTP/1.1 without "Connection: close", or HTTP/1.0
  // with "Connection: keep-alive").
  bool keep_alive = true;
  // Content-Length > 0 or any Transfer-Encoding: this server reads no bodies, so it answers and closes.
  bool has_body = false;
};

enum class ParseState {
  kIncomplete,  // no end of the head yet and still within the size limit
  kRequest,     // a complete head: `request` and `consumed` are set
  kError,       // `error_status` is the status to answer with before closing
};

struct ParseResult {
  ParseState state = ParseState::kIncomplete;
  size_t consumed = 0;   // kRequest: bytes of the head, including leading empty lines and the final one
  int error_status = 0;  // kError: 400 (malformed), 431 (head too large), 505 (not HTTP/1.x)
  HttpRequest request;
};

inline constexpr size_t kMaxHeaderLines = 100;

// Parses the head at the start of `in`. A head (from the first byte to the end of its empty line) of
// more than `max_head_bytes` is answered 431, as is one with more than kMaxHeaderLines header lines.
ParseResult parse_http_request(std::string_view in, size_t max_head_bytes);

}  // namespace tern::metrics
