// Small string helpers shared by the daemons' command lines.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace tern {

// "a,b,,c" -> {"a", "b", "c"}: the comma-separated items of a flag's value, empty ones dropped.
inline std::vector<std::string> split_commas(std::string_view s) {
  std::vector<std::string> out;
  size_t at = 0;
  while (at <= s.size()) {
    size_t c = s.find(',', at);
    if (c == std::string_view::npos) c = s.size();
    if (c > at) out.emplace_back(s.substr(at, c - at));
    at = c + 1;
  }
  return out;
}

}  // namespace tern
