// The nexus on real reactors and devices (RAM children, error and delay wrappers): create and its geometry
// rules, the mirror (every child holds every write, at the same offset), reads and their retry, retire with
// the record written before the request that depended on it completes, the last healthy child, the record
// store failing, child operations, shutdown holding I/O. The record store here is an in-memory one whose
// writes the test can hold or fail (the system tests use a real etcd).
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <random>
#include <thread>

#include "bdev/fault_bdevs.h"
#include "common/aligned_buffer.h"
#include "common/crc32c.h"
#include "common/endian.h"
#include "nexus/dirty_log.h"
#include "nexus/layout.h"
#include "nexus/nexus.h"
#include "nexus/record.h"
#include "test_util.h"

namespace tern::nexus {
namespace {

using test::DeviceEnv;

template <typename P>
bool eventually(P pred, int ms = 10'000) {
  for (int i = 0; i < ms; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

const char* kVol = "6d0a3c1e-1111-4a2b-9c3d-000000000001";
const char* kC[] = {"6d0a3c1e-2222-4a2b-9c3d-00000000000a", "6d0a3c1e-2222-4a2b-9c3d-00000000000b",
                    "6d0a3c1e-2222-4a2b-9c3d-00000000000c", "6d0a3c1e-2222-4a2b-9c3d-00000000000d"};
constexpr uint64_t kVolBytes = 8 << 20;

// A record store in memory: every put is kept; puts can be held (until released) or failed.
class TestStore : public RecordStore {
 public:
  Task<Status> put(std::string key, std::string value) override {
    ++attempts;
    while (hold.load()) co_await Reactor::sleep_for(1'000'000);
    if (fail.load()) co_return Status(Errc::kConnRefused, "test store: refusing writes");
    std::lock_guard lk(mu);
    values[key] = value;
    versions[key] = ++revision;
    history.push_back(value);
    co_return Status::Ok();
  }
  Task<Result<std::string>> get(std::string key) override {
    std::lock_guard lk(mu);
    auto it = values.find(key);
    if (it == values.end()) co_return Status(Errc::kNoEnt, "no such key");
    co_return it->second;
  }
  Task<Result<Versioned>> get_versioned(std::string key) override {
    std::lock_guard lk(mu);
    auto it = values.find(key);
    if (it == values.end()) co_return Versioned{};
    co_return Versioned{it->second, versions[key]};
  }
  Task<Result<int64_t>> put_if(std::string key, std::string value, int64_t expected) override {
    ++attempts;
    while (hold.load()) co_await Reactor::sleep_for(1'000'000);
    if (fail.load()) co_return Status(Errc::kConnRefused, "test store: refusing writes");
    std::lock_guard lk(mu);
    const int64_t have = values.count(key) ? versions[key] : 0;
    if (have != expected) co_return Status(Errc::kStale, "test store: another writer");
    values[key] = value;
    versions[key] = ++revision;
    history.push_back(value);
    co_return revision;
  }
  NexusRecord last(const std::string& key) {
    std::lock_guard lk(mu);
    return *NexusRecord::FromJson(values.at(key));
  }
  std::atomic<bool> hold{false}, fail{false};
  std::atomic<int> attempts{0};
  std::mutex mu;
  std::map<std::string, std::string> values;
  std::map<std::string, int64_t> versions;
  int64_t revision = 0;
  std::vector<std::string> history;
};

// Local snapshots as copies: take() reads the child's device (the volume's first kSnapBytes) at the moment
// it runs, so a test sees exactly what a snapshot taken then would hold. It can fail for one device, and
// runs `on_take` first (a test's probe of what the nexus lets through meanwhile).
constexpr uint64_t kSnapBytes = 1 << 20;
class CopySnapshots : public LocalSnapshots {
 public:
  explicit CopySnapshots(BdevRegistry& reg) : reg_(reg) {}
  Task<Result<bool>> take(std::string device, std::string name, Uuid uuid) override {
    if (on_take) on_take();
    if (device == fail_device) co_return Status(Errc::kNoSpc, "test: no room for the snapshot");
    auto key = std::make_pair(device, uuid);
    if (copies.count(key)) co_return true;
    auto d = reg_.open(device, false);
    if (!d.ok()) co_return d.status();
    AlignedBuffer b(kSnapBytes, 4096);
    Errc e;
    {
      auto ch = ChannelRef::Get(**d);
      if (!ch.ok()) co_return ch.status();
      e = co_await ch->read(b.data(), 0, kSnapBytes / 512);
    }
    if (e != Errc::kOk) co_return Status(e, "test: reading the child");
    copies[key] = std::vector<uint8_t>(b.data(), b.data() + kSnapBytes);
    names[key] = name;
    co_return false;
  }
  Task<Status> drop(std::string device, Uuid uuid) override {
    copies.erase(std::make_pair(device, uuid));
    ++drops;
    co_return Status::Ok();
  }
  BdevRegistry& reg_;
  std::function<void()> on_take;
  std::string fail_device;
  std::map<std::pair<std::string, Uuid>, std::vector<uint8_t>> copies;
  std::map<std::pair<std::string, Uuid>, std::string> names;
  int drops = 0;
};

std::string child_uri(const std::string& dev, int i) { return fmt::format("bdev:///{}?uuid={}", dev, kC[i]); }

class NexusTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env_ = std::make_unique<DeviceEnv>(2);
    ASSERT_TRUE(env_->set);
    const uint64_t child_mb = required_child_bytes(kVolBytes) >> 20;
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(env_->create(fmt::format("malloc:///m{}?size_mb={}", i, child_mb)).ok());
      // Each child behind an error device whose rules the tests set; its UUID is the child's.
      ASSERT_TRUE(env_->create(fmt::format("error:///e{}?base=m{}&uuid={}", i, i, kC[i])).ok());
    }
    env_->set->run_sync(1, [&] { writes_ = new TaskScope("test writes"); });
    env_->set->run_sync(0, [&] { writes0_ = new TaskScope("test writes 0"); });
    snaps_ = std::make_unique<CopySnapshots>(*env_->registry);
  }
  void TearDown() override {
    if (nx_) destroy();  // fails whatever a test left held in the nexus
    env_->set->run_sync(1, [&]() -> Task<void> {
      co_await writes_->close();
      delete writes_;
    });
    env_->set->run_sync(0, [&]() -> Task<void> {
      co_await writes0_->close();
      delete writes0_;
    });
    env_.reset();
  }

  Result<Nexus*> create(std::vector<std::string> children, std::string key = "", uint64_t size = kVolBytes,
                        uint64_t persist_timeout_ns = 30'000'000'000ull) {
    NexusOptions o;
    o.uuid = *Uuid::Parse(kVol);
    o.size_bytes = size;
    o.children = std::move(children);
    o.persistence_key = std::move(key);
    o.persist_timeout_ns = persist_timeout_ns;
    o.persist_retry_ns = 20'000'000;
    o.local_snap = snaps_.get();
    o.auto_rebuild = auto_rebuild_;
    o.rebuild = rebuild_opts_;
    o.al_extents = al_extents_;
    auto r = env_->on_primary([&]() -> Task<Result<Nexus*>> {
      co_return co_await Nexus::Create(*env_->registry, o, &store_);
    });
    if (r.ok()) {
      nx_ = *r;
      auto d = env_->open(kVol);
      EXPECT_TRUE(d.ok()) << d.status();
      if (d.ok()) desc_ = std::move(*d);
    }
    return r;
  }
  void destroy() {
    env_->close(desc_);
    env_->on_primary([&]() -> Task<void> {
      co_await nx_->close_children();
      Status st = co_await env_->registry->destroy(kVol, true);
      EXPECT_TRUE(st.ok()) << st;
    });
    nx_ = nullptr;
  }
  std::vector<uint8_t> pattern(size_t n, uint64_t seed) {
    std::vector<uint8_t> v(n);
    test::fill(v.data(), n, seed);
    return v;
  }
  Errc write(uint64_t lba, const std::vector<uint8_t>& data, unsigned reactor = 1) {
    AlignedBuffer b(data.size(), 4096);
    std::memcpy(b.data(), data.data(), data.size());
    return test::io_sync(*env_->set, reactor, *desc_, IoType::kWrite, b.data(), lba, data.size() / 512);
  }
  Result<std::vector<uint8_t>> read(uint64_t lba, size_t bytes, unsigned reactor = 1) {
    AlignedBuffer b(bytes, 4096);
    Errc e = test::io_sync(*env_->set, reactor, *desc_, IoType::kRead, b.data(), lba, bytes / 512);
    if (e != Errc::kOk) return Status(e);
    return std::vector<uint8_t>(b.data(), b.data() + bytes);
  }
  // Reads a device directly (a child, as a replica read on its own would be).
  std::vector<uint8_t> read_device(const std::string& name, uint64_t lba, size_t bytes) {
    auto d = env_->open(name, false);
    EXPECT_TRUE(d.ok()) << d.status();
    AlignedBuffer b(bytes, 4096);
    EXPECT_EQ(test::io_sync(*env_->set, 0, **d, IoType::kRead, b.data(), lba, bytes / 512), Errc::kOk);
    env_->close(*d);
    return std::vector<uint8_t>(b.data(), b.data() + bytes);
  }
  void rule(int child, const std::string& spec) {
    env_->on_primary([&] {
      auto* e = static_cast<ErrorBdev*>(env_->registry->find(fmt::format("e{}", child)));
      if (spec.empty()) e->clear_rules();
      else e->set_rules({*ErrorRule::Parse(spec)});
    });
  }
  NexusInfo info() {
    return env_->on_primary([&]() -> Task<NexusInfo> { co_return co_await nx_->info(); });
  }
  // A write started on reactor 1 that completes by itself later; `done` and `status` say when and how.
  struct Pending {
    std::atomic<bool> done{false};
    std::atomic<int> status{0};
    AlignedBuffer buf{4096, 4096};
  };
  void start_write(Pending* p, uint64_t lba, unsigned reactor = 1) {
    BdevDesc* d = desc_.get();
    env_->set->run_sync(reactor, [&] { (reactor == 1 ? writes_ : writes0_)->spawn(write_task(d, p, lba)); });
  }
  static Task<void> write_task(BdevDesc* d, Pending* p, uint64_t lba) {
    std::memset(p->buf.data(), 0x5c, 4096);
    auto ch = ChannelRef::Get(*d);
    Errc e = co_await ch->write(p->buf.data(), lba, 8);
    p->status = int(e);
    p->done = true;
  }

  // Rebuilds: the tests of out-of-sync children keep them out of sync; the rebuild tests turn this on.
  bool auto_rebuild_ = false;
  RebuildOptions rebuild_opts_;
  uint32_t al_extents_ = 256;
  std::unique_ptr<DeviceEnv> env_;
  TaskScope* writes_ = nullptr;  // writes the tests start and check later (reactor 1)
  TaskScope* writes0_ = nullptr;  // ...on the primary reactor
  TestStore store_;
  std::unique_ptr<CopySnapshots> snaps_;
  Nexus* nx_ = nullptr;
  std::unique_ptr<BdevDesc> desc_;
};

// ---------------------------------------------------------------------------------------------------
// Layout and record

TEST(NexusLayout, MetadataFollowsTheVolumeAtAMebibyteBoundary) {
  auto l = Layout::For(10 << 20, 512);
  ASSERT_TRUE(l.ok());
  EXPECT_EQ(l->meta_offset, uint64_t(10) << 20);
  EXPECT_EQ(l->meta_bytes % kMiB, 0u);
  EXPECT_EQ(l->required_child_bytes(), l->meta_offset + l->meta_bytes);
  auto odd = Layout::For((10 << 20) + 4096, 4096);
  ASSERT_TRUE(odd.ok());
  EXPECT_EQ(odd->meta_offset, uint64_t(11) << 20);
  // The bitmaps cover the volume at the smallest region size, one slot per possible child.
  auto big = Layout::For(uint64_t(1) << 40, 4096);
  EXPECT_EQ(big->bitmap_slot_bytes, (uint64_t(1) << 40) / (64 << 10) / 8);
  EXPECT_LT(big->meta_bytes, uint64_t(20) << 20);
  EXPECT_EQ(Layout::For(1000, 512).code(), Errc::kInval);
  EXPECT_EQ(Layout::For(0, 512).code(), Errc::kInval);
  EXPECT_EQ(Layout::For(4096, 1024).code(), Errc::kInval);
}

TEST(NexusLayout, LabelRoundTripsAndRefusesDamage) {
  auto l = Layout::For(8 << 20, 512);
  ChildLabel a;
  a.sequence = 7;
  a.nexus = *Uuid::Parse(kVol);
  a.child = *Uuid::Parse(kC[0]);
  a.volume_bytes = l->volume_bytes;
  a.block_size = 512;
  a.meta_offset = l->meta_offset;
  a.meta_bytes = l->meta_bytes;
  a.generation = 3;
  a.in_sync = true;
  a.written_ns = 1234;
  std::vector<uint8_t> buf(Layout::kLabelSize);
  a.Encode(buf.data());
  auto b = ChildLabel::Decode(buf.data(), "test");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(b->sequence, 7u);
  EXPECT_EQ(b->nexus, a.nexus);
  EXPECT_EQ(b->child, a.child);
  EXPECT_EQ(b->generation, 3u);
  EXPECT_TRUE(b->in_sync);
  buf[200] ^= 1;
  EXPECT_EQ(ChildLabel::Decode(buf.data(), "test").code(), Errc::kCorruption);
  std::vector<uint8_t> zero(Layout::kLabelSize, 0);
  EXPECT_EQ(ChildLabel::Decode(zero.data(), "test").code(), Errc::kNoEnt);
}

TEST(NexusLayout, RebuildCheckpointRoundTripsAndRefusesDamage) {
  RebuildCheckpoint c;
  c.nexus = *Uuid::Parse(kVol);
  c.child = *Uuid::Parse(kC[2]);
  c.token = 42;
  c.volume_bytes = 8 << 20;
  c.done_bytes = 3 << 20;
  c.written_ns = 99;
  std::vector<uint8_t> buf(Layout::kCheckpointSize);
  c.Encode(buf.data());
  auto back = RebuildCheckpoint::Decode(buf.data());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->token, 42u);
  EXPECT_EQ(back->done_bytes, uint64_t(3) << 20);
  EXPECT_EQ(back->child, c.child);
  buf[70] ^= 1;
  EXPECT_EQ(RebuildCheckpoint::Decode(buf.data()).code(), Errc::kCorruption);
  std::vector<uint8_t> zeros(Layout::kCheckpointSize);
  EXPECT_EQ(RebuildCheckpoint::Decode(zeros.data()).code(), Errc::kNoEnt);
  c.done_bytes = c.volume_bytes + 1;
  c.Encode(buf.data());
  EXPECT_EQ(RebuildCheckpoint::Decode(buf.data()).code(), Errc::kCorruption);
  // It sits in the label area, clear of both labels.
  auto l = Layout::For(8 << 20, 512);
  EXPECT_GE(l->checkpoint, l->label_b + Layout::kLabelSize);
  EXPECT_LE(l->checkpoint + Layout::kCheckpointSize, l->meta_offset + Layout::kLabelAreaSize);
}

TEST(NexusRecordCodec, RoundTripsAndNamesWhatIsWrong) {
  NexusRecord r;
  r.clean_shutdown = true;
  r.generation = 7;
  r.children = {{*Uuid::Parse(kC[0]), true}, {*Uuid::Parse(kC[1]), false, 0xfedcba9876543210ull}};
  r.writer = 0x1234;
  auto back = NexusRecord::FromJson(r.ToJson());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, r);
  EXPECT_EQ(back->writer, 0x1234u);
  EXPECT_EQ(r.ToJson().find("rebuild_token"), r.ToJson().rfind("rebuild_token"));  // only where non-zero
  EXPECT_EQ(NexusRecord::FromJson(R"({"clean_shutdown": false, "children": [{"uuid": "6d0a3c1e-2222-4a2b-9c3d-00000000000a",
                                     "healthy": false, "rebuild_token": -1}]})").code(),
            Errc::kInval);
  EXPECT_NE(r.ToJson().find("\"clean_shutdown\":true"), std::string::npos);
  EXPECT_EQ(NexusRecord::FromJson("nope").code(), Errc::kInval);
  auto missing = NexusRecord::FromJson(R"({"children": []})");
  EXPECT_NE(missing.status().message().find("clean_shutdown"), std::string::npos);
  auto bad = NexusRecord::FromJson(R"({"clean_shutdown": false, "children": [{"uuid": "x", "healthy": true}]})");
  EXPECT_NE(bad.status().message().find("children[0].uuid"), std::string::npos);
  // Fields a newer writer adds do not stop an older reader; a record from before generations reads as 0.
  EXPECT_TRUE(NexusRecord::FromJson(R"({"clean_shutdown": false, "children": [], "newer": 4})").ok());
  EXPECT_EQ(NexusRecord::FromJson(R"({"clean_shutdown": false, "children": []})")->generation, 0u);
  EXPECT_EQ(NexusRecord::FromJson(R"({"clean_shutdown": false, "children": [], "generation": -1})").code(), Errc::kInval);
}

// ---------------------------------------------------------------------------------------------------
// Create

TEST_F(NexusTest, CreateChecksGeometryAndLeavesNothingBehindWhenItFails) {
  // Missing UUID, unknown device, duplicate child, unsupported scheme.
  EXPECT_EQ(create({"bdev:///e0"}).code(), Errc::kInval);
  EXPECT_EQ(create({fmt::format("bdev:///nope?uuid={}", kC[0])}).code(), Errc::kNoDev);
  EXPECT_EQ(create({child_uri("e0", 0), child_uri("e0", 0)}).code(), Errc::kInval);
  EXPECT_EQ(create({fmt::format("iscsi://h/x?uuid={}", kC[0])}).code(), Errc::kInval);
  // A child that does not hold the volume plus the metadata region.
  auto small = create({child_uri("e0", 0)}, "", required_child_bytes(kVolBytes));
  ASSERT_EQ(small.code(), Errc::kNoSpc);
  EXPECT_NE(small.status().message().find("nexus metadata"), std::string::npos) << small.status();
  // A child whose device UUID is not the one named.
  EXPECT_EQ(create({fmt::format("bdev:///e1?uuid={}", kC[0])}).code(), Errc::kInval);
  // Mixed block sizes.
  const char* u4k = "6d0a3c1e-2222-4a2b-9c3d-0000000000ff";
  ASSERT_TRUE(env_->create(fmt::format("malloc:///m4k?size_mb={}&blk_size=4096&uuid={}", 16, u4k)).ok());
  auto mixed = create({child_uri("e0", 0), fmt::format("bdev:///m4k?uuid={}", u4k)});
  ASSERT_EQ(mixed.code(), Errc::kInval);
  EXPECT_NE(mixed.status().message().find("block size"), std::string::npos);
  // After every failure the children are free again (no claim, no descriptor left).
  for (const char* d : {"e0", "e1", "m4k"}) EXPECT_EQ(env_->registry->find(d)->open_count(), 0u) << d;
  EXPECT_EQ(env_->registry->find(kVol), nullptr);
}

TEST_F(NexusTest, TheVolumeIsAtOffsetZeroOfEveryChild) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1), child_uri("e2", 2)}, "vol/1").ok());
  EXPECT_EQ(info().status, NexusStatus::kOnline);
  EXPECT_EQ(store_.last("vol/1"), (NexusRecord{false, 1, {{*Uuid::Parse(kC[0]), true}, {*Uuid::Parse(kC[1]), true},
                                                     {*Uuid::Parse(kC[2]), true}}}));
  auto data = pattern(64 << 10, 1);
  ASSERT_EQ(write(2048, data), Errc::kOk);
  ASSERT_EQ(write(0, pattern(4096, 2), 0), Errc::kOk);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(read_device(fmt::format("m{}", i), 2048, 64 << 10) == data) << "child " << i;
    EXPECT_TRUE(read_device(fmt::format("m{}", i), 0, 4096) == pattern(4096, 2)) << "child " << i;
  }
  auto back = read(2048, 64 << 10);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back == data);
  // The label sits after the volume, where the nexus never lets I/O reach.
  auto label = read_device("m1", nx_->layout().label_a / 512, 4096);
  auto l = ChildLabel::Decode(label.data(), "A");
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->nexus, *Uuid::Parse(kVol));
  EXPECT_EQ(l->child, *Uuid::Parse(kC[1]));
  EXPECT_EQ(read(kVolBytes / 512, 4096).code(), Errc::kRange);
  // Every child was written; reads went to one at a time.
  NexusInfo i = info();
  uint64_t reads = 0;
  for (auto& c : i.children) {
    EXPECT_EQ(c.io.writes, 2u);
    reads += c.io.reads;
  }
  EXPECT_EQ(reads, 1u);
}

TEST_F(NexusTest, ALocalChildServesOneNexusOnly) {
  ASSERT_TRUE(create({child_uri("e0", 0)}).ok());
  NexusOptions o;
  o.uuid = Uuid::Generate();
  o.size_bytes = kVolBytes;
  o.children = {child_uri("e0", 0)};
  auto second = env_->on_primary([&]() -> Task<Result<Nexus*>> { co_return co_await Nexus::Create(*env_->registry, o, nullptr); });
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.code(), Errc::kBusy) << second.status();
}

TEST_F(NexusTest, AChildLabelledForAnotherVolumeIsRefused) {
  ASSERT_TRUE(create({child_uri("e0", 0)}).ok());
  destroy();
  NexusOptions o;
  o.uuid = Uuid::Generate();
  o.size_bytes = kVolBytes;
  o.children = {child_uri("e0", 0)};
  auto other = env_->on_primary([&]() -> Task<Result<Nexus*>> { co_return co_await Nexus::Create(*env_->registry, o, nullptr); });
  ASSERT_EQ(other.code(), Errc::kExist);
  EXPECT_NE(other.status().message().find("belongs to another nexus"), std::string::npos);
  // The same volume again is fine (a nexus recreated after a restart).
  ASSERT_TRUE(create({child_uri("e0", 0)}).ok());
}

// ---------------------------------------------------------------------------------------------------
// Reads and retire

TEST_F(NexusTest, AFailedReadIsRetriedOnAnotherChildAndTheChildRetired) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/r").ok());
  auto data = pattern(8192, 3);
  ASSERT_EQ(write(100, data), Errc::kOk);
  rule(0, "op=read,kind=media");
  rule(1, "op=read,kind=media,count=0");
  // Whichever child the read goes to first, the host sees the data.
  for (int i = 0; i < 4; ++i) {
    auto r = read(100, 8192, unsigned(i % 2));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_TRUE(*r == data);
  }
  ASSERT_TRUE(eventually([&] { return info().status == NexusStatus::kDegraded; }));
  NexusInfo i = info();
  EXPECT_EQ(i.children[0].state, ChildState::kFaulted);
  EXPECT_EQ(i.children[0].reason, FaultReason::kIoError);
  EXPECT_EQ(i.children[1].state, ChildState::kOnline);
  EXPECT_FALSE(store_.last("vol/r").children[0].healthy);
}

TEST_F(NexusTest, TheRetireIsRecordedBeforeTheWriteThatDependsOnItCompletes) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1), child_uri("e2", 2)}, "vol/w").ok());
  rule(1, "op=write");
  store_.hold = true;
  Pending p;
  start_write(&p, 64);
  // The write reached all three; child 1 failed it; the record is being written and the write waits.
  ASSERT_TRUE(eventually([&] { return store_.attempts.load() == 2; }));  // create, then the retire
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(p.done.load());
  // New writes wait too (the nexus is frozen) rather than fail.
  Pending q;
  start_write(&q, 128);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(q.done.load());
  store_.hold = false;
  ASSERT_TRUE(eventually([&] { return p.done.load() && q.done.load(); }));
  EXPECT_EQ(p.status.load(), 0);
  EXPECT_EQ(q.status.load(), 0);
  NexusRecord r = store_.last("vol/w");
  EXPECT_TRUE(r.children[0].healthy);
  EXPECT_FALSE(r.children[1].healthy);
  EXPECT_TRUE(r.children[2].healthy);
  EXPECT_EQ(info().status, NexusStatus::kDegraded);
  // The data is on the children that stay.
  std::vector<uint8_t> want(4096, 0x5c);
  EXPECT_TRUE(read_device("m0", 64, 4096) == want);
  EXPECT_TRUE(read_device("m2", 128, 4096) == want);
}

TEST_F(NexusTest, TheLastHealthyChildIsNeverRetired) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/l").ok());
  rule(0, "op=write");
  ASSERT_EQ(write(0, pattern(4096, 5)), Errc::kOk);  // child 0 retired, recorded
  ASSERT_TRUE(eventually([&] { return info().status == NexusStatus::kDegraded; }));
  rule(1, "op=write");
  EXPECT_EQ(write(8, pattern(4096, 6)), Errc::kIo);  // the host sees it: no child took it
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  NexusInfo i = info();
  EXPECT_EQ(i.children[1].state, ChildState::kOnline);
  EXPECT_TRUE(store_.last("vol/l").children[1].healthy);  // still the one to rebuild from
  rule(1, "");
  EXPECT_EQ(write(8, pattern(4096, 6)), Errc::kOk);
  // Faulting or removing it by request is refused too.
  Status st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->fault_child(*Uuid::Parse(kC[1]), FaultReason::kOffline); });
  EXPECT_EQ(st.code(), Errc::kBusy);
  st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->remove_child(*Uuid::Parse(kC[1])); });
  EXPECT_EQ(st.code(), Errc::kBusy);
}

TEST_F(NexusTest, ANoSpaceChildIsFaultedNotTheVolume) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/n").ok());
  rule(1, "op=write,errno=ENOSPC");
  ASSERT_EQ(write(0, pattern(4096, 7)), Errc::kOk);
  ASSERT_TRUE(eventually([&] { return info().children[1].state == ChildState::kFaulted; }));
  EXPECT_EQ(info().children[1].reason, FaultReason::kNoSpace);
  EXPECT_EQ(info().status, NexusStatus::kDegraded);
}

TEST_F(NexusTest, WhenTheRecordCannotBeWrittenTheNexusShutsDownRatherThanAcknowledge) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/s", kVolBytes, 200'000'000).ok());
  store_.fail = true;
  rule(0, "op=write");
  EXPECT_EQ(write(0, pattern(4096, 8)), Errc::kShutdown);
  EXPECT_EQ(info().status, NexusStatus::kShutdown);
  // Nothing more is accepted: held requests fail so that hosts go to another path.
  EXPECT_EQ(write(8, pattern(4096, 8)), Errc::kNoDev);
}

TEST_F(NexusTest, ANexusWhoseRecordANewerOneWroteIsFencedAndRecordsNothing) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/f").ok());
  // A newer nexus of the volume writes the record (another writer, as after a switch-over).
  NexusRecord newer = store_.last("vol/f");
  newer.generation += 5;
  newer.writer = 42;
  Status put = env_->on_primary([&]() -> Task<Status> {
    std::string k = "vol/f", v = newer.ToJson();
    co_return co_await store_.put(std::move(k), std::move(v));
  });
  ASSERT_TRUE(put.ok());
  const size_t writes = store_.history.size();
  // This one's next record write (a child retired under a host write) finds it: the write is not
  // acknowledged, the nexus shuts itself down, and the newer record stays as it was.
  rule(0, "op=write");
  EXPECT_EQ(write(0, pattern(4096, 8)), Errc::kShutdown);
  EXPECT_TRUE(eventually([&] { return info().status == NexusStatus::kShutdown; }));
  EXPECT_EQ(store_.history.size(), writes);
  EXPECT_EQ(store_.last("vol/f").writer, 42u);
  EXPECT_EQ(store_.last("vol/f").generation, newer.generation);
}

// ---------------------------------------------------------------------------------------------------
// Child operations and shutdown

TEST_F(NexusTest, AddRemoveFaultOnline) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/o").ok());
  auto op = [&](auto fn) { return env_->on_primary([&]() -> Task<Status> { co_return co_await fn(); }); };
  // Added children join out of sync: writes reach them, reads do not.
  ASSERT_TRUE(op([&] { return nx_->add_child(child_uri("e2", 2)); }).ok());
  ASSERT_TRUE(op([&] { return nx_->add_child(child_uri("e2", 2)); }).ok());  // the same call again
  NexusInfo i = info();
  ASSERT_EQ(i.children.size(), 3u);
  EXPECT_EQ(i.children[2].sync, SyncState::kOutOfSync);
  EXPECT_EQ(i.status, NexusStatus::kDegraded);
  EXPECT_FALSE(store_.last("vol/o").children[2].healthy);
  auto data = pattern(4096, 9);
  ASSERT_EQ(write(40, data), Errc::kOk);
  EXPECT_TRUE(read_device("m2", 40, 4096) == data);
  for (int k = 0; k < 10; ++k) ASSERT_TRUE(read(40, 4096).ok());
  EXPECT_EQ(info().children[2].io.reads, 0u);
  // Fault by request, then online again (out of sync).
  ASSERT_TRUE(op([&] { return nx_->fault_child(*Uuid::Parse(kC[0]), FaultReason::kOffline); }).ok());
  i = info();
  EXPECT_EQ(i.children[0].state, ChildState::kFaulted);
  EXPECT_EQ(i.children[0].reason, FaultReason::kOffline);
  EXPECT_EQ(env_->registry->find("e0")->open_count(), 0u);  // closed while faulted
  ASSERT_TRUE(op([&] { return nx_->online_child(*Uuid::Parse(kC[0])); }).ok());
  i = info();
  EXPECT_EQ(i.children[0].state, ChildState::kOnline);
  EXPECT_EQ(i.children[0].sync, SyncState::kOutOfSync);
  // Remove: out of the I/O path, out of the record, closed.
  ASSERT_TRUE(op([&] { return nx_->remove_child(*Uuid::Parse(kC[2])); }).ok());
  EXPECT_EQ(info().children.size(), 2u);
  EXPECT_EQ(store_.last("vol/o").children.size(), 2u);
  EXPECT_EQ(env_->registry->find("e2")->open_count(), 0u);
  EXPECT_EQ(op([&] { return nx_->remove_child(*Uuid::Parse(kC[2])); }).code(), Errc::kNoEnt);
  ASSERT_EQ(write(48, data), Errc::kOk);
}

TEST_F(NexusTest, ShutdownHoldsIoAndRecordsACleanShutdown) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/x").ok());
  ASSERT_EQ(write(0, pattern(4096, 10)), Errc::kOk);
  Status st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->shutdown_nexus(); });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(store_.last("vol/x").clean_shutdown);
  EXPECT_EQ(info().status, NexusStatus::kShutdown);
  // A request now waits (a host would, rather than see an error) until the nexus is destroyed.
  Pending p;
  start_write(&p, 8);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(p.done.load());
  env_->on_primary([&]() -> Task<void> { co_await nx_->close_children(); });
  ASSERT_TRUE(eventually([&] { return p.done.load(); }));
  EXPECT_EQ(p.status.load(), int(Errc::kNoDev));
  st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->shutdown_nexus(); });
  EXPECT_TRUE(st.ok());  // idempotent
}


TEST_F(NexusTest, ResizeMovesTheMetadataAndZeroesWhereItWas) {
  // Children sized for kVolBytes; the volume starts at half of that.
  constexpr uint64_t kSmall = kVolBytes / 2;
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/r", kSmall).ok());
  const Layout before = nx_->layout();
  auto data = pattern(64 << 10, 21);
  ASSERT_EQ(write(0, data), Errc::kOk);
  auto resize = [&](uint64_t bytes) {
    return env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->resize(bytes); });
  };
  EXPECT_EQ(resize(kSmall / 2).code(), Errc::kInval);            // shrinking
  EXPECT_TRUE(resize(kSmall).ok());                                // the same size
  Status st = resize(kVolBytes + (8 << 20));                       // the children are too small
  EXPECT_EQ(st.code(), Errc::kNoSpc);
  EXPECT_NE(st.message().find("grow the replica"), std::string::npos) << st;
  EXPECT_EQ(read(kSmall / 512, 4096).code(), Errc::kRange);
  // An out-of-sync or faulted child: refused (the dirty-region logs are sized for one volume size).
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> {
    co_return co_await nx_->fault_child(*Uuid::Parse(kC[1]), FaultReason::kOffline);
  }).ok());
  EXPECT_EQ(resize(kVolBytes).code(), Errc::kBusy);
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->online_child(*Uuid::Parse(kC[1])); }).ok());
  // (Back online it is out of sync until rebuilt: still refused. Remove it and grow on one child.)
  EXPECT_EQ(resize(kVolBytes).code(), Errc::kBusy);
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->remove_child(*Uuid::Parse(kC[1])); }).ok());
  st = resize(kVolBytes);
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(nx_->num_blocks(), kVolBytes / 512);
  EXPECT_EQ(info().size_bytes, kVolBytes);
  // The old metadata region is volume space now, and reads as zeros; the data before it is intact.
  auto old_meta = read(before.meta_offset / 512, 2 * Layout::kLabelSize);
  ASSERT_TRUE(old_meta.ok()) << old_meta.status();
  EXPECT_TRUE(std::all_of(old_meta->begin(), old_meta->end(), [](uint8_t b) { return b == 0; }));
  auto back = read(0, 64 << 10);
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(*back == data);
  // The label lives after the new end, and says so.
  auto label = read_device("m0", nx_->layout().label_a / 512, 4096);
  auto l = ChildLabel::Decode(label.data(), "A");
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->volume_bytes, kVolBytes);
  EXPECT_EQ(l->meta_offset, nx_->layout().meta_offset);
  // The last block of the grown volume takes writes.
  ASSERT_EQ(write(kVolBytes / 512 - 8, pattern(4096, 22)), Errc::kOk);
  EXPECT_TRUE(read_device("m0", kVolBytes / 512 - 8, 4096) == pattern(4096, 22));
}

// ---------------------------------------------------------------------------------------------------
// Snapshots

TEST_F(NexusTest, ASnapshotCatchesEveryChildAtOnePointOfTheWriteStream) {
  // Child 3 is slow to write: a write is still on it when the snapshot is asked for.
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await env_->registry->destroy("e3"); }).ok());
  ASSERT_TRUE(env_->create(fmt::format("delay:///d3?base=m3&write_us=200000&uuid={}", kC[3])).ok());
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("d3", 3), child_uri("e2", 2)}, "vol/s").ok());
  ASSERT_EQ(write(0, pattern(kSnapBytes, 1)), Errc::kOk);
  Pending before;
  start_write(&before, 16);  // on the children, completing 200 ms from now
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_FALSE(before.done.load());
  // A write submitted while the snapshot is being taken must wait for it, and not be in it.
  Pending during;
  bool before_done_at_take = false, during_held_at_take = false;
  int takes = 0;
  snaps_->on_take = [&] {
    if (takes++ > 0) return;
    before_done_at_take = before.done.load();
    // (posted: this runs on the primary reactor, which must not wait for another)
    BdevDesc* d = desc_.get();
    env_->set->post(1, [this, d, p = &during] { writes_->spawn(write_task(d, p, 32)); });
    std::this_thread::sleep_for(std::chrono::milliseconds(30));
    during_held_at_take = !during.done.load();
  };
  SnapshotArgs a;
  a.name = "s1";
  auto r = env_->on_primary([&]() -> Task<Result<SnapshotResult>> { co_return co_await nx_->snapshot(a); });
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(before_done_at_take);  // drained first
  EXPECT_TRUE(during_held_at_take);  // held, not failed
  ASSERT_TRUE(eventually([&] { return during.done.load(); }));
  EXPECT_EQ(during.status.load(), 0);
  EXPECT_EQ(before.status.load(), 0);
  EXPECT_EQ(r->uuid, Uuid::Derive(*Uuid::Parse(kVol), "s1"));
  ASSERT_EQ(r->children.size(), 3u);
  // Three copies, identical, holding the slow write and not the held one.
  std::vector<std::vector<uint8_t>> got;
  for (auto& c : r->children) {
    EXPECT_EQ(c.outcome, SnapshotOutcome::kTaken) << c.uri;
    EXPECT_EQ(c.snapshot, Uuid::Derive(r->uuid, c.child.ToString()));
    for (auto& [k, v] : snaps_->copies)
      if (k.second == c.snapshot) got.push_back(v);
  }
  ASSERT_EQ(got.size(), 3u);
  EXPECT_TRUE(got[0] == got[1] && got[1] == got[2]);
  std::vector<uint8_t> x5c(4096, 0x5c);
  EXPECT_TRUE(std::equal(x5c.begin(), x5c.end(), got[0].begin() + 16 * 512));
  EXPECT_FALSE(std::equal(x5c.begin(), x5c.end(), got[0].begin() + 32 * 512));
  // The same request again: every child had it, nothing new is taken.
  auto again = env_->on_primary([&]() -> Task<Result<SnapshotResult>> { co_return co_await nx_->snapshot(a); });
  ASSERT_TRUE(again.ok()) << again.status();
  for (auto& c : again->children) EXPECT_EQ(c.outcome, SnapshotOutcome::kExisted);
}

TEST_F(NexusTest, ASnapshotIsAllOrNothingAndSkipsFaultedChildren) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1), child_uri("e2", 2)}, "vol/t").ok());
  Status st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->fault_child(*Uuid::Parse(kC[2]), FaultReason::kNone); });
  ASSERT_TRUE(st.ok()) << st;
  // One in-sync child fails its snapshot: the other's is destroyed again, the error names the child.
  snaps_->fail_device = "e1";
  SnapshotArgs a;
  a.name = "s2";
  auto r = env_->on_primary([&]() -> Task<Result<SnapshotResult>> { co_return co_await nx_->snapshot(a); });
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kNoSpc);
  EXPECT_NE(r.status().message().find("e1"), std::string::npos) << r.status();
  EXPECT_TRUE(snaps_->copies.empty());
  EXPECT_EQ(snaps_->drops, 1);
  // Host I/O flows again.
  ASSERT_EQ(write(0, pattern(4096, 3)), Errc::kOk);
  // Now it works; the faulted child is skipped and says why.
  snaps_->fail_device.clear();
  r = env_->on_primary([&]() -> Task<Result<SnapshotResult>> { co_return co_await nx_->snapshot(a); });
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->children.size(), 3u);
  EXPECT_EQ(r->children[0].outcome, SnapshotOutcome::kTaken);
  EXPECT_EQ(r->children[1].outcome, SnapshotOutcome::kTaken);
  EXPECT_EQ(r->children[2].outcome, SnapshotOutcome::kSkipped);
  EXPECT_NE(r->children[2].detail.find("faulted"), std::string::npos) << r->children[2].detail;
  // A snapshot that only some children have (taken behind the nexus's back) is refused, and what this
  // call took is destroyed again.
  snaps_->copies.erase(std::make_pair(std::string("e1"), r->children[1].snapshot));
  auto mixed = env_->on_primary([&]() -> Task<Result<SnapshotResult>> { co_return co_await nx_->snapshot(a); });
  ASSERT_FALSE(mixed.ok());
  EXPECT_EQ(mixed.code(), Errc::kExist);
  EXPECT_EQ(snaps_->copies.count(std::make_pair(std::string("e1"), r->children[1].snapshot)), 0u);
  // Bad names.
  a.name = "";
  auto bad = env_->on_primary([&]() -> Task<Result<SnapshotResult>> { co_return co_await nx_->snapshot(a); });
  EXPECT_EQ(bad.code(), Errc::kInval);
}

// ---------------------------------------------------------------------------------------------------
// Generations (docs/design/rebuild.md)

TEST_F(NexusTest, GenerationsSayWhichChildrenAreCurrent) {
  auto label_gen = [&](const std::string& dev) {
    Layout l = *Layout::For(kVolBytes, 512);
    auto a = read_device(dev, l.label_a / 512, Layout::kLabelSize);
    auto b = read_device(dev, l.label_b / 512, Layout::kLabelSize);
    auto la = ChildLabel::Decode(a.data(), "A"), lb = ChildLabel::Decode(b.data(), "B");
    if (la.ok() && (!lb.ok() || la->sequence > lb->sequence)) return la->generation;
    return lb.ok() ? lb->generation : uint64_t(0);
  };
  std::vector<std::string> three = {child_uri("e0", 0), child_uri("e1", 1), child_uri("e2", 2)};
  ASSERT_TRUE(create(three, "vol/g").ok());
  EXPECT_EQ(nx_->generation(), 1u);
  EXPECT_EQ(store_.last("vol/g").generation, 1u);
  for (auto* d : {"m0", "m1", "m2"}) EXPECT_EQ(label_gen(d), 1u) << d;
  // A retire starts a generation: recorded, then on the children that stay; the retired one keeps 1.
  rule(1, "op=write");
  ASSERT_EQ(write(0, pattern(4096, 1)), Errc::kOk);
  ASSERT_TRUE(eventually([&] { return info().children[1].state == ChildState::kFaulted; }));
  EXPECT_EQ(store_.last("vol/g").generation, 2u);
  EXPECT_EQ(info().generation, 2u);
  EXPECT_EQ(label_gen("m0"), 2u);
  EXPECT_EQ(label_gen("m1"), 1u);
  EXPECT_EQ(label_gen("m2"), 2u);
  rule(1, "");
  // A new nexus of the volume over all three: generation 3; the child left behind joins out of sync.
  destroy();
  ASSERT_TRUE(create(three, "vol/g").ok());
  NexusInfo i = info();
  EXPECT_EQ(i.generation, 3u);
  EXPECT_EQ(i.children[0].sync, SyncState::kSynced);
  EXPECT_EQ(i.children[1].sync, SyncState::kOutOfSync);
  EXPECT_EQ(i.children[1].generation, 1u);
  EXPECT_EQ(i.children[2].sync, SyncState::kSynced);
  EXPECT_EQ(i.status, NexusStatus::kDegraded);
  EXPECT_EQ(label_gen("m1"), 1u);  // out of sync: its label still names the data it holds
  EXPECT_FALSE(store_.last("vol/g").children[1].healthy);
  // Removing a healthy child starts one too.
  Status st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->remove_child(*Uuid::Parse(kC[2])); });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(store_.last("vol/g").generation, 4u);
  destroy();
  // A record older than the children's labels (restored from a backup?) is refused, naming both.
  {
    NexusRecord old = store_.last("vol/g");
    old.generation = 2;
    std::lock_guard lk(store_.mu);
    store_.values["vol/g"] = old.ToJson();
  }
  auto r = create({child_uri("e0", 0)}, "vol/g");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kInval);
  EXPECT_NE(r.status().message().find("older than the data"), std::string::npos) << r.status();
}

// ---------------------------------------------------------------------------------------------------
// Range lock (what a rebuild copies a segment under)

TEST_F(NexusTest, ARangeLockHoldsOnlyTheWritesThatOverlapIt) {
  // Child 3 is slow to write, so a write is still out when the lock is asked for.
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await env_->registry->destroy("e3"); }).ok());
  ASSERT_TRUE(env_->create(fmt::format("delay:///d3?base=m3&write_us=200000&uuid={}", kC[3])).ok());
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("d3", 3)}).ok());
  // The volume's extent in the activity log first (a write to a cold extent waits for the log, uncounted).
  ASSERT_EQ(write(4096, pattern(4096, 1)), Errc::kOk);
  Pending before;
  start_write(&before, 4096);  // far from the range: the lock waits for it all the same
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  ASSERT_FALSE(before.done.load());
  Status st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->lock_range(0, 64, 10'000'000'000ull); });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(before.done.load());  // drained before the lock was granted
  // Locked: a write into the range waits; one outside it and a read inside it do not.
  Pending inside, outside;
  start_write(&inside, 32);
  start_write(&outside, 1024);
  ASSERT_TRUE(eventually([&] { return outside.done.load(); }));
  EXPECT_EQ(outside.status.load(), 0);
  ASSERT_TRUE(read(0, 4096).ok());
  EXPECT_FALSE(inside.done.load());
  // A second lock while one is held: refused.
  st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->lock_range(128, 8, 1'000'000'000ull); });
  EXPECT_EQ(st.code(), Errc::kBusy);
  // The data in the range cannot change until the unlock.
  std::vector<uint8_t> zeros(4096, 0);
  EXPECT_TRUE(read_device("m0", 32, 4096) == zeros);
  env_->on_primary([&]() -> Task<void> { co_await nx_->unlock_range(); });
  ASSERT_TRUE(eventually([&] { return inside.done.load(); }));
  EXPECT_EQ(inside.status.load(), 0);
  std::vector<uint8_t> x5c(4096, 0x5c);
  EXPECT_TRUE(read_device("m0", 32, 4096) == x5c);
  // A lock whose writes do not drain in time is released and says so.
  Pending slow;
  start_write(&slow, 2048);
  st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->lock_range(0, 64, 20'000'000ull); });
  EXPECT_EQ(st.code(), Errc::kTimedOut);
  EXPECT_FALSE(nx_->range_lock().has_value());
  // While that write is still out, a new lock cannot tell it from new ones: refused, not granted early.
  st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->lock_range(0, 64, 20'000'000ull); });
  EXPECT_EQ(st.code(), Errc::kBusy) << st;
  ASSERT_TRUE(eventually([&] { return slow.done.load(); }));
  st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->lock_range(0, 64, 1'000'000'000ull); });
  ASSERT_TRUE(st.ok()) << st;
  env_->on_primary([&]() -> Task<void> { co_await nx_->unlock_range(); });
  ASSERT_EQ(write(0, pattern(4096, 5)), Errc::kOk);
}

// ---------------------------------------------------------------------------------------------------
// Rebuild

TEST_F(NexusTest, ARebuildCopiesTheVolumeUnderHostWritesAndMakesTheChildCurrent) {
  auto_rebuild_ = true;
  rebuild_opts_.segment_bytes = 256 << 10;
  rebuild_opts_.concurrency = 2;
  rebuild_opts_.rate_bytes_per_s = 8 << 20;  // about a second for the volume: host writes land meanwhile
  // The source is slow to read: host writes into the window being copied would land between the job's
  // read and its write if the window were not locked (and the copy would then undo them on the child).
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await env_->registry->destroy("e0"); }).ok());
  ASSERT_TRUE(env_->create(fmt::format("delay:///d0?base=m0&read_us=5000&uuid={}", kC[0])).ok());
  ASSERT_TRUE(create({child_uri("d0", 0), child_uri("e1", 1)}, "vol/rb").ok());
  for (uint64_t lba = 0; lba < kVolBytes / 512; lba += 2048) ASSERT_EQ(write(lba, pattern(64 << 10, lba)), Errc::kOk);
  const uint64_t gen = info().generation;
  Status st = env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->add_child(child_uri("e2", 2)); });
  ASSERT_TRUE(st.ok()) << st;
  // Host writes all over the volume while it copies, into windows before, at and after the copy.
  uint64_t seed = 1000, writes = 0;
  std::mt19937_64 rng(7);
  auto done = [&] {
    auto c = info().children[2];
    return c.rebuild && c.rebuild->finished();
  };
  while (!done() && writes < 20000) {
    const uint64_t lba = (rng() % (kVolBytes / 512 / 8)) * 8;
    ASSERT_EQ(write(lba, pattern(4096, ++seed)), Errc::kOk);
    ++writes;
  }
  NexusInfo i = info();
  ASSERT_TRUE(i.children[2].rebuild.has_value());
  const RebuildStats& r = *i.children[2].rebuild;
  ASSERT_EQ(r.state, RebuildState::kCompleted) << r.error;
  EXPECT_GT(writes, 50u);  // the copy did overlap host writes
  EXPECT_EQ(r.kind, RebuildKind::kFull);
  EXPECT_EQ(r.done_bytes, kVolBytes);
  EXPECT_EQ(r.copied_bytes, kVolBytes);
  EXPECT_EQ(r.source, child_uri("d0", 0));
  EXPECT_EQ(i.children[2].sync, SyncState::kSynced);
  EXPECT_EQ(i.status, NexusStatus::kOnline);
  EXPECT_EQ(i.children[2].generation, gen);  // its label: the volume's generation, in sync
  EXPECT_TRUE(store_.last("vol/rb").children[2].healthy);
  // The copy equals the source, block for block.
  EXPECT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
  ASSERT_EQ(nx_->rebuild_history().size(), 1u);
  EXPECT_EQ(nx_->rebuild_history().back().state, RebuildState::kCompleted);
  // It serves reads now: alone, once the others are faulted, it returns the volume.
  const auto volume = read_device("m0", 0, kVolBytes);
  auto op = [&](auto fn) { return env_->on_primary([&]() -> Task<Status> { co_return co_await fn(); }); };
  ASSERT_TRUE(op([&] { return nx_->fault_child(*Uuid::Parse(kC[0]), FaultReason::kOffline); }).ok());
  ASSERT_TRUE(op([&] { return nx_->fault_child(*Uuid::Parse(kC[1]), FaultReason::kOffline); }).ok());
  auto got = read(0, kVolBytes);
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(*got == volume);
  EXPECT_GT(info().children[2].io.reads, 0u);
}

TEST_F(NexusTest, ARebuildPausesResumesStopsAndKeepsItsRate) {
  rebuild_opts_.segment_bytes = 64 << 10;
  rebuild_opts_.concurrency = 1;
  rebuild_opts_.rate_bytes_per_s = 2 << 20;
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/rc").ok());
  auto op = [&](auto fn) { return env_->on_primary([&]() -> Task<Status> { co_return co_await fn(); }); };
  const Uuid c2 = *Uuid::Parse(kC[2]);
  ASSERT_TRUE(op([&] { return nx_->add_child(child_uri("e2", 2)); }).ok());
  EXPECT_FALSE(info().children[2].rebuild.has_value());  // auto_rebuild is off here
  // Refusals say why.
  EXPECT_EQ(op([&] { return nx_->start_rebuild(*Uuid::Parse(kC[0])); }).code(), Errc::kInval);  // in sync
  EXPECT_EQ(op([&] { return nx_->start_rebuild(*Uuid::Parse(kC[3])); }).code(), Errc::kNoEnt);
  RebuildOptions bad;
  bad.segment_bytes = 1000;
  EXPECT_EQ(op([&] { return nx_->start_rebuild(c2, bad); }).code(), Errc::kInval);
  ASSERT_TRUE(op([&] { return nx_->start_rebuild(c2); }).ok());
  ASSERT_TRUE(op([&] { return nx_->start_rebuild(c2); }).ok());  // running already: the same call again
  auto stats = [&] { return *info().children[2].rebuild; };
  // The rate holds: 2 MiB/s for 300 ms is about 600 KiB, never the whole 8 MiB.
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  RebuildStats s = stats();
  EXPECT_EQ(s.state, RebuildState::kRunning);
  EXPECT_GT(s.done_bytes, 0u);
  EXPECT_LT(s.done_bytes, uint64_t(2) << 20);
  EXPECT_GT(s.eta_ns, 0u);
  // Paused: no progress.
  env_->on_primary([&] { nx_->rebuild_job(c2)->pause(); });
  ASSERT_TRUE(eventually([&] { return stats().state == RebuildState::kPaused; }));
  const uint64_t at = stats().done_bytes;
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(stats().done_bytes, at);
  // Resumed with the rate lifted; stopped before the end, it leaves the child out of sync.
  env_->on_primary([&] {
    nx_->rebuild_job(c2)->set_rate(512 << 10);
    nx_->rebuild_job(c2)->resume();
  });
  ASSERT_TRUE(eventually([&] { return stats().done_bytes > at; }));
  env_->on_primary([&] { nx_->rebuild_job(c2)->stop("test: stop"); });
  ASSERT_TRUE(eventually([&] { return stats().state == RebuildState::kStopped; }));
  EXPECT_EQ(stats().error, "test: stop");
  EXPECT_EQ(info().children[2].sync, SyncState::kOutOfSync);
  EXPECT_FALSE(store_.last("vol/rc").children[2].healthy);
  // Started again (no checkpoint yet: from the start), at full speed: it completes.
  env_->on_primary([&] { nx_->rebuild_job(c2)->set_rate(0); });
  RebuildOptions fast;
  ASSERT_TRUE(op([&] { return nx_->start_rebuild(c2, fast); }).ok());
  ASSERT_TRUE(eventually([&] { return stats().finished(); }));
  EXPECT_EQ(stats().state, RebuildState::kCompleted) << stats().error;
  EXPECT_EQ(info().children[2].sync, SyncState::kSynced);
  EXPECT_EQ(nx_->rebuild_history().size(), 2u);
  EXPECT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
}

TEST_F(NexusTest, ARebuildReadsAroundABadSourceAndFaultsABadDestination) {
  auto_rebuild_ = true;
  rebuild_opts_.segment_bytes = 64 << 10;
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/re").ok());
  for (uint64_t lba = 0; lba < kVolBytes / 512; lba += 1024) ASSERT_EQ(write(lba, pattern(4096, lba + 1)), Errc::kOk);
  // The first source fails a read in the middle: that segment (and the rest) comes from the other child.
  rule(0, "op=read,lba=4096-4100,kind=media");
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->add_child(child_uri("e2", 2)); }).ok());
  ASSERT_TRUE(eventually([&] { auto c = info().children[2]; return c.rebuild && c.rebuild->finished(); }));
  RebuildStats s = *info().children[2].rebuild;
  EXPECT_EQ(s.state, RebuildState::kCompleted) << s.error;
  EXPECT_EQ(s.source_errors, 1u);
  EXPECT_EQ(s.source, child_uri("e1", 1));
  EXPECT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m1", 0, kVolBytes));
  rule(0, "");
  // A destination that fails a write: the job fails and the child is faulted (rebuild_failed), never in sync.
  rule(3, "op=write,lba=8192-8193");
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->add_child(child_uri("e3", 3)); }).ok());
  ASSERT_TRUE(eventually([&] { return info().children[3].state == ChildState::kFaulted; }));
  ASSERT_TRUE(eventually([&] { auto c = info().children[3]; return c.rebuild && c.rebuild->finished(); }));
  ChildInfo c3 = info().children[3];
  EXPECT_EQ(c3.reason, FaultReason::kRebuildFailed);
  EXPECT_EQ(c3.sync, SyncState::kOutOfSync);
  EXPECT_EQ(c3.rebuild->state, RebuildState::kFailed);
  EXPECT_NE(c3.rebuild->error.find("destination"), std::string::npos) << c3.rebuild->error;
  EXPECT_LE(c3.rebuild->done_bytes, uint64_t(8192) * 512);
  EXPECT_FALSE(store_.last("vol/re").children[3].healthy);
  EXPECT_EQ(info().status, NexusStatus::kDegraded);
  // Onlined again (the fault cleared), it is rebuilt by itself and ends in sync.
  rule(3, "");
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->online_child(*Uuid::Parse(kC[3])); }).ok());
  ASSERT_TRUE(eventually([&] { return info().children[3].sync == SyncState::kSynced; }));
  EXPECT_TRUE(read_device("m3", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
}

TEST_F(NexusTest, ARebuildResumesFromItsCheckpointOnlyWhileTheChildGotEveryWrite) {
  auto_rebuild_ = true;
  rebuild_opts_.segment_bytes = 64 << 10;
  rebuild_opts_.concurrency = 1;
  rebuild_opts_.rate_bytes_per_s = 4 << 20;
  rebuild_opts_.checkpoint_bytes = 512 << 10;
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/cp").ok());
  for (uint64_t lba = 0; lba < kVolBytes / 512; lba += 256) ASSERT_EQ(write(lba, pattern(4096, lba + 3)), Errc::kOk);
  auto op = [&](auto fn) { return env_->on_primary([&]() -> Task<Status> { co_return co_await fn(); }); };
  const Uuid c2 = *Uuid::Parse(kC[2]);
  ASSERT_TRUE(op([&] { return nx_->add_child(child_uri("e2", 2)); }).ok());
  auto stats = [&] { return *info().children[2].rebuild; };
  ASSERT_TRUE(eventually([&] { return info().children[2].rebuild && stats().done_bytes >= (2u << 20); }));
  const uint64_t token = store_.last("vol/cp").children[2].rebuild_token;
  EXPECT_NE(token, 0u);  // recorded before the first checkpoint
  // The nexus shuts down mid-rebuild (its engine stopping), and a new one is made over the same children.
  ASSERT_TRUE(op([&] { return nx_->shutdown_nexus(); }).ok());
  const uint64_t stopped_at = nx_->rebuild_history().back().done_bytes;
  EXPECT_EQ(nx_->rebuild_history().back().state, RebuildState::kStopped);
  destroy();
  rebuild_opts_.rate_bytes_per_s = 0;
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1), child_uri("e2", 2)}, "vol/cp").ok());
  // The child turns in sync a moment before its job records itself completed: await both.
  ASSERT_TRUE(eventually([&] {
    const ChildInfo c = info().children[2];
    return c.sync == SyncState::kSynced && c.rebuild && c.rebuild->finished();
  }));
  RebuildStats s = stats();
  EXPECT_EQ(s.state, RebuildState::kCompleted);
  EXPECT_EQ(s.resumed_bytes, stopped_at);  // where the last one stopped, not the start
  EXPECT_GT(s.resumed_bytes, 0u);
  EXPECT_EQ(s.copied_bytes, kVolBytes - stopped_at);
  EXPECT_NE(s.reason.find("checkpoint"), std::string::npos) << s.reason;
  EXPECT_EQ(store_.last("vol/cp").children[2].rebuild_token, 0u);
  EXPECT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
  // The history outlives the nexus: the first nexus's stopped job, then this one's.
  ASSERT_EQ(nx_->rebuild_history().size(), 2u);
  EXPECT_EQ(nx_->rebuild_history()[0].state, RebuildState::kStopped);
  EXPECT_EQ(nx_->rebuild_history()[0].done_bytes, stopped_at);
  EXPECT_EQ(nx_->rebuild_history()[1].state, RebuildState::kCompleted);
  ASSERT_TRUE(eventually([&] {
    std::lock_guard lk(store_.mu);
    auto it = store_.values.find("vol/cp/rebuilds");
    if (it == store_.values.end()) return false;
    auto h = RebuildHistoryFromJson(it->second);
    return h.ok() && h->size() == 2 && (*h)[1].state == RebuildState::kCompleted && (*h)[1].resumed_bytes == stopped_at;
  }));
  EXPECT_EQ(RebuildHistoryFromJson("[{\"child\": \"x\"}]").code(), Errc::kInval);
  EXPECT_EQ(RebuildHistoryFromJson("{}").code(), Errc::kInval);
  // A child that missed writes (faulted mid-rebuild) loses its token first: back, it starts over.
  ASSERT_TRUE(op([&] { return nx_->remove_child(c2); }).ok());
  destroy();
  rebuild_opts_.rate_bytes_per_s = 4 << 20;
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/cp2").ok());
  ASSERT_TRUE(op([&] { return nx_->add_child(child_uri("e3", 3)); }).ok());
  ASSERT_TRUE(eventually([&] { auto c = info().children[2]; return c.rebuild && c.rebuild->done_bytes >= (1u << 20); }));
  ASSERT_NE(store_.last("vol/cp2").children[2].rebuild_token, 0u);
  ASSERT_TRUE(op([&] { return nx_->fault_child(*Uuid::Parse(kC[3]), FaultReason::kOffline); }).ok());
  EXPECT_EQ(store_.last("vol/cp2").children[2].rebuild_token, 0u);
  ASSERT_EQ(write(0, pattern(4096, 77)), Errc::kOk);  // a write the child misses
  ASSERT_TRUE(op([&] { return nx_->online_child(*Uuid::Parse(kC[3])); }).ok());
  ASSERT_TRUE(eventually([&] { auto c = info().children[2]; return c.rebuild && !c.rebuild->finished(); }));
  env_->on_primary([&] { nx_->rebuild_job(*Uuid::Parse(kC[3]))->set_rate(0); });
  ASSERT_TRUE(eventually([&] { return info().children[2].sync == SyncState::kSynced; }));
  EXPECT_EQ(info().children[2].rebuild->resumed_bytes, 0u);
  EXPECT_TRUE(read_device("m3", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
}

// Power cut on the destination at every write it gets during a rebuild (data, checkpoints, flushes,
// its label), with half of its unflushed blocks kept: then power back and a new nexus over all three.
// Whatever survived, the destination is never taken as current unless it holds the volume, and a rebuild
// then makes it so.
TEST_F(NexusTest, APowerCutAtEveryWriteOfARebuildNeverLeavesAStaleChildCurrent) {
  auto_rebuild_ = true;
  rebuild_opts_.segment_bytes = 1 << 20;
  rebuild_opts_.concurrency = 1;
  rebuild_opts_.checkpoint_bytes = 2 << 20;
  auto op = [&](auto fn) { return env_->on_primary([&]() -> Task<Status> { co_return co_await fn(); }); };
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await env_->registry->destroy("e2"); }).ok());
  const std::string pc_uri = fmt::format("powercut:///pc?base=m2&uuid={}", kC[2]);
  auto zero_m2 = [&] {
    auto d = env_->open("m2");
    ASSERT_TRUE(d.ok());
    AlignedBuffer z(1 << 20, 4096, true);
    for (uint64_t off = 0; off < required_child_bytes(kVolBytes); off += 1 << 20) {
      ASSERT_EQ(test::io_sync(*env_->set, 0, **d, IoType::kWrite, z.data(), off / 512, (1 << 20) / 512), Errc::kOk);
    }
    env_->close(*d);
  };
  uint64_t total = 0;
  int made_current = 0, rebuilt_after = 0;
  for (uint64_t cut = 1;; ++cut) {
    SCOPED_TRACE(fmt::format("cut at write {}", cut));
    zero_m2();
    ASSERT_TRUE(env_->create(pc_uri).ok());
    auto* pc = static_cast<PowerCutBdev*>(env_->registry->find("pc"));
    const std::string key = fmt::format("vol/pc{}", cut);
    ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, key).ok());
    for (uint64_t lba = 0; lba < kVolBytes / 512; lba += 2048) ASSERT_EQ(write(lba, pattern(4096, lba + cut)), Errc::kOk);
    env_->on_primary([&] { pc->arm(total && cut <= total ? cut : PowerCutBdev::kNever, 0.5, cut); });
    ASSERT_TRUE(op([&] { return nx_->add_child(child_uri("pc", 2)); }).ok());
    ASSERT_TRUE(eventually([&] { auto c = info().children[2]; return c.rebuild && c.rebuild->finished(); }));
    const bool was_cut = pc->is_cut();
    if (total == 0) total = pc->events();  // the dry run: how many writes a whole rebuild takes
    // A write after the rebuild (the destination misses it when it is down).
    ASSERT_EQ(write(8, pattern(4096, 1000 + cut)), Errc::kOk);
    ASSERT_EQ(test::io_sync(*env_->set, 1, *desc_, IoType::kFlush, nullptr, 0, 0), Errc::kOk);  // as a host would
    const auto volume = read_device("m0", 0, kVolBytes);
    destroy();
    ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await env_->registry->destroy("pc", true); }).ok());
    // Power back: the same blocks, a new device over them, a new nexus over all three children.
    ASSERT_TRUE(env_->create(pc_uri).ok());
    ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1), child_uri("pc", 2)}, key).ok());
    if (info().children[2].sync == SyncState::kSynced) {
      ++made_current;
      ASSERT_TRUE(read_device("m2", 0, kVolBytes) == volume) << "a stale child was taken as current";
    } else {
      ++rebuilt_after;
      ASSERT_TRUE(eventually([&] { return info().children[2].sync == SyncState::kSynced; }));
      ASSERT_TRUE(read_device("m2", 0, kVolBytes) == volume);
    }
    destroy();
    ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await env_->registry->destroy("pc", true); }).ok());
    if (cut > 1 && !was_cut) break;  // past the last write
  }
  EXPECT_GT(total, 10u);
  EXPECT_GT(made_current, 0);   // the dry run, at least
  EXPECT_GT(rebuilt_after, 0);  // the cuts
}


// ---------------------------------------------------------------------------------------------------
// Activity log, dirty bitmaps, partial rebuild, reconcile

// The newest activity-log transaction and slot table on a child's device.
AlTransaction newest_al(std::vector<uint8_t> ring) {
  AlTransaction best;
  for (size_t i = 0; i + 4096 <= ring.size(); i += 4096) {
    auto t = AlTransaction::Decode(ring.data() + i);
    if (t.ok() && t->sequence >= best.sequence) best = *t;
  }
  return best;
}

TEST(DirtyLogCodecs, TransactionsAndSlotTablesRoundTripAndRejectDamage) {
  AlTransaction t;
  t.nexus = *Uuid::Parse(kVol);
  t.sequence = 77;
  t.generation = 5;
  t.extents = {3, 1, 900};
  std::vector<uint8_t> b(4096);
  t.Encode(b.data());
  auto d = AlTransaction::Decode(b.data());
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->extents, t.extents);
  EXPECT_EQ(d->sequence, 77u);
  b[100] ^= 1;
  EXPECT_EQ(AlTransaction::Decode(b.data()).code(), Errc::kCorruption);
  std::fill(b.begin(), b.end(), 0);
  EXPECT_EQ(AlTransaction::Decode(b.data()).code(), Errc::kNoEnt);
  SlotTable st;
  st.nexus = t.nexus;
  st.sequence = 9;
  st.entries[2] = {*Uuid::Parse(kC[2]), 4, 16, true, 123};
  st.Encode(b.data());
  auto ds = SlotTable::Decode(b.data());
  ASSERT_TRUE(ds.ok()) << ds.status();
  EXPECT_EQ(ds->entries[2], st.entries[2]);
  EXPECT_FALSE(ds->entries[0].valid);
  b[64 + 2 * 64 + 24] = 30;  // a region shift out of range, checksum fixed: still refused
  store_le<uint32_t>(b.data() + 4092, crc32c(b.data(), 4092));
  EXPECT_EQ(SlotTable::Decode(b.data()).code(), Errc::kCorruption);
  // Bitmap pages: one bit per region, little-endian words; nothing past the volume is taken.
  DirtyBitmap bm(5 << 16, 16);
  bm.mark(65536 + 10, 1);
  bm.mark(4 << 16, 4096);
  EXPECT_EQ(bm.dirty_regions(), 2u);
  std::vector<uint8_t> page(4096);
  bm.copy_page(0, page.data());
  EXPECT_EQ(page[0], 0x12);
  DirtyBitmap other(5 << 16, 16);
  page[0] = 0xff;
  other.or_page(0, page.data());
  EXPECT_EQ(other.dirty_regions(), 5u);  // 8 bits set, 5 regions in the volume
}

TEST_F(NexusTest, TheActivityLogNamesAColdExtentOnceAndEvictsTheLeastUsed) {
  al_extents_ = 1;  // an 8 MiB volume has two 4 MiB extents: they take turns
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}).ok());
  const uint64_t t0 = info().log.transactions;
  ASSERT_EQ(write(0, pattern(4096, 1)), Errc::kOk);
  EXPECT_EQ(info().log.transactions, t0 + 1);
  for (int i = 1; i < 5; ++i) ASSERT_EQ(write(8 * i, pattern(4096, 1 + i)), Errc::kOk);
  EXPECT_EQ(info().log.transactions, t0 + 1);  // hot: no log write
  ASSERT_EQ(write((4 << 20) / 512, pattern(4096, 9)), Errc::kOk);  // the other extent: extent 0 leaves
  NexusInfo i = info();
  EXPECT_EQ(i.log.transactions, t0 + 2);
  EXPECT_EQ(i.log.evictions, 1u);
  EXPECT_EQ(i.log.hot_extents, 1u);
  const Layout& l = nx_->layout();
  for (const char* dev : {"m0", "m1"}) {
    AlTransaction t = newest_al(read_device(dev, l.activity_log / 512, Layout::kActivityLogSize));
    EXPECT_EQ(t.extents, std::vector<uint32_t>{1u}) << dev;
  }
  // A clean shutdown leaves an empty log: nothing to reconcile next time.
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->shutdown_nexus(); }).ok());
  EXPECT_TRUE(newest_al(read_device("m0", l.activity_log / 512, Layout::kActivityLogSize)).extents.empty());
  destroy();
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}).ok());
  EXPECT_EQ(info().log.reconciled_bytes, 0u);
}

TEST_F(NexusTest, AChildThatLeftInSyncIsRebuiltFromItsDirtyRegionsOnly) {
  auto_rebuild_ = true;
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1), child_uri("e2", 2)}, "vol/p").ok());
  for (uint64_t lba = 0; lba < kVolBytes / 512; lba += 2048) ASSERT_EQ(write(lba, pattern(1 << 20, lba)), Errc::kOk);
  const Uuid c2 = *Uuid::Parse(kC[2]);
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->fault_child(c2, FaultReason::kOffline); }).ok());
  // Three writes in three 64 KiB regions (two in one extent, one in the other); one more into a region
  // already marked costs nothing.
  for (uint64_t lba : {uint64_t(0), uint64_t(1000), uint64_t(9000), uint64_t(8)}) {
    ASSERT_EQ(write(lba, pattern(4096, 500 + lba)), Errc::kOk);
  }
  NexusInfo i = info();
  EXPECT_TRUE(i.children[2].tracked);
  EXPECT_EQ(i.children[2].dirty_bytes, 3u * 65536);
  EXPECT_EQ(i.children[2].tracked_since_gen + 1, i.generation);
  // Its slot is on the in-sync children's disks.
  const Layout& l = nx_->layout();
  auto tables = read_device("m0", (l.meta_offset + 8192) / 512, 8192);
  bool found = false;
  for (int k = 0; k < 2; ++k) {
    auto t = SlotTable::Decode(tables.data() + k * 4096);
    if (!t.ok()) continue;
    for (auto& e : t->entries) found |= e.valid && e.child == c2 && e.base_gen == i.children[2].tracked_since_gen;
  }
  EXPECT_TRUE(found);
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->online_child(c2); }).ok());
  ASSERT_TRUE(eventually([&] { return info().children[2].sync == SyncState::kSynced; }));
  i = info();
  ASSERT_TRUE(i.children[2].rebuild);
  EXPECT_EQ(i.children[2].rebuild->kind, RebuildKind::kPartial) << i.children[2].rebuild->reason;
  EXPECT_EQ(i.children[2].rebuild->copied_bytes + i.children[2].rebuild->skipped_bytes, 3u * 65536);
  EXPECT_FALSE(i.children[2].tracked);  // current: its log is gone
  EXPECT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
  // A child without a log (added new) is rebuilt in full, and says why.
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->add_child(child_uri("e3", 3)); }).ok());
  ASSERT_TRUE(eventually([&] { return info().children[3].sync == SyncState::kSynced; }));
  EXPECT_EQ(info().children[3].rebuild->kind, RebuildKind::kFull);
  EXPECT_NE(info().children[3].rebuild->reason.find("new to the volume"), std::string::npos);
}

TEST_F(NexusTest, DirtyRegionsOutliveTheNexusAndAnUncleanStopReconcilesOnlyTheLog) {
  auto_rebuild_ = true;
  al_extents_ = 1;
  const Uuid c2 = *Uuid::Parse(kC[2]);
  auto three = [&] { return std::vector<std::string>{child_uri("e0", 0), child_uri("e1", 1), child_uri("e2", 2)}; };
  auto fault2 = [&] {
    ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->fault_child(c2, FaultReason::kOffline); }).ok());
  };
  ASSERT_TRUE(create(three(), "vol/r").ok());
  for (uint64_t lba = 0; lba < kVolBytes / 512; lba += 2048) ASSERT_EQ(write(lba, pattern(1 << 20, lba)), Errc::kOk);
  fault2();
  // Extent 0 then extent 1: extent 0's bits reach the disk when it leaves the log.
  ASSERT_EQ(write(16, pattern(4096, 1)), Errc::kOk);
  ASSERT_EQ(write(9000, pattern(4096, 2)), Errc::kOk);
  // 1. Clean: the next nexus finds the bitmap and nothing to reconcile.
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await nx_->shutdown_nexus(); }).ok());
  destroy();
  ASSERT_TRUE(create(three(), "vol/r").ok());
  EXPECT_EQ(info().log.reconciled_bytes, 0u);
  ASSERT_TRUE(eventually([&] { return info().children[2].sync == SyncState::kSynced; }));
  auto rb = *info().children[2].rebuild;
  EXPECT_EQ(rb.kind, RebuildKind::kPartial) << rb.reason;
  EXPECT_EQ(rb.dirty_bytes, 2u * 65536);
  EXPECT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
  // 2. Unclean (the nexus goes without shutting down): the log's extent is reconciled between the
  //    children and folded into the absent child's bitmap; the rest of the volume is not touched.
  fault2();
  ASSERT_EQ(write(24, pattern(4096, 3)), Errc::kOk);     // extent 0 (its bits: on disk at the eviction below)
  ASSERT_EQ(write(12000, pattern(4096, 4)), Errc::kOk);  // extent 1: hot at the stop, its bit only in memory
  // A write that reached one in-sync child only (the other's copy is damaged behind the nexus's back, as
  // a write in flight at the crash would leave it).
  {
    auto d = env_->open("m1");
    ASSERT_TRUE(d.ok());
    AlignedBuffer junk(4096, 4096);
    std::memset(junk.data(), 0xee, 4096);
    ASSERT_EQ(test::io_sync(*env_->set, 0, **d, IoType::kWrite, junk.data(), 12100, 8), Errc::kOk);
    env_->close(*d);
  }
  destroy();
  ASSERT_TRUE(create(three(), "vol/r").ok());
  NexusInfo i = info();
  EXPECT_EQ(i.log.reconciled_bytes, 4u << 20);  // one extent, not the volume
  EXPECT_TRUE(read_device("m1", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
  ASSERT_TRUE(eventually([&] { return info().children[2].sync == SyncState::kSynced; }));
  rb = *info().children[2].rebuild;
  EXPECT_EQ(rb.kind, RebuildKind::kPartial) << rb.reason;
  EXPECT_EQ(rb.dirty_bytes, (4u << 20) + 65536);  // the log's extent and extent 0's marked region
  EXPECT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
}

TEST_F(NexusTest, AVerifiedRebuildReadsEverySegmentBackAndFaultsADestinationThatDiffers) {
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1)}, "vol/v").ok());
  for (uint64_t lba = 0; lba < kVolBytes / 512; lba += 2048) ASSERT_EQ(write(lba, pattern(1 << 20, lba + 3)), Errc::kOk);
  auto op = [&](auto fn) { return env_->on_primary([&]() -> Task<Status> { co_return co_await fn(); }); };
  ASSERT_TRUE(op([&] { return nx_->add_child(child_uri("e2", 2)); }).ok());
  const Uuid c2 = *Uuid::Parse(kC[2]);
  RebuildOptions v = rebuild_opts_;
  v.verify = true;
  // The destination returns one flipped bit on a read-back: the rebuild fails and faults it.
  rule(2, "op=read,kind=corrupt,count=1");
  ASSERT_TRUE(op([&] { return nx_->start_rebuild(c2, v); }).ok());
  ASSERT_TRUE(eventually([&] { auto c = info().children[2]; return c.rebuild && c.rebuild->finished(); }));
  ChildInfo c = info().children[2];
  EXPECT_EQ(c.rebuild->state, RebuildState::kFailed);
  EXPECT_NE(c.rebuild->error.find("verify"), std::string::npos) << c.rebuild->error;
  ASSERT_TRUE(eventually([&] { return info().children[2].state == ChildState::kFaulted; }));
  EXPECT_EQ(info().children[2].reason, FaultReason::kRebuildFailed);
  // A good destination: every byte read back and equal.
  rule(2, "");
  ASSERT_TRUE(op([&] { return nx_->online_child(c2); }).ok());
  ASSERT_TRUE(op([&] { return nx_->start_rebuild(c2, v); }).ok());
  ASSERT_TRUE(eventually([&] { return info().children[2].sync == SyncState::kSynced; }));
  c = info().children[2];
  EXPECT_EQ(c.rebuild->verified_bytes, c.rebuild->copied_bytes + c.rebuild->skipped_bytes);
  EXPECT_EQ(c.rebuild->verified_bytes, kVolBytes);
  EXPECT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m0", 0, kVolBytes));
}

TEST_F(NexusTest, TheActivityLogKeepsUpWithConcurrentWritesToMoreExtentsThanItHolds) {
  al_extents_ = 1;  // every write to the other extent evicts: barriers under load
  ASSERT_TRUE(create({child_uri("e0", 0), child_uri("e1", 1), child_uri("e2", 2)}).ok());
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20; ++round) {
    std::vector<std::unique_ptr<Pending>> ps;
    for (int i = 0; i < 16; ++i) {
      ps.push_back(std::make_unique<Pending>());
      start_write(ps.back().get(), (rng() % (kVolBytes / 4096)) * 8, i % 2);  // both reactors
    }
    for (auto& p : ps) {
      ASSERT_TRUE(eventually([&] { return p->done.load(); }, 20'000)) << "a write is stuck in round " << round;
      EXPECT_EQ(p->status.load(), 0);
    }
  }
  EXPECT_GT(info().log.evictions, 10u);
}

// A power cut at every write of a workload on the nexus's node: the local child loses what its cache
// held, the nexus dies with it, the remote children keep everything they acknowledged. Another child has
// been away all along. The next nexus reconciles the log's extents, keeps every acknowledged (flushed)
// write, and rebuilds the absent child from its dirty regions to the same data.
TEST_F(NexusTest, APowerCutAtEveryWriteKeepsTheLogsTrustworthy) {
  auto_rebuild_ = true;
  al_extents_ = 1;  // an eviction (barrier, bitmap page, transaction) at every change of extent
  auto op = [&](auto fn) { return env_->on_primary([&]() -> Task<Status> { co_return co_await fn(); }); };
  ASSERT_TRUE(env_->on_primary([&]() -> Task<Status> { co_return co_await env_->registry->destroy("e0"); }).ok());
  const std::string pc_uri = fmt::format("powercut:///pc?base=m0&uuid={}", kC[0]);
  const Uuid c2 = *Uuid::Parse(kC[2]);
  auto children = [&] { return std::vector<std::string>{child_uri("pc", 0), child_uri("e1", 1), child_uri("e2", 2)}; };
  uint64_t total = 0;
  int cuts = 0;
  for (uint64_t cut = 0;; ++cut) {
    SCOPED_TRACE(fmt::format("cut at write {}", cut));
    for (const char* m : {"m0", "m1", "m2"}) {
      auto d = env_->open(m);
      ASSERT_TRUE(d.ok());
      AlignedBuffer z(1 << 20, 4096, true);
      for (uint64_t off = 0; off < required_child_bytes(kVolBytes); off += 1 << 20) {
        ASSERT_EQ(test::io_sync(*env_->set, 0, **d, IoType::kWrite, z.data(), off / 512, (1 << 20) / 512), Errc::kOk);
      }
      env_->close(*d);
    }
    ASSERT_TRUE(env_->create(pc_uri).ok());
    auto* pc = static_cast<PowerCutBdev*>(env_->registry->find("pc"));
    const std::string key = fmt::format("vol/al{}", cut);
    ASSERT_TRUE(create(children(), key).ok());
    ASSERT_TRUE(op([&] { return nx_->fault_child(c2, FaultReason::kOffline); }).ok());
    const uint64_t base = pc->events();
    env_->on_primary([&] { pc->arm(total ? base + cut : PowerCutBdev::kNever, 0.5, cut + 1); });
    // The workload: writes alternating between the two extents, each flushed (acknowledged = durable).
    std::map<uint64_t, uint64_t> acked;  // lba -> seed of the last acknowledged write
    std::optional<std::pair<uint64_t, uint64_t>> in_flight;
    std::mt19937_64 rng(cut);
    for (int w = 0; w < 12 && !pc->is_cut(); ++w) {
      const uint64_t lba = uint64_t(w % 2) * ((4 << 20) / 512) + (rng() % 1000) * 8;
      const uint64_t seed = 10'000 + w;
      in_flight = {lba, seed};
      if (write(lba, pattern(4096, seed)) != Errc::kOk) break;
      if (test::io_sync(*env_->set, 1, *desc_, IoType::kFlush, nullptr, 0, 0) != Errc::kOk) break;
      acked[lba] = seed;
      in_flight.reset();
    }
    const bool was_cut = pc->is_cut();
    if (!was_cut) {
      if (total == 0) total = pc->events() - base;  // the dry run: how many writes the workload takes
      env_->on_primary([&] { pc->cut(0.5, cut + 1); });  // the crash comes after the workload
    }
    destroy();  // the nexus dies (no clean shutdown)
    ASSERT_TRUE(op([&] { return env_->registry->destroy("pc", true); }).ok());
    ASSERT_TRUE(env_->create(pc_uri).ok());
    ASSERT_TRUE(create(children(), key).ok());
    // In-sync children agree (the log's extents were reconciled before any host I/O).
    const auto vol = read_device("m1", 0, kVolBytes);
    NexusInfo i = info();
    if (i.children[0].sync == SyncState::kSynced) {
      ASSERT_TRUE(read_device("m0", 0, kVolBytes) == vol) << "in-sync children differ after reconcile";
    }
    // Every acknowledged write is there; the one in flight is old or new.
    for (auto [lba, seed] : acked) {
      auto got = read(lba, 4096);
      ASSERT_TRUE(got.ok());
      const bool old_or_new = in_flight && in_flight->first == lba &&
                              (*got == pattern(4096, in_flight->second) || *got == pattern(4096, seed));
      ASSERT_TRUE(*got == pattern(4096, seed) || old_or_new) << "lost an acknowledged write at " << lba;
    }
    // The absent child: rebuilt from its dirty regions to the same data.
    ASSERT_TRUE(eventually([&] { return info().children[2].sync == SyncState::kSynced; }));
    auto rb = *info().children[2].rebuild;
    EXPECT_EQ(rb.kind, RebuildKind::kPartial) << rb.reason;
    ASSERT_TRUE(read_device("m2", 0, kVolBytes) == read_device("m1", 0, kVolBytes)) << "the partial rebuild missed a write";
    destroy();
    ASSERT_TRUE(op([&] { return env_->registry->destroy("pc", true); }).ok());
    cuts += was_cut;
    if (total && cut >= total) break;
  }
  EXPECT_GT(total, 20u);
  EXPECT_GT(cuts, 20);
}

}  // namespace
}  // namespace tern::nexus
