// Proves that the I/O path does not touch the heap in steady state: global operator new is replaced by
// a counting one (in this binary only), and a million requests must not move the counter.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <new>
#include <thread>

#include "bdev/bdev.h"
#include "common/aligned_buffer.h"
#include "nexus/nexus.h"
#include "test_util.h"

namespace {
std::atomic<uint64_t> g_allocs{0};
}  // namespace

void note_alloc() { g_allocs.fetch_add(1, std::memory_order_relaxed); }
#include "counting_new.h"

namespace tern {
namespace {

using test::DeviceEnv;

// A RAM device with a small max I/O size and a boundary, so that the layer's splitting is exercised.
class SplitRam final : public Bdev {
 public:
  SplitRam() : Bdev(make_props()), mem_(props_.size_bytes()) {}
  static BdevProps make_props() {
    BdevProps p;
    p.name = "splitram";
    p.uuid = Uuid::Generate();
    p.product = "test";
    p.block_size = 512;
    p.num_blocks = 8192;
    p.max_io_blocks = 4;
    p.io_boundary_blocks = 16;
    return p;
  }
  bool supports(IoType) const override { return true; }
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor&) override { return std::make_unique<ChannelCtx>(); }
  void submit(ChannelCtx*, BdevIo* io) override {
    if (io->type == IoType::kRead) {
      uint8_t* p = mem_.data() + io->offset_blocks * 512;
      for (int i = 0; i < io->iovcnt; ++i) {
        std::memcpy(io->iovs[i].iov_base, p, io->iovs[i].iov_len);
        p += io->iovs[i].iov_len;
      }
    }
    bdev_io_complete_deferred(io, Errc::kOk);
  }

 private:
  AlignedBuffer mem_;
};

// Keeps `qd` requests in flight through the callback interface until `total` have completed.
struct CallbackDriver {
  static constexpr int kQd = 32;
  ChannelRef* ch;
  uint64_t blocks_per_io;
  uint64_t device_blocks;
  uint64_t total;
  uint64_t issued = 0, completed = 0, errors = 0;
  uint64_t rng = 88172645463325252ull;
  BdevIo ios[kQd];
  AlignedBuffer bufs[kQd];
  std::atomic<bool> done{false};

  void issue(BdevIo* io, int slot) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    io->type = (rng & 1) ? IoType::kRead : IoType::kWrite;
    io->offset_blocks = (rng >> 8) % (device_blocks - blocks_per_io);
    io->num_blocks = blocks_per_io;
    io->set_buffer(bufs[slot].data(), blocks_per_io * 512);
    io->done = [](BdevIo* i, void* arg) {
      auto* d = static_cast<CallbackDriver*>(arg);
      ++d->completed;
      if (i->status != Errc::kOk) ++d->errors;
      if (d->issued < d->total) {
        ++d->issued;
        d->issue(i, int(i - d->ios));
      } else if (d->completed == d->total) {
        d->done.store(true);
      }
    };
    io->done_arg = this;
    ch->submit(io);
  }
};

struct DriveResult {
  uint64_t allocs;
  uint64_t errors;
};

// Warms up with `warm` requests, then counts allocations over `total` more.
DriveResult drive(DeviceEnv& env, const std::string& name, uint64_t blocks_per_io, uint64_t warm, uint64_t total) {
  auto desc = env.open(name);
  EXPECT_TRUE(desc.ok()) << desc.status();
  ChannelRef ch;
  uint64_t device_blocks = (*desc)->bdev().props().num_blocks;
  env.set->run_sync(0, [&] { ch = std::move(*ChannelRef::Get(**desc)); });
  // Builds a driver (buffers included) outside any counting window.
  auto make = [&](uint64_t n) {
    auto d = std::make_unique<CallbackDriver>();
    d->ch = &ch;
    d->blocks_per_io = blocks_per_io;
    d->device_blocks = device_blocks;
    d->total = n;
    d->issued = CallbackDriver::kQd;
    for (int i = 0; i < CallbackDriver::kQd; ++i) d->bufs[i] = AlignedBuffer(blocks_per_io * 512);
    return d;
  };
  auto run = [&](CallbackDriver& d) {
    env.set->run_sync(0, [&] {
      for (int i = 0; i < CallbackDriver::kQd; ++i) d.issue(&d.ios[i], i);
    });
    while (!d.done.load()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  };
  auto warmup = make(warm);
  run(*warmup);
  EXPECT_EQ(warmup->errors, 0u);
  auto d = make(total);
  uint64_t before = g_allocs.load();
  run(*d);
  uint64_t after = g_allocs.load();
  env.set->run_sync(0, [&] { ch.reset(); });
  env.close(*desc);
  return {after - before, d->errors};
}

TEST(NoAllocation, MillionRequestsOnRam) {
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=64").ok());
  DriveResult r = drive(env, "m0", 8, 50'000, 1'000'000);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.allocs, 0u) << "heap allocations on the I/O path";
}

TEST(NoAllocation, CoroutineWorkers) {
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=64").ok());
  auto desc = env.open("m0");
  ChannelRef ch;
  env.set->run_sync(0, [&] { ch = std::move(*ChannelRef::Get(**desc)); });
  auto run = [&](int per_worker) {
    return env.set->run_sync(0, [&]() -> Task<uint64_t> {
      int active = 32;
      uint64_t errors = 0;
      for (int w = 0; w < 32; ++w) {
        spawn([](ChannelRef& c, int n, int* active, uint64_t* errors, int w) -> Task<void> {
          alignas(4096) static thread_local uint8_t bufs[32][4096];
          for (int i = 0; i < n; ++i) {
            Errc e = co_await c.read(bufs[w], uint64_t(i * 8 + w) % 100000, 8);
            if (e != Errc::kOk) ++*errors;
          }
          --*active;
        }(ch, per_worker, &active, &errors, w));
      }
      while (active) co_await Reactor::sleep_for(1'000'000);
      co_return errors;
    });
  };
  EXPECT_EQ(run(1000), 0u);  // warm the frame pool
  uint64_t before = g_allocs.load();
  EXPECT_EQ(run(1000000 / 32), 0u);
  uint64_t after = g_allocs.load();
  EXPECT_EQ(after - before, 0u) << "coroutine I/O allocated";
  env.set->run_sync(0, [&] { ch.reset(); });
  env.close(*desc);
}

TEST(NoAllocation, SplitRequests) {
  DeviceEnv env(1);
  auto added = env.on_primary([&] { return env.registry->add(std::make_unique<SplitRam>()); });
  ASSERT_TRUE(added.ok());
  DriveResult r = drive(env, "splitram", 24, 20'000, 200'000);  // 6+ pieces each
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.allocs, 0u);
}

TEST(NoAllocation, ErrorAndDelayWrappers) {
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=64").ok());
  ASSERT_TRUE(env.create("error:///e0?base=m0&rule=op=flush").ok());
  ASSERT_TRUE(env.create("delay:///d0?base=e0&read_us=5&jitter_us=20").ok());
  DriveResult r = drive(env, "d0", 8, 20'000, 200'000);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.allocs, 0u);
}

// A nexus mirroring to three RAM children: the fan-out to every child, the join, the read choice, all from
// pools and the request's own context.
TEST(NoAllocation, NexusOverThreeChildren) {
  DeviceEnv env(1);
  const uint64_t vol = 32 << 20;
  const uint64_t child_mb = nexus::required_child_bytes(vol) >> 20;
  nexus::NexusOptions o;
  o.uuid = Uuid::Generate();
  o.size_bytes = vol;
  for (int i = 0; i < 3; ++i) {
    const Uuid u = Uuid::Generate();
    ASSERT_TRUE(env.create(fmt::format("malloc:///c{}?size_mb={}&uuid={}", i, child_mb, u.ToString())).ok());
    o.children.push_back(fmt::format("bdev:///c{}?uuid={}", i, u.ToString()));
  }
  auto nx = env.on_primary([&]() -> Task<Result<nexus::Nexus*>> {
    co_return co_await nexus::Nexus::Create(*env.registry, o, nullptr);
  });
  ASSERT_TRUE(nx.ok()) << nx.status();
  DriveResult r = drive(env, o.uuid.ToString(), 8, 50'000, 300'000);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.allocs, 0u) << "heap allocations on the nexus's I/O path";
  env.on_primary([&]() -> Task<void> {
    co_await (*nx)->close_children();
    (void)co_await env.registry->destroy(o.uuid.ToString(), true);
  });
}

TEST(NoAllocation, UringFile) {
  test::TempDir dir;
  std::string path = dir.make_file("alloc.img", 64 << 20);
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("uring://" + path).ok());
  DriveResult r = drive(env, path, 8, 5'000, 100'000);
  EXPECT_EQ(r.errors, 0u);
  EXPECT_EQ(r.allocs, 0u);
}

}  // namespace
}  // namespace tern
