// libFuzzer target for the metrics module's input handling: the HTTP request parser, the per-connection
// protocol (HttpSession) fed in arbitrary chunks with arbitrary partial sends, and the exposition
// escaping and number formatting. The first byte picks the mode.
//
// Properties besides "no crash, no sanitizer report":
//   parser   a complete head re-parses identically on its own and every shorter prefix is incomplete;
//            errors are 400/431/505; views stay inside the input; the size limit holds.
//   session  the output is a sequence of well-formed responses (status line, Content-Length, body or
//            none for HEAD); nothing is produced after the session said it is closing.
//   format   escaped label values unescape to the input when it is valid UTF-8 and never contain a raw
//            newline or an unescaped quote; finite values read back exactly with strtod.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "metrics/exposition.h"
#include "metrics/http_parser.h"
#include "metrics/http_session.h"

using namespace tern;
using namespace tern::metrics;

static void check(bool ok) {
  if (!ok) std::abort();
}

static bool inside(std::string_view part, std::string_view whole) {
  return part.data() >= whole.data() && part.data() + part.size() <= whole.data() + whole.size();
}

static void fuzz_parser(std::string_view in) {
  constexpr size_t kMax = 512;
  ParseResult r = parse_http_request(in, kMax);
  switch (r.state) {
    case ParseState::kIncomplete:
      check(in.size() < kMax);
      break;
    case ParseState::kError:
      check(r.error_status == 400 || r.error_status == 431 || r.error_status == 505);
      break;
    case ParseState::kRequest: {
      check(r.consumed > 0 && r.consumed <= in.size() && r.consumed <= kMax);
      check(inside(r.request.method, in) && inside(r.request.target, in) && !r.request.method.empty());
      check(r.request.path == "/" || inside(r.request.path, in));
      std::string_view head = in.substr(0, r.consumed);
      ParseResult again = parse_http_request(head, kMax);
      check(again.state == ParseState::kRequest && again.consumed == r.consumed &&
            again.request.method == r.request.method && again.request.path == r.request.path &&
            again.request.keep_alive == r.request.keep_alive && again.request.has_body == r.request.has_body);
      check(parse_http_request(head.substr(0, head.size() - 1), kMax).state == ParseState::kIncomplete);
      break;
    }
  }
}

// Checks `out` as consecutive responses; returns false if it is malformed.
static bool well_formed_responses(std::string_view out) {
  while (!out.empty()) {
    if (!out.starts_with("HTTP/1.1 ")) return false;
    size_t end = out.find("\r\n\r\n");
    if (end == std::string_view::npos) return false;
    std::string_view head = out.substr(0, end + 2);
    size_t cl = head.find("\r\nContent-Length: ");
    if (cl == std::string_view::npos) return false;
    size_t len = size_t(std::strtoull(std::string(head.substr(cl + 18)).c_str(), nullptr, 10));
    out.remove_prefix(end + 4);
    // A HEAD response has no body: the next response (or nothing) follows at once. No body starts
    // with "HTTP/1.1 ".
    if (out.empty() || out.starts_with("HTTP/1.1 ")) continue;
    if (out.size() < len) return false;
    out.remove_prefix(len);
  }
  return true;
}

static void fuzz_session(std::string_view in) {
  if (in.empty()) return;
  uint32_t rng = uint8_t(in[0]) * 2654435761u + 1;
  in.remove_prefix(1);
  auto next = [&](uint32_t n) {
    rng = rng * 1664525u + 1013904223u;
    return (rng >> 8) % n;
  };
  MetricsHandler handler = [] { return Result<std::string>("# TYPE up gauge\nup 1\n"); };
  HttpSession s(handler, 256);
  std::string sent;
  bool closed_seen = false;
  while (!in.empty()) {
    size_t n = std::min<size_t>(in.size(), 1 + next(64));
    if (closed_seen && s.pending().empty()) {
      s.on_data(in.substr(0, n));
      check(s.pending().empty());  // nothing after closing
    } else if (s.pending().empty()) {
      s.on_data(in.substr(0, n));
    }
    in.remove_prefix(n);
    // Send part of what is pending, as a socket would.
    for (int i = 0; i < 3 && !s.pending().empty(); ++i) {
      size_t k = std::min<size_t>(s.pending().size(), next(200));
      sent.append(s.pending().substr(0, k));
      s.consume(k);
    }
    closed_seen = closed_seen || s.closing();
  }
  s.on_eof();
  while (!s.pending().empty()) {
    sent.append(s.pending());
    s.consume(s.pending().size());
  }
  check(s.closing());
  check(well_formed_responses(sent));
  check(s.requests() >= s.errors());
}

// An independent UTF-8 check: decode each sequence to a code point and test the ranges.
static bool valid_utf8(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    uint8_t c = uint8_t(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (len == 0 || i + size_t(len) > s.size()) return false;
    uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1F) : len == 3 ? (c & 0x0F) : (c & 0x07);
    for (int k = 1; k < len; ++k) {
      uint8_t d = uint8_t(s[i + size_t(k)]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < kMin[len] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return false;
    i += size_t(len);
  }
  return true;
}

static void fuzz_format(std::string_view in) {
  std::string esc;
  append_label_value(esc, in);
  check(esc.find('\n') == std::string::npos);
  check(valid_utf8(esc));
  std::string back;
  for (size_t i = 0; i < esc.size(); ++i) {
    if (esc[i] == '"') std::abort();  // unescaped quote
    if (esc[i] != '\\') {
      back += esc[i];
      continue;
    }
    check(i + 1 < esc.size());
    char e = esc[++i];
    check(e == '\\' || e == '"' || e == 'n');
    back += e == 'n' ? '\n' : e;
  }
  if (valid_utf8(in)) check(back == in);

  std::string help;
  append_help(help, in);
  check(help.find('\n') == std::string::npos && valid_utf8(help));

  if (in.size() >= 8) {
    double v;
    std::memcpy(&v, in.data(), sizeof(v));
    std::string t = format_value(v);
    if (std::isfinite(v)) {
      check(std::strtod(t.c_str(), nullptr) == v);
    } else {
      check(t == "NaN" || t == "+Inf" || t == "-Inf");
    }
  }
  (void)valid_metric_name(in);
  (void)valid_label_name(in);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::string_view in(reinterpret_cast<const char*>(data) + 1, size - 1);
  switch (data[0] % 3) {
    case 0: fuzz_parser(in); break;
    case 1: fuzz_session(in); break;
    case 2: fuzz_format(in); break;
  }
  return 0;
}
