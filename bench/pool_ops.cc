// pool_ops: what the pool's metadata operations cost on a real device. On a pool over a file (or block
// device) through uring://, measures: pool create time; thick replica create time (its clusters are
// zeroed with the device's write-zeroes); 4 KiB writes at QD1 into N fresh clusters of a thin replica
// (each allocates: zero the cluster, flush, log the map record, flush) against 4 KiB writes into the
// same, now allocated, clusters; the same after a snapshot (each first write copies its 4 MiB cluster:
// copy-on-write); snapshot create time; and import time of the pool holding --replicas replicas.
// Prints one table; each reference (the overwrite) is measured in the same run.
//
//   pool_ops [--file /var/tmp/tern-pool-bench.img] [--size-mb 2048] [--clusters 64] [--replicas 1000] [--core 0]
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>

#include "bdev/registry.h"
#include "common/aligned_buffer.h"
#include "common/log.h"
#include "pool/pool.h"
#include "reactor/reactor_set.h"

using namespace tern;
using namespace tern::pool;

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
}  // namespace

int main(int argc, char** argv) {
  std::string file = "/var/tmp/tern-pool-bench.img";
  uint64_t size_mb = 2048, clusters = 64, replicas = 1000;
  unsigned core = 0;
  CLI::App app{"Thin first-write and thick create cost on a pool over a real file or device."};
  app.add_option("--file", file, "Backing file (created, sparse) or block device");
  app.add_option("--size-mb", size_mb, "File size in MiB (files only)");
  app.add_option("--clusters", clusters, "Fresh clusters to write into");
  app.add_option("--replicas", replicas, "Replicas in the pool for the import measurement");
  app.add_option("--core", core, "Reactor core");
  CLI11_PARSE(app, argc, argv);
  (void)log::set_levels("warn");

  const bool is_file = !std::filesystem::exists(file) || std::filesystem::is_regular_file(file);
  if (is_file) {
    std::filesystem::remove(file);
    FILE* f = std::fopen(file.c_str(), "w");
    if (!f || ftruncate(fileno(f), off_t(size_mb) << 20) != 0) {
      std::fprintf(stderr, "pool_ops: cannot create %s\n", file.c_str());
      return 2;
    }
    std::fclose(f);
  }
  ReactorSetOptions o;
  o.cores = {int(core)};
  auto set = ReactorSet::Start(o);
  if (!set.ok()) {
    std::fprintf(stderr, "pool_ops: %s\n", set.status().ToString().c_str());
    return 2;
  }
  ReactorSet& rs = **set;
  BdevRegistry reg(rs);
  int rc = 0;
  rs.run_sync(0, [&]() -> Task<void> {
    const std::string uri = "uring://" + file;
    auto dev = co_await reg.create(uri);
    if (!dev.ok()) {
      std::fprintf(stderr, "pool_ops: %s\n", dev.status().ToString().c_str());
      rc = 2;
      co_return;
    }
    const std::string name = (*dev)->name();
    auto t0 = std::chrono::steady_clock::now();
    PoolCreateOptions po{"bench", std::nullopt, 4 << 20};
    auto pool = co_await Pool::Create(reg, name, po);
    const double create_ms = ms_since(t0);
    if (!pool.ok()) {
      std::fprintf(stderr, "pool_ops: %s\n", pool.status().ToString().c_str());
      rc = 2;
      co_return;
    }
    Pool& p = **pool;  // until the import below replaces it
    const uint64_t thick_size = std::min<uint64_t>(p.stats().capacity / 2, uint64_t(1) << 30);
    ReplicaCreateOptions thick_o{"thick", std::nullopt, thick_size, false};
    t0 = std::chrono::steady_clock::now();
    auto thick = co_await p.CreateReplica(thick_o);
    const double thick_ms = ms_since(t0);
    ReplicaCreateOptions thin_o{"thin", std::nullopt, clusters * (4 << 20), true};
    auto thin = co_await p.CreateReplica(thin_o);
    if (!thick.ok() || !thin.ok()) {
      std::fprintf(stderr, "pool_ops: replica create failed\n");
      rc = 2;
      co_return;
    }
    auto b = p.ExposeReplica(thin->uuid);
    auto d = b.ok() ? reg.open((*b)->name(), true) : Result<std::unique_ptr<BdevDesc>>(b.status());
    if (!d.ok()) {
      rc = 2;
      co_return;
    }
    auto ch = ChannelRef::Get(**d);
    if (!ch.ok()) {
      rc = 2;
      co_return;
    }
    AlignedBuffer w(4096);
    std::memset(w.data(), 0x5a, 4096);
    const uint32_t bs = (*d)->bdev().props().block_size;
    // Passes: 0 first writes (allocate), 1 overwrite, 2 after a snapshot (copy-on-write), 3 overwrite.
    double pass_us[4] = {};
    double snap_ms = 0;
    for (int pass = 0; pass < 4; ++pass) {
      if (pass == 2) {
        SnapshotOptions so{"snap", std::nullopt};
        t0 = std::chrono::steady_clock::now();
        auto s = co_await p.CreateSnapshot(thin->uuid, so);
        snap_ms = ms_since(t0);
        if (!s.ok()) {
          std::fprintf(stderr, "pool_ops: snapshot failed: %s\n", s.status().ToString().c_str());
          rc = 1;
          co_return;
        }
      }
      t0 = std::chrono::steady_clock::now();
      for (uint64_t c = 0; c < clusters; ++c) {
        Errc e = co_await ch->write(w.data(), (c * (4 << 20) + 8192) / bs, 4096 / bs);
        if (e != Errc::kOk) {
          std::fprintf(stderr, "pool_ops: write failed: %s\n", std::string(errc_name(e)).c_str());
          rc = 1;
          co_return;
        }
      }
      pass_us[pass] = ms_since(t0) * 1000.0 / double(clusters);
    }
    *ch = ChannelRef();
    d->reset();
    // Many replicas, then the time an import takes to read them back (checkpoint + log replay).
    t0 = std::chrono::steady_clock::now();
    for (uint64_t i = 0; i < replicas; ++i) {
      ReplicaCreateOptions ro{fmt::format("many-{}", i), std::nullopt, 64 << 20, true};
      auto r = co_await p.CreateReplica(ro);
      if (!r.ok()) {
        std::fprintf(stderr, "pool_ops: creating replica %llu failed: %s\n", (unsigned long long)i,
                     r.status().ToString().c_str());
        rc = 1;
        co_return;
      }
    }
    const double many_ms = ms_since(t0);
    // A crash (no export) leaves the log to replay; measure both that and a clean import.
    double import_ms[2] = {};
    for (int clean = 0; clean < 2; ++clean) {
      if (clean) {
        Status ex = co_await (*pool)->Export();
        if (!ex.ok()) rc = 1;
      }
      // After the crash case the device stays claimed by the dropped pool's replica bdevs: none here.
      if (!clean) {
        // A crash: the pool object goes without an export, and with it the exposed replica's bdev.
        pool->reset();
        co_await reg.destroy(thin->uuid.ToString(), true);
      }
      t0 = std::chrono::steady_clock::now();
      auto again_pool = co_await Pool::Import(reg, name);
      import_ms[clean] = ms_since(t0);
      if (!again_pool.ok()) {
        std::fprintf(stderr, "pool_ops: import failed: %s\n", again_pool.status().ToString().c_str());
        rc = 1;
        co_return;
      }
      *pool = std::move(*again_pool);
    }
    std::printf("device: %s (%s)\n", file.c_str(), is_file ? "file" : "block device");
    std::printf("%-44s %12s\n", "measurement", "value");
    std::printf("%-44s %9.1f ms\n", "pool create", create_ms);
    std::printf("%-44s %9.1f ms  (%llu MiB, %.2f ms per 4 MiB cluster)\n", "thick replica create (zeroing)", thick_ms,
                (unsigned long long)(thick_size >> 20), thick_ms / double(thick_size >> 22));
    std::printf("%-44s %9.1f us\n", "thin 4 KiB first write into a fresh cluster", pass_us[0]);
    std::printf("%-44s %9.1f us\n", "4 KiB write into the same clusters again", pass_us[1]);
    std::printf("%-44s %9.2f x\n", "first-write / overwrite", pass_us[0] / pass_us[1]);
    std::printf("%-44s %9.1f ms\n", "snapshot create (quiesce + one record)", snap_ms);
    std::printf("%-44s %9.1f us\n", "4 KiB first write after it (copy-on-write)", pass_us[2]);
    std::printf("%-44s %9.1f us\n", "4 KiB write into the copies again", pass_us[3]);
    std::printf("%-44s %9.2f x\n", "copy-on-write / overwrite", pass_us[2] / pass_us[3]);
    std::printf("%-44s %9.1f ms  (%.2f ms each)\n", fmt::format("create {} thin replicas", replicas).c_str(), many_ms,
                many_ms / double(replicas));
    std::printf("%-44s %9.1f ms\n", fmt::format("import with {} replicas after a crash", replicas).c_str(),
                import_ms[0]);
    std::printf("%-44s %9.1f ms\n", fmt::format("import with {} replicas, clean", replicas).c_str(), import_ms[1]);
    Status ex = co_await (*pool)->Export();
    if (!ex.ok()) rc = 1;
  });
  rs.run_sync(0, [&]() -> Task<void> { co_await reg.destroy_all(); });
  rs.stop();
  if (is_file) std::filesystem::remove(file);
  return rc;
}
