#include "control/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <nlohmann/json.hpp>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "common/log.h"
#include "metrics/http_parser.h"

namespace tern::control {

namespace {

const char* reason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 415: return "Unsupported Media Type";
    case 422: return "Unprocessable Content";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Status";
  }
}

std::string tls_error() {
  unsigned long e = ERR_get_error();
  char buf[256] = "unknown error";
  if (e) ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return buf;
}

}  // namespace

// One connection's bytes: the socket's, or TLS over it.
class Conn {
 public:
  Conn(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  // Bytes read (0 at the end of the stream, < 0 on an error or timeout).
  ssize_t recv_some(char* buf, size_t n) {
    if (ssl_) {
      int r = SSL_read(ssl_, buf, int(n));
      if (r > 0) return r;
      return SSL_get_error(ssl_, r) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
    }
    for (;;) {
      ssize_t r = ::recv(fd_, buf, n, 0);
      if (r < 0 && errno == EINTR) continue;
      return r;
    }
  }
  bool send_all(std::string_view data) {
    while (!data.empty()) {
      ssize_t n;
      if (ssl_) {
        int r = SSL_write(ssl_, data.data(), int(data.size()));
        n = r > 0 ? r : -1;
      } else {
        n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
      }
      if (n <= 0) return false;
      data.remove_prefix(size_t(n));
    }
    return true;
  }

 private:
  int fd_;
  SSL* ssl_;
};

namespace {

std::string lower(std::string_view s) {
  std::string o(s);
  for (char& c : o) c = char(std::tolower(static_cast<unsigned char>(c)));
  return o;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

std::string render(const HttpReply& r, bool keep_alive) {
  std::string out = fmt::format("HTTP/1.1 {} {}\r\n", r.status, reason(r.status));
  if (!r.body.empty() || r.status != 204) {
    out += fmt::format("Content-Type: {}\r\nContent-Length: {}\r\n", r.content_type, r.body.size());
  }
  for (const auto& [k, v] : r.headers) out += fmt::format("{}: {}\r\n", k, v);
  out += keep_alive ? "Connection: keep-alive\r\n\r\n" : "Connection: close\r\n\r\n";
  if (r.status != 204) out += r.body;
  return out;
}


}  // namespace

HttpReply problem(int status, std::string_view detail, std::string_view code) {
  HttpReply r;
  r.status = status;
  r.content_type = "application/problem+json";
  r.body = nlohmann::json{{"type", "about:blank"},
                          {"title", reason(status)},
                          {"status", status},
                          {"detail", std::string(detail)},
                          {"code", std::string(code)}}
               .dump();
  return r;
}

Result<std::string> url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%') {
      if (i + 2 >= s.size()) return Status(Errc::kInval, "bad percent-escape");
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      int h = hex(s[i + 1]), l = hex(s[i + 2]);
      if (h < 0 || l < 0) return Status(Errc::kInval, "bad percent-escape");
      out += char(h * 16 + l);
      i += 2;
    } else if (s[i] == '+') {
      out += ' ';
    } else {
      out += s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty()) {
    size_t amp = q.find('&');
    std::string_view kv = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view() : q.substr(amp + 1);
    if (kv.empty()) continue;
    size_t eq = kv.find('=');
    auto k = url_decode(kv.substr(0, eq));
    auto v = url_decode(eq == std::string_view::npos ? std::string_view() : kv.substr(eq + 1));
    if (k.ok() && v.ok()) out[*k] = *v;
  }
  return out;
}

Result<std::unique_ptr<HttpServer>> HttpServer::Start(std::string_view host, uint16_t port, HttpHandler handler,
                                                      HttpServerOptions opts) {
  std::unique_ptr<HttpServer> s(new HttpServer());
  s->handler_ = std::move(handler);
  s->opts_ = opts;
  std::string h(host);
  if (h == "localhost") h = "127.0.0.1";
  if (!h.empty() && h.front() == '[' && h.back() == ']') h = h.substr(1, h.size() - 2);
  sockaddr_storage ss{};
  socklen_t len = 0;
  if (h.empty() || h.find(':') == std::string::npos) {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_port = htons(port);
    if (!h.empty() && inet_pton(AF_INET, h.c_str(), &a->sin_addr) != 1) {
      return Status::Errorf(Errc::kInval, "'{}' is not an IP address", host);
    }
    len = sizeof(sockaddr_in);
  } else {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_port = htons(port);
    if (inet_pton(AF_INET6, h.c_str(), &a->sin6_addr) != 1) return Status::Errorf(Errc::kInval, "'{}' is not an IP address", host);
    len = sizeof(sockaddr_in6);
  }
  int fd = ::socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::Errorf(Errc(errno), "socket: {}", strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&ss), len) != 0 || ::listen(fd, 128) != 0) {
    int e = errno;
    ::close(fd);
    return Status::Errorf(Errc(e), "{}:{}: {}", host.empty() ? "*" : host, port, strerror(e));
  }
  sockaddr_storage bound{};
  socklen_t bl = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &bl);
  s->port_ = ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                              : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  if (!opts.tls_cert_file.empty() || !opts.tls_key_file.empty()) {
    if (opts.tls_cert_file.empty() || opts.tls_key_file.empty()) {
      ::close(fd);
      return Status(Errc::kInval, "TLS needs both a certificate and a key");
    }
    std::shared_ptr<SSL_CTX> ctx(SSL_CTX_new(TLS_server_method()), SSL_CTX_free);
    Status bad;
    if (!ctx) {
      bad = Status::Errorf(Errc::kInval, "TLS: {}", tls_error());
    } else if (SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION) != 1) {
      bad = Status::Errorf(Errc::kInval, "TLS: {}", tls_error());
    } else if (SSL_CTX_use_certificate_chain_file(ctx.get(), opts.tls_cert_file.c_str()) != 1) {
      bad = Status::Errorf(Errc::kInval, "TLS certificate {}: {}", opts.tls_cert_file, tls_error());
    } else if (SSL_CTX_use_PrivateKey_file(ctx.get(), opts.tls_key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
      bad = Status::Errorf(Errc::kInval, "TLS key {}: {} (is it the key of certificate {}?)", opts.tls_key_file, tls_error(),
                           opts.tls_cert_file);
    } else if (SSL_CTX_check_private_key(ctx.get()) != 1) {
      bad = Status::Errorf(Errc::kInval, "TLS key {} does not match certificate {}", opts.tls_key_file, opts.tls_cert_file);
    }
    if (!bad.ok()) {
      ::close(fd);
      return bad;
    }
    SSL_CTX_set_mode(ctx.get(), SSL_MODE_AUTO_RETRY);
    s->tls_ = std::move(ctx);
  }
  s->listen_fd_ = fd;
  s->stop_fd_ = eventfd(0, EFD_CLOEXEC);
  s->acceptor_ = std::thread([p = s.get()] { p->accept_loop(); });
  return s;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::accept_loop() {
  while (!stopping_) {
    pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    bool full;
    {
      std::lock_guard<std::mutex> l(mu_);
      for (auto& t : finished_) t.join();
      finished_.clear();
      full = conns_.size() >= opts_.max_connections;
    }
    int n = ::poll(p, full ? 0 : 2, full ? 50 : -1);
    if (full) {
      ::poll(&p[1], 1, 50);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (p[1].revents) break;
    if (!(p[0].revents & POLLIN)) continue;
    sockaddr_storage peer{};
    socklen_t pl = sizeof(peer);
    int fd = ::accept4(listen_fd_, reinterpret_cast<sockaddr*>(&peer), &pl, SOCK_CLOEXEC);
    if (fd < 0) continue;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    timeval tv{time_t(opts_.read_timeout_ms / 1000), suseconds_t((opts_.read_timeout_ms % 1000) * 1000)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char addr[INET6_ADDRSTRLEN] = "?";
    if (peer.ss_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&peer)->sin_addr, addr, sizeof(addr));
    if (peer.ss_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&peer)->sin6_addr, addr, sizeof(addr));
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) {
      ::close(fd);
      break;
    }
    conns_.emplace(fd, std::thread([this, fd, a = std::string(addr)] { serve(fd, a); }));
  }
}

void HttpServer::serve(int fd, std::string peer) {
  SSL* ssl = nullptr;
  bool ok = true;
  if (tls_) {
    ssl = SSL_new(tls_.get());
    if (!ssl || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1) {
      TLOG_DEBUG("control", "REST: TLS handshake with {} failed: {}", peer, tls_error());
      ok = false;
    }
  }
  if (ok) {
    Conn c(fd, ssl);
    serve_http(c, peer);
    if (ssl) SSL_shutdown(ssl);
  }
  if (ssl) SSL_free(ssl);
  ::shutdown(fd, SHUT_RDWR);
  std::lock_guard<std::mutex> l(mu_);
  ::close(fd);  // under the lock: Stop() never shuts a reused descriptor
  auto it = conns_.find(fd);
  if (it != conns_.end()) {
    finished_.push_back(std::move(it->second));
    conns_.erase(it);
  }
}

void HttpServer::serve_http(Conn& conn, const std::string& peer) {
  std::string in;
  char buf[16384];
  bool keep = true;
  while (keep && !stopping_) {
    // The head.
    metrics::ParseResult pr;
    while (true) {
      pr = metrics::parse_http_request(in, opts_.max_head_bytes);
      if (pr.state != metrics::ParseState::kIncomplete) break;
      ssize_t n = conn.recv_some(buf, sizeof(buf));
      if (n <= 0) {
        keep = false;
        break;
      }
      in.append(buf, size_t(n));
    }
    if (!keep) break;
    if (pr.state == metrics::ParseState::kError) {
      conn.send_all(render(problem(pr.error_status, "the request could not be parsed", "EPROTO"), false));
      break;
    }
    HttpCall call;
    call.method = std::string(pr.request.method);
    std::string_view target = pr.request.target;
    size_t q = target.find('?');
    call.path = std::string(pr.request.path);
    if (q != std::string_view::npos) call.query = std::string(target.substr(q + 1));
    call.peer = peer;
    keep = pr.request.keep_alive;
    // The headers this server needs (the parser checked the syntax).
    uint64_t content_length = 0;
    bool chunked = false, expect_continue = false;
    std::string_view head(in.data(), pr.consumed);
    size_t pos = head.find('\n');
    while (pos != std::string_view::npos && pos + 1 < head.size()) {
      size_t end = head.find('\n', pos + 1);
      std::string_view line = head.substr(pos + 1, end == std::string_view::npos ? std::string_view::npos : end - pos - 1);
      pos = end;
      size_t colon = line.find(':');
      if (colon == std::string_view::npos) continue;
      std::string name = lower(line.substr(0, colon));
      std::string_view value = trim(line.substr(colon + 1));
      if (name == "content-length") {
        content_length = std::strtoull(std::string(value).c_str(), nullptr, 10);
      } else if (name == "transfer-encoding") {
        chunked = true;
      } else if (name == "content-type") {
        call.content_type = std::string(value);
      } else if (name == "expect" && lower(value) == "100-continue") {
        expect_continue = true;
      }
    }
    in.erase(0, pr.consumed);
    if (chunked) {
      conn.send_all(render(problem(411, "send the body with a Content-Length", "EINVAL"), false));
      break;
    }
    if (content_length > opts_.max_body_bytes) {
      conn.send_all(render(problem(413, fmt::format("the body is larger than {} bytes", opts_.max_body_bytes), "EFBIG"), false));
      break;
    }
    if (expect_continue && content_length > in.size()) conn.send_all("HTTP/1.1 100 Continue\r\n\r\n");
    while (in.size() < content_length) {
      ssize_t n = conn.recv_some(buf, sizeof(buf));
      if (n <= 0) break;
      in.append(buf, size_t(n));
    }
    if (in.size() < content_length) break;
    call.body = in.substr(0, content_length);
    in.erase(0, content_length);
    HttpReply reply = handler_(call);
    if (pr.request.method == "HEAD") reply.body.clear();
    if (!conn.send_all(render(reply, keep))) break;
  }
}

void HttpServer::Stop() {
  if (stopping_.exchange(true)) return;
  uint64_t one = 1;
  if (stop_fd_ >= 0) (void)::write(stop_fd_, &one, sizeof(one));
  if (acceptor_.joinable()) acceptor_.join();
  {
    std::lock_guard<std::mutex> l(mu_);
    for (auto& [fd, t] : conns_) ::shutdown(fd, SHUT_RDWR);
  }
  // Connection threads end (their sockets are shut); each moves itself to finished_.
  while (true) {
    std::vector<std::thread> done;
    bool empty;
    {
      std::lock_guard<std::mutex> l(mu_);
      done.swap(finished_);
      empty = conns_.empty();
    }
    for (auto& t : done) t.join();
    if (empty) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (listen_fd_ >= 0) ::close(listen_fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
  listen_fd_ = stop_fd_ = -1;
}

}  // namespace tern::control
