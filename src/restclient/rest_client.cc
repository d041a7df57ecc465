#include "restclient/rest_client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <mutex>

#include "common/log.h"

namespace tern::rest {

namespace {

struct HostPort {
  std::string host, port;
  bool tls = false;
};

Result<HostPort> parse_agent(std::string a) {
  bool tls = false;
  if (a.rfind("http://", 0) == 0) a = a.substr(7);
  if (a.rfind("https://", 0) == 0) {
    a = a.substr(8);
    tls = true;
  }
  while (!a.empty() && a.back() == '/') a.pop_back();
  size_t colon = a.rfind(':');
  if (colon == std::string::npos || colon + 1 == a.size()) return HostPort{a, "8081", tls};
  std::string host = a.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return HostPort{host, a.substr(colon + 1), tls};
}

std::string tls_error(const char* what) {
  unsigned long e = ERR_get_error();
  char buf[256] = "";
  if (e) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return fmt::format("TLS {}{}{}", what, e ? ": " : "", buf);
}

// The bytes of one connection: plain, or TLS with the agent's certificate checked against the CA file
// (or the system's CAs) and the host name or address it was reached by.
class Stream {
 public:
  ~Stream() {
    if (ssl_) {
      SSL_shutdown(ssl_);
      SSL_free(ssl_);
    }
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  Status start(int fd, const HostPort& hp, const std::string& ca_file) {
    fd_ = fd;
    if (!hp.tls) return Status::Ok();
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!ctx_) return Status(Errc::kProto, tls_error("context"));
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (!ca_file.empty() ? SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr) != 1
                         : SSL_CTX_set_default_verify_paths(ctx_) != 1) {
      return Status::Errorf(Errc::kInval, "{}", tls_error(ca_file.empty() ? "the system's CAs" : ca_file.c_str()));
    }
    ssl_ = SSL_new(ctx_);
    if (!ssl_ || SSL_set_fd(ssl_, fd) != 1) return Status(Errc::kProto, tls_error("session"));
    in6_addr a6;
    in_addr a4;
    X509_VERIFY_PARAM* vp = SSL_get0_param(ssl_);
    if (inet_pton(AF_INET, hp.host.c_str(), &a4) == 1 || inet_pton(AF_INET6, hp.host.c_str(), &a6) == 1) {
      X509_VERIFY_PARAM_set1_ip_asc(vp, hp.host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, hp.host.c_str());
      X509_VERIFY_PARAM_set1_host(vp, hp.host.c_str(), 0);
    }
    if (SSL_connect(ssl_) != 1) {
      long v = SSL_get_verify_result(ssl_);
      if (v != X509_V_OK) {
        ERR_clear_error();
        return Status::Errorf(Errc::kAccess, "TLS: the agent's certificate is not trusted: {} (give its CA with --agent-ca)",
                              X509_verify_cert_error_string(v));
      }
      return Status(Errc::kProto, tls_error("handshake"));
    }
    return Status::Ok();
  }
  ssize_t send(const char* p, size_t n) {
    if (!ssl_) return ::send(fd_, p, n, MSG_NOSIGNAL);
    int r = SSL_write(ssl_, p, int(n));
    return r > 0 ? r : -1;
  }
  ssize_t recv(char* p, size_t n) {
    if (!ssl_) return ::recv(fd_, p, n, 0);
    int r = SSL_read(ssl_, p, int(n));
    if (r > 0) return r;
    int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_ZERO_RETURN) return 0;
    if (e == SSL_ERROR_SYSCALL && errno == 0) return 0;  // closed without a close_notify
    return -1;
  }

 private:
  int fd_ = -1;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
};

constexpr double kConnectTimeoutS = 3;

// One request on a fresh connection; the whole reply read (Connection: close).
Result<RestReply> one(const HostPort& hp, const std::string& method, const std::string& path, const std::string& body,
                      double timeout_s, const std::string& ca_file) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (int rc = getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res); rc != 0) {
    return Status::Errorf(Errc::kInval, "{}: {}", hp.host, gai_strerror(rc));
  }
  int fd = -1;
  Status last(Errc::kConnRefused, "no address");
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    // Connecting gets a few seconds at most (an agent whose node died drops packets: the next agent is
    // tried instead of waiting out the whole call); the exchange then gets the call's time.
    auto as_tv = [](double s) { return timeval{time_t(s), suseconds_t((s - double(time_t(s))) * 1e6)}; };
    timeval ctv = as_tv(std::min(timeout_s, kConnectTimeoutS)), tv = as_tv(timeout_s);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &ctv, sizeof(ctv));
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
      break;
    }
    last = errno == EINPROGRESS || errno == EAGAIN
               ? Status::Errorf(Errc::kTimedOut, "no connection within {} s", std::min(timeout_s, kConnectTimeoutS))
               : Status(Errc(errno), strerror(errno));
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return last;
  Stream st;
  if (Status s = st.start(fd, hp, ca_file); !s.ok()) {
    return s;
  }
  std::string req = fmt::format("{} {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: application/json\r\n", method,
                                path, hp.host, hp.port);
  if (!body.empty()) req += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", body.size());
  req += "\r\n" + body;
  for (size_t off = 0; off < req.size();) {
    errno = 0;
    ssize_t n = st.send(req.data() + off, req.size() - off);
    if (n <= 0) {
      Status s(Errc(errno ? errno : EPIPE), strerror(errno ? errno : EPIPE));
      return s;
    }
    off += size_t(n);
  }
  std::string in;
  char buf[16384];
  while (true) {
    errno = 0;
    ssize_t n = st.recv(buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = errno == EAGAIN ? Status::Errorf(Errc::kTimedOut, "no answer within {} s", timeout_s)
                 : errno      ? Status(Errc(errno), strerror(errno))
                              : Status(Errc::kProto, tls_error("read"));
      return s;
    }
    if (n == 0) break;
    in.append(buf, size_t(n));
  }
  size_t head_end = in.find("\r\n\r\n");
  if (in.rfind("HTTP/1.", 0) != 0 || head_end == std::string::npos || in.size() < 12) {
    return Status(Errc::kProto, "not an HTTP reply");
  }
  RestReply r;
  r.status = std::atoi(in.c_str() + 9);
  std::string text = in.substr(head_end + 4);
  if (!text.empty()) {
    r.body = nlohmann::json::parse(text, nullptr, false);
    if (r.body.is_discarded()) r.body = text;
  }
  return r;
}

}  // namespace

Result<RestReply> rest_call(const std::vector<std::string>& agents, const std::string& method, const std::string& path,
                            const nlohmann::json* body, double timeout_s, const std::string& ca_file) {
  std::string payload = body ? body->dump() : std::string();
  std::string why;
  std::optional<RestReply> standby;
  // The agent that answered last (the leader, most likely) is asked first.
  static std::mutex mu;
  static std::map<std::vector<std::string>, size_t> last_good;
  size_t first = 0;
  {
    std::lock_guard l(mu);
    auto it = last_good.find(agents);
    if (it != last_good.end() && it->second < agents.size()) first = it->second;
  }
  for (size_t k = 0; k < agents.size(); k++) {
    const size_t i = (first + k) % agents.size();
    const std::string& a = agents[i];
    auto hp = parse_agent(a);
    if (!hp.ok()) return hp.status();
    auto r = one(*hp, method, path, payload, timeout_s, ca_file);
    if (!r.ok()) {
      why += fmt::format("{}{}: {}", why.empty() ? "" : "; ", a, r.status().message());
      continue;
    }
    if (r->status == 503 && agents.size() > 1) {
      standby = *r;
      continue;
    }
    std::lock_guard l(mu);
    last_good[agents] = i;
    return r;
  }
  if (standby) return *standby;
  return Status::Errorf(Errc::kConnRefused, "cannot reach the agent ({}); is tern-agent running?", why);
}

std::string problem_detail(const RestReply& r) {
  if (r.body.is_object() && r.body.contains("detail") && r.body["detail"].is_string()) return r.body["detail"];
  return fmt::format("HTTP {}", r.status);
}

}  // namespace tern::rest
