// Uuid: 128-bit identifier; parsed from and formatted as the canonical 8-4-4-4-12 hex form.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "common/result.h"

namespace tern {

class Uuid {
 public:
  constexpr Uuid() = default;  // the nil UUID
  explicit Uuid(const std::array<uint8_t, 16>& b) : bytes_(b) {}

  // A random (version 4, RFC 4122 variant) UUID from the kernel's CSPRNG.
  static Uuid Generate();
  // A name-based UUID (version 8, RFC 9562 variant): the same `base` and `name` always give the same UUID,
  // different ones almost surely differ (two FNV-1a 64-bit hashes; not meant to resist an adversary).
  // For identifiers that retries must reproduce (e.g. the snapshots of a volume snapshot's replicas).
  static Uuid Derive(const Uuid& base, std::string_view name);
  // Accepts the canonical form, any hex case; anything else is an error naming the position.
  static Result<Uuid> Parse(std::string_view s);

  bool is_nil() const;
  const std::array<uint8_t, 16>& bytes() const { return bytes_; }
  std::string ToString() const;  // lower-case canonical form

  friend bool operator==(const Uuid&, const Uuid&) = default;
  friend auto operator<=>(const Uuid&, const Uuid&) = default;

 private:
  std::array<uint8_t, 16> bytes_{};
};

std::ostream& operator<<(std::ostream& os, const Uuid& u);

}  // namespace tern

template <>
struct std::hash<tern::Uuid> {
  size_t operator()(const tern::Uuid& u) const noexcept {
    uint64_t a, b;
    __builtin_memcpy(&a, u.bytes().data(), 8);
    __builtin_memcpy(&b, u.bytes().data() + 8, 8);
    return a ^ (b * 0x9e3779b97f4a7c15ull);
  }
};

template <>
struct fmt::formatter<tern::Uuid> : fmt::formatter<std::string> {
  template <typename Ctx>
  auto format(const tern::Uuid& u, Ctx& ctx) const {
    return fmt::formatter<std::string>::format(u.ToString(), ctx);
  }
};
