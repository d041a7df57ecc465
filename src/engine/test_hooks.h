// TestHooks: fault injection and data checks for system tests and for reproducing field problems on
// purpose — the rules of error:// devices, the latencies of delay:// devices, and ioperf's verify
// pattern written to or checked on any device (TestService).
//
// Threads: owned by the Engine, lives on reactor 0 (the primary); every method runs there. Other
// threads call it through ReactorSet::run_sync(0, ...).
#pragma once

#include <string>
#include <vector>

#include "bdev/fault_bdevs.h"
#include "bdev/registry.h"
#include "common/result.h"
#include "engine/types.h"

namespace tern::engine {

class TestHooks {
 public:
  explicit TestHooks(BdevRegistry& registry) : registry_(registry) {}

  // Replaces the rules of an error:// device (syntax: ErrorRule::Parse).
  Status set_error_rules(const std::string& device, const std::vector<std::string>& rules);
  Status set_delay(const std::string& device, const DelayConfig& delays);
  // Writes the pattern over the range, then flushes.
  Task<Status> write_pattern(PatternArgs args);
  // Reads the range back; a mismatch is a result (ok = false), not an error.
  Task<Result<PatternCheck>> verify_pattern(PatternArgs args);
  // CRC-32C of each MiB of the range (the generation is ignored).
  Task<Result<std::vector<uint32_t>>> checksum(PatternArgs args);

 private:
  BdevRegistry& registry_;
};

}  // namespace tern::engine
