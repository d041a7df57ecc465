// Logging: spdlog underneath, with a module tag per line and a level per module.
//
//   TLOG_INFO("bdev", "created {} with {} blocks", name, n);
//   TLOG_RL_WARN("nvmf", 1000, "dropping PDU from {}", peer);   // at most once per 1000 ms per call site
//
// Levels are set once at start-up ("info" or "info,bdev=debug,reactor=trace") and may be changed at run
// time. A disabled level costs one relaxed load. Safe to call from any thread. The rate-limited variants
// exist for the I/O path, where an error can repeat a million times a second: they log the first, count
// the rest, and report the count with the next line that gets through.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

#include <fmt/format.h>

#include "common/result.h"

namespace tern::log {

enum class Level : int { kTrace = 0, kDebug, kInfo, kWarn, kError, kCritical, kOff };

// One per module tag; lives forever once created.
class Module {
 public:
  explicit Module(std::string name, Level level) : name_(std::move(name)), level_(static_cast<int>(level)) {}
  const std::string& name() const { return name_; }
  bool enabled(Level l) const { return static_cast<int>(l) >= level_.load(std::memory_order_relaxed); }
  void set_level(Level l) { level_.store(static_cast<int>(l), std::memory_order_relaxed); }
  Level level() const { return static_cast<Level>(level_.load(std::memory_order_relaxed)); }

 private:
  std::string name_;
  std::atomic<int> level_;
};

// Returns the module for a tag, creating it at the default level on first use.
Module& module(std::string_view name);

// "info" sets the default for all modules; "warn,bdev=debug" sets a default and overrides.
// Unknown level names are an error that names the bad part.
Status set_levels(std::string_view spec);
Result<Level> parse_level(std::string_view name);
std::string_view level_name(Level l);

// Output format: human text (default) or one JSON object per line.
enum class Format { kText, kJson };
void set_format(Format f);

void write(const Module& m, Level l, std::string_view msg);

// Per call site state for the rate-limited macros.
class RateLimit {
 public:
  // Returns true when this call may log; `suppressed` gets the number of calls dropped since the last one.
  bool admit(uint64_t interval_ms, uint64_t* suppressed);

 private:
  std::atomic<uint64_t> next_ns_{0};
  std::atomic<uint64_t> dropped_{0};
};

}  // namespace tern::log

#define TLOG_AT(lvl, mod, ...)                                                              \
  do {                                                                                      \
    static ::tern::log::Module& tlog_m_ = ::tern::log::module(mod);                        \
    if (tlog_m_.enabled(lvl)) ::tern::log::write(tlog_m_, lvl, fmt::format(__VA_ARGS__)); \
  } while (0)

#define TLOG_TRACE(mod, ...) TLOG_AT(::tern::log::Level::kTrace, mod, __VA_ARGS__)
#define TLOG_DEBUG(mod, ...) TLOG_AT(::tern::log::Level::kDebug, mod, __VA_ARGS__)
#define TLOG_INFO(mod, ...) TLOG_AT(::tern::log::Level::kInfo, mod, __VA_ARGS__)
#define TLOG_WARN(mod, ...) TLOG_AT(::tern::log::Level::kWarn, mod, __VA_ARGS__)
#define TLOG_ERROR(mod, ...) TLOG_AT(::tern::log::Level::kError, mod, __VA_ARGS__)

#define TLOG_RL_AT(lvl, mod, interval_ms, ...)                                               \
  do {                                                                                       \
    static ::tern::log::Module& tlog_m_ = ::tern::log::module(mod);                         \
    static ::tern::log::RateLimit tlog_rl_;                                                  \
    uint64_t tlog_dropped_ = 0;                                                              \
    if (tlog_m_.enabled(lvl) && tlog_rl_.admit(interval_ms, &tlog_dropped_)) {              \
      std::string tlog_s_ = fmt::format(__VA_ARGS__);                                       \
      if (tlog_dropped_) tlog_s_ += fmt::format(" ({} similar messages suppressed)", tlog_dropped_); \
      ::tern::log::write(tlog_m_, lvl, tlog_s_);                                             \
    }                                                                                        \
  } while (0)

#define TLOG_RL_WARN(mod, interval_ms, ...) TLOG_RL_AT(::tern::log::Level::kWarn, mod, interval_ms, __VA_ARGS__)
#define TLOG_RL_ERROR(mod, interval_ms, ...) TLOG_RL_AT(::tern::log::Level::kError, mod, interval_ms, __VA_ARGS__)
