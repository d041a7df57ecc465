#include "net/socket.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "common/log.h"
#include "reactor/reactor_set.h"
#include "reactor/ring_awaiter.h"

namespace tern::net {

std::string format_sockaddr(const sockaddr_storage& sa) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (sa.ss_family == AF_INET) {
    auto* a = reinterpret_cast<const sockaddr_in*>(&sa);
    inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
    return fmt::format("{}:{}", buf, ntohs(a->sin_port));
  }
  if (sa.ss_family == AF_INET6) {
    auto* a = reinterpret_cast<const sockaddr_in6*>(&sa);
    inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
    return fmt::format("[{}]:{}", buf, ntohs(a->sin6_port));
  }
  if (sa.ss_family == AF_UNIX) {
    auto* a = reinterpret_cast<const sockaddr_un*>(&sa);
    size_t n = strnlen(a->sun_path, sizeof(a->sun_path));
    return n ? fmt::format("unix:{}", std::string_view(a->sun_path, n)) : std::string("unix");
  }
  return "?";
}

Result<sockaddr_storage> make_sockaddr(const std::string& host_in, uint16_t port) {
  sockaddr_storage ss{};
  std::string host = host_in == "localhost" ? "127.0.0.1" : host_in;
  auto* a4 = reinterpret_cast<sockaddr_in*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
    return ss;
  }
  auto* a6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET6, host.c_str(), &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
    return ss;
  }
  return Status::Errorf(Errc::kInval, "'{}' is not a numeric IPv4 or IPv6 address", host_in);
}

static socklen_t sockaddr_len(const sockaddr_storage& ss) {
  return ss.ss_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
}

void tune_socket(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  const bool inet = getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0 &&
                    (ss.ss_family == AF_INET || ss.ss_family == AF_INET6);
  if (inet) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  }
  int buf = 2 << 20;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof(buf));
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof(buf));
}

// ---------------------------------------------------------------------------------------------------
// TcpConn

TcpConn::TcpConn(int fd, size_t recv_buffer_size, Callbacks cb)
    : reactor_(*Reactor::current()),
      fd_(fd),
      slot_(reactor_.register_file(fd)),
      cb_(std::move(cb)),
      rbuf_(new uint8_t[recv_buffer_size]),
      rcap_(recv_buffer_size) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) == 0) peer_ = format_sockaddr(ss);
  recv_op_.conn = send_op_.conn = cancel_op_.conn = this;
  deliver_deferred_.owner = flush_deferred_.owner = this;
  recv_op_.on_complete = [](RingOp* op, int res, uint32_t) { static_cast<Op*>(op)->conn->on_recv(res); };
  send_op_.on_complete = [](RingOp* op, int res, uint32_t) { static_cast<Op*>(op)->conn->on_sent(res); };
  cancel_op_.on_complete = [](RingOp* op, int, uint32_t) {
    TcpConn* c = static_cast<Op*>(op)->conn;
    --c->cancels_inflight_;
    c->maybe_closed();
  };
  deliver_deferred_.run = [](Deferred* d) {
    TcpConn* c = static_cast<OwnedDeferred<TcpConn>*>(d)->owner;
    c->deliver_scheduled_ = false;
    if (c->closing_) {
      c->maybe_closed();
      return;
    }
    c->deliver();
    c->post_recv();
  };
  flush_deferred_.run = [](Deferred* d) {
    TcpConn* c = static_cast<OwnedDeferred<TcpConn>*>(d)->owner;
    c->flush_scheduled_ = false;
    if (c->closing_) {
      c->maybe_closed();
      return;
    }
    c->flush();
  };
}

TcpConn::~TcpConn() {
  if (fd_ >= 0) {
    reactor_.unregister_file(slot_);
    ::close(fd_);
  }
}

void TcpConn::start() { post_recv(); }

void TcpConn::compact() {
  if (rhead_ == 0) return;
  size_t n = rtail_ - rhead_;
  if (n) std::memmove(rbuf_.get(), rbuf_.get() + rhead_, n);
  rhead_ = 0;
  rtail_ = n;
}

void TcpConn::post_recv() {
  if (recv_inflight_ || closing_ || failed_) return;
  if (!direct_) {
    if (rtail_ == rcap_ || (rhead_ > rcap_ / 2)) compact();
    if (rtail_ == rcap_ && backpressure_) return;  // paused until resume() after the owner consumed some
    if (rtail_ == rcap_) {
      // The owner keeps a full buffer unconsumed: it must use recv_into for anything this large.
      TLOG_ERROR("nvmf", "connection {}: receive buffer of {} bytes full and unconsumed", peer_, rcap_);
      fail(Errc::kProto);
      return;
    }
  }
  // Taken only once it will be used: an SQE taken and not prepared would still go to the kernel.
  io_uring_sqe* sqe = reactor_.get_sqe();
  if (direct_) {
    // Straight into the owner's buffers.
    recv_msg_ = {};
    recv_msg_.msg_iov = direct_iov_;
    recv_msg_.msg_iovlen = size_t(direct_iovcnt_);
    io_uring_prep_recvmsg(sqe, slot_ >= 0 ? slot_ : fd_, &recv_msg_, 0);
  } else {
    io_uring_prep_recv(sqe, slot_ >= 0 ? slot_ : fd_, rbuf_.get() + rtail_, rcap_ - rtail_, 0);
  }
  if (slot_ >= 0) sqe->flags |= IOSQE_FIXED_FILE;
  reactor_.commit(sqe, &recv_op_);
  recv_inflight_ = true;
  recv_direct_ = direct_;
}

void TcpConn::on_recv(int res) {
  recv_inflight_ = false;
  if (closing_) {
    maybe_closed();
    return;
  }
  if (res <= 0) {
    if (res == -EAGAIN || res == -EINTR) {
      post_recv();
      return;
    }
    fail(res == 0 ? Errc::kConnReset : static_cast<Errc>(-res));
    return;
  }
  bytes_received_ += uint64_t(res);
  // Where the bytes went is decided by the receive that was posted: recv_into may have switched to
  // direct mode (from a deliver() run by resume()) while a receive into the buffer was in flight; those
  // bytes are in the buffer, and direct_step takes them from there.
  if (recv_direct_) {
    // Advance the direct iovec by what arrived.
    size_t got = size_t(res);
    direct_left_ -= got;
    int i = 0;
    while (got > 0 && i < direct_iovcnt_) {
      size_t take = std::min(got, direct_iov_[i].iov_len);
      direct_iov_[i].iov_base = static_cast<char*>(direct_iov_[i].iov_base) + take;
      direct_iov_[i].iov_len -= take;
      got -= take;
      if (direct_iov_[i].iov_len == 0) ++i;
    }
    if (i > 0) {
      std::memmove(direct_iov_, direct_iov_ + i, sizeof(iovec) * size_t(direct_iovcnt_ - i));
      direct_iovcnt_ -= i;
    }
  } else {
    rtail_ += size_t(res);
  }
  deliver();
  post_recv();
}

void TcpConn::direct_step() {
  // Take buffered bytes first.
  while (direct_left_ > 0 && rtail_ > rhead_ && direct_iovcnt_ > 0) {
    size_t take = std::min({direct_left_, rtail_ - rhead_, direct_iov_[0].iov_len});
    std::memcpy(direct_iov_[0].iov_base, rbuf_.get() + rhead_, take);
    rhead_ += take;
    direct_left_ -= take;
    direct_iov_[0].iov_base = static_cast<char*>(direct_iov_[0].iov_base) + take;
    direct_iov_[0].iov_len -= take;
    if (direct_iov_[0].iov_len == 0) {
      std::memmove(direct_iov_, direct_iov_ + 1, sizeof(iovec) * size_t(direct_iovcnt_ - 1));
      --direct_iovcnt_;
    }
  }
}

void TcpConn::deliver() {
  if (delivering_) return;  // re-entered through a callback: the outer loop continues
  delivering_ = true;
  while (!closing_ && !failed_) {
    if (direct_) {
      direct_step();
      if (direct_left_ > 0) break;  // the rest comes from the socket
      direct_ = false;
      auto done = std::move(direct_done_);
      done(Errc::kOk);
      continue;
    }
    if (rtail_ == rhead_) break;
    size_t n = cb_.on_data(rbuf_.get() + rhead_, rtail_ - rhead_);
    rhead_ += n;
    if (n == 0 && !direct_) break;
  }
  // Start over at the front once everything was consumed — unless a receive is in flight: it writes at
  // the old tail (deliver also runs from resume(), between receives).
  if (rhead_ == rtail_ && !recv_inflight_) rhead_ = rtail_ = 0;
  delivering_ = false;
}

void TcpConn::recv_into(const iovec* iov, int iovcnt, size_t len, SmallFunction<void(Errc)> done) {
  // Clip the iovec to `len` bytes.
  int n = 0;
  size_t left = len;
  for (int i = 0; i < iovcnt && left > 0 && n < 16; ++i) {
    size_t take = std::min(left, iov[i].iov_len);
    direct_iov_[n++] = {iov[i].iov_base, take};
    left -= take;
  }
  direct_iovcnt_ = n;
  direct_left_ = len - left;
  direct_done_ = std::move(done);
  direct_ = true;
  if (!delivering_ && !deliver_scheduled_) {
    // Called outside on_data (after an asynchronous step): deliver from the loop, so the completion is
    // never synchronous with this call.
    deliver_scheduled_ = true;
    reactor_.defer(&deliver_deferred_);
  }
}

void TcpConn::resume() {
  if (delivering_ || deliver_scheduled_ || closing_) return;
  deliver_scheduled_ = true;
  reactor_.defer(&deliver_deferred_);
}

void TcpConn::send(SendItem* item) {
  if (closing_ || failed_) {
    item->done(item, Errc::kShutdown);
    return;
  }
  item->next = nullptr;
  if (sq_tail_) sq_tail_->next = item; else sq_head_ = item;
  sq_tail_ = item;
  schedule_flush();
}

void TcpConn::schedule_flush() {
  if (flush_scheduled_ || send_inflight_) return;
  flush_scheduled_ = true;
  reactor_.defer(&flush_deferred_);
}

void TcpConn::flush() {
  if (send_inflight_ || !sq_head_ || failed_) return;
  int n = 0;
  size_t skip = head_sent_;
  for (SendItem* it = sq_head_; it && n < kMaxSendIov; it = it->next) {
    for (int i = 0; i < it->iovcnt && n < kMaxSendIov; ++i) {
      iovec v = it->iov[i];
      if (skip >= v.iov_len) {
        skip -= v.iov_len;
        continue;
      }
      v.iov_base = static_cast<char*>(v.iov_base) + skip;
      v.iov_len -= skip;
      skip = 0;
      if (v.iov_len) send_iov_[n++] = v;
    }
  }
  send_msg_ = {};
  send_msg_.msg_iov = send_iov_;
  send_msg_.msg_iovlen = size_t(n);
  io_uring_sqe* sqe = reactor_.get_sqe();
  io_uring_prep_sendmsg(sqe, slot_ >= 0 ? slot_ : fd_, &send_msg_, MSG_NOSIGNAL);
  if (slot_ >= 0) sqe->flags |= IOSQE_FIXED_FILE;
  reactor_.commit(sqe, &send_op_);
  send_inflight_ = true;
}

void TcpConn::on_sent(int res) {
  send_inflight_ = false;
  if (res < 0) {
    if (res == -EAGAIN || res == -EINTR) {
      if (!closing_) flush();
      return;
    }
    fail(static_cast<Errc>(-res));
    maybe_closed();
    return;
  }
  bytes_sent_ += uint64_t(res);
  size_t left = size_t(res);
  while (sq_head_ && left > 0) {
    size_t rem = sq_head_->bytes() - head_sent_;
    if (left < rem) {
      head_sent_ += left;
      break;
    }
    left -= rem;
    head_sent_ = 0;
    SendItem* done = sq_head_;
    sq_head_ = done->next;
    if (!sq_head_) sq_tail_ = nullptr;
    done->done(done, Errc::kOk);
  }
  if (closing_) {
    maybe_closed();
    return;
  }
  if (sq_head_) flush();
}

void TcpConn::fail(Errc e) {
  if (failed_) return;
  failed_ = true;
  // Items not yet (completely) sent will never be.
  if (!send_inflight_) {
    while (SendItem* it = sq_head_) {
      sq_head_ = it->next;
      it->done(it, e);
    }
    sq_tail_ = nullptr;
  }
  if (direct_) {
    direct_ = false;
    auto done = std::move(direct_done_);
    done(e);
  }
  if (cb_.on_error && !closing_) {
    auto cb = std::move(cb_.on_error);
    cb(e);
  }
}

void TcpConn::close(SmallFunction<void()> on_closed) {
  if (closing_) return;
  closing_ = true;
  on_closed_ = std::move(on_closed);
  ::shutdown(fd_, SHUT_RDWR);
  if (recv_inflight_) {
    ++cancels_inflight_;
    io_uring_sqe* sqe = reactor_.get_sqe();
    io_uring_prep_cancel(sqe, &recv_op_, 0);
    reactor_.commit(sqe, &cancel_op_);
  }
  if (send_inflight_) {
    ++cancels_inflight_;
    io_uring_sqe* sqe = reactor_.get_sqe();
    io_uring_prep_cancel(sqe, &send_op_, 0);
    reactor_.commit(sqe, &cancel_op_);
  }
  // The close finishes from the loop, never inside this call.
  if (!flush_scheduled_) {
    flush_scheduled_ = true;
    reactor_.defer(&flush_deferred_);
  }
}

void TcpConn::maybe_closed() {
  if (!closing_ || recv_inflight_ || send_inflight_ || cancels_inflight_ > 0 || flush_scheduled_ ||
      deliver_scheduled_ || !on_closed_) {
    return;
  }
  // Fail whatever is still queued.
  while (SendItem* it = sq_head_) {
    sq_head_ = it->next;
    it->done(it, Errc::kShutdown);
  }
  sq_tail_ = nullptr;
  if (direct_) {
    direct_ = false;
    auto done = std::move(direct_done_);
    done(Errc::kShutdown);
  }
  reactor_.unregister_file(slot_);
  ::close(fd_);
  fd_ = -1;
  auto cb = std::move(on_closed_);
  cb();  // may destroy this
}

// ---------------------------------------------------------------------------------------------------
// TcpListener

Result<std::unique_ptr<TcpListener>> TcpListener::Listen(const std::string& host, uint16_t port, AcceptFn on_accept) {
  TERN_ASSIGN_OR_RETURN(sockaddr_storage ss, make_sockaddr(host, port));
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, fmt::format("socket: {}", std::strerror(errno)));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (ss.ss_family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), sockaddr_len(ss)) != 0) {
    int e = errno;
    ::close(fd);
    return Status::FromErrno(e, fmt::format("cannot listen on {}:{}: {}{}", host, port, std::strerror(e),
                                            e == EADDRINUSE ? " (another program uses this port)"
                                            : e == EADDRNOTAVAIL ? " (no local interface has this address)"
                                                                 : ""));
  }
  if (::listen(fd, 512) != 0) {
    int e = errno;
    ::close(fd);
    return Status::FromErrno(e, fmt::format("listen on {}:{}: {}", host, port, std::strerror(e)));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
  uint16_t actual = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                                      : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  std::unique_ptr<TcpListener> l(new TcpListener(fd, host, actual, std::move(on_accept)));
  l->post_accept();
  return l;
}

TcpListener::TcpListener(int fd, std::string host, uint16_t port, AcceptFn cb)
    : reactor_(*Reactor::current()), fd_(fd), host_(std::move(host)), port_(port), on_accept_(std::move(cb)) {
  accept_op_.l = cancel_op_.l = this;
  accept_op_.on_complete = [](RingOp* op, int res, uint32_t) {
    TcpListener* l = static_cast<Op*>(op)->l;
    l->accept_inflight_ = false;
    if (l->closing_) {
      if (res >= 0) ::close(res);
      if (l->cancels_inflight_ == 0 && l->on_closed_) {
        auto cb = std::move(l->on_closed_);
        cb();
      }
      return;
    }
    if (res >= 0) {
      tune_socket(res);
      l->on_accept_(res, l->peer_);
    } else {
      TLOG_RL_WARN("nvmf", 1000, "accept on {}:{} failed: {}", l->host_, l->port_, std::strerror(-res));
    }
    l->post_accept();
  };
  cancel_op_.on_complete = [](RingOp* op, int, uint32_t) {
    TcpListener* l = static_cast<Op*>(op)->l;
    --l->cancels_inflight_;
    if (!l->accept_inflight_ && l->cancels_inflight_ == 0 && l->on_closed_) {
      auto cb = std::move(l->on_closed_);
      cb();
    }
  };
}

Result<std::unique_ptr<TcpListener>> TcpListener::ListenUnix(const std::string& path, AcceptFn on_accept) {
  sockaddr_un sa{};
  if (path.empty() || path.size() >= sizeof(sa.sun_path)) {
    return Status::Errorf(Errc::kInval, "unix socket path '{}' must be 1 to {} bytes long", path,
                          sizeof(sa.sun_path) - 1);
  }
  sa.sun_family = AF_UNIX;
  std::memcpy(sa.sun_path, path.data(), path.size());
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Status::Errorf(Errc::kExist, "cannot listen on {}: the path exists and is not a socket", path);
    }
    // A socket file left by a process that is gone refuses connections; one that accepts is in use.
    int probe = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool live = probe >= 0 && ::connect(probe, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0;
    if (probe >= 0) ::close(probe);
    if (live) return Status::Errorf(Errc::kBusy, "cannot listen on {}: another program accepts on it", path);
    ::unlink(path.c_str());
  }
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, fmt::format("socket: {}", std::strerror(errno)));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || ::listen(fd, 512) != 0) {
    int e = errno;
    ::close(fd);
    return Status::FromErrno(e, fmt::format("cannot listen on {}: {}", path, std::strerror(e)));
  }
  std::unique_ptr<TcpListener> l(new TcpListener(fd, path, 0, std::move(on_accept)));
  l->is_unix_ = true;
  l->post_accept();
  return l;
}

TcpListener::~TcpListener() {
  if (fd_ >= 0) ::close(fd_);
  if (is_unix_) ::unlink(host_.c_str());
}

void TcpListener::post_accept() {
  if (closing_ || accept_inflight_) return;
  peer_len_ = sizeof(peer_);
  io_uring_sqe* sqe = reactor_.get_sqe();
  io_uring_prep_accept(sqe, fd_, reinterpret_cast<sockaddr*>(&peer_), &peer_len_, SOCK_CLOEXEC);
  reactor_.commit(sqe, &accept_op_);
  accept_inflight_ = true;
}

void TcpListener::close(SmallFunction<void()> done) {
  closing_ = true;
  on_closed_ = std::move(done);
  ::shutdown(fd_, SHUT_RDWR);
  if (accept_inflight_) {
    ++cancels_inflight_;
    io_uring_sqe* sqe = reactor_.get_sqe();
    io_uring_prep_cancel(sqe, &accept_op_, 0);
    reactor_.commit(sqe, &cancel_op_);
  } else {
    // Nothing in the ring: finish from the loop.
    auto* cb = new SmallFunction<void()>(std::move(on_closed_));
    reactor_.set().post(reactor_.id(), [cb] {
      (*cb)();
      delete cb;
    });
  }
}

// ---------------------------------------------------------------------------------------------------
// Connect

Task<Result<int>> tcp_connect(const std::string& host, uint16_t port, uint64_t timeout_ns) {
  auto ss = make_sockaddr(host, port);
  if (!ss.ok()) co_return ss.status();
  int fd = ::socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) co_return Status::FromErrno(errno, fmt::format("socket: {}", std::strerror(errno)));
  tune_socket(fd);
  sockaddr_storage addr = *ss;
  socklen_t len = sockaddr_len(addr);
  auto op = ring_op([&](io_uring_sqe* sqe) { io_uring_prep_connect(sqe, fd, reinterpret_cast<sockaddr*>(&addr), len); });
  bool timed_out = false;
  Timer t([&] {
    timed_out = true;
    cancel_ring_op(&op);
  });
  t.arm(timeout_ns);
  int res = co_await op;
  t.cancel();
  if (res < 0) {
    ::close(fd);
    if (timed_out) {
      co_return Status::Errorf(Errc::kTimedOut, "connecting to {}:{} timed out after {} ms", host, port,
                               timeout_ns / 1000000);
    }
    co_return Status::FromErrno(-res, fmt::format("cannot connect to {}:{}: {}", host, port, std::strerror(-res)));
  }
  co_return fd;
}

}  // namespace tern::net
