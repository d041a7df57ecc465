// BdevIo: one block I/O request as it travels through the device layer.
//
// The submitter owns the BdevIo (embedded in its own request state, a coroutine frame, or a pool) and
// fills the "request" fields; the layer fills the "result" fields and calls `done` exactly once, always
// from the reactor loop and never from inside the submit call. Nothing here is allocated per I/O.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string_view>

#include "common/status.h"
#include "reactor/reactor.h"

namespace tern {

enum class IoType : uint8_t { kRead = 0, kWrite, kFlush, kUnmap, kWriteZeroes, kReset };
inline constexpr size_t kIoTypeCount = 6;
std::string_view io_type_name(IoType t);

class IoChannel;
struct BdevIo;
using IoDoneFn = void (*)(BdevIo* io, void* arg);

// IoJoin: a request served by several child requests (split pieces, a nexus's copies) completes when
// the last child does, with the first error any child reported. The issuer holds the join open while it
// issues the children, so one completing early cannot finish it before its siblings are out:
//   join.open(); for (...) { join.add(); submit(child); }  if (join.close()) complete(parent, join.status);
//   each child's completion:                                 if (join.arrive(st)) complete(parent, join.status);
// Children complete from the reactor loop, never inside submit, so close() finds them still out unless
// none was issued. See child_io.h for the pooled child requests.
struct IoJoin {
  uint32_t left = 0;
  Errc status = Errc::kOk;

  void open() {
    left = 1;
    status = Errc::kOk;
  }
  void add() { ++left; }
  void fail(Errc e) {
    if (status == Errc::kOk) status = e;
  }
  // A child finished with `st`; true when it was the last one out.
  bool arrive(Errc st) {
    if (st != Errc::kOk) fail(st);
    return --left == 0;
  }
  // Drops the issuer's hold; true when every child has already completed (or none was issued).
  bool close() { return --left == 0; }
};

struct BdevIo {
  static constexpr size_t kDriverCtxSize = 128;

  // --- request ---
  IoType type = IoType::kRead;
  uint64_t offset_blocks = 0;
  uint64_t num_blocks = 0;
  iovec* iovs = nullptr;  // read/write data; ignored for other types
  int iovcnt = 0;
  // Force Unit Access, on writes and write-zeroes (NVMe's set): the blocks are durable when the request
  // completes, as if a flush of just them followed, without flushing the rest of the device's cache.
  // Every backend honours it; on a device without a volatile write cache it costs nothing. Other types
  // ignore it. Submitters that reuse a BdevIo set it on every request.
  bool fua = false;
  IoDoneFn done = nullptr;
  void* done_arg = nullptr;

  // --- result ---
  Errc status = Errc::kOk;
  uint64_t submit_ns = 0;    // when the layer accepted it
  uint64_t complete_ns = 0;  // when it completed

  // Storage for single-buffer requests.
  iovec iov{};

  void set_buffer(void* buf, size_t len) {
    iov.iov_base = buf;
    iov.iov_len = len;
    iovs = &iov;
    iovcnt = 1;
  }
  uint64_t bytes() const;  // sum of the iovec lengths

  // --- owned by the device layer and the backend serving the request ---
  IoChannel* ch = nullptr;
  BdevIo* parent = nullptr;    // set on the pieces of a split request
  IoJoin join;                 // on a split parent: its pieces
  uint8_t epoch = 0;           // reset epoch at submission (see IoChannel)
  bool is_child = false;
  Deferred deferred;           // used to complete asynchronously
  alignas(16) unsigned char driver_ctx[kDriverCtxSize];

  template <typename T>
  T* ctx() {
    static_assert(sizeof(T) <= kDriverCtxSize, "backend context too large for BdevIo::driver_ctx");
    return reinterpret_cast<T*>(driver_ctx);
  }
};

// Called by backends when a request finishes. On the channel's reactor, from the reactor loop only
// (a ring completion, a timer, a message) — never from inside Bdev::submit.
void bdev_io_complete(BdevIo* io, Errc status);
// For backends that finish synchronously (RAM devices, validation errors): completes in the deferred
// phase of this loop turn.
void bdev_io_complete_deferred(BdevIo* io, Errc status);

}  // namespace tern
