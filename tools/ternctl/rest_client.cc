#include "rest_client.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>

#include "common/log.h"

namespace tern::ctl {

namespace {

struct HostPort {
  std::string host, port;
};

Result<HostPort> parse_agent(std::string a) {
  if (a.rfind("http://", 0) == 0) a = a.substr(7);
  if (a.rfind("https://", 0) == 0) return Status(Errc::kNotSup, "https is not supported by ternctl yet");
  while (!a.empty() && a.back() == '/') a.pop_back();
  size_t colon = a.rfind(':');
  if (colon == std::string::npos || colon + 1 == a.size()) return HostPort{a, "8081"};
  std::string host = a.substr(0, colon);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return HostPort{host, a.substr(colon + 1)};
}

// One request on a fresh connection; the whole reply read (Connection: close).
Result<RestReply> one(const HostPort& hp, const std::string& method, const std::string& path, const std::string& body,
                      double timeout_s) {
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
    timeval tv{time_t(timeout_s), suseconds_t((timeout_s - double(time_t(timeout_s))) * 1e6)};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) break;
    last = Status(Errc(errno), strerror(errno));
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd < 0) return last;
  std::string req = fmt::format("{} {} HTTP/1.1\r\nHost: {}:{}\r\nConnection: close\r\nAccept: application/json\r\n", method,
                                path, hp.host, hp.port);
  if (!body.empty()) req += fmt::format("Content-Type: application/json\r\nContent-Length: {}\r\n", body.size());
  req += "\r\n" + body;
  for (size_t off = 0; off < req.size();) {
    ssize_t n = ::send(fd, req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n <= 0) {
      Status s(Errc(errno ? errno : EPIPE), strerror(errno ? errno : EPIPE));
      ::close(fd);
      return s;
    }
    off += size_t(n);
  }
  std::string in;
  char buf[16384];
  while (true) {
    ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = errno == EAGAIN ? Status::Errorf(Errc::kTimedOut, "no answer within {} s", timeout_s)
                                 : Status(Errc(errno), strerror(errno));
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    in.append(buf, size_t(n));
  }
  ::close(fd);
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
                            const nlohmann::json* body, double timeout_s) {
  std::string payload = body ? body->dump() : std::string();
  std::string why;
  std::optional<RestReply> standby;
  for (const std::string& a : agents) {
    auto hp = parse_agent(a);
    if (!hp.ok()) return hp.status();
    auto r = one(*hp, method, path, payload, timeout_s);
    if (!r.ok()) {
      why += fmt::format("{}{}: {}", why.empty() ? "" : "; ", a, r.status().message());
      continue;
    }
    if (r->status == 503 && agents.size() > 1) {
      standby = *r;
      continue;
    }
    return r;
  }
  if (standby) return *standby;
  return Status::Errorf(Errc::kConnRefused, "cannot reach the agent ({}); is tern-agent running? choose it with --agent "
                                            "or TERN_AGENT", why);
}

std::string problem_detail(const RestReply& r) {
  if (r.body.is_object() && r.body.contains("detail") && r.body["detail"].is_string()) return r.body["detail"];
  return fmt::format("HTTP {}", r.status);
}

}  // namespace tern::ctl
