// Randomized concurrent I/O against an in-memory model of the device.
//
// Two reactors, 16 coroutines each, issue random reads, writes (with random scatter lists), unmaps,
// write-zeroes and flushes of 1..300 blocks. Each reactor owns half of the device and never has two
// overlapping requests in flight, so the model is exact: every read, and a final full read-back, must
// match it block for block. Run over several device stacks so splitting, wrappers, reordering (delay
// jitter) and the io_uring path are all exercised.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "common/aligned_buffer.h"
#include "test_backends.h"
#include "test_util.h"

namespace tern {
namespace {

using test::DeviceEnv;
using test::SplitterBdev;
using test::TempDir;

constexpr uint32_t kBs = 512;
constexpr uint64_t kBlocks = 8192;  // 4 MiB
constexpr int kWorkers = 16;
constexpr int kOpsPerReactor = 3000;

void fill_block(uint8_t* p, uint64_t seed, uint64_t lba) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull ^ (lba + 1) * 0xbf58476d1ce4e5b9ull;
  for (uint32_t i = 0; i < kBs; i += 8) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    std::memcpy(p + i, &s, 8);
  }
}

struct Half {
  uint64_t begin, end;
  std::vector<uint64_t> model;  // per block: 0 = zeros, else the seed it was written with
  std::vector<uint8_t> busy;
  std::mt19937_64 rng;
  uint64_t next_seed;
  int ops_left = kOpsPerReactor;
  int active = 0;
  std::string failure;  // first problem seen
};

bool lock_range(Half& h, uint64_t lba, uint64_t n) {
  for (uint64_t b = lba; b < lba + n; ++b)
    if (h.busy[b - h.begin]) return false;
  for (uint64_t b = lba; b < lba + n; ++b) h.busy[b - h.begin] = 1;
  return true;
}
void unlock_range(Half& h, uint64_t lba, uint64_t n) {
  for (uint64_t b = lba; b < lba + n; ++b) h.busy[b - h.begin] = 0;
}

std::string check(const Half& h, const uint8_t* buf, uint64_t lba, uint64_t n) {
  AlignedBuffer expect(kBs);
  for (uint64_t b = lba; b < lba + n; ++b) {
    uint64_t seed = h.model[b - h.begin];
    if (seed) fill_block(expect.data(), seed, b);
    else std::memset(expect.data(), 0, kBs);
    if (std::memcmp(expect.data(), buf + (b - lba) * kBs, kBs) != 0) {
      return fmt::format("block {} does not match the model (expected {})", b, seed ? "written data" : "zeros");
    }
  }
  return {};
}

Task<void> worker(ChannelRef& ch, Half& h) {
  AlignedBuffer buf(300 * kBs, 4096);
  while (h.ops_left > 0 && h.failure.empty()) {
    --h.ops_left;
    uint64_t n = (h.rng() % 10 == 0) ? 1 + h.rng() % 300 : 1 + h.rng() % 64;
    n = std::min<uint64_t>(n, h.end - h.begin);
    uint64_t lba = h.begin + h.rng() % (h.end - h.begin - n + 1);
    int tries = 0;
    while (!lock_range(h, lba, n)) {
      if (++tries % 8 == 0) co_await Reactor::yield();
      lba = h.begin + h.rng() % (h.end - h.begin - n + 1);
    }
    unsigned kind = unsigned(h.rng() % 100);
    Errc e;
    if (kind < 40) {
      uint64_t seed = h.next_seed++;
      for (uint64_t b = 0; b < n; ++b) fill_block(buf.data() + b * kBs, seed, lba + b);
      // A random scatter list with sector-aligned pieces.
      iovec iov[8];
      int cnt = 0;
      uint64_t left = n * kBs, off = 0;
      while (left > 0) {
        uint64_t piece = cnt == 7 ? left : std::min<uint64_t>(left, (1 + h.rng() % 40) * kBs);
        iov[cnt++] = {buf.data() + off, size_t(piece)};
        off += piece;
        left -= piece;
      }
      e = co_await ch.writev(iov, cnt, lba, n);
      if (e == Errc::kOk)
        for (uint64_t b = 0; b < n; ++b) h.model[lba + b - h.begin] = seed;
    } else if (kind < 80) {
      std::memset(buf.data(), 0xee, n * kBs);
      e = co_await ch.read(buf.data(), lba, n);
      if (e == Errc::kOk && h.failure.empty()) h.failure = check(h, buf.data(), lba, n);
    } else if (kind < 88) {
      e = co_await ch.unmap(lba, n);
      if (e == Errc::kOk)
        for (uint64_t b = 0; b < n; ++b) h.model[lba + b - h.begin] = 0;
    } else if (kind < 96) {
      e = co_await ch.write_zeroes(lba, n);
      if (e == Errc::kOk)
        for (uint64_t b = 0; b < n; ++b) h.model[lba + b - h.begin] = 0;
    } else {
      e = co_await ch.flush();
    }
    if (e != Errc::kOk && h.failure.empty()) h.failure = fmt::format("request failed: {}", errc_name(e));
    unlock_range(h, lba, n);
  }
  --h.active;
}

void run_stress(DeviceEnv& env, const std::string& name) {
  auto desc = env.open(name);
  ASSERT_TRUE(desc.ok()) << desc.status();
  ASSERT_EQ((*desc)->bdev().props().num_blocks, kBlocks);
  std::vector<Half> halves(2);
  for (unsigned i = 0; i < 2; ++i) {
    Half& h = halves[i];
    h.begin = kBlocks / 2 * i;
    h.end = h.begin + kBlocks / 2;
    h.model.assign(h.end - h.begin, 0);
    h.busy.assign(h.end - h.begin, 0);
    h.rng.seed(1234 + i);
    h.next_seed = 1 + (uint64_t(i) << 40);
  }
  std::vector<ChannelRef> chans(2);
  std::vector<std::thread> drivers;
  for (unsigned i = 0; i < 2; ++i) {
    drivers.emplace_back([&, i] {
      env.set->run_sync(i, [&, i]() -> Task<void> {
        chans[i] = std::move(*ChannelRef::Get(**desc));
        Half& h = halves[i];
        h.active = kWorkers;
        for (int w = 0; w < kWorkers; ++w) spawn(worker(chans[i], h));
        while (h.active > 0) co_await Reactor::sleep_for(1'000'000);
        // Final read-back of the whole half.
        AlignedBuffer all((h.end - h.begin) * kBs, 4096);
        Errc e = co_await chans[i].read(all.data(), h.begin, h.end - h.begin);
        if (e != Errc::kOk && h.failure.empty()) h.failure = "final read failed";
        if (h.failure.empty()) h.failure = check(h, all.data(), h.begin, h.end - h.begin);
        chans[i].reset();
      });
    });
  }
  for (auto& t : drivers) t.join();
  for (auto& h : halves) EXPECT_EQ(h.failure, "") << name;
  env.close(*desc);
}

TEST(Stress, Malloc) {
  DeviceEnv env;
  ASSERT_TRUE(env.create(fmt::format("malloc:///m0?num_blocks={}", kBlocks)).ok());
  run_stress(env, "m0");
}

TEST(Stress, SplittingPassThroughOverMalloc) {
  DeviceEnv env;
  ASSERT_TRUE(env.create(fmt::format("malloc:///m0?num_blocks={}", kBlocks)).ok());
  auto added = env.on_primary([&]() -> Result<Bdev*> {
    auto base = env.registry->open("m0", true);
    if (!base.ok()) return base.status();
    BdevProps p = (*base)->bdev().props();
    p.name = "split0";
    p.uuid = Uuid::Generate();
    p.max_io_blocks = 16;
    p.io_boundary_blocks = 64;
    return env.registry->add(std::make_unique<SplitterBdev>(p, std::move(*base)));
  });
  ASSERT_TRUE(added.ok()) << added.status();
  run_stress(env, "split0");
}

TEST(Stress, UringFile) {
  TempDir dir;
  std::string path = dir.make_file("stress.img", kBlocks * kBs);
  DeviceEnv env;
  ASSERT_TRUE(env.create("uring://" + path).ok());
  run_stress(env, path);
}

TEST(Stress, ErrorWrapperWithoutRulesOverUring) {
  TempDir dir;
  std::string path = dir.make_file("stress.img", kBlocks * kBs);
  DeviceEnv env;
  ASSERT_TRUE(env.create("uring://" + path).ok());
  ASSERT_TRUE(env.create("error:///e0?base=" + path).ok());
  run_stress(env, "e0");
}

TEST(Stress, DelayJitterReordersCompletions) {
  DeviceEnv env;
  ASSERT_TRUE(env.create(fmt::format("malloc:///m0?num_blocks={}", kBlocks)).ok());
  ASSERT_TRUE(env.create("delay:///d0?base=m0&jitter_us=300").ok());
  run_stress(env, "d0");
}

}  // namespace
}  // namespace tern
