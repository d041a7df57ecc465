// Thick replicas as devices: requests land in the right clusters of the pool's device (also across a
// cluster boundary), reused clusters read as zeros, and an open replica cannot be removed.
#include <gtest/gtest.h>

#include <cstring>

#include "bdev/fault_bdevs.h"
#include "common/aligned_buffer.h"
#include "pool/pool.h"
#include "pool_env.h"
#include "test_util.h"

namespace tern::pool {
namespace {

using test::DeviceEnv;
using test::fill;
using test::io_sync;
using test_env::kMiB;
using Env = test_env::PoolFixture;

TEST(ReplicaIo, RequestsLandInTheReplicasClustersAcrossBoundaries) {
  Env t;
  auto a = t.replica("a", 4 * kMiB);
  auto b = t.replica("b", 12 * kMiB);
  ASSERT_EQ(b.map, (std::vector<uint32_t>{2, 3, 4}));
  auto d = t.expose_and_open(b.uuid);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->bdev().props().size_bytes(), 12 * kMiB);
  EXPECT_EQ(d->bdev().props().product, "replica");
  // 1 MiB starting 0.5 MiB before the end of the replica's first cluster, written on reactor 1.
  AlignedBuffer w(kMiB), r(kMiB);
  fill(w.data(), w.size(), 77);
  const uint64_t off = 3 * kMiB + kMiB / 2;
  ASSERT_EQ(io_sync(*t.env.set, 1, *d, IoType::kWrite, w.data(), off / 512, kMiB / 512), Errc::kOk);
  ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kRead, r.data(), off / 512, kMiB / 512), Errc::kOk);
  EXPECT_EQ(std::memcmp(w.data(), r.data(), kMiB), 0);
  // On the pool's device: physical cluster 1 at +3.5 MiB, then physical cluster 2 at +0.
  auto dev = t.env.open("d0", false);
  ASSERT_TRUE(dev.ok());
  const uint64_t data = t.pool->superblock().data_offset;
  AlignedBuffer p(kMiB / 2);
  ASSERT_EQ(io_sync(*t.env.set, 0, **dev, IoType::kRead, p.data(), (data + 4 * kMiB + off) / 512, kMiB / 1024),
            Errc::kOk);
  EXPECT_EQ(std::memcmp(p.data(), w.data(), kMiB / 2), 0);
  ASSERT_EQ(io_sync(*t.env.set, 0, **dev, IoType::kRead, p.data(), (data + 8 * kMiB) / 512, kMiB / 1024), Errc::kOk);
  EXPECT_EQ(std::memcmp(p.data(), w.data() + kMiB / 2, kMiB / 2), 0);
  t.env.close(*dev);
  // Flush and reset are accepted (reset does not reset the shared device).
  EXPECT_EQ(io_sync(*t.env.set, 0, *d, IoType::kFlush), Errc::kOk);
  EXPECT_EQ(io_sync(*t.env.set, 0, *d, IoType::kReset), Errc::kOk);
  t.env.close(d);
  (void)a;
}

TEST(ReplicaIo, ReusedClustersReadAsZerosAndOpenReplicasStay) {
  Env t;
  auto a = t.replica("a", 4 * kMiB);
  auto d = t.expose_and_open(a.uuid);
  ASSERT_TRUE(d);
  AlignedBuffer w(4 * kMiB), r(4 * kMiB);
  fill(w.data(), w.size(), 5);
  ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kWrite, w.data(), 0, 4 * kMiB / 512), Errc::kOk);
  // Open: neither the replica nor the pool can go.
  Status busy = t.destroy(a.uuid);
  EXPECT_EQ(busy.code(), Errc::kBusy) << busy;
  EXPECT_NE(busy.message().find("in use"), std::string::npos) << busy;
  t.env.close(d);
  ASSERT_TRUE(t.destroy(a.uuid).ok());
  EXPECT_EQ(t.env.registry->find(a.uuid.ToString()), nullptr) << "the bdev goes with the replica";
  // The next thick replica gets the same cluster and must not see a's data.
  auto c = t.replica("c", 4 * kMiB);
  ASSERT_EQ(c.map, a.map);
  auto dc = t.expose_and_open(c.uuid);
  ASSERT_TRUE(dc);
  ASSERT_EQ(io_sync(*t.env.set, 0, *dc, IoType::kRead, r.data(), 0, 4 * kMiB / 512), Errc::kOk);
  for (size_t i = 0; i < r.size(); ++i) ASSERT_EQ(r.data()[i], 0) << "old data visible at byte " << i;
  t.env.close(dc);
}

TEST(ReplicaIo, ExposeIsIdempotent) {
  Env t;
  auto thick = t.replica("k", 4 * kMiB);
  auto b1 = t.env.on_primary([&] { return t.pool->ExposeReplica(thick.uuid); });
  auto b2 = t.env.on_primary([&] { return t.pool->ExposeReplica(thick.uuid); });
  ASSERT_TRUE(b1.ok() && b2.ok());
  EXPECT_EQ(*b1, *b2);
  EXPECT_EQ(t.env.on_primary([&] { return t.pool->ExposeReplica(Uuid::Generate()); }).code(), Errc::kNoEnt);
}

// Thin: reads of never-written clusters are zeros without allocating; the first write allocates one
// cluster (zeroed: the rest of it reads as zeros even if an earlier replica used it); the allocation is
// durable before the write is acknowledged, so a crash right after keeps it.
TEST(ReplicaIo, ThinAllocatesOnFirstWriteOnly) {
  Env t;
  // Leave old data in the first clusters, then free them.
  auto old = t.replica("old", 8 * kMiB);
  {
    auto d = t.expose_and_open(old.uuid);
    AlignedBuffer w(8 * kMiB);
    fill(w.data(), w.size(), 3);
    ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kWrite, w.data(), 0, 8 * kMiB / 512), Errc::kOk);
    t.env.close(d);
    ASSERT_TRUE(t.destroy(old.uuid).ok());
  }
  auto thin = t.replica("thin", 40 * kMiB, true);
  auto d = t.expose_and_open(thin.uuid);
  ASSERT_TRUE(d);
  AlignedBuffer r(kMiB), w(4096);
  ASSERT_EQ(io_sync(*t.env.set, 1, *d, IoType::kRead, r.data(), 0, kMiB / 512), Errc::kOk);
  for (size_t i = 0; i < r.size(); ++i) ASSERT_EQ(r.data()[i], 0) << i;
  EXPECT_EQ(t.pool->stats().used, 0u) << "reads allocate nothing";
  fill(w.data(), w.size(), 9);
  const uint64_t off = 5 * kMiB + 8192;  // inside virtual cluster 1
  ASSERT_EQ(io_sync(*t.env.set, 1, *d, IoType::kWrite, w.data(), off / 512, 8), Errc::kOk);
  EXPECT_EQ(t.pool->stats().used, 4 * kMiB);
  ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kWrite, w.data(), (off + 4096) / 512, 8), Errc::kOk);
  EXPECT_EQ(t.pool->stats().used, 4 * kMiB) << "a second write into the cluster allocates nothing";
  AlignedBuffer c(4 * kMiB);
  ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kRead, c.data(), 4 * kMiB / 512, 4 * kMiB / 512), Errc::kOk);
  for (size_t i = 0; i < c.size(); ++i) {
    const size_t rel = i - (off - 4 * kMiB);
    const bool written = i >= off - 4 * kMiB && rel < 8192;
    ASSERT_EQ(c.data()[i], written ? w.data()[rel % 4096] : 0) << "byte " << i << " of the cluster";
  }
  t.env.close(d);
  // Crash (no export): the allocation was durable before the write was acknowledged.
  t.env.on_primary([&] { t.pool.reset(); });
  auto imported = t.env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
    co_return co_await Pool::Import(*t.env.registry, "d0");
  });
  ASSERT_FALSE(imported.ok()) << "the old replica bdev still holds the device: a dropped pool keeps it claimed";
  ASSERT_TRUE(t.env.destroy(thin.uuid.ToString()).ok());
  imported = t.env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
    co_return co_await Pool::Import(*t.env.registry, "d0");
  });
  ASSERT_TRUE(imported.ok()) << imported.status();
  t.pool = std::move(*imported);
  auto list = t.pool->ListReplicas();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(list[0].allocated_clusters(), 1u);
  auto d2 = t.expose_and_open(thin.uuid);
  ASSERT_EQ(io_sync(*t.env.set, 0, *d2, IoType::kRead, r.data(), off / 512, 8), Errc::kOk);
  EXPECT_EQ(std::memcmp(r.data(), w.data(), 4096), 0);
  t.env.close(d2);
}

// Pool full: the allocating write fails with ENOSPC, nothing else is affected, and writes work again
// once space is freed.
TEST(ReplicaIo, PoolFullFailsOnlyTheAllocatingWrite) {
  Env t;
  const uint64_t clusters = t.pool->superblock().data_clusters;
  auto filler = t.replica("filler", (clusters - 1) * 4 * kMiB);
  auto thin = t.replica("thin", 16 * kMiB, true);
  auto d = t.expose_and_open(thin.uuid);
  ASSERT_TRUE(d);
  AlignedBuffer w(4096), r(4096);
  fill(w.data(), w.size(), 4);
  ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kWrite, w.data(), 0, 8), Errc::kOk);  // the last free cluster
  EXPECT_EQ(io_sync(*t.env.set, 1, *d, IoType::kWrite, w.data(), 4 * kMiB / 512, 8), Errc::kNoSpc);
  // The allocated cluster still works, reads of the unallocated one give zeros.
  ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kWrite, w.data(), 8, 8), Errc::kOk);
  ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kRead, r.data(), 8, 8), Errc::kOk);
  EXPECT_EQ(std::memcmp(r.data(), w.data(), 4096), 0);
  ASSERT_EQ(io_sync(*t.env.set, 0, *d, IoType::kRead, r.data(), 4 * kMiB / 512, 8), Errc::kOk);
  EXPECT_EQ(r.data()[0], 0);
  ASSERT_TRUE(t.destroy(filler.uuid).ok());
  EXPECT_EQ(io_sync(*t.env.set, 1, *d, IoType::kWrite, w.data(), 4 * kMiB / 512, 8), Errc::kOk);
  t.env.close(d);
}

// Power cut after a thin write into a fresh cluster. Without the user's flush the data may be lost, but
// the cluster never shows anything but zeros or the data (its zeroing and map record were durable before
// the write was acknowledged); with the flush the data survives.
TEST(ReplicaIo, ThinAllocationSurvivesAPowerCut) {
  for (bool user_flush : {false, true}) {
    SCOPED_TRACE(user_flush ? "with flush" : "without flush");
    DeviceEnv env(1);
    ASSERT_TRUE(env.create("malloc:///d0?size_mb=64").ok());
    // Old data in the device region the thin replica will get.
    {
      auto raw = env.open("d0");
      AlignedBuffer junk(16 * kMiB);
      fill(junk.data(), junk.size(), 8);
      ASSERT_EQ(io_sync(*env.set, 0, **raw, IoType::kWrite, junk.data(), 4 * kMiB / 512, 16 * kMiB / 512), Errc::kOk);
      env.close(*raw);
    }
    auto pcb = env.create("powercut:///pc?base=d0");
    ASSERT_TRUE(pcb.ok());
    PoolCreateOptions o{"p1", std::nullopt, 4 * kMiB};
    auto pool = env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
      co_return co_await Pool::Create(*env.registry, "pc", o);
    });
    ASSERT_TRUE(pool.ok()) << pool.status();
    ReplicaCreateOptions ro{"thin", std::nullopt, 16 * kMiB, true};
    auto thin = env.on_primary([&]() -> Task<Result<ReplicaMeta>> { co_return co_await (*pool)->CreateReplica(ro); });
    ASSERT_TRUE(thin.ok());
    ASSERT_TRUE(env.on_primary([&] { return (*pool)->ExposeReplica(thin->uuid); }).ok());
    auto d = env.open(thin->uuid.ToString());
    ASSERT_TRUE(d.ok());
    AlignedBuffer w(4096);
    fill(w.data(), w.size(), 21);
    ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, w.data(), 16, 8), Errc::kOk);
    if (user_flush) {
      ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kFlush), Errc::kOk);
    }
    env.on_primary([&] { dynamic_cast<PowerCutBdev*>(*pcb)->cut(0.0, 1); });
    env.close(*d);
    ASSERT_TRUE(env.destroy(thin->uuid.ToString()).ok());
    env.on_primary([&] { pool->reset(); });
    ASSERT_TRUE(env.destroy("pc").ok());
    auto again = env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
      co_return co_await Pool::Import(*env.registry, "d0");
    });
    ASSERT_TRUE(again.ok()) << again.status();
    auto list = (*again)->ListReplicas();
    ASSERT_EQ(list.size(), 1u);
    EXPECT_EQ(list[0].allocated_clusters(), 1u) << "the acknowledged allocation was lost";
    ASSERT_TRUE(env.on_primary([&] { return (*again)->ExposeReplica(thin->uuid); }).ok());
    auto d2 = env.open(thin->uuid.ToString());
    AlignedBuffer c(4 * kMiB);
    ASSERT_EQ(io_sync(*env.set, 0, **d2, IoType::kRead, c.data(), 0, 4 * kMiB / 512), Errc::kOk);
    for (size_t i = 0; i < c.size(); ++i) {
      const bool in_write = i >= 8192 && i < 8192 + 4096;
      const uint8_t want = in_write && user_flush ? w.data()[i - 8192] : 0;
      if (in_write && !user_flush) continue;  // lost or not: both allowed without a flush
      ASSERT_EQ(c.data()[i], want) << "byte " << i;
    }
    env.close(*d2);
    (void)env.on_primary([&]() -> Task<Status> { co_return co_await (*again)->Export(); });
  }
}

}  // namespace
}  // namespace tern::pool
