// ErrorRule: the text form of an error-injection rule (see fault_bdevs.h). Kept apart from the device
// so the parser can be fuzzed without the runtime.
#include <charconv>
#include <cstring>

#include "bdev/fault_bdevs.h"

namespace tern {

namespace {

Result<uint64_t> parse_u64(std::string_view spec, std::string_view key, std::string_view v) {
  uint64_t x = 0;
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (v.empty() || ec != std::errc() || p != v.data() + v.size()) {
    return Status::Errorf(Errc::kInval, "error rule '{}': {}='{}' is not a non-negative integer", spec, key, v);
  }
  return x;
}

Result<Errc> parse_errno_name(std::string_view name) {
  for (int e = 1; e < 134; ++e) {
    const char* n = strerrorname_np(e);
    if (n && name == n) return static_cast<Errc>(e);
  }
  return Status::Errorf(Errc::kInval, "unknown errno name '{}' (expected e.g. EIO, ENOSPC, ETIMEDOUT)", name);
}

}  // namespace

Result<ErrorRule> ErrorRule::Parse(std::string_view spec) {
  ErrorRule r;
  bool ops_given = false;
  size_t pos = 0;
  while (pos < spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string_view kv = spec.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    pos = comma == std::string_view::npos ? spec.size() : comma + 1;
    size_t eq = kv.find('=');
    if (eq == std::string_view::npos) {
      return Status::Errorf(Errc::kInval, "error rule '{}': '{}' is not key=value", spec, kv);
    }
    std::string_view k = kv.substr(0, eq), v = kv.substr(eq + 1);
    if (k == "op") {
      if (!ops_given) r.ops = 0;
      ops_given = true;
      size_t p2 = 0;
      while (p2 <= v.size()) {
        size_t plus = v.find('+', p2);
        std::string_view one = v.substr(p2, plus == std::string_view::npos ? std::string_view::npos : plus - p2);
        bool found = false;
        if (one == "all") {
          r.ops |= ErrorRule::kAllButReset;
          found = true;
        }
        for (size_t t = 0; t < kIoTypeCount && !found; ++t) {
          if (io_type_name(IoType(t)) == one) {
            r.ops |= 1u << t;
            found = true;
          }
        }
        if (!found) {
          return Status::Errorf(Errc::kInval,
                                "error rule '{}': unknown op '{}' (read, write, flush, unmap, write_zeroes, reset, all)",
                                spec, one);
        }
        if (plus == std::string_view::npos) break;
        p2 = plus + 1;
      }
    } else if (k == "lba") {
      size_t dash = v.find('-');
      if (dash == std::string_view::npos) {
        return Status::Errorf(Errc::kInval, "error rule '{}': lba must be a range 'A-B' (end exclusive)", spec);
      }
      TERN_ASSIGN_OR_RETURN(r.lba_begin, parse_u64(spec, k, v.substr(0, dash)));
      TERN_ASSIGN_OR_RETURN(r.lba_end, parse_u64(spec, k, v.substr(dash + 1)));
      if (r.lba_end <= r.lba_begin) {
        return Status::Errorf(Errc::kInval, "error rule '{}': lba range '{}' is empty", spec, v);
      }
    } else if (k == "count") {
      TERN_ASSIGN_OR_RETURN(uint64_t c, parse_u64(spec, k, v));
      if (c > uint64_t(INT64_MAX)) return Status::Errorf(Errc::kInval, "error rule '{}': count={} is too large", spec, c);
      r.count = int64_t(c);
    } else if (k == "prob") {
      double d = 0;
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), d);
      if (v.empty() || ec != std::errc() || p != v.data() + v.size() || d < 0 || d > 1) {
        return Status::Errorf(Errc::kInval, "error rule '{}': prob='{}' must be a number from 0 to 1", spec, v);
      }
      r.probability = d;
    } else if (k == "kind") {
      if (v == "error") r.kind = Kind::kError;
      else if (v == "media") r.kind = Kind::kMediaError;
      else if (v == "timeout") r.kind = Kind::kTimeout;
      else if (v == "corrupt") r.kind = Kind::kCorrupt;
      else return Status::Errorf(Errc::kInval, "error rule '{}': kind='{}' must be error, media, timeout or corrupt", spec, v);
    } else if (k == "errno") {
      auto e = parse_errno_name(v);
      if (!e.ok()) return e.status().WithContext(fmt::format("error rule '{}'", spec));
      r.error = *e;
    } else if (k == "hold_ms") {
      TERN_ASSIGN_OR_RETURN(uint64_t ms, parse_u64(spec, k, v));
      r.hold_ns = ms * 1000000;
    } else {
      return Status::Errorf(Errc::kInval,
                            "error rule '{}': unknown key '{}' (op, lba, count, prob, kind, errno, hold_ms)", spec, k);
    }
  }
  if (r.kind == Kind::kTimeout && (r.ops & (1u << unsigned(IoType::kReset)))) {
    return Status::Errorf(Errc::kInval,
                          "error rule '{}': kind=timeout cannot hold resets (a reset is what releases held requests)",
                          spec);
  }
  return r;
}

std::string ErrorRule::ToString() const {
  std::string ops_s;
  if (ops == kAllButReset) {
    ops_s = "all";
  } else {
    for (size_t t = 0; t < kIoTypeCount; ++t)
      if (ops & (1u << t)) ops_s += (ops_s.empty() ? "" : "+") + std::string(io_type_name(IoType(t)));
  }
  std::string s = "op=" + ops_s;
  if (lba_begin != 0 || lba_end != UINT64_MAX) s += fmt::format(",lba={}-{}", lba_begin, lba_end);
  if (count >= 0) s += fmt::format(",count={}", count);
  if (probability < 1.0) s += fmt::format(",prob={}", probability);
  s += kind == Kind::kError ? fmt::format(",kind=error,errno={}", errc_name(error))
       : kind == Kind::kMediaError ? std::string(",kind=media")
       : kind == Kind::kCorrupt    ? std::string(",kind=corrupt")
                                   : fmt::format(",kind=timeout,hold_ms={}", hold_ns / 1000000);
  return s;
}

}  // namespace tern
