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

struct BdevIo {
  static constexpr size_t kDriverCtxSize = 128;

  // --- request ---
  IoType type = IoType::kRead;
  uint64_t offset_blocks = 0;
  uint64_t num_blocks = 0;
  iovec* iovs = nullptr;  // read/write data; ignored for other types
  int iovcnt = 0;
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
  uint32_t children_left = 0;  // on a split parent: pieces not yet completed
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
