// The control plane's specs (JSON in etcd) and placement rules.
#include <gtest/gtest.h>

#include "control/placement.h"
#include "control/specs.h"

namespace tern::control {
namespace {

TEST(Specs, VolumeRoundTrips) {
  VolumeSpec v;
  v.uuid = "6f1b2c3d-0000-4000-8000-000000000001";
  v.size = 1 << 30;
  v.replicas = 3;
  v.thin = true;
  v.topology.node_labels = {{"zone", "a"}};
  v.topology.spread = {"rack"};
  v.labels = {{"app", "db"}};
  v.state = SpecState::kCreated;
  v.replica_ids = {"r1", "r2", "r3"};
  v.generation = 7;
  v.target = TargetSpec{"n1", "nvmf", {"nqn.host"}, 7, "nvmf://1.2.3.4:8420/nqn", TargetSpec::State::kPublished};
  auto back = VolumeSpec::FromJson(v.ToJson());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->ToJson(), v.ToJson());
  EXPECT_EQ(back->replicas, 3u);
  EXPECT_EQ(back->target->generation, 7u);
  EXPECT_EQ(back->topology.spread, std::vector<std::string>{"rack"});
}

TEST(Specs, OtherKindsRoundTrip) {
  NodeSpec n{"n1", "127.0.0.1:10124", "127.0.0.1:8420", {{"zone", "a"}}, {"maintenance"}, true};
  auto nb = NodeSpec::FromJson(n.ToJson());
  ASSERT_TRUE(nb.ok());
  EXPECT_EQ(nb->ToJson(), n.ToJson());
  EXPECT_TRUE(nb->cordoned());
  PoolSpec p{"p0", "n1", "uring:///dev/sdb", {{"class", "ssd"}}, SpecState::kDeleting};
  auto pb = PoolSpec::FromJson(p.ToJson());
  ASSERT_TRUE(pb.ok());
  EXPECT_EQ(pb->ToJson(), p.ToJson());
  ReplicaSpec r{"u1", "v1", "p0", "n1", 4096, true, SpecState::kCreating, "snap-part-1"};
  auto rb = ReplicaSpec::FromJson(r.ToJson());
  ASSERT_TRUE(rb.ok());
  EXPECT_EQ(rb->ToJson(), r.ToJson());
  EXPECT_EQ(rb->clone_of, "snap-part-1");
}

TEST(Specs, SnapshotsAndRestoredVolumesRoundTrip) {
  SnapshotSpec s;
  s.uuid = "s1";
  s.volume = "v1";
  s.name = "nightly";
  s.size = 1 << 30;
  s.created_unix_s = 1800000000;
  s.state = SpecState::kCreated;
  s.parts = {{"p1", "r1", "pool-a", "n1"}, {"p2", "r2", "pool-b", "n2"}};
  s.adopt_labels_of = {"v1", "v0"};
  auto sb = SnapshotSpec::FromJson(s.ToJson());
  ASSERT_TRUE(sb.ok()) << sb.status();
  EXPECT_EQ(sb->ToJson(), s.ToJson());
  ASSERT_EQ(sb->parts.size(), 2u);
  EXPECT_EQ(sb->parts[1].node, "n2");
  auto bad = SnapshotSpec::FromJson(R"({"v":1,"uuid":"s","volume":"v","name":"n","size":1,"state":"created","parts":[{"uuid":"p"}]})");
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("'replica'"), std::string::npos) << bad.status();

  VolumeSpec v;
  v.uuid = "v2";
  v.size = 1 << 30;
  v.state = SpecState::kCreated;
  v.source_snapshot = "s1";
  v.adopt_labels_of = {"v1", "v0"};
  auto vb = VolumeSpec::FromJson(v.ToJson());
  ASSERT_TRUE(vb.ok()) << vb.status();
  EXPECT_EQ(vb->source_snapshot, "s1");
  EXPECT_EQ(vb->adopt_labels_of, v.adopt_labels_of);
}

TEST(Specs, ErrorsNameTheField) {
  auto v = VolumeSpec::FromJson(R"({"v":1,"uuid":"x","size":"big","replicas":1,"state":"created"})");
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.status().message().find("'size'"), std::string::npos) << v.status();
  auto s = PoolSpec::FromJson(R"({"v":1,"name":"p","node":"n","disk":"d","state":"gone"})");
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("'state'"), std::string::npos) << s.status();
  auto ver = NodeSpec::FromJson(R"({"v":2,"id":"n","grpc_endpoint":"e"})");
  ASSERT_FALSE(ver.ok());
  EXPECT_EQ(ver.code(), Errc::kNotSup);
  EXPECT_FALSE(NodeSpec::FromJson("[1]").ok());
  EXPECT_FALSE(NodeSpec::FromJson("{").ok());
  EXPECT_FALSE(VolumeSpec::FromJson(R"({"v":1,"uuid":"x","size":1,"replicas":0,"state":"created"})").ok());
}

TEST(Specs, Names) {
  EXPECT_TRUE(check_name("pool", "p0.a_b-c").ok());
  EXPECT_FALSE(check_name("pool", "").ok());
  EXPECT_FALSE(check_name("pool", "a/b").ok());
  EXPECT_FALSE(check_name("pool", std::string(64, 'a')).ok());
}

PoolCandidate pool(std::string name, std::string node, uint64_t cap, uint64_t used, Labels nl = {}) {
  PoolCandidate p;
  p.pool = std::move(name);
  p.node = std::move(node);
  p.capacity = cap;
  p.used = used;
  p.committed = used;
  p.node_labels = std::move(nl);
  return p;
}

constexpr uint64_t G = 1ull << 30;

TEST(Placement, OneReplicaPerNodeMostFreeFirst) {
  std::vector<PoolCandidate> pools = {pool("a1", "a", 10 * G, 8 * G), pool("a2", "a", 10 * G, 0),
                                      pool("b1", "b", 10 * G, 5 * G), pool("c1", "c", 10 * G, 1 * G)};
  PlacementRequest r;
  r.count = 3;
  r.size = G;
  auto got = place(pools, r);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 3u);
  EXPECT_EQ(pools[(*got)[0]].pool, "a2");  // most free
  EXPECT_EQ(pools[(*got)[1]].pool, "c1");
  EXPECT_EQ(pools[(*got)[2]].pool, "b1");  // a's other pool is never used: node a is taken
}

TEST(Placement, FewerReplicasOnTheNodeWins) {
  std::vector<PoolCandidate> pools = {pool("a1", "a", 10 * G, 0), pool("b1", "b", 10 * G, 5 * G)};
  pools[0].node_replicas = 4;
  PlacementRequest r;
  r.size = G;
  auto got = place(pools, r);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(pools[(*got)[0]].pool, "b1");
}

TEST(Placement, RefusalsSayWhyPerPool) {
  std::vector<PoolCandidate> pools = {pool("a1", "a", 10 * G, 9 * G), pool("b1", "b", 10 * G, 0)};
  pools[1].unusable = "node b is cordoned";
  PlacementRequest r;
  r.count = 1;
  r.size = 2 * G;
  auto got = place(pools, r);
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.code(), Errc::kNoSpc);
  std::string m(got.status().message());
  EXPECT_NE(m.find("pool a1 on a: 1 GiB free, 2 GiB needed"), std::string::npos) << m;
  EXPECT_NE(m.find("pool b1 on b: node b is cordoned"), std::string::npos) << m;
  EXPECT_NE(m.find("0 of 1"), std::string::npos) << m;
}

TEST(Placement, ThinCommitmentAndReserved) {
  std::vector<PoolCandidate> pools = {pool("a1", "a", 10 * G, 0)};
  pools[0].committed = 24 * G;
  PlacementRequest r;
  r.size = 2 * G;
  r.thin = true;
  EXPECT_FALSE(place(pools, r).ok());  // 26 > 25 (250 %)
  r.size = G;
  EXPECT_TRUE(place(pools, r).ok());
  pools[0].committed = 0;
  pools[0].reserved = 9 * G;  // thick creations under way
  r.thin = false;
  r.size = 2 * G;
  EXPECT_FALSE(place(pools, r).ok());
}

TEST(Placement, LabelsAndSpread) {
  std::vector<PoolCandidate> pools = {pool("a1", "a", 10 * G, 0, {{"zone", "z1"}}), pool("b1", "b", 10 * G, 0, {{"zone", "z1"}}),
                                      pool("c1", "c", 10 * G, 1, {{"zone", "z2"}}), pool("d1", "d", 10 * G, 0)};
  pools[2].pool_labels = {{"class", "ssd"}};
  PlacementRequest r;
  r.count = 2;
  r.size = G;
  r.topology.spread = {"zone"};
  auto got = place(pools, r);
  ASSERT_TRUE(got.ok()) << got.status();
  std::set<std::string> zones;
  for (size_t i : *got) zones.insert(pools[i].node_labels.at("zone"));
  EXPECT_EQ(zones.size(), 2u);
  r.count = 3;  // only two zones exist (d has no zone label)
  auto three = place(pools, r);
  ASSERT_FALSE(three.ok());
  EXPECT_NE(std::string(three.status().message()).find("no 'zone' label"), std::string::npos) << three.status();
  PlacementRequest lab;
  lab.size = G;
  lab.topology.pool_labels = {{"class", "ssd"}};
  auto ssd = place(pools, lab);
  ASSERT_TRUE(ssd.ok());
  EXPECT_EQ(pools[(*ssd)[0]].pool, "c1");
  lab.topology.node_labels = {{"zone", "z1"}};
  EXPECT_FALSE(place(pools, lab).ok());
}

}  // namespace
}  // namespace tern::control
