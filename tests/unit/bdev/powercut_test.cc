// The power-cut device: what survives a cut is exactly what was flushed, plus the subset of unflushed
// blocks the cut chose to keep; after a cut the device fails everything.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "bdev/fault_bdevs.h"
#include "common/aligned_buffer.h"
#include "test_util.h"

namespace tern {
namespace {

using test::DeviceEnv;
using test::fill;
using test::io_sync;

constexpr uint32_t kBs = 512;

struct PowerCutEnv {
  DeviceEnv env{1};
  PowerCutBdev* pc = nullptr;
  std::unique_ptr<BdevDesc> d;

  explicit PowerCutEnv(const std::string& params = "") {
    EXPECT_TRUE(env.create("malloc:///m0?size_mb=4").ok());
    auto b = env.create("powercut:///pc?base=m0" + params);
    EXPECT_TRUE(b.ok()) << b.status();
    pc = dynamic_cast<PowerCutBdev*>(*b);
    auto o = env.open("pc");
    EXPECT_TRUE(o.ok());
    d = std::move(*o);
  }
  Errc io(IoType t, void* buf = nullptr, uint64_t lba = 0, uint64_t n = 0) {
    return io_sync(*env.set, 0, *d, t, buf, lba, n);
  }
  // Removes the power-cut device (waiting for its destaging) and reads the base directly: what a
  // restarted system would find on the disk.
  std::vector<uint8_t> base_after_restart(uint64_t lba, uint64_t n) {
    env.close(d);
    EXPECT_TRUE(env.destroy("pc").ok());
    auto base = env.open("m0", false);
    EXPECT_TRUE(base.ok());
    AlignedBuffer buf(n * kBs);
    EXPECT_EQ(io_sync(*env.set, 0, **base, IoType::kRead, buf.data(), lba, n), Errc::kOk);
    env.close(*base);
    return std::vector<uint8_t>(buf.data(), buf.data() + n * kBs);
  }
};

std::vector<uint8_t> pattern(uint64_t n_blocks, uint64_t seed) {
  std::vector<uint8_t> v(n_blocks * kBs);
  fill(v.data(), v.size(), seed);
  return v;
}

TEST(PowerCut, FlushedWritesSurviveUnflushedOnesAreLost) {
  PowerCutEnv t;
  auto a = pattern(8, 1), b = pattern(8, 2);
  AlignedBuffer wa(a.size()), wb(b.size()), r(a.size());
  std::memcpy(wa.data(), a.data(), a.size());
  std::memcpy(wb.data(), b.data(), b.size());
  ASSERT_EQ(t.io(IoType::kWrite, wa.data(), 0, 8), Errc::kOk);
  ASSERT_EQ(t.io(IoType::kFlush), Errc::kOk);
  ASSERT_EQ(t.io(IoType::kWrite, wb.data(), 16, 8), Errc::kOk);
  // Before the cut the cache is visible to reads, as a disk's cache is.
  ASSERT_EQ(t.io(IoType::kRead, r.data(), 16, 8), Errc::kOk);
  EXPECT_EQ(std::memcmp(r.data(), b.data(), b.size()), 0);
  EXPECT_EQ(t.pc->dirty_blocks(), 8u);
  t.env.on_primary([&] { t.pc->cut(0.0, 1); });
  EXPECT_TRUE(t.pc->is_cut());
  EXPECT_EQ(t.io(IoType::kRead, r.data(), 0, 8), Errc::kIo) << "a device without power answers nothing";
  EXPECT_EQ(t.io(IoType::kWrite, wa.data(), 0, 8), Errc::kIo);
  EXPECT_EQ(t.pc->dropped_blocks(), 8u);
  auto disk = t.base_after_restart(0, 24);
  EXPECT_EQ(std::memcmp(disk.data(), a.data(), a.size()), 0) << "flushed data lost";
  for (size_t i = 16 * kBs; i < 24 * kBs; ++i) ASSERT_EQ(disk[i], 0) << "unflushed data survived at byte " << i;
}

TEST(PowerCut, CutAtCountsWritesAndFlushesAsEvents) {
  PowerCutEnv t("&cut_at=3");
  AlignedBuffer w(kBs), r(kBs);
  fill(w.data(), kBs, 5);
  EXPECT_EQ(t.io(IoType::kWrite, w.data(), 1, 1), Errc::kOk);  // event 0
  EXPECT_EQ(t.io(IoType::kRead, r.data(), 1, 1), Errc::kOk);   // reads are not events
  EXPECT_EQ(t.io(IoType::kWrite, w.data(), 2, 1), Errc::kOk);  // event 1
  EXPECT_EQ(t.io(IoType::kFlush), Errc::kOk);                  // event 2
  EXPECT_FALSE(t.pc->is_cut());
  EXPECT_EQ(t.io(IoType::kWrite, w.data(), 3, 1), Errc::kIo);  // event 3: the cut
  EXPECT_TRUE(t.pc->is_cut());
  EXPECT_EQ(t.pc->events(), 4u);
  auto disk = t.base_after_restart(1, 3);
  EXPECT_EQ(std::memcmp(disk.data(), w.data(), kBs), 0);
  EXPECT_EQ(std::memcmp(disk.data() + kBs, w.data(), kBs), 0);
  for (size_t i = 2 * kBs; i < 3 * kBs; ++i) ASSERT_EQ(disk[i], 0);
}

TEST(PowerCut, PersistOneKeepsEveryCachedBlock) {
  PowerCutEnv t("&cut_at=1&persist=1");
  auto a = pattern(32, 9);
  AlignedBuffer w(a.size());
  std::memcpy(w.data(), a.data(), a.size());
  ASSERT_EQ(t.io(IoType::kWrite, w.data(), 64, 32), Errc::kOk);
  EXPECT_EQ(t.io(IoType::kFlush), Errc::kIo);  // event 1 is the cut; the flush never happens
  EXPECT_EQ(t.pc->kept_blocks(), 32u);
  auto disk = t.base_after_restart(64, 32);
  EXPECT_EQ(std::memcmp(disk.data(), a.data(), a.size()), 0);
}

// A partial cut tears a multi-block write: some blocks new, the rest old; the same seed makes the same
// choice, so a failing crash test can be replayed.
TEST(PowerCut, PartialCutTearsWritesDeterministically) {
  std::vector<bool> first;
  for (int run = 0; run < 2; ++run) {
    PowerCutEnv t;
    auto a = pattern(128, 3);
    AlignedBuffer w(a.size());
    std::memcpy(w.data(), a.data(), a.size());
    ASSERT_EQ(t.io(IoType::kWrite, w.data(), 0, 128), Errc::kOk);
    t.env.on_primary([&] { t.pc->cut(0.5, 42); });
    const uint64_t kept = t.pc->kept_blocks();
    EXPECT_GT(kept, 20u);
    EXPECT_LT(kept, 108u);
    auto disk = t.base_after_restart(0, 128);
    std::vector<bool> survived;
    uint64_t n = 0;
    for (uint64_t b = 0; b < 128; ++b) {
      bool is_new = std::memcmp(disk.data() + b * kBs, a.data() + b * kBs, kBs) == 0;
      bool is_zero = std::all_of(disk.begin() + b * kBs, disk.begin() + (b + 1) * kBs, [](uint8_t c) { return c == 0; });
      ASSERT_TRUE(is_new || is_zero) << "block " << b << " is neither the old nor the new data";
      survived.push_back(is_new);
      n += is_new;
    }
    EXPECT_EQ(n, kept);
    if (run == 0) first = survived;
    else EXPECT_EQ(survived, first) << "the same seed must keep the same blocks";
  }
}

TEST(PowerCut, AFlushMakesOnlyWhatPrecededItDurable) {
  PowerCutEnv t;
  AlignedBuffer x(kBs), y(kBs), r(kBs);
  fill(x.data(), kBs, 11);
  fill(y.data(), kBs, 12);
  ASSERT_EQ(t.io(IoType::kWrite, x.data(), 5, 1), Errc::kOk);
  ASSERT_EQ(t.io(IoType::kFlush), Errc::kOk);
  ASSERT_EQ(t.io(IoType::kWrite, y.data(), 5, 1), Errc::kOk);  // overwrite, not flushed
  ASSERT_EQ(t.io(IoType::kRead, r.data(), 5, 1), Errc::kOk);
  EXPECT_EQ(std::memcmp(r.data(), y.data(), kBs), 0);
  t.env.on_primary([&] { t.pc->cut(0.0, 1); });
  auto disk = t.base_after_restart(5, 1);
  EXPECT_EQ(std::memcmp(disk.data(), x.data(), kBs), 0);
}

TEST(PowerCut, UnmapAndWriteZeroesAreCachedWritesOfZeros) {
  PowerCutEnv t;
  auto a = pattern(16, 4);
  AlignedBuffer w(a.size()), r(a.size());
  std::memcpy(w.data(), a.data(), a.size());
  ASSERT_EQ(t.io(IoType::kWrite, w.data(), 0, 16), Errc::kOk);
  ASSERT_EQ(t.io(IoType::kFlush), Errc::kOk);
  ASSERT_EQ(t.io(IoType::kUnmap, nullptr, 0, 4), Errc::kOk);
  ASSERT_EQ(t.io(IoType::kWriteZeroes, nullptr, 8, 4), Errc::kOk);
  ASSERT_EQ(t.io(IoType::kRead, r.data(), 0, 16), Errc::kOk);
  for (uint64_t b = 0; b < 16; ++b) {
    bool zeroed = b < 4 || (b >= 8 && b < 12);
    for (uint32_t i = 0; i < kBs; ++i) {
      ASSERT_EQ(r.data()[b * kBs + i], zeroed ? 0 : a[b * kBs + i]) << "block " << b;
    }
  }
  // Flushed, they reach the disk.
  ASSERT_EQ(t.io(IoType::kFlush), Errc::kOk);
  EXPECT_EQ(t.pc->dirty_blocks(), 0u);
  auto disk = t.base_after_restart(0, 16);
  EXPECT_EQ(std::memcmp(disk.data(), r.data(), disk.size()), 0);
}

TEST(PowerCut, BadParametersAreClearErrors) {
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  struct {
    const char* uri;
    Errc code;
    const char* fragment;
  } cases[] = {
      {"powercut:///pc?base=m0&persist=2", Errc::kInval, "persist must be a number from 0 to 1"},
      {"powercut:///pc?base=m0&persist=x", Errc::kInval, "persist must be a number from 0 to 1"},
      {"powercut:///pc?base=m0&cut_at=-1", Errc::kInval, "non-negative integer"},
      {"powercut:///pc?base=nope", Errc::kNoDev, "no device named 'nope'"},
      {"powercut:///pc?base=m0&when=now", Errc::kInval, "unknown query parameter 'when'"},
  };
  for (auto& c : cases) {
    auto r = env.create(c.uri);
    ASSERT_FALSE(r.ok()) << c.uri;
    EXPECT_EQ(r.code(), c.code) << c.uri << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << c.uri << ": " << r.status();
  }
}

}  // namespace
}  // namespace tern
