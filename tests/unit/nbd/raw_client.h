// A raw NBD client for tests: blocking sockets where every wait is bounded (poll with a timeout), and
// helpers that speak the handshake and the transmission phase byte by byte, so tests can also send what a
// real client never would.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "nbd/protocol.h"

namespace tern::nbd::test {

using namespace tern::nbd::proto;

inline constexpr int kTimeoutMs = 10'000;

struct OptReply {
  uint64_t magic = 0;
  uint32_t opt = 0;
  uint32_t type = 0;
  std::vector<uint8_t> data;
  bool ok = false;  // a whole reply arrived
};

struct GoInfo {
  bool ok = false;
  uint32_t final_type = 0;
  uint64_t size = 0;
  uint16_t flags = 0;
  uint32_t min_block = 0, preferred_block = 0, max_block = 0;
  std::string name;
  std::string description;
};

struct SimpleReply {
  bool ok = false;  // a whole reply header arrived
  uint32_t magic = 0;
  uint32_t error = 0;
  uint64_t cookie = 0;
};

class RawClient {
 public:
  RawClient() = default;
  ~RawClient() { close(); }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connect_tcp(uint16_t port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  bool connect_unix(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un a{};
    a.sun_family = AF_UNIX;
    std::snprintf(a.sun_path, sizeof(a.sun_path), "%s", path.c_str());
    return ::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  int fd() const { return fd_; }

  bool send_all(const void* p, size_t n) {
    const auto* b = static_cast<const uint8_t*>(p);
    while (n > 0) {
      pollfd pf{fd_, POLLOUT, 0};
      if (::poll(&pf, 1, kTimeoutMs) <= 0) return false;
      ssize_t k = ::send(fd_, b, n, MSG_NOSIGNAL);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return false;
      b += k;
      n -= size_t(k);
    }
    return true;
  }
  bool send_bytes(const std::vector<uint8_t>& v) { return send_all(v.data(), v.size()); }

  // Exactly n bytes, or false on EOF, error or timeout.
  bool recv_exact(void* p, size_t n, int timeout_ms = kTimeoutMs) {
    auto* b = static_cast<uint8_t*>(p);
    while (n > 0) {
      pollfd pf{fd_, POLLIN, 0};
      if (::poll(&pf, 1, timeout_ms) <= 0) return false;
      ssize_t k = ::recv(fd_, b, n, 0);
      if (k < 0 && errno == EINTR) continue;
      if (k <= 0) return false;
      b += k;
      n -= size_t(k);
    }
    return true;
  }
  // True when the server closed the connection (EOF or reset) within the timeout, with nothing more to
  // read than `allow_bytes` bytes (which are skipped).
  bool closed_by_peer(int timeout_ms = kTimeoutMs, size_t allow_bytes = 1 << 20) {
    uint8_t buf[4096];
    size_t got = 0;
    for (;;) {
      pollfd pf{fd_, POLLIN, 0};
      if (::poll(&pf, 1, timeout_ms) <= 0) return false;
      ssize_t k = ::recv(fd_, buf, sizeof(buf), 0);
      if (k == 0) return true;
      if (k < 0) return errno == ECONNRESET;
      got += size_t(k);
      if (got > allow_bytes) return false;
    }
  }
  // Nothing arrives within `ms` and the connection is still open.
  bool quiet_for(int ms) {
    pollfd pf{fd_, POLLIN, 0};
    return ::poll(&pf, 1, ms) == 0;
  }

  // --- handshake ---
  bool read_greeting(uint64_t* magic1 = nullptr, uint64_t* magic2 = nullptr, uint16_t* flags = nullptr) {
    uint8_t g[kGreetingLen];
    if (!recv_exact(g, sizeof(g))) return false;
    if (magic1) *magic1 = load_be64(g);
    if (magic2) *magic2 = load_be64(g + 8);
    if (flags) *flags = load_be16(g + 16);
    return load_be64(g) == kInitMagic && load_be64(g + 8) == kOptMagic;
  }
  bool send_client_flags(uint32_t flags) {
    uint8_t b[4];
    store_be32(b, flags);
    return send_all(b, 4);
  }
  // Greeting + fixed newstyle (+ NO_ZEROES).
  bool handshake(bool no_zeroes = true) {
    return read_greeting() && send_client_flags(kClientFixedNewstyle | (no_zeroes ? kClientNoZeroes : 0));
  }
  bool send_option(uint32_t opt, const std::vector<uint8_t>& data, uint64_t magic = kOptMagic) {
    std::vector<uint8_t> b(16 + data.size());
    store_be64(b.data(), magic);
    store_be32(b.data() + 8, opt);
    store_be32(b.data() + 12, uint32_t(data.size()));
    if (!data.empty()) std::memcpy(b.data() + 16, data.data(), data.size());
    return send_bytes(b);
  }
  OptReply read_option_reply() {
    OptReply r;
    uint8_t h[20];
    if (!recv_exact(h, sizeof(h))) return r;
    r.magic = load_be64(h);
    r.opt = load_be32(h + 8);
    r.type = load_be32(h + 12);
    r.data.resize(load_be32(h + 16));
    if (!r.data.empty() && !recv_exact(r.data.data(), r.data.size())) return r;
    r.ok = true;
    return r;
  }
  static std::vector<uint8_t> info_data(const std::string& name, std::vector<uint16_t> infos = {}) {
    std::vector<uint8_t> d(4 + name.size() + 2 + 2 * infos.size());
    store_be32(d.data(), uint32_t(name.size()));
    std::memcpy(d.data() + 4, name.data(), name.size());
    store_be16(d.data() + 4 + name.size(), uint16_t(infos.size()));
    for (size_t i = 0; i < infos.size(); ++i) store_be16(d.data() + 6 + name.size() + 2 * i, infos[i]);
    return d;
  }
  // NBD_OPT_INFO / NBD_OPT_GO: reads the NBD_REP_INFO replies up to the final one.
  GoInfo info_or_go(uint32_t opt, const std::string& name,
                    std::vector<uint16_t> infos = {kInfoBlockSize, kInfoName, kInfoDescription}) {
    GoInfo g;
    if (!send_option(opt, info_data(name, infos))) return g;
    for (;;) {
      OptReply r = read_option_reply();
      if (!r.ok || r.magic != kOptReplyMagic || r.opt != opt) return g;
      if (r.type != kRepInfo) {
        g.final_type = r.type;
        g.ok = r.type == kRepAck;
        return g;
      }
      if (r.data.size() < 2) return g;
      switch (load_be16(r.data.data())) {
        case kInfoExport:
          if (r.data.size() != 12) return g;
          g.size = load_be64(r.data.data() + 2);
          g.flags = load_be16(r.data.data() + 10);
          break;
        case kInfoBlockSize:
          if (r.data.size() != 14) return g;
          g.min_block = load_be32(r.data.data() + 2);
          g.preferred_block = load_be32(r.data.data() + 6);
          g.max_block = load_be32(r.data.data() + 10);
          break;
        case kInfoName: g.name.assign(r.data.begin() + 2, r.data.end()); break;
        case kInfoDescription: g.description.assign(r.data.begin() + 2, r.data.end()); break;
        default: break;
      }
    }
  }
  GoInfo go(const std::string& name) { return info_or_go(kOptGo, name); }
  // Connects over TCP and goes into transmission on `name`.
  bool open(uint16_t port, const std::string& name, GoInfo* info = nullptr) {
    if (!connect_tcp(port) || !handshake()) return false;
    GoInfo g = go(name);
    if (info) *info = g;
    return g.ok;
  }

  // --- transmission ---
  bool send_request(uint16_t type, uint64_t cookie, uint64_t offset, uint32_t length, uint16_t flags = 0,
                    const void* payload = nullptr, uint32_t magic = kRequestMagic) {
    std::vector<uint8_t> b(kRequestLen);
    store_be32(b.data(), magic);
    store_be16(b.data() + 4, flags);
    store_be16(b.data() + 6, type);
    store_be64(b.data() + 8, cookie);
    store_be64(b.data() + 16, offset);
    store_be32(b.data() + 24, length);
    if (payload) b.insert(b.end(), static_cast<const uint8_t*>(payload), static_cast<const uint8_t*>(payload) + length);
    return send_bytes(b);
  }
  SimpleReply read_reply() {
    SimpleReply r;
    uint8_t h[kSimpleReplyLen];
    if (!recv_exact(h, sizeof(h))) return r;
    r.magic = load_be32(h);
    r.error = load_be32(h + 4);
    r.cookie = load_be64(h + 8);
    r.ok = r.magic == kSimpleReplyMagic;
    return r;
  }
  // One request, one reply (with `out` filled by a successful READ). Returns the NBD error, or -1 when no
  // well-formed reply for this cookie came.
  int64_t call(uint16_t type, uint64_t offset, uint32_t length, uint16_t flags = 0, const void* payload = nullptr,
               void* out = nullptr) {
    const uint64_t cookie = ++cookie_;
    if (!send_request(type, cookie, offset, length, flags, payload)) return -1;
    SimpleReply r = read_reply();
    if (!r.ok || r.cookie != cookie) return -1;
    if (r.error == 0 && type == kCmdRead && length && !recv_exact(out, length)) return -1;
    return r.error;
  }
  int64_t read(uint64_t off, uint32_t len, void* out) { return call(kCmdRead, off, len, 0, nullptr, out); }
  int64_t write(uint64_t off, uint32_t len, const void* data, uint16_t flags = 0) {
    return call(kCmdWrite, off, len, flags, data);
  }
  bool disc() { return send_request(kCmdDisc, ++cookie_, 0, 0); }

 private:
  int fd_ = -1;
  uint64_t cookie_ = 0x1000;
};

}  // namespace tern::nbd::test
