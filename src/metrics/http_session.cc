#include "metrics/http_session.h"

#include <exception>

#include <fmt/format.h>

#include "metrics/exposition.h"
#include "metrics/http_parser.h"

namespace tern::metrics {
namespace {

constexpr std::string_view kIndexPage =
    "<!DOCTYPE html>\n<html><head><title>tern io-engine</title></head>\n"
    "<body><h1>tern io-engine</h1><p>Prometheus metrics: <a href=\"/metrics\">/metrics</a></p></body></html>\n";
constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";

}  // namespace

std::string_view http_reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

HttpSession::HttpSession(const MetricsHandler& handler, size_t max_head_bytes)
    : handler_(handler), max_head_bytes_(max_head_bytes) {}

void HttpSession::on_data(std::string_view data) {
  if (closing_ || eof_) return;
  in_.append(data);
  process();
}

void HttpSession::on_eof() {
  eof_ = true;
  process();
}

void HttpSession::consume(size_t n) {
  out_pos_ += std::min(n, out_.size() - out_pos_);
  if (out_pos_ == out_.size()) {
    out_.clear();
    out_pos_ = 0;
    process();
  }
}

void HttpSession::process() {
  while (!closing_ && pending().empty()) {
    ParseResult r = parse_http_request(in_, max_head_bytes_);
    if (r.state == ParseState::kIncomplete) {
      if (eof_) {  // the rest will never come
        in_.clear();
        closing_ = true;
      }
      return;
    }
    ++requests_;
    if (r.state == ParseState::kError) {
      in_.clear();
      respond(r.error_status, kTextPlain, fmt::format("{}\n", http_reason(r.error_status)), true, false);
      return;
    }
    const HttpRequest& q = r.request;
    answer(q.method, q.path, q.keep_alive && !q.has_body);
    // Only now: q points into in_. After a closing response the rest is never read.
    if (closing_) {
      in_.clear();
    } else {
      in_.erase(0, r.consumed);
    }
  }
}

void HttpSession::answer(std::string_view method, std::string_view path, bool keep_alive) {
  bool head = method == "HEAD";
  if (method != "GET" && !head) {
    respond(405, kTextPlain, "Method Not Allowed\n", true, keep_alive, "Allow: GET, HEAD\r\n");
    return;
  }
  if (path == "/metrics") {
    Result<std::string> page = Status(Errc::kInval, "no metrics handler");
    try {
      if (handler_) page = handler_();
    } catch (const std::exception& e) {
      page = Status(Errc::kIo, fmt::format("metrics handler failed: {}", e.what()));
    } catch (...) {
      page = Status(Errc::kIo, "metrics handler failed");
    }
    if (page.ok()) {
      respond(200, kContentType, *page, !head, keep_alive);
    } else {
      respond(500, kTextPlain, fmt::format("{}\n", page.status()), !head, keep_alive);
    }
  } else if (path == "/") {
    respond(200, "text/html; charset=utf-8", kIndexPage, !head, keep_alive);
  } else {
    respond(404, kTextPlain, "Not Found\n", !head, keep_alive);
  }
}

void HttpSession::respond(int status, std::string_view content_type, std::string_view body, bool send_body,
                          bool keep_alive, std::string_view extra_headers) {
  if (status >= 400) ++errors_;
  out_ += fmt::format("HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{}Connection: {}\r\n\r\n",
                      status, http_reason(status), content_type, body.size(), extra_headers,
                      keep_alive ? "keep-alive" : "close");
  if (send_body) out_ += body;
  if (!keep_alive) closing_ = true;
}

}  // namespace tern::metrics
