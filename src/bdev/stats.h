// Per-device I/O statistics. Each reactor's channel keeps its own copy with plain increments; readers
// merge the copies by visiting each reactor (Bdev::stats), so the I/O path has no atomics or locks.
#pragma once

#include <array>
#include <cstdint>

#include "bdev/bdev_io.h"
#include "common/histogram.h"

namespace tern {

struct IoTypeStats {
  uint64_t ops = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  uint64_t fua = 0;  // requests with Force Unit Access (writes, write-zeroes, unmaps)
};

struct BdevStats {
  std::array<IoTypeStats, kIoTypeCount> by_type{};
  uint64_t inflight = 0;
  LatencyHistogram read_latency;
  LatencyHistogram write_latency;
  LatencyHistogram other_latency;  // flush, unmap, write zeroes, reset

  const IoTypeStats& of(IoType t) const { return by_type[size_t(t)]; }
  void merge(const BdevStats& o);
  void record(const BdevIo& io, uint64_t bytes);
};

}  // namespace tern
