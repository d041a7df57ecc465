// The replica table: state records and invariants, the pool's create/destroy/list/stats, persistence
// through the log and checkpoints (with and without a clean export), and a power cut at every write.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "bdev/fault_bdevs.h"
#include "pool/pool.h"
#include "pool/state.h"
#include "pool_env.h"
#include "test_util.h"

namespace tern::pool {
namespace {

using test::DeviceEnv;

constexpr uint64_t kMiB = uint64_t(1) << 20;

ReplicaMeta meta(const std::string& name, uint64_t size, std::vector<uint32_t> map) {
  ReplicaMeta r;
  r.uuid = Uuid::Generate();
  r.name = name;
  r.size = size;
  r.map = std::move(map);
  return r;
}

TEST(PoolState, RecordsKeepTheInvariants) {
  PoolState st(8, 4 * kMiB);
  auto a = meta("a", 8 * kMiB, {1, 2});  // clusters 0 and 1
  ASSERT_TRUE(st.Apply(PoolState::CreateReplicaRecord(a)).ok());
  EXPECT_EQ(st.free_clusters(), 6u);
  // A second owner of cluster 1, a duplicate name, a map outside the pool, a wrong map length.
  auto b = meta("b", 8 * kMiB, {3, 2});
  Status s = st.Apply(PoolState::CreateReplicaRecord(b));
  EXPECT_EQ(s.code(), Errc::kCorruption);
  EXPECT_NE(s.message().find("which is already owned"), std::string::npos) << s;
  EXPECT_EQ(st.free_clusters(), 6u) << "a refused record changes nothing";
  EXPECT_EQ(st.Apply(PoolState::CreateReplicaRecord(meta("a", 4 * kMiB, {0}))).code(), Errc::kCorruption);
  EXPECT_EQ(st.Apply(PoolState::CreateReplicaRecord(meta("c", 4 * kMiB, {9}))).code(), Errc::kCorruption);
  EXPECT_EQ(st.Apply(PoolState::CreateReplicaRecord(meta("d", 12 * kMiB, {0}))).code(), Errc::kCorruption);
  EXPECT_EQ(st.Apply(PoolState::DestroyReplicaRecord(Uuid::Generate())).code(), Errc::kCorruption);
  const uint8_t junk[] = {7, 1, 2};
  EXPECT_EQ(st.Apply(junk).code(), Errc::kCorruption);
  // Serialize -> Load gives the same state; destroy frees the clusters.
  auto thin = meta("t", 100 * kMiB, std::vector<uint32_t>(25, 0));
  ASSERT_TRUE(st.Apply(PoolState::CreateReplicaRecord(thin)).ok());
  PoolState copy(8, 4 * kMiB);
  ASSERT_TRUE(copy.Load(st.Serialize()).ok());
  EXPECT_EQ(copy.replicas().size(), 2u);
  EXPECT_EQ(copy.free_clusters(), 6u);
  EXPECT_EQ(copy.committed_bytes(), 108 * kMiB);
  ASSERT_TRUE(copy.Apply(PoolState::DestroyReplicaRecord(a.uuid)).ok());
  EXPECT_EQ(copy.free_clusters(), 8u);
  auto picked = copy.pick_free(9);
  EXPECT_EQ(picked.code(), Errc::kNoSpc);
}

// The pool fixture with this file's older call shapes: the pool device is named per call, replica()
// returns the Result.
struct PoolEnv : test_env::PoolFixture {
  explicit PoolEnv(const std::string& extra_device = "")
      : PoolFixture(1, "malloc:///d0?size_mb=64", "d0", 4 * kMiB, false) {
    if (!extra_device.empty()) {
      EXPECT_TRUE(env.create(extra_device).ok());
    }
  }
  Status create(const std::string& dev) {
    device = dev;
    return PoolFixture::create(4 * kMiB);
  }
  Status import(const std::string& dev) {
    device = dev;
    return PoolFixture::import();
  }
  Result<ReplicaMeta> replica(const std::string& name, uint64_t size, bool thin) {
    return try_replica(name, size, thin);
  }
};

TEST(PoolReplicas, CreateListDestroyAndStats) {
  PoolEnv t;
  ASSERT_TRUE(t.create("d0").ok());
  const uint64_t clusters = t.pool->superblock().data_clusters;
  auto thick = t.replica("r1", 16 * kMiB, false);
  ASSERT_TRUE(thick.ok()) << thick.status();
  EXPECT_EQ(thick->allocated_clusters(), 4u);
  auto thin = t.replica("r2", 100 * kMiB, true);
  ASSERT_TRUE(thin.ok()) << thin.status();
  EXPECT_EQ(thin->allocated_clusters(), 0u);
  PoolStats st = t.pool->stats();
  EXPECT_EQ(st.capacity, clusters * 4 * kMiB);
  EXPECT_EQ(st.used, 16 * kMiB);
  EXPECT_EQ(st.committed, 116 * kMiB) << "thin sizes count as committed";
  EXPECT_EQ(st.replicas, 2u);

  auto dup = t.replica("r1", 4 * kMiB, true);
  EXPECT_EQ(dup.code(), Errc::kExist);
  EXPECT_NE(dup.status().message().find("already has a replica named 'r1'"), std::string::npos) << dup.status();
  auto big = t.replica("r3", (clusters - 3) * 4 * kMiB, false);
  EXPECT_EQ(big.code(), Errc::kNoSpc);
  EXPECT_NE(big.status().message().find("cannot hold thick replica 'r3'"), std::string::npos) << big.status();
  EXPECT_EQ(t.replica("r4", 1000, true).code(), Errc::kInval);
  EXPECT_EQ(t.replica("bad name", 4096, true).code(), Errc::kInval);
  EXPECT_EQ(t.pool->stats().used, 16 * kMiB) << "refused creates change nothing";

  ASSERT_TRUE(t.destroy(thick->uuid).ok());
  EXPECT_EQ(t.pool->stats().used, 0u);
  EXPECT_EQ(t.destroy(thick->uuid).code(), Errc::kNoEnt);
  // The freed clusters can be taken again.
  auto again = t.replica("r5", (clusters)*4 * kMiB, false);
  EXPECT_TRUE(again.ok()) << again.status();
}

TEST(PoolReplicas, SurviveExportImportAndACrash) {
  PoolEnv t;
  ASSERT_TRUE(t.create("d0").ok());
  auto a = t.replica("a", 8 * kMiB, false);
  auto b = t.replica("b", 64 * kMiB, true);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(t.export_pool().ok());
  ASSERT_TRUE(t.import("d0").ok());
  auto list = t.pool->ListReplicas();
  ASSERT_EQ(list.size(), 2u);
  const ReplicaMeta* ra = nullptr;
  for (auto& r : list) {
    if (r.name == "a") ra = &r;
  }
  ASSERT_NE(ra, nullptr);
  EXPECT_EQ(ra->uuid, a->uuid);
  EXPECT_EQ(ra->map, a->map);
  // Changes after the import, then a crash (no export): the log carries them.
  ASSERT_TRUE(t.destroy(b->uuid).ok());
  auto c = t.replica("c", 4 * kMiB, false);
  ASSERT_TRUE(c.ok());
  t.drop();
  ASSERT_TRUE(t.import("d0").ok());
  list = t.pool->ListReplicas();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_TRUE(list[0].name == "c" || list[1].name == "c");
  EXPECT_EQ(t.pool->stats().used, 12 * kMiB);
}

// Enough changes to fill the log several times: checkpoints are written on the way, and import still
// finds every replica. Also the import-time figure for this many replicas.
TEST(PoolReplicas, ManyChangesGoThroughCheckpoints) {
  PoolEnv t;
  ASSERT_TRUE(t.create("d0").ok());
  std::vector<Uuid> ids;
  for (int i = 0; i < 1000; ++i) {
    auto r = t.replica(fmt::format("r{}", i), 4096, true);
    ASSERT_TRUE(r.ok()) << i << ": " << r.status();
    ids.push_back(r->uuid);
  }
  for (int i = 0; i < 1000; i += 2) ASSERT_TRUE(t.destroy(ids[i]).ok());
  t.drop();  // crash: the newest checkpoint plus the log tail
  auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(t.import("d0").ok());
  auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(t.pool->ListReplicas().size(), 500u);
  RecordProperty("import_ms_500_replicas", std::to_string(ms));
  std::printf("import of a pool with 500 replicas after 1500 changes: %.1f ms\n", ms);
}

// A power cut at every device event of: create pool, create replicas, destroy one, export, import,
// create one more. Whatever survives imports cleanly, and every acknowledged change is there.
TEST(PoolReplicas, PowerCutAtEveryWrite) {
  struct Outcome {
    bool pool_created = false;
    std::vector<std::string> created;    // acknowledged creates
    std::vector<std::string> destroyed;  // acknowledged destroys
    std::vector<std::string> destroy_attempted;
  };
  auto workload = [](PoolEnv& t, Outcome& o) {
    if (!t.create("pc").ok()) return;
    o.pool_created = true;
    Uuid first;
    for (int i = 0; i < 4; ++i) {
      auto r = t.replica(fmt::format("r{}", i), (i + 1) * 4 * kMiB, i % 2 == 1);
      if (!r.ok()) return;
      if (i == 0) first = r->uuid;
      o.created.push_back(r->name);
    }
    o.destroy_attempted.push_back("r0");  // from here r0 may be gone even if the destroy is not acknowledged
    if (!t.destroy(first).ok()) return;
    o.destroyed.push_back("r0");
    if (!t.export_pool().ok()) return;
    if (!t.import("pc").ok()) return;
    auto r = t.replica("r9", 4 * kMiB, false);
    if (r.ok()) o.created.push_back("r9");
  };
  uint64_t total = 0;
  {
    PoolEnv t("powercut:///pc?base=d0");
    Outcome o;
    workload(t, o);
    ASSERT_EQ(o.created.size(), 5u);
    total = dynamic_cast<PowerCutBdev*>(t.env.registry->find("pc"))->events();
  }
  for (uint64_t at = 0; at <= total; ++at) {
    for (double persist : {0.0, 0.5, 1.0}) {
      SCOPED_TRACE(::testing::Message() << "cut at event " << at << " of " << total << ", persist " << persist);
      PoolEnv t(fmt::format("powercut:///pc?base=d0&cut_at={}&persist={}&seed={}", at, persist, at + 3));
      Outcome o;
      workload(t, o);
      t.drop();
      ASSERT_TRUE(t.env.destroy("pc").ok());
      Status s = t.import("d0");
      if (!s.ok()) {
        EXPECT_EQ(s.code(), Errc::kNoEnt) << s;
        EXPECT_FALSE(o.pool_created) << "an acknowledged pool must import";
        continue;
      }
      std::set<std::string> names;
      uint64_t thick_bytes = 0;
      for (auto& r : t.pool->ListReplicas()) {
        names.insert(r.name);
        if (!r.thin) thick_bytes += r.size;
      }
      for (auto& n : o.created) {
        bool gone = std::find(o.destroy_attempted.begin(), o.destroy_attempted.end(), n) != o.destroy_attempted.end();
        if (!gone) {
          EXPECT_TRUE(names.count(n)) << "acknowledged replica " << n << " lost";
        }
      }
      for (auto& n : o.destroyed) EXPECT_FALSE(names.count(n)) << "acknowledged destroy of " << n << " undone";
      EXPECT_EQ(t.pool->stats().used, thick_bytes) << "allocation map disagrees with the replicas";
    }
  }
}

}  // namespace
}  // namespace tern::pool
