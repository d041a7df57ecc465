// Stream: what a protocol session needs from a connection, and nothing about sockets.
//
// Bytes in: a receive buffer the session parses in place (on_data returns how much it consumed; the rest
// is offered again with more), or, for large payloads, a direct receive into the session's own buffers
// (recv_into). Bytes out: SendItems (a few iovecs each) queued with send() and completed, in order, once
// their bytes have left. Then close().
//
// TcpConn (socket.h) is the stream over a TCP or unix socket on a reactor's io_uring. MemoryStream
// (memory_stream.h) is one over memory, for unit tests that drive a session byte by byte without a file
// descriptor. A session written against Stream works unchanged over either.
//
// Contract for implementations: callbacks run on the stream's reactor from the loop, never from inside
// the call that caused them; items complete in the order they were queued; close() completes every
// queued item (with an error if it never left) and any pending recv_into before `on_closed` runs, and
// after `on_closed` nothing of the stream calls back.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "common/small_function.h"
#include "common/status.h"

namespace tern::net {

struct SendItem {
  static constexpr int kMaxIov = 40;  // header, padding, up to 36 data entries, digest
  iovec iov[kMaxIov];
  int iovcnt = 0;
  // Called once every byte was handed over (ok) or the connection failed (error).
  void (*done)(SendItem* item, Errc status) = nullptr;
  SendItem* next = nullptr;
  size_t bytes() const {
    size_t n = 0;
    for (int i = 0; i < iovcnt; ++i) n += iov[i].iov_len;
    return n;
  }
};

class Stream {
 public:
  struct Callbacks {
    // New bytes in [data, data+len): return how many were consumed (the rest is kept).
    SmallFunction<size_t(const uint8_t* data, size_t len)> on_data;
    // The connection failed or the peer closed it (kConnReset / kShutdown / errno). Called once.
    SmallFunction<void(Errc)> on_error;
  };

  virtual ~Stream() = default;

  // The session's callbacks; set before start().
  virtual void set_callbacks(Callbacks cb) = 0;
  // Begins receiving.
  virtual void start() = 0;
  // Reads exactly `len` bytes into `iov` (taking buffered bytes first); `done` runs when they are all
  // there (or with an error). While it is pending, on_data is not called.
  virtual void recv_into(const iovec* iov, int iovcnt, size_t len, SmallFunction<void(Errc)> done) = 0;
  // Offers the buffered bytes to on_data again (after it returned 0 for lack of a resource that is now
  // available). Runs from the loop.
  virtual void resume() = 0;
  // Queues an item; items queued in one loop turn may leave together.
  virtual void send(SendItem* item) = 0;
  // Stops I/O and closes; `on_closed` runs once nothing of this stream is pending any more.
  virtual void close(SmallFunction<void()> on_closed) = 0;
  virtual bool closing() const = 0;
  // The peer's address, for logs.
  virtual const std::string& peer() const = 0;
};

}  // namespace tern::net
