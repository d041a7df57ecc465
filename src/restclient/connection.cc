#include "restclient/connection.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace tern::rest {

namespace {

std::string tls_error(const char* what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return fmt::format("TLS {}{}{}", what, e ? ": " : "", buf);
}

timeval as_tv(double s) { return timeval{time_t(s), suseconds_t((s - double(time_t(s))) * 1e6)}; }

}  // namespace

Result<Url> Url::Parse(std::string a, std::string_view default_port) {
  Url u;
  if (a.rfind("http://", 0) == 0) {
    a = a.substr(7);
  } else if (a.rfind("https://", 0) == 0) {
    a = a.substr(8);
    u.tls = true;
  } else if (a.find("://") != std::string::npos) {
    return Status::Errorf(Errc::kInval, "'{}': only http:// and https:// are understood", a);
  }
  if (size_t slash = a.find('/'); slash != std::string::npos) a.resize(slash);
  if (a.empty()) return Status(Errc::kInval, "an address without a host");
  if (a.front() == '[') {
    size_t close = a.find(']');
    if (close == std::string::npos) return Status::Errorf(Errc::kInval, "'{}': an IPv6 address without ']'", a);
    u.host = a.substr(1, close - 1);
    std::string rest = a.substr(close + 1);
    if (rest.empty()) {
      u.port = default_port;
    } else if (rest.front() == ':' && rest.size() > 1) {
      u.port = rest.substr(1);
    } else {
      return Status::Errorf(Errc::kInval, "'{}': expected ':port' after the address", a);
    }
  } else {
    size_t colon = a.rfind(':');
    if (colon == std::string::npos || colon + 1 == a.size()) {
      u.host = a.substr(0, colon);
      u.port = default_port;
    } else {
      u.host = a.substr(0, colon);
      u.port = a.substr(colon + 1);
    }
  }
  if (u.host.empty()) return Status::Errorf(Errc::kInval, "'{}': no host", a);
  if (u.port.empty() || u.port.find_first_not_of("0123456789") != std::string::npos || u.port.size() > 5 ||
      std::stoi(u.port) == 0 || std::stoi(u.port) > 65535) {
    return Status::Errorf(Errc::kInval, "'{}': the port is not a number in 1..65535", a);
  }
  return u;
}

std::string Url::authority() const {
  return host.find(':') != std::string::npos ? fmt::format("[{}]:{}", host, port) : fmt::format("{}:{}", host, port);
}

Result<std::unique_ptr<Connection>> Connection::Open(const Url& url, const std::string& ca_file, double connect_timeout_s,
                                                     double io_timeout_s) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &res); rc != 0) {
    return Status::Errorf(Errc::kInval, "{}: {}", url.host, gai_strerror(rc));
  }
  int fd = -1;
  Status last(Errc::kConnRefused, "no address");
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    // Connecting gets a few seconds at most (a peer whose node died drops packets); the exchange then
    // gets the I/O timeout.
    timeval ctv = as_tv(std::min(io_timeout_s, connect_timeout_s)), tv = as_tv(io_timeout_s);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &ctv, sizeof(ctv));
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      break;
    }
    last = errno == EINPROGRESS || errno == EAGAIN
               ? Status::Errorf(Errc::kTimedOut, "no connection within {} s", std::min(io_timeout_s, connect_timeout_s))
               : Status(Errc(errno), strerror(errno));
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return last;
  std::unique_ptr<Connection> c(new Connection());
  c->fd_ = fd;
  c->io_timeout_s_ = io_timeout_s;
  if (!url.tls) return c;
  c->ctx_ = SSL_CTX_new(TLS_client_method());
  if (!c->ctx_) return Status(Errc::kProto, tls_error("context"));
  SSL_CTX_set_min_proto_version(c->ctx_, TLS1_2_VERSION);
  SSL_CTX_set_verify(c->ctx_, SSL_VERIFY_PEER, nullptr);
  if (!ca_file.empty() ? SSL_CTX_load_verify_locations(c->ctx_, ca_file.c_str(), nullptr) != 1
                       : SSL_CTX_set_default_verify_paths(c->ctx_) != 1) {
    return Status::Errorf(Errc::kInval, "{}", tls_error(ca_file.empty() ? "the system's CAs" : ca_file.c_str()));
  }
  c->ssl_ = SSL_new(c->ctx_);
  if (!c->ssl_ || SSL_set_fd(c->ssl_, fd) != 1) return Status(Errc::kProto, tls_error("session"));
  in6_addr a6;
  in_addr a4;
  X509_VERIFY_PARAM* vp = SSL_get0_param(c->ssl_);
  if (inet_pton(AF_INET, url.host.c_str(), &a4) == 1 || inet_pton(AF_INET6, url.host.c_str(), &a6) == 1) {
    X509_VERIFY_PARAM_set1_ip_asc(vp, url.host.c_str());
  } else {
    SSL_set_tlsext_host_name(c->ssl_, url.host.c_str());
    X509_VERIFY_PARAM_set1_host(vp, url.host.c_str(), 0);
  }
  ERR_clear_error();
  if (SSL_connect(c->ssl_) != 1) {
    long v = SSL_get_verify_result(c->ssl_);
    if (v != X509_V_OK) {
      ERR_clear_error();
      return Status::Errorf(Errc::kAccess, "TLS: the server's certificate is not trusted: {}", X509_verify_cert_error_string(v));
    }
    return Status(Errc::kProto, tls_error("handshake"));
  }
  return c;
}

Connection::~Connection() {
  if (ssl_) {
    if (SSL_is_init_finished(ssl_)) SSL_shutdown(ssl_);
    SSL_free(ssl_);
    ERR_clear_error();  // nothing of this connection's is left for the thread's next one to misread
  }
  if (ctx_) SSL_CTX_free(ctx_);
  if (fd_ >= 0) ::close(fd_);
}

Status Connection::send_all(std::string_view data) {
  for (size_t off = 0; off < data.size();) {
    errno = 0;
    ERR_clear_error();
    ssize_t n = ssl_ ? SSL_write(ssl_, data.data() + off, int(data.size() - off))
                     : ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return Status::Errorf(Errc::kTimedOut, "could not send within {} s", io_timeout_s_);
      if (errno) return Status(Errc(errno), strerror(errno));
      return Status(Errc::kProto, ssl_ ? tls_error("write") : "send failed");
    }
    off += size_t(n);
  }
  return Status::Ok();
}

Result<size_t> Connection::recv(char* buf, size_t n) {
  while (true) {
    errno = 0;
    ssize_t r;
    if (!ssl_) {
      r = ::recv(fd_, buf, n, 0);
      if (r >= 0) return size_t(r);
    } else {
      ERR_clear_error();
      r = SSL_read(ssl_, buf, int(std::min<size_t>(n, 1 << 30)));
      if (r > 0) return size_t(r);
      int e = SSL_get_error(ssl_, int(r));
      if (e == SSL_ERROR_ZERO_RETURN) return size_t(0);
      if (e == SSL_ERROR_SYSCALL && errno == 0) return size_t(0);  // closed without a close_notify
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) return Status::Errorf(Errc::kTimedOut, "no answer within {} s", io_timeout_s_);
    if (errno) return Status(Errc(errno), strerror(errno));
    return Status(Errc::kProto, tls_error("read"));
  }
}

bool Connection::wait_readable(int wait_ms) {
  if (ssl_ && SSL_pending(ssl_) > 0) return true;
  pollfd p{fd_, POLLIN, 0};
  return ::poll(&p, 1, wait_ms) > 0;
}

}  // namespace tern::rest
