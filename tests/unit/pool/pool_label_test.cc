// The pool's label life cycle on real devices: create, export, import, repair from the copy, destroy;
// refusals; and a power cut at every write of create, import and export.
#include <gtest/gtest.h>

#include <cstring>

#include "bdev/fault_bdevs.h"
#include "common/aligned_buffer.h"
#include "pool/pool.h"
#include "test_util.h"

namespace tern::pool {
namespace {

using test::DeviceEnv;
using test::io_sync;

constexpr uint64_t kMiB = uint64_t(1) << 20;

struct PoolEnv {
  DeviceEnv env{1};

  PoolEnv() { EXPECT_TRUE(env.create("malloc:///d0?size_mb=64").ok()); }

  Result<std::unique_ptr<Pool>> create(const std::string& dev, const std::string& name, uint64_t cluster = 4 * kMiB) {
    PoolCreateOptions opts{name, std::nullopt, cluster};
    return env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
      co_return co_await Pool::Create(*env.registry, dev, opts);
    });
  }
  Result<std::unique_ptr<Pool>> import(const std::string& dev, std::optional<std::string> name = {}) {
    return env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
      co_return co_await Pool::Import(*env.registry, dev, name);
    });
  }
  Status export_pool(std::unique_ptr<Pool>& p) {
    Status s = env.on_primary([&]() -> Task<Status> { co_return co_await p->Export(); });
    env.on_primary([&] { p.reset(); });
    return s;
  }
  Status destroy_pool(std::unique_ptr<Pool>& p) {
    Status s = env.on_primary([&]() -> Task<Status> { co_return co_await p->Destroy(); });
    env.on_primary([&] { p.reset(); });
    return s;
  }
  // Overwrites 4 KiB of the (unclaimed) device at `offset` with a pattern.
  void scribble(const std::string& dev, uint64_t offset, uint8_t value) {
    auto d = env.open(dev);
    ASSERT_TRUE(d.ok());
    AlignedBuffer b(4096);
    std::memset(b.data(), value, 4096);
    ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, b.data(), offset / 512, 8), Errc::kOk);
    env.close(*d);
  }
};

TEST(PoolLabel, CreateExportImportKeepsTheIdentity) {
  PoolEnv t;
  auto p = t.create("d0", "p1");
  ASSERT_TRUE(p.ok()) << p.status();
  const Superblock made = (*p)->superblock();
  EXPECT_EQ(made.pool_size, 64 * kMiB);
  EXPECT_FALSE(made.clean);
  // The device is claimed while the pool is open.
  auto other = t.env.open("d0", true);
  EXPECT_FALSE(other.ok()) << "a pool's device must be claimed";
  ASSERT_TRUE(t.export_pool(*p).ok());
  auto q = t.import("d0", std::string("p1"));
  ASSERT_TRUE(q.ok()) << q.status();
  const Superblock& got = (*q)->superblock();
  EXPECT_EQ(got.pool_uuid, made.pool_uuid);
  EXPECT_EQ(got.name, "p1");
  EXPECT_EQ(got.data_offset, made.data_offset);
  EXPECT_EQ(got.data_clusters, made.data_clusters);
  EXPECT_GT(got.generation, made.generation);
  EXPECT_TRUE((*q)->repair_note().empty()) << (*q)->repair_note();
  ASSERT_TRUE(t.export_pool(*q).ok());
}

TEST(PoolLabel, RefusalsAreClear) {
  PoolEnv t;
  auto none = t.import("d0");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.code(), Errc::kNoEnt);
  EXPECT_NE(none.status().message().find("no pool on this device"), std::string::npos) << none.status();

  auto p = t.create("d0", "p1");
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(t.export_pool(*p).ok());
  auto again = t.create("d0", "p2");
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.code(), Errc::kExist);
  EXPECT_NE(again.status().message().find("already holds pool 'p1'"), std::string::npos) << again.status();

  auto wrong = t.import("d0", std::string("p2"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.status().message().find("holds pool 'p1', not 'p2'"), std::string::npos) << wrong.status();

  auto missing = t.create("nodev", "p1");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("cannot open device 'nodev'"), std::string::npos) << missing.status();

  ASSERT_TRUE(t.env.create("malloc:///tiny?size_mb=4").ok());
  auto tiny = t.create("tiny", "p3");
  ASSERT_FALSE(tiny.ok());
  EXPECT_EQ(tiny.code(), Errc::kNoSpc);
  EXPECT_NE(tiny.status().message().find("too small"), std::string::npos) << tiny.status();
}

TEST(PoolLabel, DamagedPrimaryIsRepairedFromTheBackupAndViceVersa) {
  PoolEnv t;
  auto p = t.create("d0", "p1");
  ASSERT_TRUE(p.ok());
  const uint64_t backup = (*p)->superblock().backup_offset();
  ASSERT_TRUE(t.export_pool(*p).ok());

  t.scribble("d0", 0, 0x00);  // wipefs / dd over the start
  auto q = t.import("d0");
  ASSERT_TRUE(q.ok()) << q.status();
  EXPECT_NE((*q)->repair_note().find("no pool label"), std::string::npos) << (*q)->repair_note();
  ASSERT_TRUE(t.export_pool(*q).ok());
  auto clean = t.import("d0");
  ASSERT_TRUE(clean.ok());
  EXPECT_TRUE((*clean)->repair_note().empty()) << "the primary should have been rewritten";
  ASSERT_TRUE(t.export_pool(*clean).ok());

  t.scribble("d0", backup, 0x5a);  // garbage over the backup
  auto r = t.import("d0");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_NE((*r)->repair_note().find("backup superblock at byte"), std::string::npos) << (*r)->repair_note();
  ASSERT_TRUE(t.export_pool(*r).ok());

  // Both damaged: refused, naming both.
  t.scribble("d0", 0, 0x5a);
  t.scribble("d0", backup, 0x5a);
  auto both = t.import("d0");
  ASSERT_FALSE(both.ok());
  EXPECT_NE(both.status().message().find("no pool on this device"), std::string::npos) << both.status();
}

TEST(PoolLabel, ADamagedLabelIsNeverOverwrittenByCreate) {
  PoolEnv t;
  auto p = t.create("d0", "p1");
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(t.export_pool(*p).ok());
  // Flip one byte inside the primary's name: magic intact, checksum wrong.
  auto d = t.env.open("d0");
  ASSERT_TRUE(d.ok());
  AlignedBuffer b(4096);
  ASSERT_EQ(io_sync(*t.env.set, 0, **d, IoType::kRead, b.data(), 0, 8), Errc::kOk);
  b.data()[40] ^= 1;
  ASSERT_EQ(io_sync(*t.env.set, 0, **d, IoType::kWrite, b.data(), 0, 8), Errc::kOk);
  t.env.close(*d);
  auto c = t.create("d0", "p2");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.code(), Errc::kExist);
  EXPECT_NE(c.status().message().find("checksum mismatch"), std::string::npos) << c.status();
}

TEST(PoolLabel, DestroyWipesBothLabels) {
  PoolEnv t;
  auto p = t.create("d0", "p1");
  ASSERT_TRUE(p.ok());
  ASSERT_TRUE(t.destroy_pool(*p).ok());
  auto q = t.import("d0");
  ASSERT_FALSE(q.ok());
  EXPECT_EQ(q.code(), Errc::kNoEnt);
  auto c = t.create("d0", "p2");
  EXPECT_TRUE(c.ok()) << c.status();
  if (c.ok()) {
    ASSERT_TRUE(t.export_pool(*c).ok());
  }
}

// Power cut at every device event of create -> export -> import -> export, with nothing, everything or
// a seeded half of the unflushed blocks surviving. Afterwards the base device either holds no pool (the
// cut came before anything was durable) or a pool that imports with the right identity: never a damaged
// one, never an error other than "no pool".
TEST(PoolLabel, PowerCutAtEveryWriteOfTheLifeCycle) {
  // Count the events of one clean run.
  uint64_t total = 0;
  {
    PoolEnv t;
    ASSERT_TRUE(t.env.create("powercut:///pc?base=d0").ok());
    auto p = t.create("pc", "p1");
    ASSERT_TRUE(p.ok());
    ASSERT_TRUE(t.export_pool(*p).ok());
    auto q = t.import("pc");
    ASSERT_TRUE(q.ok());
    ASSERT_TRUE(t.export_pool(*q).ok());
    total = dynamic_cast<PowerCutBdev*>(t.env.registry->find("pc"))->events();
  }
  ASSERT_GE(total, 12u) << "create, export, import and export each write two labels with flushes";
  int found_pool = 0, found_none = 0;
  for (uint64_t at = 0; at <= total; ++at) {
    for (double persist : {0.0, 0.5, 1.0}) {
      SCOPED_TRACE(::testing::Message() << "cut at event " << at << ", persist " << persist);
      PoolEnv t;
      ASSERT_TRUE(t.env.create(fmt::format("powercut:///pc?base=d0&cut_at={}&persist={}&seed={}", at, persist, at)).ok());
      Uuid id;
      {
        auto p = t.create("pc", "p1");
        if (p.ok()) {
          id = (*p)->superblock().pool_uuid;
          Status s = t.export_pool(*p);
          if (s.ok()) {
            auto q = t.import("pc");
            if (q.ok()) (void)t.export_pool(*q);
          }
        }
      }
      ASSERT_TRUE(t.env.destroy("pc").ok());
      auto after = t.import("d0");
      if (after.ok()) {
        ++found_pool;
        EXPECT_EQ((*after)->superblock().name, "p1");
        if (!id.is_nil()) {
          EXPECT_EQ((*after)->superblock().pool_uuid, id);
        }
        ASSERT_TRUE(t.export_pool(*after).ok());
      } else {
        ++found_none;
        EXPECT_EQ(after.code(), Errc::kNoEnt) << after.status();
        // Nothing durable means create never completed its flushes.
        EXPECT_LT(at, total);
      }
    }
  }
  EXPECT_GT(found_pool, 0);
  EXPECT_GT(found_none, 0);
}

}  // namespace
}  // namespace tern::pool
