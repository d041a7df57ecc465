// PoolManager through a real Engine on RAM disks, in the engine's own types (no gRPC): the one
// idempotent create behind replicas, snapshots and clones — UUIDs unique on the node whatever the
// kind, identical retries answered with the existing object, differences named.
#include <gtest/gtest.h>

#include <algorithm>

#include "engine/engine.h"
#include "test_util.h"

namespace tern::engine {
namespace {

constexpr uint64_t kMiB = 1 << 20;
const Uuid kTaken = *Uuid::Parse("0b5e55ed-0000-4000-8000-000000000001");

// Thin 8 MiB replicas unless a test changes the arguments.
CreateReplicaArgs replica_on(std::string pool, std::string name, std::optional<Uuid> uuid = std::nullopt) {
  CreateReplicaArgs a;
  a.pool = std::move(pool);
  a.name = std::move(name);
  a.uuid = uuid;
  a.size = 8 * kMiB;
  a.thin = true;
  return a;
}

ReplicaRef named(std::string name) {
  ReplicaRef r;
  r.name = std::move(name);
  return r;
}

CreateSnapshotArgs snapshot_of(std::string source, std::string name, std::optional<Uuid> uuid = std::nullopt) {
  CreateSnapshotArgs a;
  a.source = named(std::move(source));
  a.name = std::move(name);
  a.uuid = uuid;
  return a;
}

CreateCloneArgs clone_of(std::string snapshot, std::string name, std::optional<Uuid> uuid = std::nullopt,
                         ShareProtocol share = ShareProtocol::kNone) {
  CreateCloneArgs a;
  a.snapshot = named(std::move(snapshot));
  a.name = std::move(name);
  a.uuid = uuid;
  a.share = share;
  return a;
}

class PoolManagerTest : public ::testing::Test {
 protected:
  template <typename F>
  auto on0(F fn) {
    return set_->run_sync(0, fn);
  }

  void SetUp() override {
    set_ = test::start_reactors(1);
    ASSERT_TRUE(set_);
    EngineOptions o;
    o.node_name = "unit";
    o.nvmf_address = "127.0.0.1";
    o.nvmf_port = 0;  // any free port
    o.advertise_address = "127.0.0.1";
    o.nbd_port = 0;   // no NBD
    o.state_dir = "";  // remember nothing
    engine_ = std::make_unique<Engine>(*set_, o);
    Status s = on0([&] { return engine_->start(); });
    ASSERT_TRUE(s.ok()) << s.ToString();
    for (const char* p : {"p0", "p1"}) {
      CreatePoolArgs a;
      a.name = p;
      a.disk = fmt::format("malloc:///{}disk?size_mb=64", p);
      auto r = on0([&] { return pools().create_pool(a, PoolMode::kCreate); });
      ASSERT_TRUE(r.ok()) << r.status().ToString();
    }
  }
  void TearDown() override {
    if (engine_) on0([&] { return engine_->shutdown(); });
    engine_.reset();
    if (set_) set_->stop();
  }

  PoolManager& pools() { return engine_->pools(); }

  Result<ReplicaInfo> replica(CreateReplicaArgs a) {
    return on0([&] { return pools().create_replica(a); });
  }
  Result<ReplicaInfo> snapshot(CreateSnapshotArgs a) {
    return on0([&] { return pools().create_snapshot(a); });
  }
  Result<ReplicaInfo> clone(CreateCloneArgs a) {
    return on0([&] { return pools().create_clone(a); });
  }
  std::vector<std::string> names(ObjectFilter f) {
    std::vector<std::string> out;
    for (auto& r : on0([&] { return pools().list_objects(f); })) out.push_back(r.name);
    std::sort(out.begin(), out.end());
    return out;
  }

  std::unique_ptr<ReactorSet> set_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(PoolManagerTest, UuidInUseOnAnotherPoolIsRefusedForEveryKindOfCreate) {
  ASSERT_TRUE(replica(replica_on("p1", "holder", kTaken)).ok());
  auto r0 = replica(replica_on("p0", "r0"));
  ASSERT_TRUE(r0.ok()) << r0.status().ToString();
  auto s0 = snapshot(snapshot_of("r0", "s0"));
  ASSERT_TRUE(s0.ok()) << s0.status().ToString();
  const std::string used = fmt::format("uuid {} is already used by 'holder' on pool 'p1'", kTaken.ToString());

  auto r = replica(replica_on("p0", "r1", kTaken));
  ASSERT_EQ(r.code(), Errc::kExist);
  EXPECT_EQ(r.status().message(), used);

  // Snapshots and clones did not check other pools: the object was made and its device clashed.
  r = snapshot(snapshot_of("r0", "s1", kTaken));
  ASSERT_EQ(r.code(), Errc::kExist) << r.status().ToString();
  EXPECT_EQ(r.status().message(), used);
  r = clone(clone_of("s0", "c1", kTaken));
  ASSERT_EQ(r.code(), Errc::kExist) << r.status().ToString();
  EXPECT_EQ(r.status().message(), used);
  r = clone(clone_of("s0", "c1", kTaken, ShareProtocol::kNvmf));
  ASSERT_EQ(r.code(), Errc::kExist) << r.status().ToString();

  // Nothing was left behind, and the holder still has its device.
  ObjectFilter p0;
  p0.pool = "p0";
  EXPECT_EQ(names(p0), (std::vector<std::string>{"r0", "s0"}));
  ObjectFilter taken;
  taken.uuid = kTaken.ToString();
  auto holder = on0([&] { return pools().list_objects(taken); });
  ASSERT_EQ(holder.size(), 1u);
  EXPECT_EQ(holder[0].pool, "p1");
  EXPECT_EQ(holder[0].device, kTaken.ToString());

  // A UUID taken on the same pool by another name is refused the same way, whatever the kind.
  r = snapshot(snapshot_of("r0", "s2", r0->uuid));
  ASSERT_EQ(r.code(), Errc::kExist);
  EXPECT_EQ(r.status().message(), fmt::format("uuid {} is already used by 'r0' on pool 'p0'", r0->uuid.ToString()));
}

TEST_F(PoolManagerTest, IdenticalCreateIsTheExistingObjectAndADifferenceIsNamed) {
  CreateReplicaArgs ra = replica_on("p0", "r");
  auto r = replica(ra);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->kind, ObjectKind::kReplica);
  EXPECT_EQ(r->device, r->uuid.ToString());
  EXPECT_EQ(replica(ra)->uuid, r->uuid);
  EXPECT_EQ(replica(replica_on("p0", "r", r->uuid))->uuid, r->uuid);  // its own UUID: the same request
  auto again = ra;
  again.size = 16 * kMiB;
  auto d = replica(again);
  ASSERT_EQ(d.code(), Errc::kExist);
  EXPECT_EQ(d.status().message(),
            fmt::format("replica 'r' already exists on pool 'p0' with size {} (asked for {})", 8 * kMiB, 16 * kMiB));
  again = ra;
  again.thin = false;
  EXPECT_EQ(replica(again).status().message(), "replica 'r' already exists on pool 'p0' with thin true (asked for false)");

  auto s = snapshot(snapshot_of("r", "s"));
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->kind, ObjectKind::kSnapshot);
  EXPECT_EQ(s->source, r->uuid);
  EXPECT_EQ(snapshot(snapshot_of("r", "s", s->uuid))->uuid, s->uuid);
  Uuid other = Uuid::Generate();
  d = snapshot(snapshot_of("r", "s", other));
  EXPECT_EQ(d.status().message(),
            fmt::format("snapshot 's' already exists with uuid {} (asked for {})", s->uuid.ToString(), other.ToString()));
  d = snapshot(snapshot_of("r", "r"));
  EXPECT_EQ(d.status().message(), "'r' already exists on pool 'p0' and is not a snapshot of 'r'");
  d = snapshot(snapshot_of("s", "x"));
  ASSERT_EQ(d.code(), Errc::kInval);
  EXPECT_EQ(d.status().message(), "replica: 's' is a snapshot; snapshot a replica or clone");

  auto c = clone(clone_of("s", "c"));
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->kind, ObjectKind::kClone);
  EXPECT_EQ(c->source, s->uuid);
  EXPECT_EQ(clone(clone_of("s", "c"))->uuid, c->uuid);
  // A retry that asks for a share the first attempt did not get: the share is finished.
  auto shared = clone(clone_of("s", "c", std::nullopt, ShareProtocol::kNvmf));
  ASSERT_TRUE(shared.ok()) << shared.status().ToString();
  ASSERT_TRUE(shared->share.has_value());
  EXPECT_EQ(shared->share->protocol, ShareProtocol::kNvmf);
  // A retry asking for another share is a different clone, as for replicas.
  d = clone(clone_of("s", "c", std::nullopt, ShareProtocol::kNbd));
  ASSERT_EQ(d.code(), Errc::kExist);
  EXPECT_NE(d.status().message().find("share"), std::string::npos) << d.status().message();
  d = clone(clone_of("s", "r"));
  EXPECT_EQ(d.status().message(), "'r' already exists on pool 'p0' and is not a clone of 's'");
  d = replica(replica_on("p0", "c"));
  EXPECT_EQ(d.status().message(), "'c' on pool 'p0' is a clone, not a replica");
  d = clone(clone_of("r", "y"));
  ASSERT_EQ(d.code(), Errc::kInval);
  EXPECT_EQ(d.status().message(), "snapshot: 'r' is not a snapshot");

  // Bad arguments name the field, before any pool is touched.
  EXPECT_EQ(replica(replica_on("", "x")).status().message(), "pool: required");
  EXPECT_EQ(replica(replica_on("p0", "")).status().message(), "name: required");
  auto bad = replica_on("p0", "x");
  bad.size = 0;
  EXPECT_EQ(replica(bad).status().message(), "size: required (bytes, a multiple of 4096)");
  bad = replica_on("p0", "x");
  bad.share = ShareProtocol::kUnknown;
  EXPECT_EQ(replica(bad).status().message(), "share: unknown protocol");
  EXPECT_EQ(snapshot(snapshot_of("r", "")).status().message(), "name: required");
  EXPECT_EQ(replica(replica_on("nope", "x")).code(), Errc::kNoEnt);
}

}  // namespace
}  // namespace tern::engine
