// The metadata log: group commit, replay in order, wrap-around with checkpoints, a full ring, and a power
// cut at every write: what recovery returns is a prefix of what was appended that contains every
// acknowledged record.
#include "pool/metalog.h"

#include <gtest/gtest.h>

#include <cstring>

#include "bdev/fault_bdevs.h"
#include "common/aligned_buffer.h"
#include "test_util.h"

namespace tern::pool {
namespace {

using test::DeviceEnv;

constexpr uint64_t kMiB = uint64_t(1) << 20;

std::vector<uint8_t> record_for(uint64_t i, size_t size) {
  std::vector<uint8_t> r(std::max<size_t>(size, 8));
  std::memcpy(r.data(), &i, 8);
  for (size_t k = 8; k < r.size(); ++k) r[k] = uint8_t(i * 31 + k);
  return r;
}
uint64_t id_of(std::span<const uint8_t> r) {
  uint64_t i = 0;
  if (r.size() >= 8) std::memcpy(&i, r.data(), 8);
  return i;
}
std::vector<uint8_t> encode_ids(const std::vector<uint64_t>& ids) {
  std::vector<uint8_t> b(ids.size() * 8);
  if (!ids.empty()) std::memcpy(b.data(), ids.data(), b.size());
  return b;
}
std::vector<uint64_t> decode_ids(const std::vector<uint8_t>& b) {
  std::vector<uint64_t> ids(b.size() / 8);
  if (!ids.empty()) std::memcpy(ids.data(), b.data(), ids.size() * 8);
  return ids;
}

struct LogEnv {
  DeviceEnv env{1};
  Superblock sb;
  std::unique_ptr<BdevDesc> desc;
  std::unique_ptr<MetaLog> log;

  explicit LogEnv(const std::string& device_uri = "", const std::string& name = "d0") {
    EXPECT_TRUE(env.create("malloc:///d0?size_mb=64").ok());
    if (!device_uri.empty()) {
      EXPECT_TRUE(env.create(device_uri).ok());
    }
    auto l = make_layout("p", Uuid::Generate(), 64 * kMiB, 4 * kMiB);
    EXPECT_TRUE(l.ok());
    sb = *l;
    open(name);
  }
  void open(const std::string& name) {
    auto d = env.open(name);
    ASSERT_TRUE(d.ok()) << d.status();
    desc = std::move(*d);
    log = std::make_unique<MetaLog>(*desc, sb);
  }
  void close() {
    env.on_primary([&] {
      log.reset();
      desc.reset();
    });
  }
  Status format() {
    return env.on_primary([&]() -> Task<Status> { co_return co_await log->Format(); });
  }
  // Appends records first..first+n-1 of `size` bytes, `parallel` at a time (group commit); returns the
  // ids acknowledged, and the first error.
  std::pair<std::vector<uint64_t>, Status> append(uint64_t first, uint64_t n, size_t size, unsigned parallel = 8) {
    std::vector<uint64_t> acked;
    Status err;
    env.on_primary([&]() -> Task<void> {
      uint64_t next = first, running = 0;
      auto one = [](MetaLog* log, uint64_t id, size_t size, std::vector<uint64_t>* acked, Status* err,
                    uint64_t* running) -> Task<void> {
        std::vector<uint8_t> r = record_for(id, size);
        Status s = co_await log->Append(r);
        if (s.ok()) {
          acked->push_back(id);
        } else if (err->ok()) {
          *err = s;
        }
        --*running;
      };
      while (running || (next < first + n && err.ok())) {
        while (running < parallel && next < first + n && err.ok()) {
          ++running;
          spawn(one(log.get(), next++, size, &acked, &err, &running));
        }
        co_await Reactor::yield();
      }
    });
    return {acked, err};
  }
  Status checkpoint(const std::vector<uint64_t>& state) {
    std::vector<uint8_t> body = encode_ids(state);
    return env.on_primary([&]() -> Task<Status> { co_return co_await log->WriteCheckpoint(body); });
  }
  // Recovers: the checkpoint's ids followed by the replayed ones.
  Result<std::vector<uint64_t>> recover() {
    std::vector<uint64_t> replayed;
    const std::function<Status(const Checkpoint&)> load = [](const Checkpoint&) { return Status::Ok(); };
    const std::function<Status(std::span<const uint8_t>)> apply = [&](std::span<const uint8_t> r) {
      replayed.push_back(id_of(r));
      return Status::Ok();
    };
    auto c = env.on_primary([&]() -> Task<Result<Checkpoint>> { co_return co_await log->Recover(load, apply); });
    if (!c.ok()) return c.status();
    std::vector<uint64_t> all = decode_ids(c->body);
    all.insert(all.end(), replayed.begin(), replayed.end());
    return all;
  }
};

TEST(MetaLog, AppendedRecordsReplayInOrderAndBatchTogether) {
  LogEnv t;
  ASSERT_TRUE(t.format().ok());
  auto [acked, err] = t.append(0, 500, 100, 16);
  ASSERT_TRUE(err.ok()) << err;
  ASSERT_EQ(acked.size(), 500u);
  EXPECT_LT(t.log->position().seq - 1, 500u) << "concurrent appends should share batches";
  t.close();
  t.open("d0");
  auto got = t.recover();
  ASSERT_TRUE(got.ok()) << got.status();
  std::vector<uint64_t> want(500);
  for (uint64_t i = 0; i < 500; ++i) want[i] = i;
  EXPECT_EQ(*got, want);
  // Appending continues where replay stopped.
  auto more = t.append(500, 10, 100, 1);
  ASSERT_TRUE(more.second.ok());
  t.close();
  t.open("d0");
  auto again = t.recover();
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->size(), 510u);
  EXPECT_EQ(again->back(), 509u);
}

TEST(MetaLog, WrapsAroundTheRingWithCheckpoints) {
  LogEnv t;
  ASSERT_TRUE(t.format().ok());
  std::vector<uint64_t> state;
  uint64_t id = 0;
  for (int round = 0; round < 12; ++round) {
    auto [acked, err] = t.append(id, 40, 20000, 4);  // ~0.8 MiB per round, ring of 1 MiB
    ASSERT_TRUE(err.ok()) << "round " << round << ": " << err;
    state.insert(state.end(), acked.begin(), acked.end());
    id += 40;
    ASSERT_TRUE(t.checkpoint(state).ok());
    EXPECT_EQ(t.log->used(), 0u);
  }
  auto tail = t.append(id, 7, 20000, 1);
  ASSERT_TRUE(tail.second.ok());
  state.insert(state.end(), tail.first.begin(), tail.first.end());
  t.close();
  t.open("d0");
  auto got = t.recover();
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, state);
}

TEST(MetaLog, AFullRingRefusesAppendsUntilACheckpoint) {
  LogEnv t;
  ASSERT_TRUE(t.format().ok());
  auto [acked, err] = t.append(0, 200, 20000, 1);
  EXPECT_FALSE(err.ok());
  EXPECT_EQ(err.code(), Errc::kNoSpc) << err;
  EXPECT_NE(err.message().find("metadata log is full"), std::string::npos) << err;
  ASSERT_TRUE(t.checkpoint(acked).ok());
  auto after = t.append(1000, 5, 20000, 1);
  EXPECT_TRUE(after.second.ok()) << after.second;
}

// Flips one bit of the device at byte `offset` (through the log's own descriptor).
void flip_bit(LogEnv& t, uint64_t offset) {
  AlignedBuffer b(4096);
  const uint64_t block = offset / 4096 * 4096;
  ASSERT_EQ(test::io_sync(*t.env.set, 0, *t.desc, IoType::kRead, b.data(), block / 512, 8), Errc::kOk);
  b.data()[offset - block] ^= 0x10;
  ASSERT_EQ(test::io_sync(*t.env.set, 0, *t.desc, IoType::kWrite, b.data(), block / 512, 8), Errc::kOk);
}

TEST(MetaLog, DamageInTheMiddleOfTheLogIsRefusedNotTruncated) {
  LogEnv t;
  ASSERT_TRUE(t.format().ok());
  for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(t.append(i, 1, 100, 1).second.ok());  // five batches of 4 KiB
  flip_bit(t, t.sb.log_offset + 2 * 4096 + 100);  // inside batch 3's payload
  t.close();
  t.open("d0");
  auto got = t.recover();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.code(), Errc::kCorruption);
  EXPECT_NE(got.status().message().find("log batch 3 at ring offset 8192 is damaged but batch 4 after it is intact"),
            std::string::npos)
      << got.status();
}

TEST(MetaLog, DamagedCheckpointBodyIsRefused) {
  LogEnv t;
  ASSERT_TRUE(t.format().ok());
  ASSERT_TRUE(t.checkpoint({1, 2, 3, 4, 5}).ok());  // generation 2, in area B
  flip_bit(t, t.sb.checkpoint_b + 4096 + 9);
  t.close();
  t.open("d0");
  auto got = t.recover();
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.code(), Errc::kCorruption);
  EXPECT_NE(got.status().message().find("checkpoint B"), std::string::npos) << got.status();
  EXPECT_NE(got.status().message().find("body checksum mismatch"), std::string::npos) << got.status();
}

// A damaged checkpoint header is refused too: falling back to the other, older checkpoint would roll
// the pool back silently.
TEST(MetaLog, DamagedCheckpointHeaderIsRefused) {
  for (uint64_t field : {uint64_t(30), uint64_t(1)}) {  // the generation (CRC fails), the magic ("no header")
    LogEnv t;
    ASSERT_TRUE(t.format().ok());
    ASSERT_TRUE(t.checkpoint({7, 8}).ok());  // generation 2, in area B
    ASSERT_TRUE(t.append(0, 3, 100, 1).second.ok());
    flip_bit(t, t.sb.checkpoint_b + field);
    t.close();
    t.open("d0");
    auto got = t.recover();
    ASSERT_FALSE(got.ok()) << "byte " << field;
    EXPECT_EQ(got.code(), Errc::kCorruption);
    EXPECT_NE(got.status().message().find("checkpoint B"), std::string::npos) << got.status();
  }
}

// A cut at every device event of: format, appends (group-committed), checkpoint, more appends, a
// checkpoint, appends. Whatever survives, recovery returns a prefix of the appended sequence that holds
// every acknowledged record; it never errs.
TEST(MetaLog, PowerCutAtEveryWrite) {
  auto workload = [](LogEnv& t, std::vector<uint64_t>& acked_all) {
    if (!t.format().ok()) return;
    std::vector<uint64_t> state;
    for (int round = 0; round < 3; ++round) {
      auto [acked, err] = t.append(uint64_t(round) * 100, 30, round == 1 ? 9000 : 300, 6);
      state.insert(state.end(), acked.begin(), acked.end());
      acked_all.insert(acked_all.end(), acked.begin(), acked.end());
      if (!err.ok()) return;
      if (round < 2 && !t.checkpoint(state).ok()) return;
    }
  };
  uint64_t total = 0;
  {
    LogEnv t("powercut:///pc?base=d0", "pc");
    std::vector<uint64_t> acked;
    workload(t, acked);
    ASSERT_EQ(acked.size(), 90u);
    total = dynamic_cast<PowerCutBdev*>(t.env.registry->find("pc"))->events();
    t.close();
  }
  ASSERT_GT(total, 10u);
  for (uint64_t at = 0; at <= total; ++at) {
    for (double persist : {0.0, 0.5, 1.0}) {
      SCOPED_TRACE(::testing::Message() << "cut at event " << at << " of " << total << ", persist " << persist);
      LogEnv t(fmt::format("powercut:///pc?base=d0&cut_at={}&persist={}&seed={}", at, persist, at * 7 + 1), "pc");
      std::vector<uint64_t> acked;
      workload(t, acked);
      t.close();
      ASSERT_TRUE(t.env.destroy("pc").ok());
      t.open("d0");
      auto got = t.recover();
      if (!got.ok()) {
        // Only when the format itself never became durable: then nothing was acknowledged either.
        EXPECT_TRUE(acked.empty());
        EXPECT_EQ(got.code(), Errc::kCorruption);
        EXPECT_NE(got.status().message().find("has no valid header"), std::string::npos) << got.status();
        continue;
      }
      ASSERT_TRUE(got.ok()) << got.status();
      // A prefix of the appended order (ids 0..29, 100..129, 200..229) ...
      std::vector<uint64_t> order;
      for (uint64_t r = 0; r < 3; ++r)
        for (uint64_t i = 0; i < 30; ++i) order.push_back(r * 100 + i);
      ASSERT_LE(got->size(), order.size());
      for (size_t i = 0; i < got->size(); ++i) ASSERT_EQ((*got)[i], order[i]) << "position " << i;
      // ... that holds every acknowledged record.
      for (uint64_t a : acked) {
        ASSERT_NE(std::find(got->begin(), got->end(), a), got->end()) << "acknowledged record " << a << " lost";
      }
    }
  }
}

}  // namespace
}  // namespace tern::pool
