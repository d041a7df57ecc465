#include "common/uri.h"

#include <arpa/inet.h>

#include <charconv>

namespace tern {
namespace {

Status uri_error(std::string_view text, std::string_view what) {
  return Status::Errorf(Errc::kInval, "invalid URI '{}': {}", text, what);
}

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
int hexval(char c) {
  if (is_digit(c)) return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Decodes %XX escapes; `part` names the URI component for the error message.
Result<std::string> decode(std::string_view text, std::string_view s, std::string_view part) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return uri_error(text, fmt::format("{} contains a space or control character", part));
    }
    if (c == '%') {
      if (i + 2 >= s.size() || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
        return uri_error(text, fmt::format("{} has a malformed percent-escape at '{}'", part, s.substr(i, 3)));
      }
      out.push_back(char(hexval(s[i + 1]) << 4 | hexval(s[i + 2])));
      i += 2;
    } else {
      out.push_back(c);
    }
  }
  return out;
}

bool valid_reg_name(std::string_view h) {
  for (char c : h) {
    if (!(is_alpha(c) || is_digit(c) || c == '-' || c == '.' || c == '_')) return false;
  }
  return true;
}

}  // namespace

Result<Uri> Uri::Parse(std::string_view text) {
  Uri u;
  u.text = std::string(text);
  if (text.empty()) return uri_error(text, "empty");

  size_t sep = text.find("://");
  if (sep == std::string_view::npos) {
    return uri_error(text, "missing '://' after the scheme (expected e.g. 'uring:///path/to/file')");
  }
  std::string_view scheme = text.substr(0, sep);
  if (scheme.empty()) return uri_error(text, "missing scheme");
  if (!is_alpha(scheme[0])) return uri_error(text, fmt::format("scheme '{}' must start with a letter", scheme));
  for (char c : scheme) {
    if (!(is_alpha(c) || is_digit(c) || c == '+' || c == '-' || c == '.')) {
      return uri_error(text, fmt::format("scheme '{}' contains invalid character '{}'", scheme, c));
    }
    u.scheme.push_back(char(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c));
  }

  std::string_view rest = text.substr(sep + 3);
  if (size_t hash = rest.find('#'); hash != std::string_view::npos) {
    return uri_error(text, "fragments ('#...') are not supported");
  }
  std::string_view query;
  if (size_t q = rest.find('?'); q != std::string_view::npos) {
    query = rest.substr(q + 1);
    rest = rest.substr(0, q);
    if (query.empty()) return uri_error(text, "'?' is not followed by any query parameter");
  }
  size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);

  if (authority.find('@') != std::string_view::npos) return uri_error(text, "user information ('user@') is not supported");
  std::string_view host = authority, port;
  if (!authority.empty() && authority[0] == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) return uri_error(text, "IPv6 address is missing its closing ']'");
    host = authority.substr(1, close - 1);
    std::string h(host);
    in6_addr a6;
    if (inet_pton(AF_INET6, h.c_str(), &a6) != 1) {
      return uri_error(text, fmt::format("'{}' is not a valid IPv6 address", host));
    }
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after[0] != ':') return uri_error(text, fmt::format("unexpected '{}' after the IPv6 address", after));
      port = after.substr(1);
      if (port.empty()) return uri_error(text, "':' is not followed by a port number");
    }
  } else if (size_t colon = authority.find(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
    if (port.empty()) return uri_error(text, "':' is not followed by a port number");
    if (host.empty()) return uri_error(text, "a port is given without a host");
  }
  if (!host.empty() && authority[0] != '[' && !valid_reg_name(host)) {
    return uri_error(text, fmt::format("host '{}' contains invalid characters", host));
  }
  if (!port.empty()) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) {
      return uri_error(text, fmt::format("port '{}' is not a number from 1 to 65535", port));
    }
    u.port = uint16_t(v);
  }
  u.host = std::string(host);

  auto dpath = decode(text, path, "path");
  if (!dpath.ok()) return dpath.status();
  u.path = std::move(*dpath);

  if (!query.empty()) {
    size_t pos = 0;
    while (true) {
      size_t amp = query.find('&', pos);
      std::string_view kv = query.substr(pos, amp == std::string_view::npos ? std::string_view::npos : amp - pos);
      if (kv.empty()) return uri_error(text, "empty query parameter (stray '&')");
      size_t eq = kv.find('=');
      if (eq == std::string_view::npos) {
        return uri_error(text, fmt::format("query parameter '{}' has no value (expected '{}=<value>')", kv, kv));
      }
      if (eq == 0) return uri_error(text, fmt::format("query parameter '{}' has an empty name", kv));
      auto key = decode(text, kv.substr(0, eq), "query parameter name");
      if (!key.ok()) return key.status();
      auto val = decode(text, kv.substr(eq + 1), fmt::format("value of query parameter '{}'", *key));
      if (!val.ok()) return val.status();
      if (u.param(*key)) return uri_error(text, fmt::format("query parameter '{}' is given twice", *key));
      u.query.emplace_back(std::move(*key), std::move(*val));
      if (amp == std::string_view::npos) break;
      pos = amp + 1;
    }
  }
  return u;
}

const std::string* Uri::param(std::string_view key) const {
  for (auto& [k, v] : query)
    if (k == key) return &v;
  return nullptr;
}

std::string Uri::authority() const {
  std::string h = host_is_ipv6() ? "[" + host + "]" : host;
  if (port) h += fmt::format(":{}", *port);
  return h;
}

Result<UriQuery> UriQuery::Make(const Uri& uri, std::initializer_list<std::string_view> allowed) {
  for (auto& [k, v] : uri.query) {
    bool ok = false;
    for (auto a : allowed) ok |= (a == k);
    if (!ok) {
      std::string list;
      for (auto a : allowed) list += (list.empty() ? "" : ", ") + std::string(a);
      return Status::Errorf(Errc::kInval, "invalid URI '{}': unknown query parameter '{}' for scheme '{}' ({})", uri.text,
                            k, uri.scheme, list.empty() ? "it takes no parameters" : "accepted: " + list);
    }
  }
  return UriQuery(uri);
}

Status UriQuery::bad_value(std::string_view key, std::string_view value, std::string_view expected) const {
  return Status::Errorf(Errc::kInval, "invalid URI '{}': query parameter '{}' has value '{}', expected {}", uri_->text,
                        key, value, expected);
}

Result<std::optional<uint64_t>> UriQuery::u64(std::string_view key, uint64_t min, uint64_t max) const {
  const std::string* v = uri_->param(key);
  if (!v) return std::optional<uint64_t>();
  uint64_t x = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), x);
  if (v->empty() || ec != std::errc() || p != v->data() + v->size()) {
    return bad_value(key, *v, "a non-negative integer");
  }
  if (x < min || x > max) return bad_value(key, *v, fmt::format("an integer from {} to {}", min, max));
  return std::optional<uint64_t>(x);
}

Result<std::optional<bool>> UriQuery::boolean(std::string_view key) const {
  const std::string* v = uri_->param(key);
  if (!v) return std::optional<bool>();
  if (*v == "true" || *v == "1" || *v == "yes") return std::optional<bool>(true);
  if (*v == "false" || *v == "0" || *v == "no") return std::optional<bool>(false);
  return bad_value(key, *v, "true or false");
}

std::optional<std::string> UriQuery::str(std::string_view key) const {
  const std::string* v = uri_->param(key);
  return v ? std::optional<std::string>(*v) : std::nullopt;
}

Result<std::optional<std::string>> UriQuery::choice(std::string_view key,
                                                    std::initializer_list<std::string_view> choices) const {
  const std::string* v = uri_->param(key);
  if (!v) return std::optional<std::string>();
  std::string list;
  for (auto c : choices) {
    if (c == *v) return std::optional<std::string>(*v);
    list += (list.empty() ? "" : " or ") + std::string(c);
  }
  return bad_value(key, *v, list);
}

}  // namespace tern
