// Test helpers for pools: reactors + devices (test::DeviceEnv), a pool on one of them, and one-line
// calls for the pool's operations and for I/O through exposed replicas.
#pragma once

#include <gtest/gtest.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "common/aligned_buffer.h"
#include "pool/pool.h"
#include "test_util.h"

namespace tern::pool::test_env {

using test::DeviceEnv;
using test::fill;
using test::io_sync;

constexpr uint64_t kMiB = uint64_t(1) << 20;

struct PoolFixture {
  DeviceEnv env;
  std::unique_ptr<Pool> pool;
  std::string device;

  // A pool named p1 on `device` (created by `uri`), unless `create_pool` is false.
  explicit PoolFixture(unsigned reactors = 2, const std::string& uri = "malloc:///d0?size_mb=64",
                       const std::string& dev = "d0", uint64_t cluster = 4 * kMiB, bool create_pool = true)
      : env(reactors), device(dev) {
    EXPECT_TRUE(env.create(uri).ok());
    if (create_pool) {
      EXPECT_TRUE(create(cluster).ok());
    }
  }
  ~PoolFixture() {
    if (pool) {
      (void)env.on_primary([&]() -> Task<Status> { co_return co_await pool->Export(); });
      drop();
    }
  }
  Status create(uint64_t cluster) {
    PoolCreateOptions o{"p1", std::nullopt, cluster};
    auto r = env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
      co_return co_await Pool::Create(*env.registry, device, o);
    });
    if (r.ok()) pool = std::move(*r);
    return r.status();
  }
  Status import() {
    auto r = env.on_primary([&]() -> Task<Result<std::unique_ptr<Pool>>> {
      co_return co_await Pool::Import(*env.registry, device);
    });
    if (r.ok()) pool = std::move(*r);
    return r.status();
  }
  Status export_pool() {
    Status s = env.on_primary([&]() -> Task<Status> { co_return co_await pool->Export(); });
    drop();
    return s;
  }
  // Closes the pool without exporting it: what a crash or kill leaves.
  void drop() {
    env.on_primary([&] { pool.reset(); });
  }
  // A crash: the pool object and its exposed replicas' bdevs go, nothing is exported.
  void crash() {
    if (!pool) return;
    std::vector<std::string> names;
    for (auto& r : pool->ListReplicas()) names.push_back(r.uuid.ToString());
    drop();
    for (auto& n : names) {
      if (env.registry->find(n)) {
        EXPECT_TRUE(env.destroy(n).ok());
      }
    }
  }

  Result<ReplicaMeta> try_replica(const std::string& name, uint64_t size, bool thin) {
    ReplicaCreateOptions o{name, std::nullopt, size, thin};
    return env.on_primary([&]() -> Task<Result<ReplicaMeta>> { co_return co_await pool->CreateReplica(o); });
  }
  ReplicaMeta replica(const std::string& name, uint64_t size, bool thin = false) {
    auto r = try_replica(name, size, thin);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : ReplicaMeta{};
  }
  Result<ReplicaMeta> snapshot(const Uuid& of, const std::string& name) {
    SnapshotOptions o{name, std::nullopt};
    return env.on_primary([&]() -> Task<Result<ReplicaMeta>> { co_return co_await pool->CreateSnapshot(of, o); });
  }
  Result<ReplicaMeta> clone(const Uuid& snap, const std::string& name) {
    ReplicaCreateOptions o{name, std::nullopt, 0, true};
    return env.on_primary([&]() -> Task<Result<ReplicaMeta>> { co_return co_await pool->CreateClone(snap, o); });
  }
  Result<ReplicaMeta> resize(const Uuid& id, uint64_t size, bool allow_shrink = false) {
    return env.on_primary(
        [&]() -> Task<Result<ReplicaMeta>> { co_return co_await pool->ResizeReplica(id, size, allow_shrink); });
  }
  Status destroy(const Uuid& id) {
    return env.on_primary([&]() -> Task<Status> { co_return co_await pool->DestroyReplica(id); });
  }
  std::optional<ReplicaMeta> find(const std::string& name) {
    for (auto& r : pool->ListReplicas()) {
      if (r.name == name) return r;
    }
    return std::nullopt;
  }
  std::unique_ptr<BdevDesc> expose_and_open(const Uuid& id) {
    auto b = env.on_primary([&] { return pool->ExposeReplica(id); });
    EXPECT_TRUE(b.ok()) << b.status();
    if (!b.ok()) return nullptr;
    auto d = env.open(id.ToString(), (*b)->supports(IoType::kWrite));
    EXPECT_TRUE(d.ok()) << d.status();
    return d.ok() ? std::move(*d) : nullptr;
  }
  // Byte-addressed I/O (multiples of 512) on reactor `r`.
  Errc write(BdevDesc& d, uint64_t off, const void* data, uint64_t len, unsigned r = 0) {
    AlignedBuffer b(len);
    std::memcpy(b.data(), data, len);
    return io_sync(*env.set, r, d, IoType::kWrite, b.data(), off / 512, len / 512);
  }
  Errc write_seed(BdevDesc& d, uint64_t off, uint64_t len, uint64_t seed, unsigned r = 0) {
    AlignedBuffer b(len);
    fill(b.data(), len, seed);
    return io_sync(*env.set, r, d, IoType::kWrite, b.data(), off / 512, len / 512);
  }
  std::vector<uint8_t> read(BdevDesc& d, uint64_t off, uint64_t len, unsigned r = 0) {
    AlignedBuffer b(len);
    Errc e = io_sync(*env.set, r, d, IoType::kRead, b.data(), off / 512, len / 512);
    EXPECT_EQ(e, Errc::kOk);
    return std::vector<uint8_t>(b.data(), b.data() + len);
  }
  Errc op(BdevDesc& d, IoType t, uint64_t off, uint64_t len, unsigned r = 0) {
    return io_sync(*env.set, r, d, t, nullptr, off / 512, len / 512);
  }
};

inline std::vector<uint8_t> pattern(uint64_t len, uint64_t seed) {
  std::vector<uint8_t> v(len);
  fill(v.data(), len, seed);
  return v;
}

inline bool all_zero(const std::vector<uint8_t>& v) {
  for (uint8_t b : v) {
    if (b) return false;
  }
  return true;
}

}  // namespace tern::pool::test_env
