// TCP sockets on a reactor's io_uring: a listener that accepts, an outbound connect, and a connection
// with a receive buffer and a batched send queue.
//
// Threads: every object here belongs to the reactor that created it (or that adopted the fd) and is
// used only there. Callbacks run on that reactor from the loop, never from inside the call that caused
// them.
//
// Receiving: one IORING_OP_RECV at a time into the free tail of a receive buffer; the owner's on_data
// consumes what it can parse and the rest stays for the next round. For large payloads the owner asks
// for a direct receive into its own iovec (recv_into), which first takes what is already buffered and
// then reads the remainder straight from the socket — no extra copy.
//
// Sending: owners queue SendItems (a few iovecs each: a PDU header, data, a digest); all items queued in
// one loop turn go out in one sendmsg. One send is in flight per connection, which keeps ordering; items
// complete (their callback runs) once all their bytes are accepted by the kernel.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <cstdint>
#include <memory>
#include <string>

#include "common/result.h"
#include "common/small_function.h"
#include "reactor/reactor.h"
#include "reactor/task.h"
#include "reactor/timer.h"
#include "net/stream.h"

namespace tern::net {

// "1.2.3.4:8420" / "[::1]:8420" for logs; "unix:/path" (or "unix" for an unnamed peer) for unix sockets.
std::string format_sockaddr(const sockaddr_storage& sa);
// Resolves a numeric IPv4/IPv6 address (or "localhost") and port.
Result<sockaddr_storage> make_sockaddr(const std::string& host, uint16_t port);

// The Stream (stream.h) over a connected TCP or unix socket.
class TcpConn final : public Stream {
 public:
  using Callbacks = Stream::Callbacks;

  // Adopts a connected socket on the calling reactor.
  TcpConn(int fd, size_t recv_buffer_size, Callbacks cb = {});
  ~TcpConn() override;
  TcpConn(const TcpConn&) = delete;
  TcpConn& operator=(const TcpConn&) = delete;

  void set_callbacks(Callbacks cb) override { cb_ = std::move(cb); }
  void start() override;
  void recv_into(const iovec* iov, int iovcnt, size_t len, SmallFunction<void(Errc)> done) override;
  void resume() override;

  // Off by default: a receive buffer full of bytes on_data does not consume fails the connection (the
  // owner should have used recv_into). On: receiving pauses instead — the kernel's socket buffer and TCP
  // flow control hold the peer back — until resume() is called after on_data can consume again. For
  // owners that stop consuming on purpose while a request limit is reached.
  void set_backpressure(bool on) { backpressure_ = on; }

  // Queues an item; everything queued in this loop turn leaves in one sendmsg.
  void send(SendItem* item) override;

  // Stops I/O, cancels what is in flight, and closes the socket; `on_closed` runs once nothing of this
  // connection is in the ring any more (then it may be destroyed). Items still queued complete with
  // an error first.
  void close(SmallFunction<void()> on_closed) override;

  bool closing() const override { return closing_; }
  const std::string& peer() const override { return peer_; }
  int fd() const { return fd_; }
  uint64_t bytes_sent() const { return bytes_sent_; }
  uint64_t bytes_received() const { return bytes_received_; }

 private:
  struct Op : RingOp {
    TcpConn* conn;
  };
  void post_recv();
  void on_recv(int res);
  void deliver();
  void compact();
  void schedule_flush();
  void flush();
  void on_sent(int res);
  void fail(Errc e);
  void maybe_closed();
  void direct_step();

  Reactor& reactor_;
  int fd_;
  int slot_;
  std::string peer_;
  Callbacks cb_;
  std::unique_ptr<uint8_t[]> rbuf_;
  size_t rcap_;
  size_t rhead_ = 0;  // first unconsumed byte
  size_t rtail_ = 0;  // end of valid bytes
  Op recv_op_;
  bool recv_inflight_ = false;
  bool recv_direct_ = false;  // the receive in flight goes to the direct iovec (not the buffer)
  bool delivering_ = false;
  bool deliver_scheduled_ = false;
  bool backpressure_ = false;
  OwnedDeferred<TcpConn> deliver_deferred_;
  // Direct receive.
  bool direct_ = false;
  iovec direct_iov_[16];
  int direct_iovcnt_ = 0;
  size_t direct_left_ = 0;
  SmallFunction<void(Errc)> direct_done_;
  msghdr recv_msg_{};
  // Sending.
  SendItem* sq_head_ = nullptr;
  SendItem* sq_tail_ = nullptr;
  Op send_op_;
  bool send_inflight_ = false;
  bool flush_scheduled_ = false;
  OwnedDeferred<TcpConn> flush_deferred_;
  static constexpr int kMaxSendIov = 64;
  iovec send_iov_[kMaxSendIov];
  msghdr send_msg_{};
  size_t head_sent_ = 0;  // bytes of sq_head_ already sent
  // Closing.
  Op cancel_op_;
  bool closing_ = false;
  bool failed_ = false;
  int cancels_inflight_ = 0;
  SmallFunction<void()> on_closed_;
  uint64_t bytes_sent_ = 0, bytes_received_ = 0;
};

// Accepts connections on one reactor: on a TCP address, or on a unix socket path (same accept loop;
// the name stays for the TCP use that came first).
class TcpListener {
 public:
  using AcceptFn = SmallFunction<void(int fd, const sockaddr_storage& peer)>;
  // Binds and listens (SO_REUSEADDR); an in-use port or bad address is a clear error.
  static Result<std::unique_ptr<TcpListener>> Listen(const std::string& host, uint16_t port, AcceptFn on_accept);
  // Binds and listens on a unix stream socket at `path`. A stale socket file (nobody accepts on it) is
  // replaced; a live one, or a path that exists and is not a socket, is a clear error. The listener
  // removes the file when it is destroyed.
  static Result<std::unique_ptr<TcpListener>> ListenUnix(const std::string& path, AcceptFn on_accept);
  ~TcpListener();
  // Stops accepting; `done` runs once the pending accept is gone. The object may be destroyed then.
  void close(SmallFunction<void()> done);
  uint16_t port() const { return port_; }          // 0 for a unix socket
  const std::string& host() const { return host_; }  // the path for a unix socket
  bool is_unix() const { return is_unix_; }

 private:
  struct Op : RingOp {
    TcpListener* l;
  };
  TcpListener(int fd, std::string host, uint16_t port, AcceptFn cb);
  void post_accept();
  Reactor& reactor_;
  int fd_;
  std::string host_;
  uint16_t port_;
  bool is_unix_ = false;
  AcceptFn on_accept_;
  Op accept_op_, cancel_op_;
  sockaddr_storage peer_{};
  socklen_t peer_len_ = sizeof(sockaddr_storage);
  bool accept_inflight_ = false;
  bool closing_ = false;
  int cancels_inflight_ = 0;
  SmallFunction<void()> on_closed_;
};

// Connects to host:port from the calling reactor; resolves with a connected fd (TCP_NODELAY set) or an
// error (ECONNREFUSED, ETIMEDOUT after `timeout_ns`, ...).
Task<Result<int>> tcp_connect(const std::string& host, uint16_t port, uint64_t timeout_ns);

// Applies the socket options every connection wants: buffer sizes, and TCP_NODELAY on TCP sockets (a
// unix socket gets the buffer sizes only; nothing here fails).
void tune_socket(int fd);

}  // namespace tern::net
