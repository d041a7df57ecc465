// Monotonic time in nanoseconds. clock_gettime(CLOCK_MONOTONIC) is a vDSO call (tens of ns), cheap
// enough for two reads per I/O.
#pragma once

#include <time.h>

#include <cstdint>

namespace tern {

inline uint64_t now_ns() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

// CPU time consumed by the calling thread.
inline uint64_t thread_cpu_ns() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return uint64_t(ts.tv_sec) * 1000000000ull + uint64_t(ts.tv_nsec);
}

}  // namespace tern
