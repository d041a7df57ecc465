#include "common/log.h"

#include <ctime>
#include <map>
#include <memory>
#include <mutex>

#include <nlohmann/json.hpp>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include "common/result.h"

namespace tern::log {
namespace {

struct Registry {
  std::mutex mu;
  std::map<std::string, std::unique_ptr<Module>, std::less<>> modules;
  Level default_level = Level::kInfo;
  std::map<std::string, Level, std::less<>> overrides;
  std::atomic<Format> format{Format::kText};
  std::shared_ptr<spdlog::logger> text;
  std::shared_ptr<spdlog::logger> json;

  Registry() {
    text = spdlog::stderr_logger_mt("tern");
    text->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %^%-5l%$ [%t] %v", spdlog::pattern_time_type::utc);
    text->set_level(spdlog::level::trace);
    json = spdlog::stderr_logger_mt("tern-json");
    json->set_pattern("%v");
    json->set_level(spdlog::level::trace);
  }
};

Registry& reg() {
  static Registry* r = new Registry();  // never destroyed: loggers are used until exit
  return *r;
}

spdlog::level::level_enum to_spd(Level l) {
  switch (l) {
    case Level::kTrace: return spdlog::level::trace;
    case Level::kDebug: return spdlog::level::debug;
    case Level::kInfo: return spdlog::level::info;
    case Level::kWarn: return spdlog::level::warn;
    case Level::kError: return spdlog::level::err;
    case Level::kCritical: return spdlog::level::critical;
    case Level::kOff: return spdlog::level::off;
  }
  return spdlog::level::info;
}

uint64_t mono_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

}  // namespace

Module& module(std::string_view name) {
  Registry& r = reg();
  std::lock_guard lk(r.mu);
  auto it = r.modules.find(name);
  if (it != r.modules.end()) return *it->second;
  Level l = r.default_level;
  if (auto o = r.overrides.find(name); o != r.overrides.end()) l = o->second;
  auto m = std::make_unique<Module>(std::string(name), l);
  Module& ref = *m;
  r.modules.emplace(std::string(name), std::move(m));
  return ref;
}

std::string_view level_name(Level l) {
  switch (l) {
    case Level::kTrace: return "trace";
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
    case Level::kCritical: return "critical";
    case Level::kOff: return "off";
  }
  return "?";
}

Result<Level> parse_level(std::string_view name) {
  for (int i = 0; i <= static_cast<int>(Level::kOff); ++i) {
    if (level_name(static_cast<Level>(i)) == name) return static_cast<Level>(i);
  }
  return Status::Errorf(Errc::kInval, "unknown log level '{}' (expected trace, debug, info, warn, error, critical or off)",
                        name);
}

Status set_levels(std::string_view spec) {
  // Parse everything first so that a bad spec changes nothing.
  std::optional<Level> def;
  std::map<std::string, Level, std::less<>> ov;
  size_t pos = 0;
  while (pos <= spec.size()) {
    size_t comma = spec.find(',', pos);
    std::string_view part = spec.substr(pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos);
    if (part.empty()) return Status::Errorf(Errc::kInval, "empty element in log level spec '{}'", spec);
    size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      auto l = parse_level(part);
      if (!l.ok()) return l.status();
      def = *l;
    } else {
      std::string_view mod = part.substr(0, eq);
      if (mod.empty()) return Status::Errorf(Errc::kInval, "missing module name in log level spec element '{}'", part);
      auto l = parse_level(part.substr(eq + 1));
      if (!l.ok()) return l.status().WithContext(fmt::format("module '{}'", mod));
      ov[std::string(mod)] = *l;
    }
    if (comma == std::string_view::npos) break;
    pos = comma + 1;
  }
  Registry& r = reg();
  std::lock_guard lk(r.mu);
  if (def) r.default_level = *def;
  for (auto& [k, v] : ov) r.overrides[k] = v;
  for (auto& [name, m] : r.modules) {
    auto o = r.overrides.find(name);
    m->set_level(o != r.overrides.end() ? o->second : r.default_level);
  }
  return Status::Ok();
}

void set_format(Format f) { reg().format.store(f, std::memory_order_relaxed); }

void write(const Module& m, Level l, std::string_view msg) {
  Registry& r = reg();
  if (r.format.load(std::memory_order_relaxed) == Format::kJson) {
    timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    nlohmann::json j = {{"ts", double(ts.tv_sec) + double(ts.tv_nsec) / 1e9},
                        {"level", level_name(l)},
                        {"module", m.name()},
                        {"msg", msg}};
    r.json->log(to_spd(l), "{}", j.dump());
  } else {
    r.text->log(to_spd(l), "[{}] {}", m.name(), msg);
  }
}

bool RateLimit::admit(uint64_t interval_ms, uint64_t* suppressed) {
  uint64_t now = mono_ns();
  uint64_t next = next_ns_.load(std::memory_order_relaxed);
  if (now < next || !next_ns_.compare_exchange_strong(next, now + interval_ms * 1000000ull)) {
    dropped_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  *suppressed = dropped_.exchange(0, std::memory_order_relaxed);
  return true;
}

}  // namespace tern::log
