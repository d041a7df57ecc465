// Uri: a strict parser for the device and child URIs used everywhere
// (`uring:///dev/sdb?blk_size=4096`, `malloc:///m0?size_mb=64`, `nvmf://10.0.0.2:8420/nqn...?nsid=1`).
//
// Grammar accepted:  scheme "://" [host [":" port]] [path] ["?" key "=" value *("&" key "=" value)]
//  - scheme: letter then letters/digits/"+"/"-"/"."; normalised to lower case.
//  - host: a DNS name or IPv4 address, or "[" IPv6 "]"; user-info and fragments are rejected.
//  - port: 1..65535.
//  - path and query values are percent-decoded; a malformed escape is an error.
//  - every query key needs a value; empty and duplicate keys are errors.
// Which schemes exist and which keys a scheme accepts is not this parser's business: the owner of the
// scheme checks them with UriQuery, which names any unknown key together with the keys it accepts.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace tern {

struct Uri {
  std::string scheme;
  std::string host;  // without the brackets of an IPv6 literal
  std::optional<uint16_t> port;
  std::string path;  // decoded, with its leading '/'
  std::vector<std::pair<std::string, std::string>> query;  // decoded, in order
  std::string text;  // the original text, for error messages

  static Result<Uri> Parse(std::string_view text);

  const std::string* param(std::string_view key) const;
  bool host_is_ipv6() const { return host.find(':') != std::string::npos; }
  // "host:port" with IPv6 hosts bracketed.
  std::string authority() const;
};

// Typed, checked access to a URI's query for one scheme's set of accepted keys.
class UriQuery {
 public:
  // Fails if the URI carries a key outside `allowed`.
  static Result<UriQuery> Make(const Uri& uri, std::initializer_list<std::string_view> allowed);

  bool has(std::string_view key) const { return uri_->param(key) != nullptr; }
  Result<std::optional<uint64_t>> u64(std::string_view key, uint64_t min = 0, uint64_t max = UINT64_MAX) const;
  Result<std::optional<bool>> boolean(std::string_view key) const;
  std::optional<std::string> str(std::string_view key) const;
  // Value must be one of `choices`.
  Result<std::optional<std::string>> choice(std::string_view key, std::initializer_list<std::string_view> choices) const;

 private:
  explicit UriQuery(const Uri& u) : uri_(&u) {}
  Status bad_value(std::string_view key, std::string_view value, std::string_view expected) const;
  const Uri* uri_;
};

}  // namespace tern
