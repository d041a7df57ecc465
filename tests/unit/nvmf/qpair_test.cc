// The NVMe/TCP target's request path without a socket: queue pairs adopted over MemoryStreams, driven by
// PDUs built here, on real reactors and devices. Checks request states (set_state's table and the
// per-state counts in the target's statistics), multi-step commands, FUA as a flag (no flush per FUA
// write), and teardown while requests are still on a slow device.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bdev/fault_bdevs.h"
#include "net/memory_stream.h"
#include "nvmf/spec.h"
#include "nvmf/target/target.h"
#include "nvmf/target/tcp_qpair.h"
#include "nvmf/tcp_pdu.h"
#include "test_util.h"

namespace tern::nvmf {
namespace {

using namespace tern::nvme;
using namespace tern::nvme::tcp;
using State = TcpReq::State;

constexpr const char* kNqn = "nqn.2026-11.io.tern:unit";
constexpr const char* kHostNqn = "nqn.2026-11.io.tern:unit-host";
const ListenAddr kLocal{"memory", 4420};

template <typename P>
bool eventually(P pred, int ms = 10'000) {
  for (int i = 0; i < ms; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

struct Completion {
  Cqe cqe{};
  std::string data;  // C2H data, if any
  bool ok() const { return (uint16_t(cqe.status) >> 1) == 0; }
  uint8_t sc() const { return uint8_t(uint16_t(cqe.status) >> 1); }
  uint8_t sct() const { return uint8_t((uint16_t(cqe.status) >> 9) & 7); }
};

// One host queue over a MemoryStream adopted by the target on reactor `r`.
class MemHost {
 public:
  MemHost(ReactorSet& set, Target& t, unsigned r) : set_(set), r_(r) {
    set_.run_sync(r_, [&] {
      auto s = std::make_unique<net::MemoryStream>("unit-host");
      stream_ = s.get();
      t.adopt(std::move(s), kLocal);
    });
  }

  void send(const std::string& bytes) {
    set_.run_sync(r_, [&] { stream_->feed(bytes); });
  }
  // The peer goes away (the stream, and then the queue pair, close).
  void hang_up() {
    set_.run_sync(r_, [&] { stream_->feed_eof(); });
    stream_ = nullptr;
  }

  // Waits for `n` bytes of target output.
  std::string take(size_t n) {
    EXPECT_TRUE(eventually([&] {
      set_.run_sync(r_, [&] { in_ += stream_->take_sent(); });
      return in_.size() >= n;
    })) << "waited for " << n << " bytes, have " << in_.size();
    std::string out = in_.substr(0, n);
    in_.erase(0, n);
    return out;
  }
  // The next PDU, whole.
  std::string pdu() {
    std::string h = take(sizeof(CommonHeader));
    CommonHeader ch;
    std::memcpy(&ch, h.data(), sizeof(ch));
    return h + take(uint32_t(ch.plen) - sizeof(CommonHeader));
  }
  bool has_output() {
    set_.run_sync(r_, [&] { in_ += stream_->take_sent(); });
    return !in_.empty();
  }

  void icreq() {
    ICReq q{};
    set_header(reinterpret_cast<uint8_t*>(&q), PduType::kICReq, 0, sizeof(ICReq), 0, sizeof(ICReq));
    send(std::string(reinterpret_cast<char*>(&q), sizeof(q)));
    std::string r = pdu();
    ASSERT_EQ(r.size(), sizeof(ICResp));
    ASSERT_EQ(uint8_t(r[0]), uint8_t(PduType::kICResp));
  }

  // A command with in-capsule data (or none); then its completion, with C2H data gathered.
  void submit(Sqe sqe, const std::string& icd = {}) {
    sqe.cid = next_cid_;
    sqe.flags = 0x40;  // SGLs
    if (!icd.empty()) {
      sqe.sgl1.type = kSglDataBlockOffset;
      sqe.sgl1.length = uint32_t(icd.size());
    } else if (uint32_t(sqe.sgl1.length) != 0 && sqe.sgl1.type == 0) {
      sqe.sgl1.type = kSglTransportDataBlock;
    }
    ++next_cid_;
    std::string p(sizeof(CapsuleCmd), '\0');
    const uint8_t pdo = icd.empty() ? 0 : uint8_t(sizeof(CapsuleCmd));
    set_header(reinterpret_cast<uint8_t*>(p.data()), PduType::kCapsuleCmd, 0, sizeof(CapsuleCmd), pdo,
               uint32_t(sizeof(CapsuleCmd) + icd.size()));
    std::memcpy(p.data() + sizeof(CommonHeader), &sqe, sizeof(sqe));
    send(p + icd);
  }
  Completion wait() {
    Completion c;
    for (;;) {
      std::string p = pdu();
      auto type = PduType(uint8_t(p[0]));
      if (type == PduType::kC2HData) {
        DataHeader h;
        std::memcpy(&h, p.data(), sizeof(h));
        c.data += p.substr(h.ch.pdo, uint32_t(h.datal));
        if (h.ch.flags & kFlagSuccess) return c;
        continue;
      }
      EXPECT_EQ(type, PduType::kCapsuleResp) << "PDU type " << int(p[0]);
      std::memcpy(&c.cqe, p.data() + sizeof(CommonHeader), sizeof(Cqe));
      return c;
    }
  }
  Completion command(Sqe sqe, const std::string& icd = {}) {
    submit(sqe, icd);
    return wait();
  }

  Completion connect(uint16_t qid, uint16_t cntlid) {
    ConnectCmd c{};
    c.opc = opc::kFabrics;
    c.fctype = fctype::kConnect;
    c.qid = qid;
    c.sqsize = 31;
    ConnectData d{};
    std::memset(d.hostid, 0x11, 16);
    d.cntlid = cntlid;
    std::strncpy(d.subnqn, kNqn, sizeof(d.subnqn) - 1);
    std::strncpy(d.hostnqn, kHostNqn, sizeof(d.hostnqn) - 1);
    Sqe s;
    std::memcpy(&s, &c, sizeof(s));
    return command(s, std::string(reinterpret_cast<char*>(&d), sizeof(d)));
  }
  Completion prop_set(uint32_t ofst, uint64_t v) {
    PropertyCmd p{};
    p.opc = opc::kFabrics;
    p.fctype = fctype::kPropertySet;
    p.ofst = ofst;
    p.value = v;
    Sqe s;
    std::memcpy(&s, &p, sizeof(s));
    return command(s);
  }
  // Admin queue: Connect + CC.EN; returns the controller id.
  uint16_t admin_up() {
    icreq();
    Completion c = connect(0, 0xFFFF);
    EXPECT_TRUE(c.ok()) << "connect status " << std::hex << uint16_t(c.cqe.status);
    EXPECT_TRUE(prop_set(prop::kCc, 1 | (6 << 16) | (4 << 20)).ok());
    return uint16_t(uint32_t(c.cqe.dw0));
  }

  static Sqe io(uint8_t o, uint32_t nsid, uint64_t lba, uint32_t nlb, uint32_t len) {
    Sqe s{};
    s.opc = o;
    s.nsid = nsid;
    s.cdw10 = uint32_t(lba);
    s.cdw11 = uint32_t(lba >> 32);
    s.cdw12 = nlb - 1;
    s.sgl1.length = len;
    return s;
  }

 private:
  ReactorSet& set_;
  unsigned r_;
  net::MemoryStream* stream_ = nullptr;
  std::string in_;
  uint16_t next_cid_ = 1;
};

class QpairTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = std::make_unique<test::DeviceEnv>(2);
    ASSERT_TRUE(env_->set);
    ASSERT_TRUE(env_->create("malloc:///m0?size_mb=8").ok());
    ASSERT_TRUE(env_->create("malloc:///m1?size_mb=8").ok());
    // A device with a volatile write cache (so FUA and flushes mean something), and a slow one.
    ASSERT_TRUE(env_->create("powercut:///pc?base=m1").ok());
    ASSERT_TRUE(env_->create("malloc:///m2?size_mb=8").ok());
    ASSERT_TRUE(env_->create("delay:///slow?base=m2&write_us=300000").ok());
    target_ = std::make_unique<Target>(*env_->set, *env_->registry);
    Status st = env_->on_primary([&]() -> Status {
      SubsystemConfig cfg;
      cfg.nqn = kNqn;
      cfg.allow_any_host = true;
      cfg.listeners = {kLocal};
      auto s = target_->create_subsystem(cfg);
      if (!s.ok()) return s.status();
      for (const char* d : {"m0", "pc", "slow"}) {
        auto n = target_->add_namespace(kNqn, d);
        if (!n.ok()) return n.status();
      }
      return Status::Ok();
    });
    ASSERT_TRUE(st.ok()) << st;
  }
  void TearDown() override {
    env_->on_primary([&]() -> Task<void> { co_await target_->shutdown(); });
    env_->on_primary([&] { target_.reset(); });
    env_.reset();
  }

  TargetStats stats() {
    return env_->on_primary([&]() -> Task<TargetStats> { co_return co_await target_->stats(); });
  }
  BdevStats dev_stats(const char* name) {
    return env_->on_primary([&]() -> Task<BdevStats> { co_return co_await env_->registry->find(name)->stats(*env_->set); });
  }
  uint64_t in(const TargetStats& s, State st) { return s.in_state[size_t(st)]; }
  uint64_t entered(const TargetStats& s, State st) { return s.entered[size_t(st)]; }

  std::unique_ptr<test::DeviceEnv> env_;
  std::unique_ptr<Target> target_;
};

TEST(TcpReqStates, TheTransitionTableIsTheDiagram) {
  // Every state is left only for the states docs/design/nvmf.md draws.
  EXPECT_TRUE(TcpReq::legal(State::kFree, State::kNew));
  EXPECT_FALSE(TcpReq::legal(State::kFree, State::kSending));
  EXPECT_FALSE(TcpReq::legal(State::kFree, State::kFree));
  EXPECT_TRUE(TcpReq::legal(State::kNew, State::kAwaitData));
  EXPECT_TRUE(TcpReq::legal(State::kNeedBuffer, State::kExecuting));
  EXPECT_FALSE(TcpReq::legal(State::kNeedBuffer, State::kNeedBuffer));
  EXPECT_TRUE(TcpReq::legal(State::kExecuting, State::kExecuting));  // the next step of a command
  EXPECT_FALSE(TcpReq::legal(State::kExecuting, State::kAwaitData));
  EXPECT_FALSE(TcpReq::legal(State::kExecuting, State::kNew));
  EXPECT_TRUE(TcpReq::legal(State::kAwaitAdmin, State::kParkedAer));
  EXPECT_FALSE(TcpReq::legal(State::kParkedAer, State::kExecuting));
  EXPECT_FALSE(TcpReq::legal(State::kSending, State::kExecuting));
  EXPECT_TRUE(TcpReq::legal(State::kSending, State::kFree));
  for (size_t i = 0; i < TcpReq::kStateCount; ++i) {
    // Nothing goes back to kNew but a free request, and every state can be released (kFree) except kFree.
    EXPECT_EQ(TcpReq::legal(State(i), State::kNew), State(i) == State::kFree) << TcpReq::state_name(State(i));
    EXPECT_EQ(TcpReq::legal(State(i), State::kFree), State(i) != State::kFree) << TcpReq::state_name(State(i));
  }
}

TEST_F(QpairTest, AdminCommandsOverMemoryAndTheirStates) {
  MemHost h(*env_->set, *target_, 1);
  h.admin_up();
  Sqe id{};
  id.opc = opc::kIdentify;
  id.cdw10 = 1;  // controller
  id.sgl1.length = 4096;
  Completion c = h.command(id);
  ASSERT_TRUE(c.ok());
  ASSERT_EQ(c.data.size(), 4096u);
  EXPECT_EQ(c.data.substr(768, std::strlen(kNqn)), kNqn);
  TargetStats s = stats();
  EXPECT_EQ(s.qpairs, 1u);
  EXPECT_EQ(s.commands, 3u);  // Connect, Property Set, Identify
  // All three went to the primary and back, then were sent; none is left anywhere but free.
  EXPECT_EQ(entered(s, State::kNew), 3u);
  EXPECT_EQ(entered(s, State::kAwaitAdmin), 3u);
  EXPECT_EQ(entered(s, State::kSending), 3u);
  EXPECT_EQ(entered(s, State::kExecuting), 0u);
  for (size_t i = 1; i < TcpReq::kStateCount; ++i) EXPECT_EQ(s.in_state[i], 0u) << TcpReq::state_name(State(i));
  EXPECT_GT(in(s, State::kFree), 0u);
}

TEST_F(QpairTest, RequestsAreCountedWhereTheyWait) {
  MemHost a(*env_->set, *target_, 0);
  const uint16_t cntlid = a.admin_up();
  MemHost q(*env_->set, *target_, 1);
  q.icreq();
  ASSERT_TRUE(q.connect(1, cntlid).ok());
  // A write to the slow namespace (3) sits on the device for 300 ms: the statistics show it there.
  q.submit(MemHost::io(opc::kWrite, 3, 0, 8, 4096), std::string(4096, 'w'));
  ASSERT_TRUE(eventually([&] { return in(stats(), State::kExecuting) == 1; }));
  EXPECT_FALSE(q.has_output());
  Completion c = q.wait();
  EXPECT_TRUE(c.ok());
  ASSERT_TRUE(eventually([&] { return in(stats(), State::kExecuting) == 0 && in(stats(), State::kSending) == 0; }));
}

TEST_F(QpairTest, MultiStepCommandsTakeTheirSteps) {
  MemHost a(*env_->set, *target_, 0);
  const uint16_t cntlid = a.admin_up();
  MemHost q(*env_->set, *target_, 0);
  q.icreq();
  ASSERT_TRUE(q.connect(1, cntlid).ok());
  const std::string data(4096, 'c');
  ASSERT_TRUE(q.command(MemHost::io(opc::kWrite, 1, 64, 8, 4096), data).ok());
  const uint64_t before = entered(stats(), State::kExecuting);
  // Compare: one device read (step compare_read), then the comparison.
  EXPECT_TRUE(q.command(MemHost::io(opc::kCompare, 1, 64, 8, 4096), data).ok());
  Completion miss = q.command(MemHost::io(opc::kCompare, 1, 64, 8, 4096), std::string(4096, 'x'));
  EXPECT_EQ(miss.sct(), 2);  // media and data integrity
  EXPECT_EQ(miss.sc(), sc::kCompareFailure);
  EXPECT_EQ(entered(stats(), State::kExecuting), before + 2);
  // Dataset Management, deallocate, three ranges (one empty): two device requests.
  DsmRange r[3]{};
  r[0].slba = 64;
  r[0].nlb = 4;
  r[1].slba = 100;
  r[1].nlb = 0;
  r[2].slba = 68;
  r[2].nlb = 4;
  Sqe dsm{};
  dsm.opc = opc::kDatasetManagement;
  dsm.nsid = 1;
  dsm.cdw10 = 2;    // three ranges, 0's based
  dsm.cdw11 = 0x4;  // deallocate
  const BdevStats d0 = dev_stats("m0");
  EXPECT_TRUE(q.command(dsm, std::string(reinterpret_cast<char*>(r), sizeof(r))).ok());
  EXPECT_EQ(dev_stats("m0").of(IoType::kUnmap).ops - d0.of(IoType::kUnmap).ops, 2u);
  Completion rd = q.command(MemHost::io(opc::kRead, 1, 64, 8, 4096));
  ASSERT_TRUE(rd.ok());
  EXPECT_EQ(rd.data, std::string(4096, '\0'));  // malloc unmaps read back as zeros
}

TEST_F(QpairTest, FuaIsAFlagNotAFlush) {
  MemHost a(*env_->set, *target_, 0);
  const uint16_t cntlid = a.admin_up();
  MemHost q(*env_->set, *target_, 1);
  q.icreq();
  ASSERT_TRUE(q.connect(1, cntlid).ok());
  const BdevStats s0 = dev_stats("pc");
  // Ten FUA writes and one plain write to the namespace with a volatile write cache (2).
  for (int i = 0; i < 10; ++i) {
    Sqe w = MemHost::io(opc::kWrite, 2, uint64_t(i) * 8, 8, 4096);
    w.cdw12 = uint32_t(w.cdw12) | (1u << 30);
    ASSERT_TRUE(q.command(w, std::string(4096, char('a' + i))).ok());
  }
  ASSERT_TRUE(q.command(MemHost::io(opc::kWrite, 2, 200, 8, 4096), std::string(4096, 'p')).ok());
  BdevStats s1 = dev_stats("pc");
  EXPECT_EQ(s1.of(IoType::kWrite).ops - s0.of(IoType::kWrite).ops, 11u);
  EXPECT_EQ(s1.of(IoType::kWrite).fua - s0.of(IoType::kWrite).fua, 10u);
  EXPECT_EQ(s1.of(IoType::kFlush).ops - s0.of(IoType::kFlush).ops, 0u);  // was 10: a flush per FUA write
  // The FUA writes are durable (on the base, not in the cache); the plain one is not yet.
  auto* pc = static_cast<PowerCutBdev*>(env_->registry->find("pc"));
  EXPECT_EQ(env_->on_primary([&] { return pc->dirty_blocks(); }), 8u);
  // With the volatile write cache turned off (Set Features, Volatile Write Cache = 0), every write is FUA.
  Sqe sf{};
  sf.opc = opc::kSetFeatures;
  sf.cdw10 = 0x06;
  sf.cdw11 = 0;
  ASSERT_TRUE(a.command(sf).ok());
  ASSERT_TRUE(q.command(MemHost::io(opc::kWrite, 2, 300, 8, 4096), std::string(4096, 'v')).ok());
  BdevStats s2 = dev_stats("pc");
  EXPECT_EQ(s2.of(IoType::kWrite).fua - s1.of(IoType::kWrite).fua, 1u);
  EXPECT_EQ(s2.of(IoType::kFlush).ops - s1.of(IoType::kFlush).ops, 0u);
}

TEST_F(QpairTest, TeardownWaitsForRequestsOnTheDevice) {
  MemHost a(*env_->set, *target_, 0);
  const uint16_t cntlid = a.admin_up();
  MemHost q(*env_->set, *target_, 1);
  q.icreq();
  ASSERT_TRUE(q.connect(1, cntlid).ok());
  q.submit(MemHost::io(opc::kWrite, 3, 0, 8, 4096), std::string(4096, 'w'));
  ASSERT_TRUE(eventually([&] { return in(stats(), State::kExecuting) == 1; }));
  // The host goes while its write is on the slow device: the queue pair stays until the write is back,
  // then goes (ASan would report a completion into a freed queue pair).
  q.hang_up();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(stats().qpairs, 2u);
  ASSERT_TRUE(eventually([&] { return stats().qpairs == 1; }));
  EXPECT_EQ(in(stats(), State::kExecuting), 0u);
}

TEST_F(QpairTest, ShutdownNotificationThenHangUpDuringTheFlush) {
  // The delayed device's flushes take 300 ms (other_us) over a device with a write cache.
  ASSERT_TRUE(env_->create("malloc:///m3?size_mb=8").ok());
  ASSERT_TRUE(env_->create("powercut:///pc3?base=m3").ok());
  ASSERT_TRUE(env_->create("delay:///slowflush?base=pc3&other_us=300000").ok());
  ASSERT_TRUE(env_->on_primary([&] { return target_->add_namespace(kNqn, "slowflush").status(); }).ok());
  MemHost a(*env_->set, *target_, 1);
  a.admin_up();
  ASSERT_TRUE(a.prop_set(prop::kCc, 1 | (6 << 16) | (4 << 20) | (1 << 14)).ok());  // SHN: normal shutdown
  a.hang_up();
  // The controller outlives its queues until the flush is back; then it goes.
  ASSERT_TRUE(eventually([&] { return stats().qpairs == 0; }));
  ASSERT_TRUE(eventually([&] { return dev_stats("slowflush").of(IoType::kFlush).ops >= 1; }));
  ASSERT_TRUE(eventually([&] { return env_->on_primary([&] { return target_->all_controllers().empty(); }); }));
}

}  // namespace
}  // namespace tern::nvmf
