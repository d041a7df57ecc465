#include "store/http_parser.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstring>

namespace tern::store {
namespace {

// RFC 9110 tchar: the characters of a token (header names, codings, chunk-extension names).
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

bool is_token(std::string_view s) { return !s.empty() && std::all_of(s.begin(), s.end(), tchar); }

char lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (lower(a[i]) != lower(b[i])) return false;
  return true;
}

bool ows(char c) { return c == ' ' || c == '\t'; }

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && ows(s.front())) s.remove_prefix(1);
  while (!s.empty() && ows(s.back())) s.remove_suffix(1);
  return s;
}

// Field values and reason phrases: visible characters, spaces, tabs and obs-text; no other controls.
bool field_text(std::string_view s) {
  for (char ch : s) {
    auto c = uint8_t(ch);
    if ((c < 0x20 && c != '\t') || c == 0x7F) return false;
  }
  return true;
}

bool digit(char c) { return c >= '0' && c <= '9'; }

int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// For error messages: at most 60 characters of `s`, with anything unprintable escaped.
std::string printable(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size() && i < 60; ++i) {
    auto c = uint8_t(s[i]);
    if (c >= 0x20 && c < 0x7F && c != '\\') {
      out += char(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (s.size() > 60) out += "...";
  return out;
}

// Splits a comma-separated header value into its trimmed, non-empty elements.
template <typename F>
void for_each_element(std::string_view v, F f) {
  while (!v.empty()) {
    size_t comma = v.find(',');
    std::string_view e = trim_ows(v.substr(0, comma));
    if (!e.empty()) f(e);
    if (comma == std::string_view::npos) break;
    v.remove_prefix(comma + 1);
  }
}

// RFC 9112 section 7.1.1: *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ), plus trailing
// whitespace (harmless, and some servers send it).
bool valid_chunk_ext(std::string_view s) {
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < s.size() && ows(s[i])) ++i;
  };
  auto token = [&] {
    size_t start = i;
    while (i < s.size() && tchar(s[i])) ++i;
    return i > start;
  };
  while (true) {
    skip_ws();
    if (i == s.size()) return true;
    if (s[i] != ';') return false;
    ++i;
    skip_ws();
    if (!token()) return false;
    size_t save = i;
    skip_ws();
    if (i < s.size() && s[i] == '=') {
      ++i;
      skip_ws();
      if (i < s.size() && s[i] == '"') {
        ++i;
        bool closed = false;
        while (i < s.size()) {
          auto c = uint8_t(s[i]);
          if (c == '"') {
            closed = true;
            ++i;
            break;
          }
          if (c == '\\') {
            if (i + 1 >= s.size()) return false;
            auto q = uint8_t(s[i + 1]);
            if ((q < 0x20 && q != '\t') || q == 0x7F) return false;
            i += 2;
            continue;
          }
          if ((c < 0x20 && c != '\t') || c == 0x7F) return false;
          ++i;
        }
        if (!closed) return false;
      } else if (!token()) {
        return false;
      }
    } else {
      i = save;
    }
  }
}

}  // namespace

const std::string* HttpResponseHead::header(std::string_view name) const {
  for (const auto& h : headers)
    if (iequals(h.name, name)) return &h.value;
  return nullptr;
}

void HttpResponseParser::reset(bool head_request) {
  state_ = State::kStatusLine;
  head_request_ = head_request;
  started_ = false;
  close_after_ = false;
  head_ = HttpResponseHead();
  trailers_.clear();
  line_.clear();
  section_bytes_ = 0;
  header_lines_ = 0;
  trailer_lines_ = 0;
  interim_ = 0;
  remaining_ = 0;
  body_bytes_ = 0;
  error_.clear();
}

HttpResponseParser::Step HttpResponseParser::fail(std::string msg, size_t consumed) {
  state_ = State::kError;
  error_ = std::move(msg);
  return Step{Event::kError, consumed, {}};
}

bool HttpResponseParser::take_line(std::string_view in, size_t allowance, size_t& used, bool& too_long) {
  const void* nl = std::memchr(in.data(), '\n', in.size());
  size_t n = nl ? size_t(static_cast<const char*>(nl) - in.data()) + 1 : in.size();
  used = n;
  too_long = line_.size() + n > allowance;
  if (too_long) return false;
  line_.append(in.data(), nl ? n - 1 : n);
  if (!nl) return false;
  if (!line_.empty() && line_.back() == '\r') line_.pop_back();
  return true;
}

std::string HttpResponseParser::on_status_line() {
  std::string_view l = line_;
  if (l.find('\r') != std::string_view::npos) return fmt::format("bare CR in the status line '{}'", printable(l));
  if (l.size() < 12 || l.substr(0, 5) != "HTTP/" || !digit(l[5]) || l[6] != '.' || !digit(l[7]) || l[8] != ' ' ||
      !digit(l[9]) || !digit(l[10]) || !digit(l[11]) || (l.size() > 12 && l[12] != ' ')) {
    return fmt::format("malformed status line '{}' (expected 'HTTP/1.1 <3-digit status> <reason>')", printable(l));
  }
  if (l[5] != '1') return fmt::format("unsupported HTTP version '{}' (only HTTP/1.x)", printable(l.substr(0, 8)));
  head_.minor_version = l[7] - '0';
  head_.status = (l[9] - '0') * 100 + (l[10] - '0') * 10 + (l[11] - '0');
  if (head_.status < 100 || head_.status > 599) return fmt::format("status code {} out of range", head_.status);
  std::string_view reason = l.size() > 12 ? l.substr(13) : std::string_view();
  if (!field_text(reason)) return fmt::format("control character in the reason phrase '{}'", printable(reason));
  head_.reason = std::string(reason);
  state_ = State::kHeaderLine;
  return {};
}

std::string HttpResponseParser::on_header_line(std::vector<HttpHeader>& into, size_t& lines) {
  std::string_view l = line_;
  const char* what = &into == &trailers_ ? "trailer" : "header";
  if (++lines > limits_.max_header_lines) return fmt::format("more than {} {} lines", limits_.max_header_lines, what);
  if (l.find('\r') != std::string_view::npos) return fmt::format("bare CR in {} line '{}'", what, printable(l));
  if (ows(l[0])) return fmt::format("obsolete line folding in {} line '{}'", what, printable(l));
  size_t colon = l.find(':');
  if (colon == std::string_view::npos) return fmt::format("{} line without a colon: '{}'", what, printable(l));
  std::string_view name = l.substr(0, colon);
  if (!is_token(name)) return fmt::format("invalid {} name '{}'", what, printable(name));
  std::string_view value = trim_ows(l.substr(colon + 1));
  if (!field_text(value)) return fmt::format("control character in {} '{}'", what, printable(name));
  into.push_back(HttpHeader{std::string(name), std::string(value)});
  return {};
}

std::string HttpResponseParser::on_head_end() {
  if (head_.status < 200) {
    // Interim responses (100 Continue, 103 Early Hints) precede the real one. 101 would switch the
    // connection to another protocol, which this client never asks for.
    if (head_.status == 101) return "unexpected 101 Switching Protocols";
    if (++interim_ > limits_.max_interim_responses) {
      return fmt::format("more than {} interim (1xx) responses", limits_.max_interim_responses);
    }
    head_ = HttpResponseHead();
    section_bytes_ = 0;
    header_lines_ = 0;
    state_ = State::kStatusLine;
    return {};
  }
  // Transfer-Encoding: only "chunked", once. Anything else would need decoding this client does not do,
  // and a response whose length it cannot find would desynchronise the connection.
  std::vector<std::string_view> codings;
  bool te = false;
  for (const auto& h : head_.headers) {
    if (!iequals(h.name, "transfer-encoding")) continue;
    te = true;
    for_each_element(h.value, [&](std::string_view e) { codings.push_back(e); });
  }
  if (te) {
    if (codings.size() != 1 || !iequals(codings[0], "chunked")) {
      std::string all;
      for (const auto& h : head_.headers)
        if (iequals(h.name, "transfer-encoding")) all += (all.empty() ? "" : ", ") + h.value;
      return fmt::format("unsupported transfer coding '{}' (only chunked is accepted)", printable(all));
    }
    head_.chunked = true;
  }
  // Content-Length: repeated or listed values must agree.
  for (const auto& h : head_.headers) {
    if (!iequals(h.name, "content-length")) continue;
    std::string err;
    bool any = false;
    for_each_element(h.value, [&](std::string_view e) {
      any = true;
      if (!err.empty()) return;
      if (e.size() > 19 || !std::all_of(e.begin(), e.end(), digit)) {
        err = fmt::format("invalid Content-Length '{}'", printable(h.value));
        return;
      }
      uint64_t v = 0;
      for (char c : e) v = v * 10 + uint64_t(c - '0');
      if (head_.content_length && *head_.content_length != v) {
        err = fmt::format("conflicting Content-Length values {} and {}", *head_.content_length, v);
        return;
      }
      head_.content_length = v;
    });
    if (!any) err = "empty Content-Length";
    if (!err.empty()) return err;
  }
  // Connection options.
  bool close = false, keep_alive = false;
  for (const auto& h : head_.headers) {
    if (!iequals(h.name, "connection")) continue;
    for_each_element(h.value, [&](std::string_view e) {
      if (iequals(e, "close")) close = true;
      if (iequals(e, "keep-alive")) keep_alive = true;
    });
  }
  head_.keep_alive = !close && (head_.minor_version >= 1 || keep_alive);

  section_bytes_ = 0;
  if (head_.chunked && head_.content_length) {
    // RFC 9112 section 6.3: Transfer-Encoding wins, and the connection must not be reused — a sender
    // that sends both is confused or smuggling.
    head_.content_length.reset();
    close_after_ = true;
  }
  if (head_request_ || head_.status == 204 || head_.status == 304) {
    state_ = State::kEnding;
  } else if (head_.chunked) {
    state_ = State::kChunkSize;
  } else if (head_.content_length) {
    uint64_t n = *head_.content_length;
    if (limits_.max_body_bytes && n > limits_.max_body_bytes) {
      return fmt::format("body of {} bytes exceeds the limit of {} bytes", n, limits_.max_body_bytes);
    }
    remaining_ = n;
    state_ = n ? State::kBodyLength : State::kEnding;
  } else {
    state_ = State::kBodyClose;
    close_after_ = true;
  }
  return {};
}

std::string HttpResponseParser::on_chunk_size_line() {
  std::string_view l = line_;
  if (l.find('\r') != std::string_view::npos) return fmt::format("bare CR in chunk-size line '{}'", printable(l));
  size_t i = 0;
  uint64_t size = 0;
  while (i < l.size() && hexval(l[i]) >= 0) {
    if (i == 16) return fmt::format("chunk size '{}' too large", printable(l));
    size = size * 16 + uint64_t(hexval(l[i]));
    ++i;
  }
  if (i == 0) return fmt::format("malformed chunk-size line '{}' (expected a hexadecimal size)", printable(l));
  if (!valid_chunk_ext(l.substr(i))) return fmt::format("malformed chunk extension in '{}'", printable(l));
  if (size == 0) {
    state_ = State::kTrailer;
    section_bytes_ = 0;
    return {};
  }
  if (limits_.max_body_bytes && (size > limits_.max_body_bytes || body_bytes_ + size > limits_.max_body_bytes)) {
    return fmt::format("chunked body exceeds the limit of {} bytes", limits_.max_body_bytes);
  }
  remaining_ = size;
  state_ = State::kChunkData;
  return {};
}

HttpResponseParser::Step HttpResponseParser::next(std::string_view in) {
  size_t pos = 0;
  while (true) {
    switch (state_) {
      case State::kError:
        return Step{Event::kError, pos, {}};
      case State::kDone:
        return Step{Event::kComplete, pos, {}};
      case State::kEnding:
        state_ = State::kDone;
        return Step{Event::kComplete, pos, {}};

      case State::kStatusLine:
      case State::kHeaderLine:
      case State::kTrailer: {
        if (pos == in.size()) return Step{Event::kNeedMore, pos, {}};
        started_ = true;
        size_t used = 0;
        bool too_long = false;
        // section_bytes_ already counts the part of this line that arrived earlier (in line_).
        bool done = take_line(in.substr(pos), limits_.max_head_bytes - (section_bytes_ - line_.size()), used, too_long);
        if (too_long) {
          return fail(state_ == State::kTrailer
                          ? fmt::format("trailers larger than {} bytes", limits_.max_head_bytes)
                          : fmt::format("response head larger than {} bytes", limits_.max_head_bytes),
                      pos + used);
        }
        pos += used;
        section_bytes_ += used;
        if (state_ == State::kStatusLine) {
          // Not an HTTP response at all (a TLS alert, say): say so as soon as it shows, not at the size
          // limit.
          size_t n = std::min<size_t>(line_.size(), 5);
          if (line_.compare(0, n, "HTTP/", n) != 0) {
            return fail(fmt::format("not an HTTP response: starts with '{}'", printable(line_)), pos);
          }
        }
        if (!done) return Step{Event::kNeedMore, pos, {}};
        std::string err;
        State was = state_;
        if (was == State::kStatusLine) {
          err = on_status_line();
        } else if (!line_.empty()) {
          err = on_header_line(was == State::kTrailer ? trailers_ : head_.headers,
                               was == State::kTrailer ? trailer_lines_ : header_lines_);
        } else if (was == State::kHeaderLine) {
          err = on_head_end();
          if (err.empty() && state_ != State::kStatusLine) {
            line_.clear();
            return Step{Event::kHead, pos, {}};
          }
        } else {
          line_.clear();
          state_ = State::kDone;
          return Step{Event::kComplete, pos, {}};
        }
        line_.clear();
        if (!err.empty()) return fail(std::move(err), pos);
        break;
      }

      case State::kBodyLength:
      case State::kChunkData: {
        if (pos == in.size()) return Step{Event::kNeedMore, pos, {}};
        size_t n = size_t(std::min<uint64_t>(remaining_, in.size() - pos));
        std::string_view data = in.substr(pos, n);
        pos += n;
        remaining_ -= n;
        body_bytes_ += n;
        if (remaining_ == 0) state_ = state_ == State::kBodyLength ? State::kEnding : State::kChunkDataCr;
        return Step{Event::kBody, pos, data};
      }

      case State::kBodyClose: {
        if (pos == in.size()) return Step{Event::kNeedMore, pos, {}};
        size_t n = in.size() - pos;
        if (limits_.max_body_bytes && body_bytes_ + n > limits_.max_body_bytes) {
          return fail(fmt::format("body exceeds the limit of {} bytes", limits_.max_body_bytes), pos);
        }
        std::string_view data = in.substr(pos, n);
        pos += n;
        body_bytes_ += n;
        return Step{Event::kBody, pos, data};
      }

      case State::kChunkSize: {
        if (pos == in.size()) return Step{Event::kNeedMore, pos, {}};
        size_t used = 0;
        bool too_long = false;
        bool done = take_line(in.substr(pos), limits_.max_chunk_line_bytes, used, too_long);
        if (too_long) {
          return fail(fmt::format("chunk-size line longer than {} bytes", limits_.max_chunk_line_bytes), pos + used);
        }
        pos += used;
        if (!done) return Step{Event::kNeedMore, pos, {}};
        std::string err = on_chunk_size_line();
        line_.clear();
        if (!err.empty()) return fail(std::move(err), pos);
        break;
      }

      case State::kChunkDataCr:
      case State::kChunkDataLf: {
        if (pos == in.size()) return Step{Event::kNeedMore, pos, {}};
        char c = in[pos++];
        if (state_ == State::kChunkDataCr && c == '\r') {
          state_ = State::kChunkDataLf;
          break;
        }
        if (c == '\n') {
          state_ = State::kChunkSize;
          return Step{Event::kChunkEnd, pos, {}};
        }
        return fail(state_ == State::kChunkDataCr ? "chunk data longer than its declared size"
                                                  : "bare CR after chunk data",
                    pos);
      }
    }
  }
}

HttpResponseParser::Step HttpResponseParser::finish() {
  switch (state_) {
    case State::kDone:
      return Step{Event::kComplete, 0, {}};
    case State::kBodyClose:
    case State::kEnding:
      state_ = State::kDone;
      return Step{Event::kComplete, 0, {}};
    case State::kError:
      return Step{Event::kError, 0, {}};
    case State::kStatusLine:
      if (!started_) return fail("the connection closed before a response arrived", 0);
      return fail("the connection closed in the middle of the response head", 0);
    case State::kHeaderLine:
      return fail("the connection closed in the middle of the response head", 0);
    case State::kBodyLength:
      return fail(fmt::format("the connection closed after {} of {} body bytes", body_bytes_,
                              head_.content_length.value_or(0)),
                  0);
    case State::kTrailer:
      return fail("the connection closed in the trailers of a chunked body", 0);
    default:
      return fail(fmt::format("the connection closed in a chunked body after {} bytes", body_bytes_), 0);
  }
}

}  // namespace tern::store
