// malloc:// and null:// devices, and the request checks every device gets from the layer.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "common/aligned_buffer.h"
#include "test_util.h"

namespace tern {
namespace {

using test::DeviceEnv;
using test::fill;
using test::io_sync;

class RamDevice : public ::testing::TestWithParam<uint32_t> {};

TEST_P(RamDevice, WriteReadUnmapWriteZeroesFlush) {
  const uint32_t bs = GetParam();
  DeviceEnv env;
  ASSERT_TRUE(env.create(fmt::format("malloc:///m0?size_mb=8&blk_size={}", bs)).ok());
  auto d = env.open("m0");
  ASSERT_TRUE(d.ok());
  const uint64_t blocks = 64;
  AlignedBuffer w(blocks * bs), r(blocks * bs);
  fill(w.data(), w.size(), 1);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, w.data(), 100, blocks), Errc::kOk);
  EXPECT_EQ(io_sync(*env.set, 1, **d, IoType::kRead, r.data(), 100, blocks), Errc::kOk);
  EXPECT_EQ(std::memcmp(w.data(), r.data(), w.size()), 0) << "data written on one reactor reads back on another";
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kFlush), Errc::kOk);
  // Unmap the middle, zero the tail.
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kUnmap, nullptr, 110, 10), Errc::kOk);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kWriteZeroes, nullptr, 150, 14), Errc::kOk);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, r.data(), 100, blocks), Errc::kOk);
  for (uint64_t b = 0; b < blocks; ++b) {
    bool zero = (b >= 10 && b < 20) || b >= 50;
    for (uint32_t i = 0; i < bs; ++i) {
      uint8_t want = zero ? 0 : w.data()[b * bs + i];
      ASSERT_EQ(r.data()[b * bs + i], want) << "block " << b << " byte " << i;
    }
  }
  env.close(*d);
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, RamDevice, ::testing::Values(512u, 4096u));

// populate=1: every page is resident before the first I/O (no page fault inside a request), and the
// device still reads as zeros and stores data. Without it, creating the device costs no memory.
long anon_rss_kb() {
  long kb = -1;
  FILE* f = std::fopen("/proc/self/status", "r");
  if (!f) return kb;
  char line[256];
  while (std::fgets(line, sizeof line, f)) {
    if (std::strncmp(line, "RssAnon:", 8) == 0) kb = std::atol(line + 8);
  }
  std::fclose(f);
  return kb;
}

TEST(MallocDevice, PopulateMakesEveryPageResident) {
  DeviceEnv env(1);
  long before = anon_rss_kb();
  ASSERT_TRUE(env.create("malloc:///lazy?size_mb=64").ok());
  long lazy = anon_rss_kb();
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=64&populate=1").ok());
  long after = anon_rss_kb();
  ASSERT_GE(before, 0);
  EXPECT_LT(lazy - before, 16 * 1024) << "a device without populate should not be resident";
  EXPECT_GE(after - lazy, 64 * 1024) << "populate=1 should make the whole 64 MiB device resident";
  auto d = env.open("m0");
  ASSERT_TRUE(d.ok());
  AlignedBuffer r(4096), w(4096);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, r.data(), 0, 8), Errc::kOk);
  for (size_t i = 0; i < r.size(); ++i) ASSERT_EQ(r.data()[i], 0) << i;
  fill(w.data(), w.size(), 7);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, w.data(), 16, 8), Errc::kOk);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, r.data(), 16, 8), Errc::kOk);
  EXPECT_EQ(std::memcmp(w.data(), r.data(), w.size()), 0);
  env.close(*d);
}

TEST(MallocDevice, LargeUnmapReturnsPagesAndKeepsTheEdges) {
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=16").ok());
  auto d = env.open("m0");
  const uint64_t n = 8192;  // 4 MiB
  AlignedBuffer w(n * 512), r(n * 512);
  fill(w.data(), w.size(), 9);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, w.data(), 1, n), Errc::kOk);
  // 2 MiB + a bit, starting mid-page: exercises madvise plus hand-cleared edges.
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kUnmap, nullptr, 1 + 3, 4100), Errc::kOk);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, r.data(), 1, n), Errc::kOk);
  for (uint64_t b = 0; b < n; ++b) {
    bool zero = b >= 3 && b < 3 + 4100;
    ASSERT_EQ(r.data()[b * 512 + 7], zero ? 0 : w.data()[b * 512 + 7]) << b;
    ASSERT_EQ(r.data()[b * 512 + 511], zero ? 0 : w.data()[b * 512 + 511]) << b;
  }
  env.close(*d);
}

TEST(NullDevice, DiscardsWritesAndReadsZeros) {
  DeviceEnv env(1);
  auto b = env.create("null:///n0?num_blocks=1000&blk_size=4096");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->props().num_blocks, 1000u);
  auto d = env.open("n0");
  AlignedBuffer buf(8 * 4096);
  fill(buf.data(), buf.size(), 3);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, buf.data(), 0, 8), Errc::kOk);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, buf.data(), 0, 8), Errc::kOk);
  for (size_t i = 0; i < buf.size(); ++i) ASSERT_EQ(buf.data()[i], 0);
  for (IoType t : {IoType::kFlush, IoType::kUnmap, IoType::kWriteZeroes, IoType::kReset}) {
    EXPECT_EQ(io_sync(*env.set, 0, **d, t, nullptr, 0, 4), Errc::kOk) << io_type_name(t);
  }
  env.close(*d);
}

TEST(RequestChecks, OutOfRangeMisSizedAndReadOnlyRequestsNeverReachTheDevice) {
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("malloc:///m0?num_blocks=100").ok());
  auto d = env.open("m0");
  auto ro = env.open("m0", false);
  AlignedBuffer buf(4096);
  auto& set = *env.set;
  EXPECT_EQ(io_sync(set, 0, **d, IoType::kRead, buf.data(), 100, 1), Errc::kRange) << "starts at the end";
  EXPECT_EQ(io_sync(set, 0, **d, IoType::kRead, buf.data(), 96, 8), Errc::kRange) << "crosses the end";
  EXPECT_EQ(io_sync(set, 0, **d, IoType::kWrite, buf.data(), UINT64_MAX - 2, 8), Errc::kRange) << "wraps";
  EXPECT_EQ(io_sync(set, 0, **d, IoType::kUnmap, nullptr, 0, 0), Errc::kRange) << "empty";
  EXPECT_EQ(io_sync(set, 0, **d, IoType::kWriteZeroes, nullptr, 50, 51), Errc::kRange);
  EXPECT_EQ(io_sync(set, 0, **ro, IoType::kWrite, buf.data(), 0, 1), Errc::kPerm);
  EXPECT_EQ(io_sync(set, 0, **ro, IoType::kUnmap, nullptr, 0, 1), Errc::kPerm);
  EXPECT_EQ(io_sync(set, 0, **ro, IoType::kRead, buf.data(), 0, 1), Errc::kOk);
  // Buffer length must match the block count.
  Errc e = set.run_sync(0, [&]() -> Task<Errc> {
    auto ch = ChannelRef::Get(**d);
    iovec iov{buf.data(), 1000};
    co_return co_await ch->readv(&iov, 1, 0, 2);
  });
  EXPECT_EQ(e, Errc::kInval);
  e = set.run_sync(0, [&]() -> Task<Errc> {
    auto ch = ChannelRef::Get(**d);
    co_return co_await ch->readv(nullptr, 0, 0, 1);
  });
  EXPECT_EQ(e, Errc::kInval);
  // Scatter lists work.
  e = set.run_sync(0, [&]() -> Task<Errc> {
    auto ch = ChannelRef::Get(**d);
    iovec iov[3] = {{buf.data(), 100}, {buf.data() + 100, 1000}, {buf.data() + 1100, 436}};
    co_return co_await ch->writev(iov, 3, 10, 3);
  });
  EXPECT_EQ(e, Errc::kOk);
  // Statistics saw the failures as errors, per type.
  BdevStats st = set.run_sync(0, [&]() -> Task<BdevStats> { co_return co_await (*d)->bdev().stats(set); });
  EXPECT_EQ(st.of(IoType::kRead).errors, 4u);
  EXPECT_EQ(st.of(IoType::kRead).ops, 5u);
  EXPECT_EQ(st.of(IoType::kWrite).errors, 2u);
  EXPECT_EQ(st.of(IoType::kWrite).ops, 3u);
  EXPECT_EQ(st.of(IoType::kWrite).bytes, 1536u);
  EXPECT_EQ(st.inflight, 0u);
  env.close(*d);
  env.close(*ro);
}

}  // namespace
}  // namespace tern
