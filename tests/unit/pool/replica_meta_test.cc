// The replica table: state records (typed, their codec and format) and invariants, the pool's
// create/destroy/list/stats, persistence through the log and checkpoints (with and without a clean
// export), and a power cut at every write.
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <set>
#include <string>
#include <vector>

#include "bdev/fault_bdevs.h"
#include "common/endian.h"
#include "pool/pool.h"
#include "pool/records.h"
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

// The typed records (records.h): every kind round-trips encode -> decode, the bytes are the documented
// format (docs/design/pool-format.md), and truncated, padded, corrupt and unknown records are refused with
// an error that names the kind and the byte offset.
Uuid uuid_of(uint8_t first) {
  std::array<uint8_t, 16> b{};
  for (size_t i = 0; i < b.size(); ++i) b[i] = uint8_t(first + i);
  return Uuid(b);
}

// One record of every kind, with fields that exercise the whole layout.
std::vector<MetaRecord> one_of_each() {
  ReplicaMeta obj;
  obj.uuid = uuid_of(0x10);
  obj.name = "snap-1.a";
  obj.size = 3 * (4 << 20) - 4096;
  obj.thin = true;
  obj.created_ns = 1700000000123456789ull;
  obj.snapshot = true;
  obj.discarded = true;
  obj.parent = uuid_of(0x20);
  obj.source = uuid_of(0x30);
  obj.map = {ReplicaMeta::kInherit, 8, ReplicaMeta::kZero};
  obj.props = {{"share", "nvmf"}, {"hosts", std::string(1024, 'h')}};
  return {
      records::CreateObject{obj},
      records::Destroy{uuid_of(1)},
      records::MapCluster{uuid_of(2), 7, 0xABCDEF},
      records::UnmapCluster{uuid_of(3), 0xFFFFFFF0u},
      records::Snapshot{uuid_of(4), uuid_of(5), 42, "s"},
      records::Clone{uuid_of(6), uuid_of(7), 43, std::string(255, 'c')},
      records::Resize{uuid_of(8), 1ull << 40, {5, 6, 9}},
      records::SetProperty{uuid_of(9), "share", ""},
  };
}

TEST(PoolRecords, EveryKindRoundTrips) {
  const std::vector<MetaRecord> all = one_of_each();
  ASSERT_EQ(all.size(), std::variant_size_v<MetaRecord>) << "one record of every kind";
  for (size_t i = 0; i < all.size(); ++i) {
    const MetaRecord& r = all[i];
    EXPECT_EQ(r.index(), i);
    EXPECT_EQ(RecordType(r), i + 1) << "types are 1..8 in variant order";
    const std::vector<uint8_t> bytes = EncodeRecord(r);
    ASSERT_FALSE(bytes.empty());
    EXPECT_EQ(bytes[0], RecordType(r)) << RecordName(r);
    auto back = DecodeRecord(bytes);
    ASSERT_TRUE(back.ok()) << RecordName(r) << ": " << back.status();
    EXPECT_TRUE(*back == r) << RecordName(r);
    EXPECT_EQ(RecordName(*back), RecordName(r));
  }
  // The builders the pool uses write the same bytes.
  const auto& obj = std::get<records::CreateObject>(all[0]).object;
  EXPECT_EQ(PoolState::CreateReplicaRecord(obj), EncodeRecord(all[0]));
  EXPECT_EQ(EncodeObjectRecord(obj), EncodeRecord(all[0]));
  EXPECT_EQ(PoolState::DestroyReplicaRecord(uuid_of(1)), EncodeRecord(all[1]));
  EXPECT_EQ(PoolState::MapClusterRecord(uuid_of(2), 7, 0xABCDEF), EncodeRecord(all[2]));
  EXPECT_EQ(PoolState::UnmapClusterRecord(uuid_of(3), 0xFFFFFFF0u), EncodeRecord(all[3]));
  EXPECT_EQ(PoolState::SnapshotRecord(uuid_of(4), uuid_of(5), "s", 42), EncodeRecord(all[4]));
  EXPECT_EQ(PoolState::CloneRecord(uuid_of(6), uuid_of(7), std::string(255, 'c'), 43), EncodeRecord(all[5]));
  EXPECT_EQ(PoolState::ResizeRecord(uuid_of(8), 1ull << 40, {5, 6, 9}), EncodeRecord(all[6]));
  EXPECT_EQ(PoolState::SetPropertyRecord(uuid_of(9), "share", ""), EncodeRecord(all[7]));
}

// The bytes, field by field as pool-format.md lists them: the on-disk format must not move.
struct Bytes {
  std::vector<uint8_t> b;
  Bytes& u8(uint8_t v) {
    b.push_back(v);
    return *this;
  }
  template <typename T>
  Bytes& le(T v) {
    for (size_t i = 0; i < sizeof(T); ++i) b.push_back(uint8_t(v >> (8 * i)));
    return *this;
  }
  Bytes& id(const Uuid& u) {
    b.insert(b.end(), u.bytes().begin(), u.bytes().end());
    return *this;
  }
  Bytes& str(const std::string& s) {
    b.insert(b.end(), s.begin(), s.end());
    return *this;
  }
};

TEST(PoolRecords, BytesAreTheDocumentedFormat) {
  const std::vector<MetaRecord> all = one_of_each();
  const auto& o = std::get<records::CreateObject>(all[0]).object;
  Bytes create;
  create.u8(1).id(o.uuid).u8(8).str("snap-1.a").le<uint64_t>(o.size).u8(1).le<uint64_t>(o.created_ns).u8(3);
  create.id(o.parent).id(o.source).le<uint32_t>(3).le<uint32_t>(0).le<uint32_t>(8).le<uint32_t>(0xFFFFFFFF);
  create.le<uint16_t>(2);  // properties in key order: hosts, share
  create.u8(5).str("hosts").le<uint16_t>(1024).str(std::string(1024, 'h'));
  create.u8(5).str("share").le<uint16_t>(4).str("nvmf");
  EXPECT_EQ(EncodeRecord(all[0]), create.b);
  EXPECT_EQ(EncodeRecord(all[1]), Bytes().u8(2).id(uuid_of(1)).b);
  EXPECT_EQ(EncodeRecord(all[2]), Bytes().u8(3).id(uuid_of(2)).le<uint32_t>(7).le<uint32_t>(0xABCDEF).b);
  EXPECT_EQ(EncodeRecord(all[3]), Bytes().u8(4).id(uuid_of(3)).le<uint32_t>(0xFFFFFFF0u).b);
  EXPECT_EQ(EncodeRecord(all[4]), Bytes().u8(5).id(uuid_of(4)).id(uuid_of(5)).le<uint64_t>(42).u8(1).str("s").b);
  EXPECT_EQ(EncodeRecord(all[5]),
            Bytes().u8(6).id(uuid_of(6)).id(uuid_of(7)).le<uint64_t>(43).u8(255).str(std::string(255, 'c')).b);
  EXPECT_EQ(EncodeRecord(all[6]), Bytes()
                                      .u8(7)
                                      .id(uuid_of(8))
                                      .le<uint64_t>(1ull << 40)
                                      .le<uint32_t>(3)
                                      .le<uint32_t>(5)
                                      .le<uint32_t>(6)
                                      .le<uint32_t>(9)
                                      .b);
  EXPECT_EQ(EncodeRecord(all[7]), Bytes().u8(8).id(uuid_of(9)).u8(5).str("share").le<uint16_t>(0).b);
}

bool has(const Status& s, const std::string& part) { return s.message().find(part) != std::string::npos; }

TEST(PoolRecords, TruncatedRecordsAreRefusedNamingKindAndOffset) {
  for (const MetaRecord& r : one_of_each()) {
    const std::vector<uint8_t> full = EncodeRecord(r);
    const std::string kind = std::string(RecordName(r)) + " record (type " + std::to_string(RecordType(r)) + ")";
    for (size_t len = 1; len < full.size(); ++len) {
      auto d = DecodeRecord(std::span<const uint8_t>(full.data(), len));
      ASSERT_FALSE(d.ok()) << kind << " cut to " << len << " bytes";
      EXPECT_EQ(d.code(), Errc::kCorruption) << d.status();
      EXPECT_TRUE(has(d.status(), kind + " is truncated: its ")) << d.status();
      EXPECT_TRUE(has(d.status(), " at byte ")) << d.status();
      EXPECT_TRUE(has(d.status(), "the record has " + std::to_string(len))) << d.status();
    }
  }
  // One message in full: which field, where it starts, what it needs.
  const std::vector<uint8_t> map = PoolState::MapClusterRecord(uuid_of(1), 1, 2);
  auto d = DecodeRecord(std::span<const uint8_t>(map.data(), 23));
  EXPECT_EQ(d.status().message(),
            "map cluster record (type 3) is truncated: its physical cluster at byte 21 needs 4 byte(s), the record "
            "has 23");
  auto empty = DecodeRecord({});
  EXPECT_EQ(empty.code(), Errc::kCorruption);
  EXPECT_EQ(empty.status().message(), "empty metadata record");
}

TEST(PoolRecords, TrailingBytesAreRefused) {
  for (const MetaRecord& r : one_of_each()) {
    std::vector<uint8_t> b = EncodeRecord(r);
    const size_t end = b.size();
    b.push_back(0);
    auto d = DecodeRecord(b);
    ASSERT_FALSE(d.ok()) << RecordName(r);
    EXPECT_EQ(d.code(), Errc::kCorruption);
    EXPECT_TRUE(has(d.status(), std::string(RecordName(r)) + " record (type " + std::to_string(RecordType(r)) +
                                    ") has 1 trailing byte(s) at byte " + std::to_string(end)))
        << d.status();
  }
}

TEST(PoolRecords, UnknownKindsAreRefused) {
  for (uint8_t type : {uint8_t(0), uint8_t(9), uint8_t(200), uint8_t(255)}) {
    std::vector<uint8_t> b = PoolState::DestroyReplicaRecord(uuid_of(1));
    b[0] = type;
    auto d = DecodeRecord(b);
    ASSERT_FALSE(d.ok()) << int(type);
    EXPECT_EQ(d.code(), Errc::kCorruption);
    EXPECT_EQ(d.status().message(),
              "unknown metadata record type " + std::to_string(type) + " (byte 0 of a 17-byte record)");
  }
}

TEST(PoolRecords, CorruptFieldsAreRefused) {
  const std::vector<MetaRecord> all = one_of_each();
  const std::vector<uint8_t> good = EncodeRecord(all[0]);
  // Unknown flags of a created object, at the flags' offset: type, UUID, name, size, thin, created.
  const size_t flags_at = 1 + 16 + 1 + 8 + 8 + 1 + 8;
  ASSERT_EQ(good[flags_at], 3);
  std::vector<uint8_t> b = good;
  b[flags_at] = 0x7;
  auto d = DecodeRecord(b);
  EXPECT_EQ(d.code(), Errc::kCorruption);
  EXPECT_EQ(d.status().message(), "create object record (type 1): unknown flags 0x7 at byte " + std::to_string(flags_at));
  // A map length far beyond the record: refused as truncated before anything is allocated for it.
  const size_t map_len_at = flags_at + 1 + 16 + 16;
  b = good;
  store_le<uint32_t>(b.data() + map_len_at, 0xFFFFFFFFu);
  d = DecodeRecord(b);
  EXPECT_EQ(d.code(), Errc::kCorruption);
  EXPECT_TRUE(has(d.status(), "its map at byte " + std::to_string(map_len_at + 4) + " needs 17179869180 byte(s)"))
      << d.status();
  // A name length past the end: type, replica, snapshot, created, name length (1 byte at 41), name.
  std::vector<uint8_t> snap = EncodeRecord(all[4]);
  ASSERT_EQ(snap.size(), 43u);
  snap[41] = 200;
  d = DecodeRecord(snap);
  EXPECT_EQ(d.code(), Errc::kCorruption);
  EXPECT_EQ(d.status().message(),
            "snapshot record (type 5) is truncated: its name at byte 42 needs 200 byte(s), the record has 43");
  // A property whose key breaks the rules (as the pool refuses it on SetProperty): kInval, naming it.
  const size_t prop_at = map_len_at + 4 + 3 * 4 + 2;
  b = good;
  b[prop_at + 1] = 'H';  // "hosts" -> "Hosts"
  d = DecodeRecord(b);
  EXPECT_EQ(d.code(), Errc::kInval);
  EXPECT_TRUE(has(d.status(), "create object record (type 1): property at byte " + std::to_string(prop_at) +
                                  ": property name 'Hosts'"))
      << d.status();
  // A resize whose cluster count disagrees with its bytes, either way.
  std::vector<uint8_t> rs = EncodeRecord(all[6]);
  store_le<uint32_t>(rs.data() + 25, 4);
  EXPECT_TRUE(has(DecodeRecord(rs).status(), "resize record (type 7) is truncated: its new clusters at byte 29"));
  store_le<uint32_t>(rs.data() + 25, 2);
  EXPECT_TRUE(has(DecodeRecord(rs).status(), "resize record (type 7) has 4 trailing byte(s) at byte 37"));
}

TEST(PoolRecords, ApplyRefusesWhatDoesNotDecodeAndChangesNothing) {
  PoolState st(8, 4 << 20);
  ReplicaMeta r;
  r.uuid = uuid_of(1);
  r.name = "r";
  r.size = 8 << 20;
  r.map = {1, 2};
  ASSERT_TRUE(st.Apply(PoolState::CreateReplicaRecord(r)).ok());
  const std::vector<uint8_t> before = st.Serialize();
  std::vector<uint8_t> unmap = PoolState::UnmapClusterRecord(r.uuid, 0);
  unmap.pop_back();
  Status s = st.Apply(unmap);
  EXPECT_EQ(s.code(), Errc::kCorruption);
  EXPECT_TRUE(has(s, "unmap cluster record (type 4) is truncated")) << s;
  const uint8_t unknown[] = {42};
  EXPECT_EQ(st.Apply(unknown).code(), Errc::kCorruption);
  EXPECT_EQ(st.Serialize(), before);
  EXPECT_EQ(st.free_clusters(), 6u);
  // A well-formed record the state refuses is the state's error, as before.
  s = st.Apply(PoolState::MapClusterRecord(r.uuid, 0, 5));
  EXPECT_EQ(s.code(), Errc::kCorruption);
  EXPECT_TRUE(has(s, "cluster 0 is mapped twice")) << s;
  ASSERT_TRUE(st.Apply(PoolState::UnmapClusterRecord(r.uuid, 0)).ok());
  EXPECT_EQ(st.free_clusters(), 7u);
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
