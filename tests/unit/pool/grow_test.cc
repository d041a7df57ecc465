// Pool grow: a file under a pool gets bigger; the pool takes the new space (backup label first), keeps
// every replica, refuses what its metadata areas cannot hold, and a power cut at any write of the grow
// leaves the old pool or the grown one.
#include <gtest/gtest.h>

#include <filesystem>

#include "bdev/fault_bdevs.h"
#include "pool_env.h"

namespace tern::pool {
namespace {

using namespace test_env;
using test::TempDir;

Result<PoolStats> grow(PoolFixture& t) {
  return t.env.on_primary([&]() -> Task<Result<PoolStats>> { co_return co_await t.pool->Grow(); });
}

TEST(PoolGrow, TakesTheNewSpaceOfAGrownFile) {
  TempDir dir;
  const std::string img = dir.make_file("pool.img", 64 * kMiB);
  PoolFixture t(2, "uring://" + img, img, 4 * kMiB);
  ASSERT_TRUE(t.pool);
  const PoolStats before = t.pool->stats();
  auto thick = t.replica("thick", before.capacity, false);  // the whole pool
  {
    auto d = t.expose_and_open(thick.uuid);
    ASSERT_EQ(t.write_seed(*d, 0, 4 * kMiB, 1), Errc::kOk);
    t.env.close(d);
  }
  EXPECT_EQ(t.try_replica("more", 16 * kMiB, false).code(), Errc::kNoSpc);
  // Nothing to add yet: the same stats.
  auto same = grow(t);
  ASSERT_TRUE(same.ok()) << same.status();
  EXPECT_EQ(same->capacity, before.capacity);
  std::filesystem::resize_file(img, 128 * kMiB);
  auto grown = grow(t);
  ASSERT_TRUE(grown.ok()) << grown.status();
  EXPECT_EQ(grown->capacity, before.capacity + 64 * kMiB);
  EXPECT_EQ(t.pool->superblock().pool_size, 128 * kMiB);
  auto more = t.replica("more", 60 * kMiB, false);
  {
    auto d = t.expose_and_open(more.uuid);
    ASSERT_EQ(t.write_seed(*d, 56 * kMiB, 4 * kMiB, 2), Errc::kOk);
    t.env.close(d);
  }
  // A clean export and import, and a crash and import, keep the grown pool.
  ASSERT_TRUE(t.export_pool().ok());
  ASSERT_TRUE(t.import().ok());
  EXPECT_EQ(t.pool->stats().capacity, grown->capacity);
  t.crash();
  ASSERT_TRUE(t.import().ok());
  EXPECT_EQ(t.pool->stats().capacity, grown->capacity);
  auto d = t.expose_and_open(thick.uuid);
  EXPECT_TRUE(t.read(*d, 0, 4 * kMiB) == pattern(4 * kMiB, 1));
  t.env.close(d);
  auto d2 = t.expose_and_open(more.uuid);
  EXPECT_TRUE(t.read(*d2, 56 * kMiB, 4 * kMiB) == pattern(4 * kMiB, 2));
  t.env.close(d2);
  // Far beyond what the metadata areas were sized for: refused, with what to do.
  std::filesystem::resize_file(img, 64 * 1024 * kMiB);
  auto big = grow(t);
  EXPECT_EQ(big.code(), Errc::kNoSpc) << big.status();
  EXPECT_NE(big.status().message().find("create a new pool"), std::string::npos) << big.status();
  EXPECT_EQ(t.pool->stats().capacity, grown->capacity);
}

TEST(PoolGrow, ADeviceThatCannotGrowIsLeftAlone) {
  PoolFixture t;
  const PoolStats before = t.pool->stats();
  auto g = grow(t);
  ASSERT_TRUE(g.ok()) << g.status();
  EXPECT_EQ(g->capacity, before.capacity);
}

// A power cut at every device write of a grow (the base file is what survives): the pool imports, at
// its old size or its new one, with the replica's flushed data intact.
TEST(PoolGrow, PowerCutAtEveryWrite) {
  TempDir dir;
  auto run = [&](uint64_t cut_at, double persist, uint64_t* events_before, uint64_t* events_after) {
    const std::string img = dir.make_file("pool.img", 64 * kMiB);
    PoolFixture t(1, "uring://" + img, img, 4 * kMiB, false);
    ASSERT_TRUE(t.env.create(fmt::format("powercut:///pc?base={}", img)).ok());
    t.device = "pc";
    Status c = t.create(4 * kMiB);
    ASSERT_TRUE(c.ok()) << c;
    auto r = t.replica("r", 8 * kMiB, false);
    {
      auto d = t.expose_and_open(r.uuid);
      ASSERT_EQ(t.write_seed(*d, 0, 8 * kMiB, 3), Errc::kOk);
      ASSERT_EQ(t.op(*d, IoType::kFlush, 0, 0), Errc::kOk);
      t.env.close(d);
    }
    auto* pc = dynamic_cast<PowerCutBdev*>(t.env.registry->find("pc"));
    if (events_before) *events_before = pc->events();
    if (cut_at != PowerCutBdev::kNever) t.env.on_primary([&] { pc->arm(cut_at, persist, cut_at + 5); });
    std::filesystem::resize_file(img, 96 * kMiB);
    auto g = grow(t);
    if (events_after) *events_after = pc->events();
    const bool acknowledged = g.ok();
    t.crash();
    ASSERT_TRUE(t.env.destroy("pc").ok());
    t.device = img;
    Status s = t.import();
    ASSERT_TRUE(s.ok()) << s;
    const uint64_t cap = t.pool->stats().capacity;
    const uint64_t old_cap = (64 * kMiB - t.pool->superblock().data_offset - 4096) / (4 * kMiB) * 4 * kMiB;
    if (acknowledged) {
      EXPECT_GT(cap, old_cap) << "an acknowledged grow was lost";
    } else {
      EXPECT_TRUE(cap == old_cap || cap > old_cap);
    }
    auto d = t.expose_and_open(r.uuid);
    EXPECT_TRUE(t.read(*d, 0, 8 * kMiB) == pattern(8 * kMiB, 3));
    t.env.close(d);
    (void)t.export_pool();
    std::filesystem::remove(img);
  };
  uint64_t before = 0, after = 0;
  run(PowerCutBdev::kNever, 0, &before, &after);
  ASSERT_GT(after, before);
  for (uint64_t at = before; at <= after; ++at) {
    for (double persist : {0.0, 0.5, 1.0}) {
      SCOPED_TRACE(::testing::Message() << "cut at event " << at << " (grow is " << before << ".." << after
                                        << "), persist " << persist);
      run(at, persist, nullptr, nullptr);
    }
  }
}

}  // namespace
}  // namespace tern::pool
