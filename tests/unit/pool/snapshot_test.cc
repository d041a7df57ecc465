// Snapshots, clones, cluster release (unmap / write-zeroes) and resize: the state's chain rules, and the
// same through replica I/O — point-in-time images, copy-on-write, merges and discarded snapshots,
// quiescing writes in flight, and persistence through export/import.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "common/clock.h"
#include "pool/state.h"
#include "pool_env.h"

namespace tern::pool {
namespace {

using namespace test_env;

ReplicaMeta meta(const std::string& name, uint64_t size, std::vector<uint32_t> map, bool thin = true) {
  ReplicaMeta r;
  r.uuid = Uuid::Generate();
  r.name = name;
  r.size = size;
  r.thin = thin;
  r.map = std::move(map);
  return r;
}

constexpr uint32_t kInh = PoolState::kInheritedBit;

TEST(PoolStateChains, SnapshotCloneMergeAndDiscard) {
  PoolState st(16, 4 * kMiB);
  auto r = meta("r", 12 * kMiB, {1, 0, 2});  // owns clusters 0 and 1
  ASSERT_TRUE(st.Apply(PoolState::CreateReplicaRecord(r)).ok());
  const Uuid s = Uuid::Generate(), c = Uuid::Generate();
  ASSERT_TRUE(st.Apply(PoolState::SnapshotRecord(r.uuid, s, "s", 7)).ok());
  const ReplicaMeta* sm = st.find(s);
  ASSERT_TRUE(sm);
  EXPECT_TRUE(sm->snapshot);
  EXPECT_EQ(sm->source, r.uuid);
  EXPECT_EQ(sm->map, (std::vector<uint32_t>{1, 0, 2}));
  EXPECT_EQ(st.find(r.uuid)->map, (std::vector<uint32_t>{0, 0, 0}));
  EXPECT_EQ(st.find(r.uuid)->parent, s);
  EXPECT_EQ(st.resolve(r.uuid, 0), 1 | kInh);
  EXPECT_EQ(st.resolve(r.uuid, 1), 0u);
  EXPECT_EQ(st.resolve(s, 2), 2u);
  EXPECT_EQ(st.free_clusters(), 14u) << "a snapshot takes clusters, it does not copy them";
  // The replica overwrites cluster 0 (copy-on-write into cluster 5), a clone reads the snapshot.
  ASSERT_TRUE(st.Apply(PoolState::MapClusterRecord(r.uuid, 0, 5)).ok());
  EXPECT_EQ(st.resolve(r.uuid, 0), 6u);
  ASSERT_TRUE(st.Apply(PoolState::CloneRecord(s, c, "c", 8)).ok());
  EXPECT_TRUE(st.find(c)->clone());
  EXPECT_EQ(st.resolve(c, 0), 1 | kInh);
  // Snapshots of snapshots, clones of replicas and writes into snapshots are refused.
  EXPECT_EQ(st.Apply(PoolState::SnapshotRecord(s, Uuid::Generate(), "x", 0)).code(), Errc::kCorruption);
  EXPECT_EQ(st.Apply(PoolState::CloneRecord(r.uuid, Uuid::Generate(), "x", 0)).code(), Errc::kCorruption);
  EXPECT_EQ(st.Apply(PoolState::MapClusterRecord(s, 1, 9)).code(), Errc::kCorruption);
  // Destroying the snapshot with two children (the replica and the clone) only discards it.
  ASSERT_TRUE(st.Apply(PoolState::DestroyReplicaRecord(s)).ok());
  ASSERT_TRUE(st.find(s));
  EXPECT_TRUE(st.find(s)->discarded);
  EXPECT_EQ(st.Apply(PoolState::CloneRecord(s, Uuid::Generate(), "y", 0)).code(), Errc::kCorruption)
      << "no clones of a discarded snapshot";
  // The state survives a checkpoint round trip (parents are written before children).
  PoolState copy(16, 4 * kMiB);
  ASSERT_TRUE(copy.Load(st.Serialize()).ok());
  EXPECT_EQ(copy.replicas().size(), 3u);
  EXPECT_EQ(copy.free_clusters(), st.free_clusters());
  // The clone goes: the discarded snapshot has one child left and merges into it. The replica keeps
  // its own cluster 0, takes the snapshot's cluster 2 and the snapshot's old cluster 0 is freed.
  for (PoolState* x : {&st, &copy}) {
    ASSERT_TRUE(x->Apply(PoolState::DestroyReplicaRecord(c)).ok());
    EXPECT_FALSE(x->find(s));
    const ReplicaMeta* rm = x->find(r.uuid);
    EXPECT_EQ(rm->map, (std::vector<uint32_t>{6, 0, 2}));
    EXPECT_TRUE(rm->parent.is_nil());
    EXPECT_EQ(x->free_clusters(), 14u);
  }
}

TEST(PoolStateChains, ChainsUnmapAndResize) {
  PoolState st(16, 4 * kMiB);
  auto r = meta("r", 8 * kMiB, {1, 2});
  ASSERT_TRUE(st.Apply(PoolState::CreateReplicaRecord(r)).ok());
  const Uuid s1 = Uuid::Generate(), s2 = Uuid::Generate();
  ASSERT_TRUE(st.Apply(PoolState::SnapshotRecord(r.uuid, s1, "s1", 1)).ok());
  ASSERT_TRUE(st.Apply(PoolState::MapClusterRecord(r.uuid, 1, 7)).ok());
  ASSERT_TRUE(st.Apply(PoolState::SnapshotRecord(r.uuid, s2, "s2", 2)).ok());
  // r -> s2 (owns 7 at vc 1) -> s1 (owns 0, 1).
  EXPECT_EQ(st.find(s2)->parent, s1);
  EXPECT_EQ(st.resolve(r.uuid, 0), 1 | kInh);
  EXPECT_EQ(st.resolve(r.uuid, 1), 8 | kInh);
  // Unmap of an inherited cluster hides it (reads zeros) without freeing anything.
  ASSERT_TRUE(st.Apply(PoolState::UnmapClusterRecord(r.uuid, 0)).ok());
  EXPECT_EQ(st.find(r.uuid)->map[0], ReplicaMeta::kZero);
  EXPECT_EQ(st.resolve(r.uuid, 0), 0u);
  EXPECT_EQ(st.free_clusters(), 13u);
  // Deleting s1 (one child, s2) merges it into s2: s2 takes cluster 0, s1's cluster 1 is freed.
  ASSERT_TRUE(st.Apply(PoolState::DestroyReplicaRecord(s1)).ok());
  EXPECT_EQ(st.find(s2)->map, (std::vector<uint32_t>{1, 8}));
  EXPECT_TRUE(st.find(s2)->parent.is_nil());
  EXPECT_EQ(st.free_clusters(), 14u);
  EXPECT_EQ(st.resolve(r.uuid, 0), 0u) << "the replica's unmap still hides the merged cluster";
  // Grow: the new cluster hides the parent; shrink frees clusters past the end.
  ASSERT_TRUE(st.Apply(PoolState::ResizeRecord(r.uuid, 12 * kMiB, {})).ok());
  EXPECT_EQ(st.find(r.uuid)->map.back(), ReplicaMeta::kZero);
  ASSERT_TRUE(st.Apply(PoolState::MapClusterRecord(r.uuid, 2, 9)).ok());
  ASSERT_TRUE(st.Apply(PoolState::ResizeRecord(r.uuid, 4 * kMiB, {})).ok());
  EXPECT_EQ(st.find(r.uuid)->map.size(), 1u);
  EXPECT_EQ(st.free_clusters(), 14u);
  // A thick grow names its clusters; one that is taken is refused.
  auto k = meta("k", 4 * kMiB, {4}, false);
  ASSERT_TRUE(st.Apply(PoolState::CreateReplicaRecord(k)).ok());
  EXPECT_EQ(st.Apply(PoolState::ResizeRecord(k.uuid, 8 * kMiB, {0})).code(), Errc::kCorruption);
  ASSERT_TRUE(st.Apply(PoolState::ResizeRecord(k.uuid, 8 * kMiB, {10})).ok());
  EXPECT_EQ(st.find(k.uuid)->map, (std::vector<uint32_t>{4, 11}));
  // Load refuses a child whose parent is missing.
  std::vector<uint8_t> body = st.Serialize();
  PoolState orphan(16, 4 * kMiB);
  ReplicaMeta lost = meta("lost", 4 * kMiB, {0});
  lost.parent = Uuid::Generate();
  EXPECT_EQ(orphan.Apply(PoolState::CreateReplicaRecord(lost)).code(), Errc::kCorruption);
  PoolState copy(16, 4 * kMiB);
  ASSERT_TRUE(copy.Load(body).ok());
  EXPECT_EQ(copy.free_clusters(), st.free_clusters());
}

TEST(Snapshots, PointInTimeImageCopyOnWriteAndClones) {
  for (bool thin : {true, false}) {
    SCOPED_TRACE(thin ? "thin" : "thick");
    PoolFixture t;
    auto r = t.replica("r", 12 * kMiB, thin);
    auto d = t.expose_and_open(r.uuid);
    ASSERT_TRUE(d);
    ASSERT_EQ(t.write_seed(*d, 0, 12 * kMiB, 1), Errc::kOk);
    const uint64_t used_before = t.pool->stats().used;
    auto s = t.snapshot(r.uuid, "s");
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(t.pool->stats().used, used_before) << "a snapshot copies nothing";
    // Overwrite 4 KiB in cluster 1 (copy-on-write) and all of cluster 2.
    ASSERT_EQ(t.write_seed(*d, 5 * kMiB, 4096, 2, 1), Errc::kOk);
    ASSERT_EQ(t.write_seed(*d, 8 * kMiB, 4 * kMiB, 3), Errc::kOk);
    EXPECT_EQ(t.pool->stats().used, used_before + 8 * kMiB);
    auto want = pattern(12 * kMiB, 1);
    auto two = pattern(4096, 2), three = pattern(4 * kMiB, 3);
    auto now = want;
    std::memcpy(now.data() + 5 * kMiB, two.data(), 4096);
    std::memcpy(now.data() + 8 * kMiB, three.data(), 4 * kMiB);
    EXPECT_TRUE(t.read(*d, 0, 12 * kMiB, 1) == now) << "the replica reads its new data over the snapshot's";
    auto ds = t.expose_and_open(s->uuid);
    ASSERT_TRUE(ds);
    EXPECT_EQ(ds->bdev().props().product, "snapshot");
    EXPECT_FALSE(ds->bdev().supports(IoType::kWrite)) << "snapshots are read-only";
    EXPECT_TRUE(t.read(*ds, 0, 12 * kMiB) == want) << "the snapshot keeps the image as of its creation";
    // A clone reads the snapshot; its writes go to its own clusters.
    auto c = t.clone(s->uuid, "c");
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(c->thin);
    EXPECT_EQ(c->size, 12 * kMiB);
    auto dc = t.expose_and_open(c->uuid);
    ASSERT_TRUE(dc);
    EXPECT_TRUE(t.read(*dc, 0, 12 * kMiB) == want);
    ASSERT_EQ(t.write_seed(*dc, 512, 1024, 4), Errc::kOk);
    auto cw = want;
    auto four = pattern(1024, 4);
    std::memcpy(cw.data() + 512, four.data(), 1024);
    EXPECT_TRUE(t.read(*dc, 0, 12 * kMiB) == cw);
    EXPECT_TRUE(t.read(*ds, 0, 12 * kMiB) == want);
    EXPECT_TRUE(t.read(*d, 0, 12 * kMiB) == now);
    // Names and UUIDs are one namespace; snapshots of snapshots are refused.
    EXPECT_EQ(t.snapshot(r.uuid, "c").code(), Errc::kExist);
    EXPECT_EQ(t.snapshot(s->uuid, "s2").code(), Errc::kInval);
    EXPECT_EQ(t.clone(r.uuid, "c2").code(), Errc::kInval);
    t.env.close(d);
    t.env.close(ds);
    t.env.close(dc);
    // Everything survives an export and import.
    ASSERT_TRUE(t.export_pool().ok());
    ASSERT_TRUE(t.import().ok());
    for (auto [id, img] : {std::pair{r.uuid, &now}, {s->uuid, &want}, {c->uuid, &cw}}) {
      auto x = t.expose_and_open(id);
      ASSERT_TRUE(x);
      EXPECT_TRUE(t.read(*x, 0, 12 * kMiB) == *img) << id.ToString();
      t.env.close(x);
    }
  }
}

TEST(Snapshots, DeletingMergesOrDiscards) {
  PoolFixture t;
  auto r = t.replica("r", 8 * kMiB, true);
  auto d = t.expose_and_open(r.uuid);
  ASSERT_TRUE(d);
  ASSERT_EQ(t.write_seed(*d, 0, 8 * kMiB, 1), Errc::kOk);
  auto s = t.snapshot(r.uuid, "s");
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(t.write_seed(*d, 0, 4096, 2), Errc::kOk);  // cluster 0 copied
  auto img = t.read(*d, 0, 8 * kMiB);
  EXPECT_EQ(t.pool->stats().used, 12 * kMiB);
  // One child (the replica): the snapshot's clusters move to it, the overwritten one is freed.
  ASSERT_TRUE(t.destroy(s->uuid).ok());
  EXPECT_EQ(t.pool->ListReplicas().size(), 1u);
  EXPECT_EQ(t.pool->stats().used, 8 * kMiB);
  EXPECT_EQ(t.find("r")->allocated_clusters(), 2u);
  EXPECT_TRUE(t.read(*d, 0, 8 * kMiB, 1) == img);
  // Two children (the replica and a clone): the snapshot is kept, discarded, until the clone goes.
  auto s2 = t.snapshot(r.uuid, "s2");
  ASSERT_TRUE(s2.ok());
  auto c = t.clone(s2->uuid, "c");
  ASSERT_TRUE(c.ok());
  ASSERT_TRUE(t.destroy(s2->uuid).ok());
  ASSERT_TRUE(t.find("s2"));
  EXPECT_TRUE(t.find("s2")->discarded);
  EXPECT_EQ(t.clone(s2->uuid, "c2").code(), Errc::kNoEnt) << "no clones of a discarded snapshot";
  EXPECT_EQ(t.destroy(s2->uuid).code(), Errc::kNoEnt) << "already deleted";
  auto dc = t.expose_and_open(c->uuid);
  EXPECT_TRUE(t.read(*dc, 0, 8 * kMiB) == img) << "the clone still reads the discarded snapshot";
  t.env.close(dc);
  ASSERT_TRUE(t.destroy(c->uuid).ok());
  EXPECT_FALSE(t.find("s2")) << "the discarded snapshot goes with its last clone";
  EXPECT_EQ(t.pool->stats().used, 8 * kMiB);
  EXPECT_TRUE(t.read(*d, 0, 8 * kMiB) == img);
  t.env.close(d);
  // A snapshot outlives its replica, and goes when deleted.
  auto s3 = t.snapshot(r.uuid, "s3");
  ASSERT_TRUE(s3.ok());
  ASSERT_TRUE(t.destroy(r.uuid).ok());
  ASSERT_TRUE(t.find("s3"));
  EXPECT_EQ(t.pool->stats().used, 8 * kMiB);
  ASSERT_TRUE(t.destroy(s3->uuid).ok());
  EXPECT_EQ(t.pool->stats().used, 0u);
}

// A snapshot holds new writes and waits for those in flight: every write completed before the call is
// in it, none issued after the call returned.
TEST(Snapshots, TakenAtomicallyWithRespectToWritesInFlight) {
  PoolFixture t;
  auto r = t.replica("r", 4 * kMiB, true);
  auto d = t.expose_and_open(r.uuid);
  ASSERT_TRUE(d);
  std::atomic<uint64_t> issued{0}, completed{0};
  std::atomic<bool> stop{false};
  std::atomic<int> errors{0};
  std::thread writer([&] {
    for (uint64_t gen = 1; !stop.load(); ++gen) {
      issued.store(gen);
      uint8_t b[4096] = {};
      std::memcpy(b, &gen, 8);
      if (t.write(*d, 0, b, 4096, 1) != Errc::kOk) errors++;
      completed.store(gen);
    }
  });
  while (completed.load() < 20) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  for (int i = 0; i < 5; ++i) {
    const uint64_t lo = completed.load();
    auto s = t.snapshot(r.uuid, "s" + std::to_string(i));
    const uint64_t hi = issued.load();
    ASSERT_TRUE(s.ok()) << s.status();
    auto ds = t.expose_and_open(s->uuid);
    ASSERT_TRUE(ds);
    auto got = t.read(*ds, 0, 4096);
    uint64_t g = 0;
    std::memcpy(&g, got.data(), 8);
    EXPECT_GE(g, lo);
    EXPECT_LE(g, hi);
    t.env.close(ds);
  }
  stop = true;
  writer.join();
  EXPECT_EQ(errors.load(), 0);
  t.env.close(d);
}

// The quiesce itself: a first write still allocating its cluster when the snapshot is asked for (the
// zeroing and flushes slowed by a delay device) has completed when the snapshot call returns, and its
// data is in the snapshot.
TEST(Snapshots, WaitForTheWritesInFlight) {
  PoolFixture t(2, "malloc:///d0?size_mb=64", "dl", 4 * kMiB, false);
  ASSERT_TRUE(t.env.create("delay:///dl?base=d0&other_us=150000").ok());
  ASSERT_TRUE(t.create(4 * kMiB).ok());
  auto r = t.replica("r", 4 * kMiB, true);
  auto d = t.expose_and_open(r.uuid);
  ASSERT_TRUE(d);
  std::atomic<bool> done{false};
  std::thread writer([&] {
    EXPECT_EQ(t.write_seed(*d, 0, 4096, 9, 1), Errc::kOk);
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  ASSERT_FALSE(done.load());
  auto s = t.snapshot(r.uuid, "s");
  EXPECT_TRUE(done.load()) << "the snapshot did not wait for the write in flight";
  writer.join();
  ASSERT_TRUE(s.ok()) << s.status();
  auto ds = t.expose_and_open(s->uuid);
  EXPECT_TRUE(t.read(*ds, 0, 4096) == pattern(4096, 9));
  t.env.close(ds);
  t.env.close(d);
}

TEST(ClusterRelease, UnmapFreesWholeThinClustersAndZeroesParts) {
  PoolFixture t;
  auto r = t.replica("r", 12 * kMiB, true);
  auto d = t.expose_and_open(r.uuid);
  ASSERT_TRUE(d);
  ASSERT_TRUE(d->bdev().supports(IoType::kUnmap));
  ASSERT_TRUE(d->bdev().props().unmap_reads_zeroes);
  ASSERT_EQ(t.write_seed(*d, 0, 12 * kMiB, 1), Errc::kOk);
  auto img = pattern(12 * kMiB, 1);
  // Part of cluster 0: zeroed in place. All of cluster 1 (by write-zeroes) and cluster 2 (by unmap,
  // spanning into cluster 1's range): released.
  ASSERT_EQ(t.op(*d, IoType::kUnmap, 4096, 8192), Errc::kOk);
  ASSERT_EQ(t.op(*d, IoType::kWriteZeroes, 4 * kMiB, 4 * kMiB, 1), Errc::kOk);
  ASSERT_EQ(t.op(*d, IoType::kUnmap, 6 * kMiB, 6 * kMiB), Errc::kOk);
  std::memset(img.data() + 4096, 0, 8192);
  std::memset(img.data() + 4 * kMiB, 0, 8 * kMiB);
  EXPECT_TRUE(t.read(*d, 0, 12 * kMiB) == img);
  EXPECT_EQ(t.find("r")->allocated_clusters(), 1u);
  // The freed clusters return to the pool once no request can reach them.
  for (int i = 0; i < 1000 && t.pool->stats().used != 4 * kMiB; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(t.pool->stats().used, 4 * kMiB);
  // Written again: allocated again, zeroed around the write.
  ASSERT_EQ(t.write_seed(*d, 9 * kMiB, 4096, 5), Errc::kOk);
  auto five = pattern(4096, 5);
  std::memcpy(img.data() + 9 * kMiB, five.data(), 4096);
  EXPECT_TRUE(t.read(*d, 0, 12 * kMiB) == img);
  // A thick replica keeps its clusters: a whole-cluster unmap zeroes.
  auto k = t.replica("k", 4 * kMiB, false);
  auto dk = t.expose_and_open(k.uuid);
  ASSERT_EQ(t.write_seed(*dk, 0, 4 * kMiB, 6), Errc::kOk);
  ASSERT_EQ(t.op(*dk, IoType::kUnmap, 0, 4 * kMiB), Errc::kOk);
  EXPECT_TRUE(all_zero(t.read(*dk, 0, 4 * kMiB)));
  EXPECT_EQ(t.find("k")->allocated_clusters(), 1u);
  // After a snapshot, an unmap hides the inherited data (whole: no copy; part: copied, then zeroed).
  auto s = t.snapshot(r.uuid, "s");
  ASSERT_TRUE(s.ok());
  const uint64_t used = t.pool->stats().used;
  ASSERT_EQ(t.op(*d, IoType::kUnmap, 8 * kMiB, 4 * kMiB), Errc::kOk);
  EXPECT_EQ(t.pool->stats().used, used) << "hiding an inherited cluster allocates nothing";
  ASSERT_EQ(t.op(*d, IoType::kWriteZeroes, 0, 4096), Errc::kOk);
  EXPECT_EQ(t.pool->stats().used, used + 4 * kMiB);
  auto after = img;
  std::memset(after.data(), 0, 4096);
  std::memset(after.data() + 8 * kMiB, 0, 4 * kMiB);
  EXPECT_TRUE(t.read(*d, 0, 12 * kMiB) == after);
  auto ds = t.expose_and_open(s->uuid);
  EXPECT_TRUE(t.read(*ds, 0, 12 * kMiB) == img);
  t.env.close(ds);
  t.env.close(dk);
  t.env.close(d);
  ASSERT_TRUE(t.export_pool().ok());
  ASSERT_TRUE(t.import().ok());
  auto again = t.expose_and_open(r.uuid);
  EXPECT_TRUE(t.read(*again, 0, 12 * kMiB) == after);
  t.env.close(again);
}

TEST(Resize, GrowShrinkAndTheRangesTheyExpose) {
  PoolFixture t;
  auto r = t.replica("r", 6 * kMiB, true);
  {
    auto d = t.expose_and_open(r.uuid);
    ASSERT_EQ(t.write_seed(*d, 0, 6 * kMiB, 1), Errc::kOk);
    EXPECT_EQ(t.resize(r.uuid, 4 * kMiB, true).code(), Errc::kBusy) << "no shrinking while open";
    // Growing while open: the device grows under its user, which can write the new range at once.
    EXPECT_EQ(d->bdev().props().size_bytes(), 6 * kMiB);
    auto g = t.resize(r.uuid, 7 * kMiB);
    ASSERT_TRUE(g.ok()) << g.status();
    EXPECT_EQ(d->bdev().num_blocks() * d->bdev().props().block_size, 7 * kMiB);
    EXPECT_TRUE(t.read(*d, 6 * kMiB, kMiB) == std::vector<uint8_t>(kMiB, 0)) << "the grown range reads zeros";
    ASSERT_EQ(t.write_seed(*d, 6 * kMiB, kMiB, 2), Errc::kOk);
    EXPECT_TRUE(t.read(*d, 6 * kMiB, kMiB) == pattern(kMiB, 2));
    ASSERT_TRUE(t.resize(r.uuid, 6 * kMiB, true).code() == Errc::kBusy);
    t.env.close(d);
    ASSERT_TRUE(t.resize(r.uuid, 6 * kMiB, true).ok());
  }
  auto s = t.snapshot(r.uuid, "s");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(t.resize(s->uuid, 8 * kMiB).code(), Errc::kInval) << "snapshots keep their size";
  EXPECT_EQ(t.resize(r.uuid, 4 * kMiB).code(), Errc::kInval) << "shrinking needs the flag";
  EXPECT_EQ(t.resize(r.uuid, 1000).code(), Errc::kInval);
  // Shrink into cluster 1, then grow past it: the range between must read zeros, not the old data
  // (the snapshot still holds it) — the inherited cluster is copied and its tail zeroed.
  ASSERT_TRUE(t.resize(r.uuid, 5 * kMiB, true).ok());
  auto grown = t.resize(r.uuid, 12 * kMiB);
  ASSERT_TRUE(grown.ok()) << grown.status();
  EXPECT_EQ(grown->size, 12 * kMiB);
  auto d = t.expose_and_open(r.uuid);
  EXPECT_EQ(d->bdev().props().size_bytes(), 12 * kMiB) << "the bdev has the new size";
  auto img = pattern(6 * kMiB, 1);
  img.resize(12 * kMiB, 0);
  std::memset(img.data() + 5 * kMiB, 0, kMiB);
  EXPECT_TRUE(t.read(*d, 0, 12 * kMiB) == img);
  auto ds = t.expose_and_open(s->uuid);
  EXPECT_TRUE(t.read(*ds, 0, 6 * kMiB) == pattern(6 * kMiB, 1));
  t.env.close(ds);
  t.env.close(d);
  // Thick: growing reserves (and zeroes) clusters; more than the pool holds is refused.
  auto k = t.replica("k", 4 * kMiB, false);
  const uint64_t used = t.pool->stats().used;
  auto kg = t.resize(k.uuid, 8 * kMiB);
  ASSERT_TRUE(kg.ok()) << kg.status();
  EXPECT_EQ(kg->allocated_clusters(), 2u);
  EXPECT_EQ(t.pool->stats().used, used + 4 * kMiB);
  EXPECT_EQ(t.resize(k.uuid, 1024 * kMiB).code(), Errc::kNoSpc);
  ASSERT_TRUE(t.resize(k.uuid, 4 * kMiB, true).ok());
  EXPECT_EQ(t.pool->stats().used, used);
  EXPECT_EQ(t.pool->stats().committed, 12 * kMiB + 4 * kMiB);
}

// Concurrent first writes: into one cluster (one allocation, every write lands), into many (each gets
// its own cluster), from two reactors.
TEST(ThinAllocation, ConcurrentFirstWrites) {
  PoolFixture t;
  auto r = t.replica("r", 40 * kMiB, true);
  auto d = t.expose_and_open(r.uuid);
  ASSERT_TRUE(d);
  std::vector<std::thread> th;
  for (unsigned i = 0; i < 8; ++i) {
    th.emplace_back([&, i] {
      // Writers 0-3 share cluster 0 (distinct 4 KiB blocks); 4-7 each take a cluster of their own.
      const uint64_t off = i < 4 ? i * 4096 : (i - 3) * 4 * kMiB + i * 4096;
      EXPECT_EQ(t.write_seed(*d, off, 4096, 100 + i, i % 2), Errc::kOk);
    });
  }
  for (auto& x : th) x.join();
  EXPECT_EQ(t.find("r")->allocated_clusters(), 5u);
  for (unsigned i = 0; i < 8; ++i) {
    const uint64_t off = i < 4 ? i * 4096 : (i - 3) * 4 * kMiB + i * 4096;
    EXPECT_TRUE(t.read(*d, off, 4096) == pattern(4096, 100 + i)) << i;
  }
  t.env.close(d);
}

}  // namespace
}  // namespace tern::pool

namespace tern::pool {
namespace {

using namespace test_env;

TEST(Snapshots, SpaceAccounting) {
  PoolFixture t;
  auto r = t.replica("r", 12 * kMiB, true);
  auto d = t.expose_and_open(r.uuid);
  ASSERT_EQ(t.write_seed(*d, 0, 8 * kMiB, 1), Errc::kOk);
  auto s = t.snapshot(r.uuid, "s");
  ASSERT_TRUE(s.ok());
  ASSERT_EQ(t.write_seed(*d, 0, 4096, 2), Errc::kOk);  // cluster 0 copied: the snapshot's is its own now
  t.env.close(d);
  const ObjectSpace ss = t.pool->Space(s->uuid), rs = t.pool->Space(r.uuid);
  EXPECT_EQ(ss.allocated, 8 * kMiB);
  EXPECT_EQ(ss.referenced, 8 * kMiB);
  EXPECT_EQ(ss.exclusive, 4 * kMiB) << "deleting the snapshot would free cluster 0 only";
  EXPECT_EQ(rs.allocated, 4 * kMiB);
  EXPECT_EQ(rs.referenced, 8 * kMiB) << "its own cluster 0 and the inherited cluster 1";
  EXPECT_EQ(rs.exclusive, 4 * kMiB);
  const PoolStats st = t.pool->stats();
  EXPECT_TRUE(st.online);
  EXPECT_EQ(st.used, 12 * kMiB);
  EXPECT_EQ(st.committed, 12 * kMiB) << "snapshots commit nothing";
  EXPECT_EQ(st.replicas, 2u);
  EXPECT_GT(s->created_ns, 0u);
  EXPECT_EQ(s->source, r.uuid);
}

TEST(PoolLifeCycle, CreateOrImport) {
  PoolFixture t(1, "malloc:///d0?size_mb=64", "d0", 4 * kMiB, false);
  auto run = [&](const std::string& name) {
    PoolCreateOptions o{name, std::nullopt, 4 * kMiB};
    return t.env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
      co_return co_await Pool::CreateOrImport(*t.env.registry, "d0", o);
    });
  };
  auto first = run("p1");
  ASSERT_TRUE(first.ok()) << first.status();
  const Uuid id = (*first)->superblock().pool_uuid;
  t.pool = std::move(*first);
  t.replica("r", 4 * kMiB);
  ASSERT_TRUE(t.export_pool().ok());
  auto again = run("p1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ((*again)->superblock().pool_uuid, id) << "imported, not created anew";
  EXPECT_EQ((*again)->ListReplicas().size(), 1u);
  t.pool = std::move(*again);
  ASSERT_TRUE(t.export_pool().ok());
  auto other = run("p2");
  EXPECT_EQ(other.code(), Errc::kInval) << "a device holding another pool is not overwritten";
}

}  // namespace
}  // namespace tern::pool

namespace tern::pool {
namespace {

using namespace test_env;

Status set_prop(PoolFixture& t, const Uuid& id, const std::string& k, const std::string& v) {
  return t.env.on_primary([&]() -> Task<Status> { co_return co_await t.pool->SetProperty(id, k, v); });
}

// Creation times are persisted and shown as dates: wall-clock time (CLOCK_REALTIME), which survives a
// reboot, never the monotonic clock, whose zero is the last boot.
TEST(PoolLifeCycle, CreationTimesAreWallClock) {
  const uint64_t before = wall_clock_ns();
  PoolFixture t;
  auto r = t.replica("r", 4 * kMiB, true);
  auto s = t.snapshot(r.uuid, "s");
  ASSERT_TRUE(s.ok()) << s.status();
  auto c = t.clone(s->uuid, "c");
  ASSERT_TRUE(c.ok()) << c.status();
  const uint64_t after = wall_clock_ns();
  const uint64_t stamps[] = {t.pool->superblock().created_ns, r.created_ns, s->created_ns, c->created_ns};
  for (uint64_t ns : stamps) {
    EXPECT_GE(ns, before);
    EXPECT_LE(ns, after);
  }
  ASSERT_TRUE(t.export_pool().ok());
  ASSERT_TRUE(t.import().ok());
  EXPECT_EQ(t.find("s")->created_ns, s->created_ns) << "kept as written";
  EXPECT_EQ(t.pool->superblock().created_ns, stamps[0]);
}

TEST(Properties, KeptWithTheObjectThroughRestarts) {
  PoolFixture t;
  auto r = t.replica("r", 8 * kMiB, true);
  ASSERT_TRUE(set_prop(t, r.uuid, "share.protocol", "nvmf").ok());
  ASSERT_TRUE(set_prop(t, r.uuid, "share.allowed-hosts", "nqn.2014-08.org.example:host1").ok());
  ASSERT_TRUE(set_prop(t, r.uuid, "entity-id", "vol-1").ok());
  ASSERT_TRUE(set_prop(t, r.uuid, "entity-id", "").ok()) << "an empty value removes";
  EXPECT_EQ(set_prop(t, r.uuid, "Bad Name", "x").code(), Errc::kInval);
  EXPECT_EQ(set_prop(t, r.uuid, "big", std::string(2000, 'x')).code(), Errc::kInval);
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(set_prop(t, r.uuid, fmt::format("k{}", i), std::string(1000, 'a')).ok());
  EXPECT_EQ(set_prop(t, r.uuid, "k4", std::string(1000, 'a')).code(), Errc::kNoSpc) << "4 KiB per object";
  EXPECT_EQ(set_prop(t, Uuid::Generate(), "a", "b").code(), Errc::kNoEnt);
  auto s = t.snapshot(r.uuid, "s");
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(s->props.empty()) << "a snapshot starts without the replica's settings";
  auto check = [&] {
    auto m = t.find("r");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->props.size(), 6u);
    EXPECT_EQ(m->props.at("share.protocol"), "nvmf");
    EXPECT_EQ(m->props.count("entity-id"), 0u);
  };
  check();
  t.crash();  // replayed from the log
  ASSERT_TRUE(t.import().ok());
  check();
  ASSERT_TRUE(t.export_pool().ok());  // from the checkpoint
  ASSERT_TRUE(t.import().ok());
  check();
}

// The metadata areas are finite: a thin replica (or snapshot, clone, resize) whose map would not fit in
// a checkpoint is refused up front, with what is wrong, and the pool keeps working.
TEST(Properties, MetadataThatWouldNotFitIsRefused) {
  PoolFixture t;
  const uint64_t cap = t.pool->superblock().checkpoint_size;
  auto huge = t.try_replica("huge", cap / 4 * 4 * kMiB * 2, true);  // 2x the entries the area holds
  EXPECT_EQ(huge.code(), Errc::kNoSpc) << huge.status();
  EXPECT_NE(huge.status().message().find("checkpoint area"), std::string::npos) << huge.status();
  auto r = t.replica("r", 4 * kMiB, true);
  EXPECT_EQ(t.resize(r.uuid, cap / 4 * 4 * kMiB * 2).code(), Errc::kNoSpc);
  ASSERT_TRUE(t.export_pool().ok());
  ASSERT_TRUE(t.import().ok());
  EXPECT_EQ(t.pool->ListReplicas().size(), 1u);
}

TEST(PoolStateChains, CheckpointBytesMatchesTheSerializedSize) {
  PoolState st(16, 4 * kMiB);
  ReplicaMeta r;
  r.uuid = Uuid::Generate();
  r.name = "r";
  r.size = 12 * kMiB;
  r.thin = true;
  r.map = {1, 0, 0};
  r.props["a"] = "bcd";
  ASSERT_TRUE(st.Apply(PoolState::CreateReplicaRecord(r)).ok());
  ASSERT_TRUE(st.Apply(PoolState::SnapshotRecord(r.uuid, Uuid::Generate(), "snap", 1)).ok());
  ASSERT_TRUE(st.Apply(PoolState::SetPropertyRecord(r.uuid, "share", "nbd")).ok());
  EXPECT_EQ(st.checkpoint_bytes(), st.Serialize().size());
  PoolState copy(16, 4 * kMiB);
  ASSERT_TRUE(copy.Load(st.Serialize()).ok());
  EXPECT_EQ(copy.find(r.uuid)->props.at("share"), "nbd");
  EXPECT_EQ(copy.find(r.uuid)->props.at("a"), "bcd");
}

}  // namespace
}  // namespace tern::pool
