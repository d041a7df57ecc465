// Clocks, in nanoseconds. Which one:
// - now_ns() (CLOCK_MONOTONIC) for durations, deadlines, timeouts and latency: it never jumps when the
//   system time is set, but its zero is arbitrary (about the last boot), so its values mean nothing in
//   another process or after a reboot. Never persist it or show it as a date.
// - wall_clock_ns() (CLOCK_REALTIME, nanoseconds since the Unix epoch) for timestamps that are stored
//   or shown to people (when a pool, replica or snapshot was created): comparable across reboots and
//   machines, but it can jump (NTP, an administrator), so never subtract two of them to time something.
// Both are vDSO calls (tens of ns), cheap enough for two reads per I/O.
#pragma once

#include <time.h>

#include <cstdint>

namespace tern {

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// Wall-clock time: nanoseconds since 1970-01-01 UTC (see above: for persisted timestamps only).
inline uint64_t wall_clock_ns() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// CPU time consumed by the calling thread.
inline uint64_t thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

}  // namespace tern
