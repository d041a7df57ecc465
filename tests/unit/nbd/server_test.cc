// nbd::Server driven by a raw-socket client (raw_client.h): the handshake variants, every command and its
// errors, pipelining, back-pressure, disconnects, export removal and server stop with clients attached.
#include "nbd/server.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <thread>

#include "bdev/fault_bdevs.h"
#include "common/log.h"
#include "nbd/protocol.h"
#include "raw_client.h"
#include "test_util.h"

namespace tern::nbd {
namespace {

using namespace tern::nbd::proto;
using test::GoInfo;
using test::RawClient;

std::vector<uint8_t> pattern(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  tern::test::fill(v.data(), n, seed);
  return v;
}

class NbdServer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (const char* l = std::getenv("TERN_TEST_LOG")) {
      ASSERT_TRUE(log::set_levels(l).ok());  // e.g. TERN_TEST_LOG=info,nbd=debug
    }
    env_ = std::make_unique<tern::test::DeviceEnv>(2);
    ASSERT_TRUE(env_->set);
    ASSERT_TRUE(env_->create("malloc:///m0?size_mb=16").ok());
    ASSERT_TRUE(env_->create("malloc:///m4k?size_mb=8&blk_size=4096").ok());
    ASSERT_TRUE(env_->create("malloc:///big?size_mb=80").ok());
    start(options());
  }
  void TearDown() override {
    stop();
    env_.reset();
  }

  ServerOptions options() {
    ServerOptions o;
    o.tcp = true;
    o.tcp_host = "127.0.0.1";
    o.tcp_port = 0;
    o.unix_path = dir_.file("nbd.sock");
    o.max_inflight = 16;
    o.drain_timeout_ms = 2000;
    return o;
  }
  void start(ServerOptions o) {
    auto s = env_->on_primary([&] { return Server::Create(*env_->set, *env_->registry, o); });
    ASSERT_TRUE(s.ok()) << s.status();
    srv_ = std::move(*s);
    port_ = srv_->tcp_port();
    ASSERT_NE(port_, 0);
  }
  void stop() {
    if (!srv_) return;
    env_->on_primary([this]() -> Task<void> { co_await srv_->stop(); });
    srv_.reset();
  }
  Status add(const std::string& name, const std::string& bdev, bool ro = false) {
    return env_->on_primary([&] { return srv_->add_export(name, bdev, ro); });
  }
  Status remove(const std::string& name) {
    return env_->on_primary([&]() -> Task<Status> { co_return co_await srv_->remove_export(name); });
  }
  std::vector<ExportInfo> list() {
    return env_->on_primary([&] { return srv_->list_exports(); });
  }
  ExportInfo info(const std::string& name) {
    for (auto& e : list())
      if (e.name == name) return e;
    ADD_FAILURE() << "no export " << name;
    return {};
  }
  // Waits (bounded) until `pred` holds.
  template <typename P>
  bool wait_for(P pred, int ms = 10'000) {
    for (int i = 0; i < ms / 5; ++i) {
      if (pred()) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return pred();
  }
  uint64_t device_inflight(const std::string& bdev) {
    Bdev* b = env_->on_primary([&] { return env_->registry->find(bdev); });
    return env_->on_primary([&]() -> Task<uint64_t> {
      BdevStats s = co_await b->stats(*env_->set);
      co_return s.inflight;
    });
  }
  // Reads the device directly (not through NBD).
  std::vector<uint8_t> device_read(const std::string& bdev, uint64_t offset, size_t len) {
    auto d = env_->open(bdev, false);
    EXPECT_TRUE(d.ok());
    std::vector<uint8_t> buf(len);
    uint32_t bs = (*d)->bdev().props().block_size;
    EXPECT_EQ(tern::test::io_sync(*env_->set, 0, **d, IoType::kRead, buf.data(), offset / bs, len / bs), Errc::kOk);
    env_->close(*d);
    return buf;
  }

  tern::test::TempDir dir_;
  std::unique_ptr<tern::test::DeviceEnv> env_;
  std::unique_ptr<Server> srv_;
  uint16_t port_ = 0;
};

// ---------------------------------------------------------------------------------------------------
// Handshake

TEST_F(NbdServer, GreetingAndGoWithInfo) {
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient c;
  ASSERT_TRUE(c.connect_tcp(port_));
  uint64_t m1 = 0, m2 = 0;
  uint16_t flags = 0;
  ASSERT_TRUE(c.read_greeting(&m1, &m2, &flags));
  EXPECT_EQ(flags, kFlagFixedNewstyle | kFlagNoZeroes);
  ASSERT_TRUE(c.send_client_flags(kClientFixedNewstyle | kClientNoZeroes));
  GoInfo g = c.go("vol");
  ASSERT_TRUE(g.ok) << g.final_type;
  EXPECT_EQ(g.size, 16u << 20);
  EXPECT_EQ(g.flags, kTxHasFlags | kTxSendFlush | kTxSendFua | kTxSendTrim | kTxSendWriteZeroes | kTxCanMultiConn);
  EXPECT_EQ(g.min_block, 512u);
  EXPECT_EQ(g.preferred_block, 4096u);
  EXPECT_EQ(g.max_block, 32u << 20);
  EXPECT_EQ(g.name, "vol");
  EXPECT_EQ(g.description, "tern device m0");
  auto data = pattern(4096, 1);
  EXPECT_EQ(c.write(8192, 4096, data.data()), 0);
  std::vector<uint8_t> back(4096);
  EXPECT_EQ(c.read(8192, 4096, back.data()), 0);
  EXPECT_EQ(back, data);
}

TEST_F(NbdServer, BlockSizeFollowsTheDevice) {
  ASSERT_TRUE(add("v4k", "m4k").ok());
  RawClient c;
  ASSERT_TRUE(c.connect_tcp(port_) && c.handshake());
  GoInfo g = c.go("v4k");
  ASSERT_TRUE(g.ok);
  EXPECT_EQ(g.min_block, 4096u);
  EXPECT_EQ(g.size, 8u << 20);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(c.read(512, 4096, buf.data()), kEInval);  // misaligned to the 4 KiB minimum
  EXPECT_EQ(c.read(0, 512, buf.data()), kEInval);
  EXPECT_EQ(c.read(4096, 4096, buf.data()), 0);
}

TEST_F(NbdServer, InfoDoesNotAttachGoDoes) {
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient c;
  ASSERT_TRUE(c.connect_tcp(port_) && c.handshake());
  GoInfo i = c.info_or_go(kOptInfo, "vol", {});  // nothing asked for: EXPORT and BLOCK_SIZE still come
  ASSERT_TRUE(i.ok);
  EXPECT_EQ(i.size, 16u << 20);
  EXPECT_EQ(i.min_block, 512u);
  EXPECT_TRUE(i.name.empty());
  EXPECT_TRUE(info("vol").clients.empty());
  ASSERT_TRUE(c.go("vol").ok);
  EXPECT_TRUE(wait_for([&] { return info("vol").clients.size() == 1; }));
}

TEST_F(NbdServer, PipelinedOptionsAreAnsweredInOrder) {
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient c;
  ASSERT_TRUE(c.connect_tcp(port_) && c.handshake());
  // INFO and GO in one write, without waiting for the first answer (a client must not, but may).
  std::vector<uint8_t> two;
  for (uint32_t opt : {kOptInfo, kOptGo}) {
    auto d = RawClient::info_data("vol");
    std::vector<uint8_t> h(16);
    store_be64(h.data(), kOptMagic);
    store_be32(h.data() + 8, opt);
    store_be32(h.data() + 12, uint32_t(d.size()));
    two.insert(two.end(), h.begin(), h.end());
    two.insert(two.end(), d.begin(), d.end());
  }
  ASSERT_TRUE(c.send_bytes(two));
  for (uint32_t opt : {kOptInfo, kOptGo}) {
    for (;;) {
      test::OptReply r = c.read_option_reply();
      ASSERT_TRUE(r.ok);
      ASSERT_EQ(r.opt, opt);
      if (r.type == kRepAck) break;
      ASSERT_EQ(r.type, kRepInfo);
    }
  }
  std::vector<uint8_t> buf(512);
  EXPECT_EQ(c.read(0, 512, buf.data()), 0);
}

TEST_F(NbdServer, ListAbortAndUnsupportedOptions) {
  ASSERT_TRUE(add("a", "m0").ok());
  ASSERT_TRUE(add("b", "m4k", true).ok());
  RawClient c;
  ASSERT_TRUE(c.connect_tcp(port_) && c.handshake());
  ASSERT_TRUE(c.send_option(kOptList, {}));
  std::vector<std::string> names;
  for (;;) {
    test::OptReply r = c.read_option_reply();
    ASSERT_TRUE(r.ok);
    if (r.type == kRepAck) break;
    ASSERT_EQ(r.type, kRepServer);
    ASSERT_GE(r.data.size(), 4u);
    names.emplace_back(r.data.begin() + 4, r.data.begin() + 4 + load_be32(r.data.data()));
  }
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b"}));
  // LIST with data is invalid; STARTTLS, STRUCTURED_REPLY and unknown options are unsupported.
  ASSERT_TRUE(c.send_option(kOptList, {1, 2}));
  EXPECT_EQ(c.read_option_reply().type, kRepErrInvalid);
  for (uint32_t opt : {kOptStartTls, kOptStructuredReply, 10u, 999u}) {
    ASSERT_TRUE(c.send_option(opt, {}));
    test::OptReply r = c.read_option_reply();
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.opt, opt);
    EXPECT_EQ(r.type, kRepErrUnsup);
    EXPECT_FALSE(r.data.empty());  // a message for humans
  }
  // Still negotiating: ABORT is acknowledged and the server closes.
  ASSERT_TRUE(c.send_option(kOptAbort, {}));
  test::OptReply a = c.read_option_reply();
  EXPECT_TRUE(a.ok);
  EXPECT_EQ(a.type, kRepAck);
  EXPECT_TRUE(c.closed_by_peer());
}

TEST_F(NbdServer, UnknownExport) {
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient c;
  ASSERT_TRUE(c.connect_tcp(port_) && c.handshake());
  GoInfo g = c.go("nope");
  EXPECT_FALSE(g.ok);
  EXPECT_EQ(g.final_type, kRepErrUnknown);
  EXPECT_EQ(c.info_or_go(kOptInfo, "nope").final_type, kRepErrUnknown);
  EXPECT_EQ(c.go("").final_type, kRepErrUnknown);  // no default export
  // The negotiation goes on after the error.
  EXPECT_TRUE(c.go("vol").ok);
  // EXPORT_NAME cannot answer an error: the connection closes.
  RawClient d;
  ASSERT_TRUE(d.connect_tcp(port_) && d.handshake());
  ASSERT_TRUE(d.send_option(kOptExportName, {'n', 'o'}));
  EXPECT_TRUE(d.closed_by_peer(test::kTimeoutMs, 0));
}

TEST_F(NbdServer, ExportNameWithAndWithoutZeroes) {
  ASSERT_TRUE(add("vol", "m0").ok());
  for (bool no_zeroes : {true, false}) {
    RawClient c;
    ASSERT_TRUE(c.connect_tcp(port_) && c.handshake(no_zeroes));
    ASSERT_TRUE(c.send_option(kOptExportName, {'v', 'o', 'l'}));
    std::vector<uint8_t> r(10 + (no_zeroes ? 0 : 124));
    ASSERT_TRUE(c.recv_exact(r.data(), r.size()));
    EXPECT_EQ(load_be64(r.data()), 16u << 20);
    EXPECT_TRUE(load_be16(r.data() + 8) & kTxHasFlags);
    for (size_t i = 10; i < r.size(); ++i) ASSERT_EQ(r[i], 0);
    auto data = pattern(1024, 7);
    EXPECT_EQ(c.write(0, 1024, data.data()), 0);  // straight into the transmission phase
  }
}

TEST_F(NbdServer, BadClientFlagsClose) {
  for (uint32_t flags : {0u, kClientNoZeroes, kClientFixedNewstyle | 0x10u}) {
    RawClient c;
    ASSERT_TRUE(c.connect_tcp(port_) && c.read_greeting());
    ASSERT_TRUE(c.send_client_flags(flags));
    EXPECT_TRUE(c.closed_by_peer(test::kTimeoutMs, 0)) << flags;
  }
}

TEST_F(NbdServer, MalformedOptionsClose) {
  ASSERT_TRUE(add("vol", "m0").ok());
  {
    RawClient c;
    ASSERT_TRUE(c.connect_tcp(port_) && c.handshake());
    ASSERT_TRUE(c.send_option(kOptGo, RawClient::info_data("vol"), 0x1122334455667788ull));
    EXPECT_TRUE(c.closed_by_peer(test::kTimeoutMs, 0));
  }
  {
    RawClient c;
    ASSERT_TRUE(c.connect_tcp(port_) && c.handshake());
    std::vector<uint8_t> h(16);
    store_be64(h.data(), kOptMagic);
    store_be32(h.data() + 8, kOptGo);
    store_be32(h.data() + 12, 0x7fffffffu);  // nothing this long is ever read into memory
    ASSERT_TRUE(c.send_bytes(h));
    EXPECT_TRUE(c.closed_by_peer(test::kTimeoutMs, 0));
  }
  {
    // Malformed GO data: an error reply, and the connection stays.
    RawClient c;
    ASSERT_TRUE(c.connect_tcp(port_) && c.handshake());
    auto d = RawClient::info_data("vol");
    store_be32(d.data(), 500);
    ASSERT_TRUE(c.send_option(kOptGo, d));
    EXPECT_EQ(c.read_option_reply().type, kRepErrInvalid);
    EXPECT_TRUE(c.go("vol").ok);
  }
}

// ---------------------------------------------------------------------------------------------------
// Commands

TEST_F(NbdServer, ReadWriteRoundTripsOfEverySize) {
  ASSERT_TRUE(add("vol", "big").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "vol"));
  uint64_t off = 0;
  uint64_t seed = 100;
  // One small buffer, one medium, one chunk, several chunks, and the largest request (32 chunks,
  // received in two passes of 16).
  for (uint32_t len : {512u, 8192u, 12288u, 131072u, 1u << 20, (3u << 20) + 512, 32u << 20}) {
    auto data = pattern(len, ++seed);
    ASSERT_EQ(c.write(off, len, data.data()), 0) << len;
    std::vector<uint8_t> back(len);
    ASSERT_EQ(c.read(off, len, back.data()), 0) << len;
    ASSERT_TRUE(back == data) << len;
    ASSERT_TRUE(device_read("big", off, len) == data) << len;
    off += (len + 4095) / 4096 * 4096;
  }
}

// FUA reaches the device as a flag on the write (durable blocks, no flush of the whole device); a trim
// with FUA, which has no FUA of its own in the device layer, is followed by a flush.
TEST_F(NbdServer, FuaIsAFlagOnTheWrite) {
  ASSERT_TRUE(env_->create("malloc:///mc?size_mb=4").ok());
  ASSERT_TRUE(env_->create("powercut:///cached?base=mc").ok());  // a volatile write cache
  ASSERT_TRUE(add("cached", "cached").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "cached"));
  auto stats = [&] {
    return env_->on_primary([&]() -> Task<BdevStats> { co_return co_await env_->registry->find("cached")->stats(*env_->set); });
  };
  const BdevStats s0 = stats();
  auto data = pattern(65536, 5);
  for (int i = 0; i < 4; ++i) ASSERT_EQ(c.write(uint64_t(i) * 65536, 65536, data.data(), kCmdFlagFua), 0);
  EXPECT_EQ(c.call(kCmdWriteZeroes, 4 << 16, 4096, kCmdFlagFua), 0);
  BdevStats s1 = stats();
  EXPECT_EQ(s1.of(IoType::kWrite).fua - s0.of(IoType::kWrite).fua, 4u);
  EXPECT_EQ(s1.of(IoType::kWriteZeroes).fua - s0.of(IoType::kWriteZeroes).fua, 1u);
  EXPECT_EQ(s1.of(IoType::kFlush).ops, s0.of(IoType::kFlush).ops);  // was one flush per FUA request
  EXPECT_EQ(c.call(kCmdTrim, 0, 4096, kCmdFlagFua), 0);
  EXPECT_EQ(stats().of(IoType::kFlush).ops, s0.of(IoType::kFlush).ops + 1);
  c.close();
  ASSERT_TRUE(remove("cached").ok());
}

TEST_F(NbdServer, FlushTrimWriteZeroes) {
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "vol"));
  auto data = pattern(65536, 3);
  ASSERT_EQ(c.write(0, 65536, data.data(), kCmdFlagFua), 0);
  EXPECT_EQ(c.call(kCmdFlush, 0, 0), 0);
  EXPECT_EQ(c.call(kCmdTrim, 0, 4096), 0);
  EXPECT_EQ(c.call(kCmdTrim, 0, 4096, kCmdFlagFua), 0);
  // WRITE_ZEROES, by the device's own write-zeroes and (NO_HOLE) by writing zeros; FUA on both.
  std::vector<uint8_t> back(65536), zeros(65536, 0);
  ASSERT_EQ(c.write(0, 65536, data.data()), 0);
  EXPECT_EQ(c.call(kCmdWriteZeroes, 4096, 8192), 0);
  EXPECT_EQ(c.call(kCmdWriteZeroes, 32768, 4096, kCmdFlagNoHole | kCmdFlagFua), 0);
  ASSERT_EQ(c.read(0, 65536, back.data()), 0);
  for (size_t i = 0; i < 65536; ++i) {
    const bool zero = (i >= 4096 && i < 12288) || (i >= 32768 && i < 36864);
    ASSERT_EQ(back[i], zero ? 0 : data[i]) << i;
  }
  // A NO_HOLE zeroing longer than one pass of the zero buffer (32 MiB is done 32 MiB at a time; this
  // is 5 MiB in 1 MiB entries).
  auto big = pattern(5 << 20, 4);
  ASSERT_EQ(c.write(1 << 20, 5 << 20, big.data()), 0);
  EXPECT_EQ(c.call(kCmdWriteZeroes, 1 << 20, 5 << 20, kCmdFlagNoHole), 0);
  EXPECT_TRUE(device_read("m0", 1 << 20, 5 << 20) == std::vector<uint8_t>(5 << 20, 0));
  // Zero lengths are no-ops, not errors.
  EXPECT_EQ(c.call(kCmdRead, 0, 0), 0);
  EXPECT_EQ(c.call(kCmdWriteZeroes, 0, 0), 0);
}

TEST_F(NbdServer, OutOfRangeMisalignedAndUnknown) {
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "vol"));
  const uint64_t size = 16u << 20;
  std::vector<uint8_t> buf(8192);
  auto data = pattern(8192, 9);
  EXPECT_EQ(c.read(size - 512, 1024, buf.data()), kEInval);
  EXPECT_EQ(c.read(size, 512, buf.data()), kEInval);
  EXPECT_EQ(c.read(100, 512, buf.data()), kEInval);
  EXPECT_EQ(c.call(kCmdTrim, size, 512), kEInval);
  EXPECT_EQ(c.call(kCmdWriteZeroes, size - 512, 1024), kENoSpc);
  // Refused writes: their payload is read and dropped, so the next request parses.
  EXPECT_EQ(c.write(size - 4096, 8192, data.data()), kENoSpc);
  EXPECT_EQ(c.write(1, 4096, data.data()), kEInval);
  EXPECT_EQ(c.write(0, 4096, data.data(), 1u << 2), kEInval);  // DF: not negotiated
  EXPECT_EQ(c.call(42, 0, 512), kEInval);                       // unknown command
  EXPECT_EQ(c.call(7, 0, 512), kEInval);                        // BLOCK_STATUS: not negotiated
  EXPECT_EQ(c.write(0, 8192, data.data()), 0);
  ASSERT_EQ(c.read(0, 8192, buf.data()), 0);
  EXPECT_EQ(buf, data);
  ExportCounters k = info("vol").counters;
  EXPECT_EQ(k.errors, 10u);
  EXPECT_EQ(k.writes, 4u);
  EXPECT_EQ(k.write_bytes, 8192u);
}

TEST_F(NbdServer, DeviceErrorsBecomeNbdErrors) {
  auto eb = env_->create("error:///e0?base=m4k&rule=op=read,lba=10-11");
  ASSERT_TRUE(eb.ok()) << eb.status();
  ASSERT_TRUE(add("err", "e0").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "err"));
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(c.read(10 * 4096, 4096, buf.data()), kEIo);
  EXPECT_EQ(c.read(11 * 4096, 4096, buf.data()), 0);
  Bdev* b = env_->on_primary([&] { return env_->registry->find("e0"); });
  auto* e = dynamic_cast<ErrorBdev*>(b);
  ASSERT_TRUE(e);
  e->set_rules({*ErrorRule::Parse("op=write,errno=ENOSPC")});
  EXPECT_EQ(c.write(0, 4096, buf.data()), kENoSpc);
}

TEST_F(NbdServer, ReadOnlyExportRefusesWrites) {
  ASSERT_TRUE(add("ro", "m0", true).ok());
  RawClient c;
  GoInfo g;
  ASSERT_TRUE(c.open(port_, "ro", &g));
  EXPECT_TRUE(g.flags & kTxReadOnly);
  EXPECT_FALSE(g.flags & (kTxSendTrim | kTxSendWriteZeroes));
  auto data = pattern(4096, 5);
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(c.write(0, 4096, data.data()), kEPerm);
  EXPECT_EQ(c.call(kCmdTrim, 0, 4096), kEPerm);
  EXPECT_EQ(c.call(kCmdWriteZeroes, 0, 4096), kEPerm);
  EXPECT_EQ(c.call(kCmdFlush, 0, 0), 0);
  EXPECT_EQ(c.read(0, 4096, buf.data()), 0);
  EXPECT_EQ(buf, std::vector<uint8_t>(4096, 0));
}

TEST_F(NbdServer, PipelinedRequestsAnsweredByCookie) {
  ASSERT_TRUE(env_->create("delay:///d0?base=m0&write_us=500&read_us=500&jitter_us=3000").ok());
  ASSERT_TRUE(add("vol", "d0").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "vol"));
  // 100 writes then 100 reads of the same blocks, all sent before any reply is read: more than the 16
  // requests the server takes at once, so it also pauses and resumes reading.
  constexpr int kN = 100;
  std::map<uint64_t, int> writes, reads;
  std::vector<std::vector<uint8_t>> data;
  std::vector<uint8_t> burst;
  for (int i = 0; i < kN; ++i) {
    data.push_back(pattern(4096, 1000 + uint64_t(i)));
    std::vector<uint8_t> h(kRequestLen);
    store_be32(h.data(), kRequestMagic);
    store_be16(h.data() + 6, kCmdWrite);
    store_be64(h.data() + 8, 1000 + uint64_t(i));
    store_be64(h.data() + 16, uint64_t(i) * 8192);
    store_be32(h.data() + 24, 4096);
    burst.insert(burst.end(), h.begin(), h.end());
    burst.insert(burst.end(), data.back().begin(), data.back().end());
    writes[1000 + uint64_t(i)] = i;
  }
  ASSERT_TRUE(c.send_bytes(burst));
  int answered = 0, out_of_order = 0;
  uint64_t last = 0;
  for (int i = 0; i < kN; ++i) {
    test::SimpleReply r = c.read_reply();
    ASSERT_TRUE(r.ok);
    ASSERT_EQ(r.error, 0u);
    ASSERT_EQ(writes.erase(r.cookie), 1u) << "unexpected cookie " << r.cookie;
    if (r.cookie < last) ++out_of_order;
    last = r.cookie;
    ++answered;
  }
  for (int i = 0; i < kN; ++i) {
    ASSERT_TRUE(c.send_request(kCmdRead, 5000 + uint64_t(i), uint64_t(i) * 8192, 4096));
    reads[5000 + uint64_t(i)] = i;
  }
  for (int i = 0; i < kN; ++i) {
    test::SimpleReply r = c.read_reply();
    ASSERT_TRUE(r.ok);
    ASSERT_EQ(r.error, 0u);
    auto it = reads.find(r.cookie);
    ASSERT_NE(it, reads.end());
    std::vector<uint8_t> back(4096);
    ASSERT_TRUE(c.recv_exact(back.data(), back.size()));
    ASSERT_EQ(back, data[size_t(it->second)]);
    reads.erase(it);
  }
  EXPECT_EQ(answered, kN);
  // Jittered completions reorder replies; the cookies keep them apart. (Not asserted: timing.)
  std::printf("out-of-order write replies: %d of %d\n", out_of_order, kN);
}

TEST_F(NbdServer, BufferShortageQueuesRequests) {
  stop();
  ServerOptions o = options();
  o.small_buffers_per_reactor = 1;
  o.medium_buffers_per_reactor = 1;
  o.chunk_buffers_per_reactor = 32;
  o.max_inflight = 64;
  start(o);
  ASSERT_TRUE(add("vol", "big").ok());
  RawClient a, b;
  ASSERT_TRUE(a.open(port_, "vol"));
  ASSERT_TRUE(b.open(port_, "vol"));
  // Two connections (one per reactor... or both on one) each pipelining writes that all need the one
  // medium buffer or whole sets of chunks.
  auto run = [&](RawClient& c, uint64_t base, uint64_t seed, bool* ok) {
    std::vector<std::vector<uint8_t>> d;
    std::vector<uint8_t> burst;
    const uint32_t sizes[] = {65536, 2u << 20, 4096, 131072};
    uint64_t off = base;
    std::vector<std::pair<uint64_t, uint32_t>> where;
    for (int i = 0; i < 24; ++i) {
      uint32_t len = sizes[i % 4];
      d.push_back(pattern(len, seed + uint64_t(i)));
      std::vector<uint8_t> h(kRequestLen);
      store_be32(h.data(), kRequestMagic);
      store_be16(h.data() + 6, kCmdWrite);
      store_be64(h.data() + 8, uint64_t(i));
      store_be64(h.data() + 16, off);
      store_be32(h.data() + 24, len);
      burst.insert(burst.end(), h.begin(), h.end());
      burst.insert(burst.end(), d.back().begin(), d.back().end());
      where.emplace_back(off, len);
      off += len;
    }
    bool good = c.send_bytes(burst);
    for (int i = 0; i < 24 && good; ++i) {
      test::SimpleReply r = c.read_reply();
      good = r.ok && r.error == 0;
    }
    for (int i = 0; i < 24 && good; ++i) {
      std::vector<uint8_t> back(where[size_t(i)].second);
      good = c.read(where[size_t(i)].first, where[size_t(i)].second, back.data()) == 0 && back == d[size_t(i)];
    }
    *ok = good;
  };
  bool ok_a = false, ok_b = false;
  std::thread ta([&] { run(a, 0, 10, &ok_a); });
  std::thread tb([&] { run(b, 40u << 20, 20, &ok_b); });
  ta.join();
  tb.join();
  EXPECT_TRUE(ok_a);
  EXPECT_TRUE(ok_b);
}

TEST_F(NbdServer, OversizeAndGarbageRequestsClose) {
  ASSERT_TRUE(add("vol", "m0").ok());
  {
    RawClient c;
    ASSERT_TRUE(c.open(port_, "vol"));
    ASSERT_TRUE(c.send_request(kCmdRead, 1, 0, (32u << 20) + 512));
    EXPECT_TRUE(c.closed_by_peer(test::kTimeoutMs, 0));
  }
  {
    RawClient c;
    ASSERT_TRUE(c.open(port_, "vol"));
    ASSERT_TRUE(c.send_request(kCmdWrite, 1, 0, 0xfffffe00u));  // no 4 GiB payload is waited for
    EXPECT_TRUE(c.closed_by_peer(test::kTimeoutMs, 0));
  }
  {
    RawClient c;
    ASSERT_TRUE(c.open(port_, "vol"));
    ASSERT_TRUE(c.send_request(kCmdRead, 1, 0, 512, 0, nullptr, 0xdeadbeef));
    EXPECT_TRUE(c.closed_by_peer(test::kTimeoutMs, 0));
  }
  // The server is fine.
  RawClient ok;
  ASSERT_TRUE(ok.open(port_, "vol"));
  std::vector<uint8_t> buf(512);
  EXPECT_EQ(ok.read(0, 512, buf.data()), 0);
  EXPECT_TRUE(wait_for([&] { return info("vol").clients.size() == 1; }));
}

// ---------------------------------------------------------------------------------------------------
// Disconnects, removal, stop

TEST_F(NbdServer, DiscFinishesInFlightRequestsFirst) {
  ASSERT_TRUE(env_->create("delay:///d0?base=m0&write_us=200000").ok());
  ASSERT_TRUE(add("vol", "d0").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "vol"));
  std::vector<std::vector<uint8_t>> data;
  for (int i = 0; i < 6; ++i) {
    data.push_back(pattern(4096, 50 + uint64_t(i)));
    ASSERT_TRUE(c.send_request(kCmdWrite, 100 + uint64_t(i), uint64_t(i) * 4096, 4096, 0, data.back().data()));
  }
  ASSERT_TRUE(c.disc());
  std::map<uint64_t, uint32_t> replies;
  for (int i = 0; i < 6; ++i) {
    test::SimpleReply r = c.read_reply();
    ASSERT_TRUE(r.ok) << "reply " << i << " missing";
    replies[r.cookie] = r.error;
  }
  EXPECT_EQ(replies.size(), 6u);
  for (auto& [cookie, err] : replies) EXPECT_EQ(err, 0u) << cookie;
  EXPECT_TRUE(c.closed_by_peer(test::kTimeoutMs, 0));
  for (int i = 0; i < 6; ++i) EXPECT_TRUE(device_read("m0", uint64_t(i) * 4096, 4096) == data[size_t(i)]);
  EXPECT_TRUE(wait_for([&] { return info("vol").clients.empty(); }));
  EXPECT_EQ(info("vol").counters.writes, 6u);
}

TEST_F(NbdServer, RemoveExportDrainsItsClients) {
  ASSERT_TRUE(env_->create("delay:///d0?base=m0&write_us=300000").ok());
  ASSERT_TRUE(add("vol", "d0").ok());
  ASSERT_TRUE(add("other", "m4k").ok());
  RawClient c, idle, other;
  ASSERT_TRUE(c.open(port_, "vol"));
  ASSERT_TRUE(idle.open(port_, "vol"));
  ASSERT_TRUE(other.open(port_, "other"));
  auto data = pattern(4096, 77);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(c.send_request(kCmdWrite, 10 + uint64_t(i), uint64_t(i) * 4096, 4096, 0, data.data()));
  ASSERT_TRUE(wait_for([&] { return device_inflight("d0") == 4; }));
  EXPECT_EQ(info("vol").clients.size(), 2u);
  ASSERT_TRUE(remove("vol").ok());
  // The writes in flight were answered before the close.
  for (int i = 0; i < 4; ++i) {
    test::SimpleReply r = c.read_reply();
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.error, 0u);
  }
  EXPECT_TRUE(c.closed_by_peer(test::kTimeoutMs, 0));
  EXPECT_TRUE(idle.closed_by_peer(test::kTimeoutMs, 0));
  EXPECT_EQ(list().size(), 1u);
  EXPECT_EQ(remove("vol").code(), Errc::kNoEnt);
  // The device is closed: it can be destroyed without force.
  EXPECT_TRUE(env_->destroy("d0").ok());
  // Others are untouched; new clients of the removed export are told it does not exist.
  std::vector<uint8_t> buf(4096);
  EXPECT_EQ(other.read(0, 4096, buf.data()), 0);
  RawClient late;
  ASSERT_TRUE(late.connect_tcp(port_) && late.handshake());
  EXPECT_EQ(late.go("vol").final_type, kRepErrUnknown);
}

TEST_F(NbdServer, ForcedDeviceRemovalRemovesTheExport) {
  ASSERT_TRUE(env_->create("malloc:///gone?size_mb=4").ok());
  ASSERT_TRUE(add("vol", "gone").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "vol"));
  ASSERT_TRUE(env_->destroy("gone", true).ok());
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_TRUE(wait_for([&] { return list().empty(); }));
}

TEST_F(NbdServer, StopClosesEveryConnection) {
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient a, b, handshaking, silent;
  ASSERT_TRUE(a.open(port_, "vol"));
  ASSERT_TRUE(b.open(port_, "vol"));
  ASSERT_TRUE(handshaking.connect_tcp(port_) && handshaking.handshake());
  ASSERT_TRUE(silent.connect_tcp(port_));
  EXPECT_TRUE(wait_for([&] { return info("vol").clients.size() == 2; }));
  env_->on_primary([this]() -> Task<void> { co_await srv_->stop(); });
  EXPECT_TRUE(a.closed_by_peer());
  EXPECT_TRUE(b.closed_by_peer());
  EXPECT_TRUE(handshaking.closed_by_peer());
  EXPECT_TRUE(silent.closed_by_peer());
  // Idempotent, and nothing new is taken.
  env_->on_primary([this]() -> Task<void> { co_await srv_->stop(); });
  EXPECT_EQ(add("x", "m0").code(), Errc::kShutdown);
  RawClient late;
  EXPECT_FALSE(late.connect_tcp(port_) && late.read_greeting());
  // The devices are closed.
  EXPECT_TRUE(env_->destroy("m0").ok());
}

TEST_F(NbdServer, StopWithAHungDeviceAbortsItsRequests) {
  stop();
  ServerOptions o = options();
  o.drain_timeout_ms = 200;
  start(o);
  ASSERT_TRUE(env_->create("error:///hang?base=m0&rule=op=write,kind=timeout").ok());
  ASSERT_TRUE(add("vol", "hang").ok());
  RawClient c;
  ASSERT_TRUE(c.open(port_, "vol"));
  auto data = pattern(4096, 1);
  ASSERT_TRUE(c.send_request(kCmdWrite, 1, 0, 4096, 0, data.data()));
  ASSERT_TRUE(wait_for([&] { return device_inflight("hang") == 1; }));
  auto t0 = std::chrono::steady_clock::now();
  env_->on_primary([this]() -> Task<void> { co_await srv_->stop(); });
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(secs, 10.0);
  EXPECT_TRUE(c.closed_by_peer());
  EXPECT_EQ(device_inflight("hang"), 0u);
}

TEST_F(NbdServer, HandshakeTimeoutReapsSilentClients) {
  stop();
  ServerOptions o = options();
  o.handshake_timeout_ms = 300;
  start(o);
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient silent, negotiating, serving;
  ASSERT_TRUE(silent.connect_tcp(port_) && silent.read_greeting());
  ASSERT_TRUE(negotiating.connect_tcp(port_) && negotiating.handshake());
  ASSERT_TRUE(serving.open(port_, "vol"));
  EXPECT_TRUE(silent.closed_by_peer(5000, 0));
  EXPECT_TRUE(negotiating.closed_by_peer(5000, 0));
  // The transmission phase has no such limit.
  EXPECT_TRUE(serving.quiet_for(600));
  std::vector<uint8_t> buf(512);
  EXPECT_EQ(serving.read(0, 512, buf.data()), 0);
}

TEST_F(NbdServer, AddExportIsIdempotentAndNamesWhatDiffers) {
  ASSERT_TRUE(add("vol", "m0").ok());
  EXPECT_TRUE(add("vol", "m0").ok());
  Status s = add("vol", "m4k");
  EXPECT_EQ(s.code(), Errc::kExist);
  EXPECT_NE(s.message().find("device"), std::string_view::npos) << s;
  s = add("vol", "m0", true);
  EXPECT_EQ(s.code(), Errc::kExist);
  EXPECT_NE(s.message().find("read_only"), std::string_view::npos) << s;
  EXPECT_FALSE(add("x", "no-such-device").ok());
  EXPECT_EQ(add("", "m0").code(), Errc::kInval);
  EXPECT_EQ(add(std::string("a\nb"), "m0").code(), Errc::kInval);
  EXPECT_EQ(add(std::string(4097, 'n'), "m0").code(), Errc::kInval);
  // Two exports of one device: a writable one and a read-only one.
  EXPECT_TRUE(add("vol-ro", "m0", true).ok());
  auto l = list();
  ASSERT_EQ(l.size(), 2u);
  EXPECT_EQ(l[0].name, "vol");
  EXPECT_EQ(l[0].bdev, "m0");
  EXPECT_FALSE(l[0].read_only);
  EXPECT_EQ(l[0].size_bytes, 16u << 20);
  EXPECT_EQ(l[0].block_size, 512u);
  EXPECT_TRUE(l[1].read_only);
}

TEST_F(NbdServer, UnixSocketAndClientList) {
  ASSERT_TRUE(add("vol", "m0").ok());
  RawClient u, t1, t2;
  ASSERT_TRUE(u.connect_unix(srv_->unix_path()) && u.handshake());
  ASSERT_TRUE(u.go("vol").ok);
  ASSERT_TRUE(t1.open(port_, "vol"));
  ASSERT_TRUE(t2.open(port_, "vol"));
  auto data = pattern(4096, 11);
  std::vector<uint8_t> back(4096);
  ASSERT_EQ(u.write(4096, 4096, data.data()), 0);
  ASSERT_EQ(t1.read(4096, 4096, back.data()), 0);  // MULTI_CONN: one device behind every connection
  EXPECT_EQ(back, data);
  ASSERT_EQ(t2.read(4096, 4096, back.data()), 0);
  ASSERT_TRUE(wait_for([&] { return info("vol").clients.size() == 3; }));
  ExportInfo i = info("vol");
  int unix_clients = 0;
  std::set<unsigned> reactors;
  for (auto& c : i.clients) {
    unix_clients += c.peer == "unix:" + srv_->unix_path();
    reactors.insert(c.reactor);
  }
  EXPECT_EQ(unix_clients, 1);
  EXPECT_EQ(reactors.size(), 2u);  // round robin over both reactors
  EXPECT_EQ(i.counters.writes, 1u);
  EXPECT_EQ(i.counters.reads, 2u);
  EXPECT_EQ(i.counters.read_bytes, 8192u);
  // Counters outlive the connections.
  u.close();
  t1.close();
  t2.close();
  ASSERT_TRUE(wait_for([&] { return info("vol").clients.empty(); }));
  EXPECT_EQ(info("vol").counters.reads, 2u);
  EXPECT_EQ(info("vol").counters.write_bytes, 4096u);
}

TEST_F(NbdServer, CreateRefusesBadOptionsAndBusyAddresses) {
  auto create = [&](ServerOptions o) {
    return env_->on_primary([&] { return Server::Create(*env_->set, *env_->registry, o); });
  };
  ServerOptions o = options();
  o.unix_path.clear();
  o.tcp_port = port_;  // taken by the fixture's server
  auto r = create(o);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc(EADDRINUSE));
  o = options();
  o.tcp = false;  // the fixture's unix socket is live
  EXPECT_EQ(create(o).code(), Errc::kBusy);
  o = options();
  o.max_request_bytes = 1000;
  EXPECT_EQ(create(o).code(), Errc::kInval);
  o = options();
  o.chunk_buffers_per_reactor = 4;
  EXPECT_EQ(create(o).code(), Errc::kInval);
  o = options();
  o.io_reactors = {7};
  EXPECT_EQ(create(o).code(), Errc::kInval);
  // Off the primary reactor.
  auto off = env_->set->run_sync(1, [&] { return Server::Create(*env_->set, *env_->registry, options()); });
  EXPECT_EQ(off.code(), Errc::kInval);
}

}  // namespace
}  // namespace tern::nbd
