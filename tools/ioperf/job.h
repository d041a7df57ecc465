// ioperf's workload engine: drives one device through the device layer from one or more reactors and
// measures what it sees. main.cc is only argument parsing and printing around run_job().
//
// Each core gets its own contiguous share of the region, its own channel and `qd` worker coroutines, so
// cores never touch the same blocks (which is what makes --verify exact with several cores).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bdev/bdev.h"
#include "common/histogram.h"
#include "common/result.h"
#include "common/verify_pattern.h"
#include "reactor/reactor.h"

namespace tern::ioperf {

enum class Mode { kRead, kWrite, kRandRead, kRandWrite, kRandRw, kRw };
Result<Mode> parse_mode(std::string_view s);
std::string_view mode_name(Mode m);
bool mode_writes(Mode m);
bool mode_reads(Mode m);

struct JobSpec {
  std::string uri;
  std::vector<std::string> extra_devices;  // created first, in order (bases for wrappers)
  // Instead of `uri`: a replica (name or UUID) of the pool on device `pool_device` (one of the extra
  // devices). The pool is imported first and exported at the end.
  std::string pool_device, replica;
  Mode mode = Mode::kRandRead;
  unsigned mix_read_pct = 50;  // randrw / rw: share of reads
  uint64_t bs = 4096;
  unsigned qd = 1;  // per core
  std::vector<int> cores{0};
  uint64_t time_ns = 10'000'000'000ull;  // 0 = no time limit (then ios must be set)
  uint64_t ios = 0;                      // total over all cores; 0 = no count limit
  uint64_t ramp_ns = 0;
  uint64_t offset = 0;  // region start, bytes
  uint64_t size = 0;    // region length, bytes; 0 = to the end of the device
  bool verify = false;
  bool continue_on_error = false;
  uint64_t seed = 1;
  PollMode poll_mode = PollMode::kAdaptive;
  uint64_t idle_spin_ns = 20'000;
  uint64_t await_spin_ns = 250'000;
};

struct OpResult {
  uint64_t ops = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  LatencyHistogram latency;
  void merge(const OpResult& o) {
    ops += o.ops;
    bytes += o.bytes;
    errors += o.errors;
    latency.merge(o.latency);
  }
};

struct JobResult {
  BdevProps device;
  double elapsed_s = 0;
  OpResult read, write;
  std::vector<double> cpu_pct;  // per core, % of one core over the measured interval
  std::vector<uint64_t> sleeps;  // per core: times the reactor slept in the kernel
  std::vector<uint64_t> awaiting;  // per core: NVMe/TCP answers still counted as awaited once its I/O ended (0)
  std::optional<std::string> first_error;
  uint64_t verified_bytes = 0;   // read back and checked (during the run and in the final pass)
  std::optional<Mismatch> mismatch;
  bool ok() const { return !first_error && !mismatch; }
};

// Builds the reactors and the device, runs the workload, tears everything down.
// A bad spec, a device that cannot be created, or a region that does not fit is an error; I/O errors
// and verify mismatches are reported in the result.
Result<JobResult> run_job(const JobSpec& spec);

}  // namespace tern::ioperf
