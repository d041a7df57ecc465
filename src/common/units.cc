#include "common/units.h"

#include <charconv>
#include <cmath>

namespace tern {
namespace {

std::string lower(std::string_view s) {
  std::string o(s);
  for (char& c : o)
    if (c >= 'A' && c <= 'Z') c = char(c - 'A' + 'a');
  return o;
}

}  // namespace

Result<uint64_t> parse_size(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
  if (i == 0) return Status::Errorf(Errc::kInval, "invalid size '{}': expected a number with an optional unit (k, m, g, t)", s);
  uint64_t n = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + i, n);
  if (ec != std::errc()) return Status::Errorf(Errc::kInval, "invalid size '{}': number out of range", s);
  std::string unit = lower(s.substr(i));
  uint64_t mul;
  if (unit.empty() || unit == "b") mul = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") mul = 1ull << 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") mul = 1ull << 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") mul = 1ull << 30;
  else if (unit == "t" || unit == "tb" || unit == "tib") mul = 1ull << 40;
  else return Status::Errorf(Errc::kInval, "invalid size '{}': unknown unit '{}' (use k, m, g or t; powers of 1024)", s, s.substr(i));
  if (n > UINT64_MAX / mul) return Status::Errorf(Errc::kInval, "invalid size '{}': too large", s);
  return n * mul;
}

Result<uint64_t> parse_duration_ns(std::string_view s) {
  size_t i = 0;
  while (i < s.size() && ((s[i] >= '0' && s[i] <= '9') || s[i] == '.')) ++i;
  double v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + i, v);
  if (i == 0 || ec != std::errc() || p != s.data() + i || v < 0) {
    return Status::Errorf(Errc::kInval, "invalid duration '{}': expected e.g. 10s, 500ms, 2m", s);
  }
  std::string unit = lower(s.substr(i));
  double mul;
  if (unit.empty() || unit == "s") mul = 1e9;
  else if (unit == "ms") mul = 1e6;
  else if (unit == "us") mul = 1e3;
  else if (unit == "ns") mul = 1;
  else if (unit == "m" || unit == "min") mul = 60e9;
  else if (unit == "h") mul = 3600e9;
  else return Status::Errorf(Errc::kInval, "invalid duration '{}': unknown unit '{}' (ns, us, ms, s, m, h)", s, s.substr(i));
  double ns = v * mul;
  if (ns > 1e18) return Status::Errorf(Errc::kInval, "invalid duration '{}': too long", s);
  return uint64_t(std::llround(ns));
}

std::string format_size(uint64_t b) {
  static const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = double(b);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return fmt::format("{} B", b);
  if (v == std::floor(v)) return fmt::format("{:.0f} {}", v, units[u]);
  return fmt::format("{:.1f} {}", v, units[u]);
}

}  // namespace tern
