#include "metrics/http_server.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <vector>

#include <fmt/format.h>

#include "common/clock.h"
#include "common/log.h"

namespace tern::metrics {
namespace {

constexpr uint64_t kMs = 1'000'000;
constexpr uint64_t kAcceptPauseNs = 100 * kMs;  // after EMFILE and friends
constexpr uint64_t kLingerNs = 1000 * kMs;
constexpr size_t kReadChunk = 16384;
constexpr int kLingerReadsPerWake = 16;  // a client flooding a closing connection cannot hold the thread

std::string join_host_port(std::string_view host, uint16_t port) {
  if (host.empty()) return fmt::format("*:{}", port);
  if (host.find(':') != std::string_view::npos) return fmt::format("[{}]:{}", host, port);
  return fmt::format("{}:{}", host, port);
}

}  // namespace

struct MetricsHttpServer::Conn {
  enum class Phase { kReading, kWriting, kLingering };

  Conn(int f, const MetricsHandler& h, size_t max_head) : fd(f), session(h, max_head) {}
  ~Conn() {
    if (fd >= 0) ::close(fd);
  }
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  int fd;
  HttpSession session;
  Phase phase = Phase::kReading;
  uint64_t deadline_ns = 0;
  bool dead = false;
  uint64_t requests_seen = 0;
  uint64_t errors_seen = 0;
};

Result<std::unique_ptr<MetricsHttpServer>> MetricsHttpServer::Start(std::string_view host, uint16_t port,
                                                                    MetricsHandler handler,
                                                                    MetricsHttpServerOptions options) {
  if (options.max_connections == 0 || options.max_head_bytes < 64 || options.read_timeout_ms == 0 ||
      options.write_timeout_ms == 0) {
    return Status(Errc::kInval, "metrics: max_connections, timeouts must be > 0 and max_head_bytes >= 64");
  }
  std::unique_ptr<MetricsHttpServer> s(new MetricsHttpServer());
  s->handler_ = std::move(handler);
  s->opt_ = options;

  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  // Numeric addresses only (no DNS lookup that could stall start-up), plus "localhost".
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV | AI_NUMERICHOST;
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  std::string host_z(host == "localhost" ? std::string_view("127.0.0.1") : host);
  std::string port_z = std::to_string(port);
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(host_z.empty() ? nullptr : host_z.c_str(), port_z.c_str(), &hints, &res); rc != 0) {
    return Status::Errorf(Errc::kInval, "metrics: cannot resolve listen address '{}': {}", host, gai_strerror(rc));
  }
  std::string where = join_host_port(host, port);
  int err = EADDRNOTAVAIL;
  for (addrinfo* ai = res; ai && s->listen_fd_ < 0; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      err = errno;
      continue;
    }
    // Restarting the engine must not wait for TIME_WAIT; a live listener still makes bind fail.
    int one = 1;
    (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (::bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || ::listen(fd, 64) != 0) {
      err = errno;
      ::close(fd);
      continue;
    }
    s->listen_fd_ = fd;
  }
  freeaddrinfo(res);
  if (s->listen_fd_ < 0) {
    return Status(Errc(err), fmt::format("metrics: cannot listen on {}: {}{}", where, errc_describe(Errc(err)),
                                         err == EADDRINUSE ? " (is another io-engine or exporter running?)" : ""));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  if (::getsockname(s->listen_fd_, reinterpret_cast<sockaddr*>(&bound), &len) != 0) {
    return Status::FromErrno(errno, "metrics: getsockname failed");
  }
  s->port_ = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  s->address_ = join_host_port(host, s->port_);
  s->stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (s->stop_fd_ < 0) return Status::FromErrno(errno, "metrics: eventfd failed");
  s->thread_ = std::thread([p = s.get()] { p->run(); });
  TLOG_DEBUG("metrics", "serving http://{}/metrics", s->address_);
  return s;
}

MetricsHttpServer::~MetricsHttpServer() { Stop(); }

void MetricsHttpServer::Stop() {
  if (thread_.joinable()) {
    uint64_t one = 1;
    ssize_t n = ::write(stop_fd_, &one, sizeof(one));
    (void)n;  // cannot fail short of a bad fd: the counter is far from overflowing
    thread_.join();
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
  listen_fd_ = stop_fd_ = -1;
}

MetricsHttpServer::Stats MetricsHttpServer::stats() const {
  Stats s;
  s.connections = connections_.load(std::memory_order_relaxed);
  s.requests = requests_.load(std::memory_order_relaxed);
  s.errors = errors_.load(std::memory_order_relaxed);
  s.timeouts = timeouts_.load(std::memory_order_relaxed);
  return s;
}

void MetricsHttpServer::accept_all(std::vector<std::unique_ptr<Conn>>& conns, uint64_t now) {
  while (conns.size() < opt_.max_connections) {
    int fd = ::accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // The pending connection stays readable: stop polling the socket for a moment instead of spinning.
        accept_paused_until_ns_ = now + kAcceptPauseNs;
        TLOG_RL_WARN("metrics", 10000, "metrics: accept on {} failed: {}", address_, errc_describe(Errc(errno)));
      }
      return;
    }
    int one = 1;
    (void)::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    auto c = std::make_unique<Conn>(fd, handler_, opt_.max_head_bytes);
    c->deadline_ns = now + opt_.read_timeout_ms * kMs;
    conns.push_back(std::move(c));
    connections_.fetch_add(1, std::memory_order_relaxed);
  }
}

// After any event: send what can be sent, then choose the phase (and its deadline) the connection is in.
void MetricsHttpServer::advance(Conn& c) {
  using Phase = Conn::Phase;
  uint64_t now = now_ns();  // not the poll's wake-up time: the handler may just have taken a while
  bool answered = false;
  for (;;) {
    uint64_t req = c.session.requests();
    if (req != c.requests_seen) {
      answered = true;
      requests_.fetch_add(req - c.requests_seen, std::memory_order_relaxed);
      errors_.fetch_add(c.session.errors() - c.errors_seen, std::memory_order_relaxed);
      c.requests_seen = req;
      c.errors_seen = c.session.errors();
      c.deadline_ns = now + opt_.write_timeout_ms * kMs;  // a new response: its own time to be sent
    }
    std::string_view out = c.session.pending();
    if (out.empty()) break;
    ssize_t n = ::send(c.fd, out.data(), out.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR) {
        c.phase = Phase::kWriting;
        return;
      }
      c.dead = true;
      return;
    }
    c.session.consume(size_t(n));  // may answer the next buffered request
    if (size_t(n) < out.size()) {
      c.phase = Phase::kWriting;
      return;
    }
  }
  if (c.session.closing()) {
    if (c.session.peer_closed()) {
      c.dead = true;
      return;
    }
    // Let the client read the response: half-close, then discard what it still sends until EOF.
    ::shutdown(c.fd, SHUT_WR);
    c.phase = Phase::kLingering;
    c.deadline_ns = now + std::min(kLingerNs, opt_.read_timeout_ms * kMs);
    return;
  }
  if (c.phase != Phase::kReading || answered) {  // idle from now on: the next request's time starts
    c.phase = Phase::kReading;
    c.deadline_ns = now + opt_.read_timeout_ms * kMs;
  }
}

void MetricsHttpServer::service(Conn& c, short revents) {
  char buf[kReadChunk];
  switch (c.phase) {
    case Conn::Phase::kLingering:
      for (int i = 0; i < kLingerReadsPerWake; ++i) {
        ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
        if (n > 0) continue;
        if (n == 0 || (errno != EAGAIN && errno != EINTR)) c.dead = true;
        break;
      }
      return;
    case Conn::Phase::kReading: {
      if (!(revents & (POLLIN | POLLHUP | POLLERR))) return;
      ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
      if (n > 0) {
        c.session.on_data(std::string_view(buf, size_t(n)));
      } else if (n == 0) {
        c.session.on_eof();
      } else if (errno != EAGAIN && errno != EINTR) {
        c.dead = true;
        return;
      }
      break;
    }
    case Conn::Phase::kWriting:
      if (!(revents & (POLLOUT | POLLHUP | POLLERR))) return;
      break;
  }
  advance(c);
}

void MetricsHttpServer::run() {
  pthread_setname_np(pthread_self(), "tern-metrics");
  // Signals belong to the threads that handle them; this one only ever waits in poll().
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);

  std::vector<std::unique_ptr<Conn>> conns;
  std::vector<pollfd> pfds;
  for (;;) {
    uint64_t now = now_ns();
    std::erase_if(conns, [&](const std::unique_ptr<Conn>& c) {
      if (c->dead) return true;
      if (now < c->deadline_ns) return false;
      if (c->phase != Conn::Phase::kLingering) timeouts_.fetch_add(1, std::memory_order_relaxed);
      return true;
    });

    bool accepting = conns.size() < opt_.max_connections && now >= accept_paused_until_ns_;
    uint64_t wake = UINT64_MAX;
    if (!accepting && accept_paused_until_ns_ > now) wake = accept_paused_until_ns_;
    pfds.clear();
    pfds.push_back({stop_fd_, POLLIN, 0});
    pfds.push_back({accepting ? listen_fd_ : -1, POLLIN, 0});  // poll ignores negative fds
    for (auto& c : conns) {
      pfds.push_back({c->fd, short(c->phase == Conn::Phase::kWriting ? POLLOUT : POLLIN), 0});
      wake = std::min(wake, c->deadline_ns);
    }
    int timeout_ms = -1;
    if (wake != UINT64_MAX) {
      uint64_t ms = wake > now ? (wake - now + kMs - 1) / kMs : 0;
      timeout_ms = int(std::min<uint64_t>(ms, INT_MAX));
    }
    int n = ::poll(pfds.data(), nfds_t(pfds.size()), timeout_ms);
    if (n < 0) {
      if (errno != EINTR) {
        TLOG_RL_WARN("metrics", 10000, "metrics: poll failed: {}", errc_describe(Errc(errno)));
        ::usleep(10000);
      }
      continue;
    }
    if (pfds[0].revents != 0) break;  // Stop()
    now = now_ns();
    for (size_t i = 0; i < conns.size(); ++i) {
      if (short re = pfds[i + 2].revents; re != 0) service(*conns[i], re);
    }
    if (pfds[1].revents & POLLIN) accept_all(conns, now);
  }
  conns.clear();  // closes every connection before Stop() returns
}

}  // namespace tern::metrics
