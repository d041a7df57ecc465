#include "metrics/http_parser.h"

#include <algorithm>
#include <cstdint>

namespace tern::metrics {
namespace {

// RFC 9110 tchar: the characters of a method or header name.
bool tchar(char c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-': case '.':
    case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

bool all_tchar(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), tchar); }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    char x = a[i], y = b[i];
    if (x >= 'A' && x <= 'Z') x = char(x - 'A' + 'a');
    if (y >= 'A' && y <= 'Z') y = char(y - 'A' + 'a');
    if (x != y) return false;
  }
  return true;
}

bool istarts_with(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && iequals(s.substr(0, prefix.size()), prefix);
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view path_of(std::string_view target) {
  std::string_view p = target;
  if (p.empty() || p[0] != '/') {
    // absolute-form ("http://host:port/metrics"), which a proxy sends.
    size_t skip = istarts_with(p, "http://") ? 7 : istarts_with(p, "https://") ? 8 : 0;
    if (skip == 0) return target;  // "*" or nonsense: matches no route
    size_t slash = p.find('/', skip);
    if (slash == std::string_view::npos) return "/";
    p = p.substr(slash);
  }
  size_t end = p.find_first_of("?#");
  return end == std::string_view::npos ? p : p.substr(0, end);
}

// Request line: method SP request-target SP HTTP-version. Returns 0 or the status to answer.
int parse_request_line(std::string_view line, HttpRequest& req) {
  size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos) return 400;
  req.method = line.substr(0, sp1);
  if (!all_tchar(req.method)) return 400;
  std::string_view rest = line.substr(sp1 + 1);
  size_t sp2 = rest.find(' ');
  if (sp2 == std::string_view::npos) return 400;
  req.target = rest.substr(0, sp2);
  if (req.target.empty()) return 400;
  for (char c : req.target)
    if (uint8_t(c) <= 0x20 || uint8_t(c) >= 0x7F) return 400;  // visible ASCII only
  std::string_view v = rest.substr(sp2 + 1);
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (v.size() != 8 || v.substr(0, 5) != "HTTP/" || !digit(v[5]) || v[6] != '.' || !digit(v[7])) return 400;
  if (v[5] != '1') return 505;
  req.minor_version = v[7] - '0';
  req.path = path_of(req.target);
  return 0;
}

// True while `partial` (a request line without its end yet) can still become a valid one: rejects
// binary garbage (a TLS handshake, say) at once instead of waiting for 8 KiB or the timeout.
bool plausible_partial_request_line(std::string_view partial) {
  size_t sp = partial.find(' ');
  std::string_view method = partial.substr(0, sp);
  if (!std::all_of(method.begin(), method.end(), tchar)) return false;
  return sp != 0;
}

}  // namespace

ParseResult parse_http_request(std::string_view in, size_t max_head_bytes) {
  ParseResult r;
  auto fail = [&](int status) {
    r.state = ParseState::kError;
    r.error_status = status;
    r.request = HttpRequest();
    return r;
  };
  size_t limit = std::min(in.size(), max_head_bytes);
  size_t pos = 0;
  // The next complete line (without its LF or CRLF); false when it has not fully arrived (or does not end
  // within the limit, which the caller turns into 431 once the input is that long).
  auto next_line = [&](std::string_view& line) {
    size_t nl = in.find('\n', pos);
    if (nl == std::string_view::npos || nl >= limit) return false;
    line = in.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    pos = nl + 1;
    return true;
  };
  auto incomplete = [&]() {
    if (in.size() >= max_head_bytes) return fail(431);
    r.state = ParseState::kIncomplete;
    return r;
  };

  // Empty lines before the request line are ignored (RFC 9112 section 2.2).
  while (pos < limit) {
    if (in[pos] == '\n') {
      ++pos;
      continue;
    }
    if (in[pos] == '\r') {
      if (pos + 1 == in.size()) return incomplete();
      if (in[pos + 1] == '\n') {
        pos += 2;
        continue;
      }
    }
    break;
  }
  if (pos > limit) return fail(431);

  std::string_view line;
  if (!next_line(line)) {
    if (!plausible_partial_request_line(in.substr(pos, limit - pos))) return fail(400);
    return incomplete();
  }
  if (int st = parse_request_line(line, r.request); st != 0) return fail(st);

  bool close = false, keep_alive = false, have_length = false;
  std::string_view length;
  size_t headers = 0;
  for (;;) {
    if (!next_line(line)) return incomplete();
    if (line.empty()) break;
    if (++headers > kMaxHeaderLines) return fail(431);
    if (line[0] == ' ' || line[0] == '\t') return fail(400);  // obs-fold
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) return fail(400);
    std::string_view name = line.substr(0, colon);
    if (!all_tchar(name)) return fail(400);  // also whitespace before the colon
    std::string_view value = trim_ows(line.substr(colon + 1));
    for (char c : value)
      if ((uint8_t(c) < 0x20 && c != '\t') || c == 0x7F) return fail(400);  // bare CR, NUL, ...

    if (iequals(name, "connection")) {
      std::string_view rest = value;
      while (!rest.empty()) {
        size_t comma = rest.find(',');
        std::string_view opt = trim_ows(rest.substr(0, comma));
        if (iequals(opt, "close")) close = true;
        if (iequals(opt, "keep-alive")) keep_alive = true;
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      }
    } else if (iequals(name, "content-length")) {
      if (value.empty() || !std::all_of(value.begin(), value.end(), [](char c) { return c >= '0' && c <= '9'; }))
        return fail(400);
      if (have_length && value != length) return fail(400);
      have_length = true;
      length = value;
      if (value.find_first_not_of('0') != std::string_view::npos) r.request.has_body = true;
    } else if (iequals(name, "transfer-encoding")) {
      r.request.has_body = true;
    }
  }
  r.request.keep_alive = r.request.minor_version >= 1 ? !close : keep_alive && !close;
  r.state = ParseState::kRequest;
  r.consumed = pos;
  return r;
}

}  // namespace tern::metrics
