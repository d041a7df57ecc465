// Thick replicas as devices: requests land in the right clusters of the pool's device (also across a
// cluster boundary), reused clusters read as zeros, and an open replica cannot be removed.
#include <gtest/gtest.h>

#include <cstring>

#include "common/aligned_buffer.h"
#include "pool/pool.h"
#include "test_util.h"

namespace tern::pool {
namespace {

using test::DeviceEnv;
using test::fill;
using test::io_sync;

constexpr uint64_t kMiB = uint64_t(1) << 20;

struct Env {
  DeviceEnv env{2};
  std::unique_ptr<Pool> pool;

  Env() {
    EXPECT_TRUE(env.create("malloc:///d0?size_mb=64").ok());
    PoolCreateOptions o{"p1", std::nullopt, 4 * kMiB};
    auto r = env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
      co_return co_await Pool::Create(*env.registry, "d0", o);
    });
    EXPECT_TRUE(r.ok()) << r.status();
    pool = std::move(*r);
  }
  ~Env() {
    if (pool) {
      (void)env.on_primary([&]() -> Task<Status> { co_return co_await pool->Export(); });
      env.on_primary([&] { pool.reset(); });
    }
  }
  ReplicaMeta replica(const std::string& name, uint64_t size, bool thin = false) {
    ReplicaCreateOptions o{name, std::nullopt, size, thin};
    auto r = env.on_primary([&]() -> Task<Result<ReplicaMeta>> { co_return co_await pool->CreateReplica(o); });
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ReplicaMeta{};
  }
  std::unique_ptr<BdevDesc> expose_and_open(const Uuid& id) {
    auto b = env.on_primary([&] { return pool->ExposeReplica(id); });
    EXPECT_TRUE(b.ok()) << b.status();
    auto d = env.open(id.ToString());
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? std::move(*d) : nullptr;
  }
  Status destroy(const Uuid& id) {
    return env.on_primary([&]() -> Task<Status> { co_return co_await pool->DestroyReplica(id); });
  }
};

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

TEST(ReplicaIo, ThinReplicasAreNotExposedYetAndExposeIsIdempotent) {
  Env t;
  auto thin = t.replica("t", 8 * kMiB, true);
  auto r = t.env.on_primary([&] { return t.pool->ExposeReplica(thin.uuid); });
  EXPECT_EQ(r.code(), Errc::kNotSup);
  auto thick = t.replica("k", 4 * kMiB);
  auto b1 = t.env.on_primary([&] { return t.pool->ExposeReplica(thick.uuid); });
  auto b2 = t.env.on_primary([&] { return t.pool->ExposeReplica(thick.uuid); });
  ASSERT_TRUE(b1.ok() && b2.ok());
  EXPECT_EQ(*b1, *b2);
  EXPECT_EQ(t.env.on_primary([&] { return t.pool->ExposeReplica(Uuid::Generate()); }).code(), Errc::kNoEnt);
}

}  // namespace
}  // namespace tern::pool
