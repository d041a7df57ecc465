// BufferSet: one reactor's data buffers for NBD requests (read data going out, write data coming in).
//
// Three classes, so a 4 KiB request does not hold a megabyte and a 32 MiB one needs no 32 MiB buffer:
// one 8 KiB buffer, one 128 KiB buffer, or up to 32 chunks of 1 MiB that the request scatters over
// (its iovec; the device layer and the socket take scatter lists). Buffers are allocated lazily from
// net::BufferPool (a chunk of buffers at a time, 4 KiB aligned for O_DIRECT devices) and kept. A class
// that reached its limit refuses; the caller registers a Waiter and retries once buffers come back.
//
// Threads: one BufferSet per reactor, used only there.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>

#include "common/small_function.h"
#include "net/buffer_pool.h"

namespace tern::nbd {

class BufferSet {
 public:
  static constexpr uint32_t kSmall = 8u << 10;
  static constexpr uint32_t kMedium = 128u << 10;
  static constexpr uint32_t kChunk = 1u << 20;
  static constexpr int kMaxChunks = 32;  // so a request's data fits one iovec of 32 entries

  struct Lease {
    uint8_t* bufs[kMaxChunks];
    uint8_t count = 0;
    uint8_t cls = 0;  // 0 small, 1 medium, 2 chunks
  };

  // Waiters are woken (once per registration) whenever buffers are returned.
  struct Waiter {
    SmallFunction<void()> wake;
    Waiter* next = nullptr;
    bool linked = false;
  };

  BufferSet(size_t small_max, size_t medium_max, size_t chunks_max);
  BufferSet(const BufferSet&) = delete;
  BufferSet& operator=(const BufferSet&) = delete;

  // Takes buffers for `len` (1 .. kMaxChunks * kChunk) bytes and describes them in `iov` (at most
  // kMaxChunks entries, exactly `len` bytes in all). False when that class is exhausted: nothing is taken.
  bool acquire(uint32_t len, Lease* lease, iovec* iov, int* iovcnt);
  void release(Lease* lease);

  void wait(Waiter* w);
  void cancel(Waiter* w);

 private:
  net::BufferPool small_, medium_, chunks_;
  size_t chunks_max_;
  size_t chunks_out_ = 0;  // chunks leased: a request takes all its chunks or none
  Waiter* head_ = nullptr;
  Waiter* tail_ = nullptr;
};

}  // namespace tern::nbd
