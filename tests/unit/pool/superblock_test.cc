// The pool superblock: layout, codec round trip, every single-bit corruption detected, version and
// consistency checks, and the choice between the two copies.
#include "pool/superblock.h"

#include <gtest/gtest.h>

#include <cstring>

#include "common/crc32c.h"

namespace tern::pool {
namespace {

constexpr uint64_t kGiB = uint64_t(1) << 30;
constexpr uint64_t kMiB = uint64_t(1) << 20;

Superblock layout(uint64_t size = 2 * kGiB, uint64_t cluster = 4 * kMiB) {
  auto sb = make_layout("pool-1", Uuid::Generate(), size, cluster);
  EXPECT_TRUE(sb.ok()) << sb.status();
  return *sb;
}

void reseal(uint8_t* b) {
  uint32_t c = crc32c(b, Superblock::kSize - 4);
  std::memcpy(b + Superblock::kSize - 4, &c, 4);  // little-endian host
}

TEST(Superblock, LayoutIsOrderedAlignedAndRoundTrips) {
  Superblock sb = layout();
  sb.created_ns = 1234567890123;
  sb.clean = true;
  sb.generation = 7;
  EXPECT_EQ(sb.checkpoint_a, Superblock::kAlign);
  EXPECT_LT(sb.checkpoint_b, sb.log_offset);
  EXPECT_LT(sb.log_offset + sb.log_size - 1, sb.data_offset);
  EXPECT_EQ(sb.data_offset % Superblock::kAlign, 0u);
  EXPECT_LE(sb.data_offset + sb.data_clusters * sb.cluster_size, sb.backup_offset());
  EXPECT_GT(sb.data_offset + (sb.data_clusters + 1) * sb.cluster_size, sb.backup_offset())
      << "a whole cluster more would have fit";
  uint8_t buf[Superblock::kSize];
  sb.Encode(buf);
  auto back = Superblock::Decode(buf, "test");
  ASSERT_TRUE(back.ok()) << back.status();
  uint8_t again[Superblock::kSize];
  back->Encode(again);
  EXPECT_EQ(std::memcmp(buf, again, sizeof(buf)), 0);
  EXPECT_EQ(back->name, "pool-1");
  EXPECT_EQ(back->pool_uuid, sb.pool_uuid);
  EXPECT_TRUE(back->clean);
  EXPECT_EQ(back->generation, 7u);
  EXPECT_EQ(back->created_ns, 1234567890123u);
  ASSERT_EQ(back->devices.size(), 1u);
  EXPECT_EQ(back->devices[0].uuid, sb.devices[0].uuid);
}

// The bar: metadata at most 0.1 % of the device. Small devices pay fixed 1 MiB minimums.
TEST(Superblock, MetadataOverheadIsAtMostOneThousandthOnRealDeviceSizes) {
  for (uint64_t size : {8 * kGiB, 100 * kGiB, 1024 * kGiB, 16 * 1024 * kGiB}) {
    Superblock sb = layout(size);
    const double overhead = double(sb.data_offset + Superblock::kSize) / double(size);
    EXPECT_LE(overhead, 0.001) << size / kGiB << " GiB: " << overhead * 100 << " %";
    // The checkpoints hold the state of a pool grown to four times the size.
    EXPECT_GE(sb.checkpoint_size, 4 * (size / sb.cluster_size) * 136) << size / kGiB << " GiB";
  }
}

TEST(Superblock, BadLayoutRequestsAreClearErrors) {
  auto small = make_layout("p", Uuid::Generate(), 5 * kMiB, 4 * kMiB);
  ASSERT_FALSE(small.ok());
  EXPECT_EQ(small.code(), Errc::kNoSpc);
  EXPECT_NE(small.status().message().find("too small"), std::string::npos) << small.status();
  for (uint64_t c : {uint64_t(0), 3 * kMiB, 512 * uint64_t(1024), 2 * kGiB}) {
    auto r = make_layout("p", Uuid::Generate(), 10 * kGiB, c);
    ASSERT_FALSE(r.ok()) << c;
    EXPECT_NE(r.status().message().find("power of two from 1 MiB to 1 GiB"), std::string::npos) << r.status();
  }
  for (const char* n : {"", "has space", "slash/name", "0123456789012345678901234567890123456789012345678901234567890123"}) {
    auto r = make_layout(n, Uuid::Generate(), 10 * kGiB, 4 * kMiB);
    ASSERT_FALSE(r.ok()) << n;
    EXPECT_EQ(r.code(), Errc::kInval);
  }
}

TEST(Superblock, NoMagicMeansNoPool) {
  uint8_t zero[Superblock::kSize] = {};
  auto r = Superblock::Decode(zero, "primary superblock at byte 0");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kNoEnt);
  EXPECT_NE(r.status().message().find("primary superblock at byte 0: no pool label"), std::string::npos);
}

// Every single-bit flip anywhere in the block is detected (by the magic or the checksum): a damaged
// label is never taken for a good one, and decoding it never crashes.
TEST(Superblock, EverySingleBitFlipIsDetected) {
  Superblock sb = layout();
  uint8_t good[Superblock::kSize];
  sb.Encode(good);
  for (size_t bit = 0; bit < Superblock::kSize * 8; ++bit) {
    uint8_t b[Superblock::kSize];
    std::memcpy(b, good, sizeof(b));
    b[bit / 8] ^= uint8_t(1u << (bit % 8));
    auto r = Superblock::Decode(b, "backup");
    ASSERT_FALSE(r.ok()) << "bit " << bit;
    ASSERT_TRUE(r.code() == Errc::kCorruption || r.code() == Errc::kNoEnt) << "bit " << bit << ": " << r.status();
  }
}

TEST(Superblock, NewerVersionIsNotSupported) {
  uint8_t b[Superblock::kSize];
  layout().Encode(b);
  b[8] = 2;
  reseal(b);
  auto r = Superblock::Decode(b, "primary");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kNotSup);
  EXPECT_NE(r.status().message().find("format version 2 is newer"), std::string::npos) << r.status();
}

// A block with a valid checksum but inconsistent fields (written by a buggy build, or a checksum
// collision) is refused, and the message names the field.
TEST(Superblock, InconsistentFieldsAreCorruptionNamingTheField) {
  struct Case {
    const char* what;
    void (*edit)(Superblock&);
    const char* fragment;
  } cases[] = {
      {"log overlaps checkpoint B", [](Superblock& s) { s.log_offset = s.checkpoint_b; }, "metadata log at offset"},
      {"data past the end", [](Superblock& s) { s.data_clusters += 10; }, "runs past the backup superblock"},
      {"odd cluster size", [](Superblock& s) { s.cluster_size = 3 * kMiB; }, "cluster size"},
      {"device size", [](Superblock& s) { s.devices[0].size_bytes += 4096; }, "device size"},
      {"unaligned checkpoint", [](Superblock& s) { s.checkpoint_a += 512; }, "checkpoint A"},
      {"nil uuid", [](Superblock& s) { s.pool_uuid = Uuid(); }, "UUID is nil"},
  };
  for (auto& c : cases) {
    Superblock sb = layout();
    c.edit(sb);
    uint8_t b[Superblock::kSize];
    sb.Encode(b);
    auto r = Superblock::Decode(b, "primary");
    ASSERT_FALSE(r.ok()) << c.what;
    EXPECT_EQ(r.code(), Errc::kCorruption) << c.what;
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << c.what << ": " << r.status();
  }
}

TEST(Superblock, ChoosingBetweenTheCopies) {
  Superblock sb = layout();
  Result<Superblock> good(sb);
  Result<Superblock> missing(Status::Errorf(Errc::kNoEnt, "backup: no pool label"));
  Result<Superblock> damaged(Status::Errorf(Errc::kCorruption, "primary: checksum mismatch"));

  auto same = choose_superblock(good, good);
  ASSERT_TRUE(same.ok());
  EXPECT_FALSE(same->repair_primary || same->repair_backup);
  EXPECT_TRUE(same->note.empty());

  auto from_backup = choose_superblock(damaged, good);
  ASSERT_TRUE(from_backup.ok());
  EXPECT_TRUE(from_backup->repair_primary);
  EXPECT_FALSE(from_backup->repair_backup);
  EXPECT_NE(from_backup->note.find("checksum mismatch"), std::string::npos);

  auto fix_backup = choose_superblock(good, missing);
  ASSERT_TRUE(fix_backup.ok());
  EXPECT_TRUE(fix_backup->repair_backup);

  Superblock newer = sb;
  newer.generation = sb.generation + 1;
  newer.clean = !sb.clean;
  auto stale = choose_superblock(good, Result<Superblock>(newer));
  ASSERT_TRUE(stale.ok());
  EXPECT_EQ(stale->sb.generation, newer.generation);
  EXPECT_TRUE(stale->repair_primary);

  Superblock other = layout();  // another pool's label
  auto mixed = choose_superblock(good, Result<Superblock>(other));
  ASSERT_FALSE(mixed.ok());
  EXPECT_EQ(mixed.code(), Errc::kCorruption);
  EXPECT_NE(mixed.status().message().find("different pools"), std::string::npos);

  auto none = choose_superblock(Result<Superblock>(Status::Errorf(Errc::kNoEnt, "primary: no pool label")), missing);
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.code(), Errc::kNoEnt);

  auto both = choose_superblock(damaged, Result<Superblock>(Status::Errorf(Errc::kCorruption, "backup: device count 99")));
  ASSERT_FALSE(both.ok());
  EXPECT_EQ(both.code(), Errc::kCorruption);
  EXPECT_NE(both.status().message().find("checksum mismatch"), std::string::npos);
  EXPECT_NE(both.status().message().find("device count 99"), std::string::npos);
}

}  // namespace
}  // namespace tern::pool
