// libFuzzer target for the NVMe/TCP target: its PDU parser, its state machines and its command handling.
//
// The target runs for real, in this process: a reactor, two RAM namespaces, a subsystem with ANA
// reporting, a listener on 127.0.0.1. Each input is one TCP connection to it, so everything the fuzzer
// reaches is what a host on the network reaches.
//
// Input layout. Byte 0 is the mode:
//   bits 0-1  preamble the harness performs correctly before the fuzzed bytes:
//             0 none, 1 ICReq, 2 ICReq + admin Connect + CC.EN=1, 3 as 2 on a second connection
//             followed by ICReq + an I/O queue Connect on this one
//   bit 2/3   ask for header/data digests in the ICReq
//   bit 4     the rest is framed PDU records (below) rather than raw bytes
//   bit 5     the admin Connect goes to the discovery subsystem
// A framed record is [type][flags][hlen-8][dlen lo][dlen hi] + (hlen-8) header bytes + dlen data bytes;
// the harness writes the common header (hlen, pdo, plen) and the digests, so mutations land in command
// fields rather than in framing the parser rejects at once. Flag 0x80 on a record corrupts its digests.
//
// Properties checked besides "no crash, no sanitizer report": after the host closes its side, the target
// closes the connection within a bounded time (no hung queue pair), and the target still serves a fresh
// connection afterwards (checked every 256 inputs).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bdev/registry.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "nvmf/target/target.h"
#include "nvmf/vendor.h"
#include "reactor/reactor_set.h"

using namespace tern;

namespace {

constexpr const char* kSubNqn = "nqn.2026-11.io.tern:fuzz";
constexpr const char* kDiscoveryNqn = "nqn.2014-08.org.nvmexpress.discovery";
constexpr const char* kHostNqn = "nqn.2026-11.io.tern:fuzz-host";
constexpr int kCloseDeadlineMs = 10'000;

struct World {
  std::unique_ptr<ReactorSet> reactors;
  std::unique_ptr<BdevRegistry> devices;
  std::unique_ptr<nvmf::Target> target;
  uint16_t port = 0;
};
World* g_world = nullptr;

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "nvmf_target_fuzz: %s\n", what);
  std::abort();
}

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }
void put32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
uint32_t get32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// A blocking, deadline-bounded client connection.
class Conn {
 public:
  Conn() {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) die("socket");
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(g_world->port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd_, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) die("connect to the target failed");
  }
  ~Conn() {
    if (fd_ >= 0) close(fd_);
  }
  int fd() const { return fd_; }

  bool send_all(const void* p, size_t n) {
    auto* b = static_cast<const uint8_t*>(p);
    while (n > 0) {
      ssize_t w = ::send(fd_, b, n, MSG_NOSIGNAL);
      if (w <= 0) return false;
      b += w;
      n -= size_t(w);
    }
    return true;
  }
  // Reads exactly n bytes or fails (peer closed, or nothing within the deadline).
  bool recv_all(void* p, size_t n, int timeout_ms = 5000) {
    auto* b = static_cast<uint8_t*>(p);
    while (n > 0) {
      pollfd pf{fd_, POLLIN, 0};
      if (poll(&pf, 1, timeout_ms) <= 0) return false;
      ssize_t r = ::recv(fd_, b, n, 0);
      if (r <= 0) return false;
      b += r;
      n -= size_t(r);
    }
    return true;
  }
  // Reads one PDU; returns its bytes or an empty vector.
  std::vector<uint8_t> recv_pdu() {
    uint8_t ch[8];
    if (!recv_all(ch, 8)) return {};
    uint32_t plen = get32(ch + 4);
    if (plen < 8 || plen > (1u << 20)) return {};
    std::vector<uint8_t> pdu(plen);
    std::memcpy(pdu.data(), ch, 8);
    if (!recv_all(pdu.data() + 8, plen - 8)) return {};
    return pdu;
  }

 private:
  int fd_ = -1;
};

struct Session {
  bool hdgst = false, ddgst = false;
};

// Builds one PDU: common header, the rest of the header, header digest, data, data digest.
std::vector<uint8_t> build_pdu(const Session& s, uint8_t type, uint8_t flags, const uint8_t* hdr, size_t hdr_len,
                               const uint8_t* data, size_t data_len, bool corrupt = false) {
  const size_t hlen = 8 + hdr_len;
  const bool hd = s.hdgst && type != 0x00 && type != 0x01;
  const bool dd = s.ddgst && data_len > 0 && type != 0x02 && type != 0x03;
  const size_t pdo = data_len ? hlen + (hd ? 4 : 0) : 0;
  const size_t plen = hlen + (hd ? 4 : 0) + data_len + (dd ? 4 : 0);
  std::vector<uint8_t> p(plen);
  p[0] = type;
  p[1] = uint8_t((flags & 0x7F) | (hd ? 0x01 : 0) | (dd ? 0x02 : 0));
  p[2] = uint8_t(hlen);
  p[3] = uint8_t(pdo);
  put32(&p[4], uint32_t(plen));
  if (hdr_len) std::memcpy(&p[8], hdr, hdr_len);
  size_t off = hlen;
  if (hd) {
    put32(&p[off], crc32c(p.data(), hlen) ^ (corrupt ? 1u : 0u));
    off += 4;
  }
  if (data_len) std::memcpy(&p[off], data, data_len);
  off += data_len;
  if (dd) put32(&p[off], crc32c(data, data_len) ^ (corrupt ? 1u : 0u));
  return p;
}

bool icreq(Conn& c, const Session& s) {
  uint8_t hdr[120] = {};
  hdr[3] = uint8_t((s.hdgst ? 1 : 0) | (s.ddgst ? 2 : 0));  // pfv 0, hpda 0, dgst
  auto pdu = build_pdu(Session{}, 0x00, 0, hdr, sizeof(hdr), nullptr, 0);
  if (!c.send_all(pdu.data(), pdu.size())) return false;
  auto resp = c.recv_pdu();
  return resp.size() == 128 && resp[0] == 0x01;
}

// Sends a command capsule and waits for its response; returns the response's dw0 and status.
bool command(Conn& c, const Session& s, const uint8_t sqe[64], const uint8_t* data, size_t len, uint32_t* dw0,
             uint16_t* status) {
  auto pdu = build_pdu(s, 0x04, 0, sqe, 64, data, len);
  if (!c.send_all(pdu.data(), pdu.size())) return false;
  auto resp = c.recv_pdu();
  if (resp.size() < 24 || resp[0] != 0x05) return false;
  *dw0 = get32(&resp[8]);
  uint16_t st;
  std::memcpy(&st, &resp[8 + 14], 2);
  *status = uint16_t(st >> 1);
  return true;
}

bool connect_queue(Conn& c, const Session& s, bool discovery, uint16_t qid, uint16_t cntlid, uint16_t* out) {
  uint8_t sqe[64] = {};
  sqe[0] = 0x7F;       // fabrics
  sqe[1] = 0x40;       // SGL
  put16(&sqe[2], 1);   // cid
  sqe[4] = 0x01;       // connect
  // SGL: in-capsule data block, offset 0, length 1024 (type 0x01, subtype 0x1).
  put32(&sqe[32], 1024);
  sqe[39] = 0x01;
  put16(&sqe[42], qid);
  put16(&sqe[44], 31);  // sqsize (0's based)
  put32(&sqe[48], 0);   // kato: none
  uint8_t data[1024] = {};
  for (int i = 0; i < 16; ++i) data[i] = uint8_t(0xA0 + i);
  put16(&data[16], cntlid);
  std::snprintf(reinterpret_cast<char*>(&data[256]), 256, "%s", discovery ? kDiscoveryNqn : kSubNqn);
  std::snprintf(reinterpret_cast<char*>(&data[512]), 256, "%s", kHostNqn);
  uint32_t dw0 = 0;
  uint16_t st = 0;
  if (!command(c, s, sqe, data, sizeof(data), &dw0, &st) || st != 0) return false;
  *out = uint16_t(dw0);
  return true;
}

bool enable(Conn& c, const Session& s) {
  uint8_t sqe[64] = {};
  sqe[0] = 0x7F;
  sqe[1] = 0x40;
  put16(&sqe[2], 2);
  sqe[4] = 0x00;  // property set
  sqe[40] = 0;    // 4-byte property
  put32(&sqe[44], 0x14);                            // CC
  put32(&sqe[48], 1u | (6u << 16) | (4u << 20));    // EN, IOSQES 6, IOCQES 4
  uint32_t dw0 = 0;
  uint16_t st = 0;
  return command(c, s, sqe, nullptr, 0, &dw0, &st) && st == 0;
}

// Sends `in` while reading whatever the target answers, half-closes, then waits for the target to close.
void exchange(Conn& c, const uint8_t* in, size_t len) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(kCloseDeadlineMs);
  size_t sent = 0;
  bool half_closed = false;
  uint8_t sink[65536];
  for (;;) {
    if (sent == len && !half_closed) {
      shutdown(c.fd(), SHUT_WR);
      half_closed = true;
    }
    pollfd pf{c.fd(), short(POLLIN | (sent < len ? POLLOUT : 0)), 0};
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now()).count());
    if (left <= 0) die("the target did not close a connection whose host had closed its side (hung queue pair?)");
    if (poll(&pf, 1, left) <= 0) continue;
    if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = ::recv(c.fd(), sink, sizeof(sink), MSG_DONTWAIT);
      if (r == 0) return;                            // target closed: done
      if (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return;  // reset: also closed
    }
    if (sent < len && (pf.revents & POLLOUT)) {
      ssize_t w = ::send(c.fd(), in + sent, len - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (w > 0) sent += size_t(w);
      else if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK) sent = len;  // peer gone; just drain
    }
  }
}

// Expands framed records into PDUs. Stops at the first incomplete record.
std::vector<uint8_t> expand_records(const Session& s, const uint8_t* p, size_t n) {
  std::vector<uint8_t> out;
  while (n >= 5) {
    uint8_t type = p[0], flags = p[1];
    size_t hdr_len = p[2];
    size_t dlen = size_t(p[3]) | (size_t(p[4]) << 8);
    p += 5;
    n -= 5;
    if (hdr_len > n) break;
    const uint8_t* hdr = p;
    p += hdr_len;
    n -= hdr_len;
    dlen = std::min(dlen, n);
    auto pdu = build_pdu(s, type, flags, hdr, hdr_len, p, dlen, flags & 0x80);
    out.insert(out.end(), pdu.begin(), pdu.end());
    p += dlen;
    n -= dlen;
  }
  return out;
}

void check_still_serving() {
  Conn c;
  Session s;
  uint16_t cntlid = 0;
  if (!icreq(c, s) || !connect_queue(c, s, false, 0, 0xFFFF, &cntlid)) die("the target no longer serves new hosts");
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  signal(SIGPIPE, SIG_IGN);
  (void)log::set_levels("off");
  auto* w = new World;
  ReactorSetOptions ro;
  ro.cores = {sched_getcpu()};
  ro.pin = false;
  auto set = ReactorSet::Start(ro);
  if (!set.ok()) die("cannot start a reactor");
  w->reactors = std::move(*set);
  w->devices = std::make_unique<BdevRegistry>(*w->reactors);
  nvmf::TargetOptions to;
  to.small_buffers_per_reactor = 64;
  to.large_buffers_per_reactor = 8;
  w->target = std::make_unique<nvmf::Target>(*w->reactors, *w->devices, to);
  Status st = w->reactors->run_sync(0, [w]() -> Task<Status> {
    for (const char* u : {"malloc:///fz0?size_mb=4&blk_size=512", "malloc:///fz1?size_mb=4&blk_size=4096"}) {
      auto b = co_await w->devices->create(u);
      if (!b.ok()) co_return b.status();
    }
    auto port = w->target->listen("127.0.0.1", 0);
    if (!port.ok()) co_return port.status();
    w->port = *port;
    nvmf::SubsystemConfig cfg;
    cfg.nqn = kSubNqn;
    cfg.allow_any_host = true;
    cfg.ana_reporting = true;
    auto s = w->target->create_subsystem(cfg);
    if (!s.ok()) co_return s.status();
    if (Status x = w->target->add_subsystem_listener(kSubNqn, {"127.0.0.1", w->port}); !x.ok()) co_return x;
    for (const char* d : {"fz0", "fz1"}) {
      auto id = w->target->add_namespace(kSubNqn, d, 0, 0);
      if (!id.ok()) co_return id.status();
    }
    // Vendor commands (a nexus's snapshot request): the payload decoder runs on what arrives.
    for (uint8_t opc : {nvmf::vendor::kSnapshot, nvmf::vendor::kDropSnapshot}) {
      w->target->set_vendor_handler(opc, [](nvmf::VendorCommand c) -> Task<nvmf::AdminResult> {
        nvmf::AdminResult r;
        auto d = nvmf::vendor::decode_snapshot_command(c.data.data(), c.data.size());
        if (!d.ok()) r.status = nvmf::vendor::status_for(d.code());
        else if (d->name.empty() || d->uuid.is_nil()) std::abort();
        co_return r;
      });
    }
    co_return Status::Ok();
  });
  if (!st.ok()) {
    std::fprintf(stderr, "nvmf_target_fuzz: setup failed: %s\n", st.ToString().c_str());
    std::abort();
  }
  g_world = w;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static uint64_t runs = 0;
  const uint8_t mode = data[0];
  Session s;
  s.hdgst = mode & 0x04;
  s.ddgst = mode & 0x08;
  const bool framed = mode & 0x10;
  const bool discovery = mode & 0x20;
  const unsigned preamble = mode & 0x03;

  std::unique_ptr<Conn> admin;  // preamble 3 keeps the admin queue open while the I/O queue is fuzzed
  Conn c;
  bool ready = true;
  if (preamble == 1 || preamble == 2) ready = icreq(c, s);
  if (ready && preamble == 2) {
    uint16_t cntlid = 0;
    ready = connect_queue(c, s, discovery, 0, 0xFFFF, &cntlid) && enable(c, s);
  }
  if (ready && preamble == 3) {
    admin = std::make_unique<Conn>();
    Session as;
    uint16_t cntlid = 0;
    ready = icreq(*admin, as) && connect_queue(*admin, as, false, 0, 0xFFFF, &cntlid) && enable(*admin, as) &&
            icreq(c, s) && connect_queue(c, s, false, 1, cntlid, &cntlid);
  }
  if (!ready) die("the preamble failed: the target refused a well-formed ICReq/Connect");

  if (framed) {
    auto pdus = expand_records(s, data + 1, size - 1);
    exchange(c, pdus.data(), pdus.size());
  } else {
    exchange(c, data + 1, size - 1);
  }
  if (admin) exchange(*admin, nullptr, 0);
  if (++runs % 256 == 0) check_still_serving();
  return 0;
}
