#include "pool_cmds.h"

#include <sched.h>

#include <nlohmann/json.hpp>

#include "bdev/registry.h"
#include "common/log.h"
#include "pool/pool.h"
#include "reactor/reactor_set.h"

namespace tern::ctl {
namespace {

using json = nlohmann::ordered_json;

// fsck-style exit codes for `check`: 0 clean, 1 damage import repairs by itself, 4 damage import refuses,
// 8 operational error (bad arguments, device cannot be opened).
constexpr int kClean = 0, kRepairable = 1, kDamaged = 4, kOperational = 8;

// Runs `body(registry)` on a one-reactor set with the device created from args.device; returns its code.
template <typename Body>
int with_device(const PoolArgs& a, Body body) {
  ReactorSetOptions ro;
  ro.cores = {sched_getcpu()};
  ro.pin = false;
  ro.reactor.idle_spin_ns = 0;
  auto set = ReactorSet::Start(ro);
  if (!set.ok()) {
    fmt::print(stderr, "ternctl: {}\n", set.status().message());
    return kOperational;
  }
  int rc = kOperational;
  {
    BdevRegistry reg(**set);
    (*set)->run_sync(0, [&]() -> Task<void> {
      auto dev = co_await reg.create(a.device);
      if (!dev.ok()) {
        fmt::print(stderr, "ternctl: {}\n", dev.status().message());
        co_return;
      }
      const std::string name = (*dev)->name();
      rc = co_await body(reg, name);
    });
    (*set)->run_sync(0, [&]() -> Task<void> { co_await reg.destroy_all(); });
  }
  (*set)->stop();
  return rc;
}

int run_create(const PoolArgs& a) {
  return with_device(a, [&a](BdevRegistry& reg, std::string name) -> Task<int> {
    pool::PoolCreateOptions o{a.name, std::nullopt, a.cluster_mb << 20};
    auto p = co_await pool::Pool::Create(reg, name, o);
    if (!p.ok()) {
      fmt::print(stderr, "ternctl: {}\n", p.status().message());
      co_return 1;
    }
    const pool::Superblock sb = (*p)->superblock();
    Status ex = co_await (*p)->Export();
    if (!ex.ok()) {
      fmt::print(stderr, "ternctl: {}\n", ex.message());
      co_return 1;
    }
    fmt::print("created pool '{}' ({}) on {}: {} clusters of {} MiB\n", sb.name, sb.pool_uuid.ToString(), a.device,
               sb.data_clusters, sb.cluster_size >> 20);
    co_return 0;
  });
}

int run_check(const PoolArgs& a) {
  return with_device(a, [&a](BdevRegistry& reg, std::string name) -> Task<int> {
    auto r = co_await pool::Pool::Inspect(reg, name);
    if (!r.ok()) {
      const bool no_pool = r.code() == Errc::kNoEnt;
      if (a.output == "json") {
        fmt::print("{}\n", json{{"device", a.device}, {"state", no_pool ? "no_pool" : "damaged"},
                                {"error", std::string(r.status().message())}}
                               .dump(2));
      } else {
        fmt::print("{}: {}\n", a.device, r.status().message());
      }
      co_return no_pool || r.code() == Errc::kCorruption || r.code() == Errc::kNotSup || r.code() == Errc::kRange
          ? kDamaged
          : kOperational;
    }
    const pool::PoolReport& rep = *r;
    const int rc = rep.label_note.empty() ? kClean : kRepairable;
    uint64_t committed = 0;
    for (auto& rp : rep.replicas) committed += rp.size;
    if (a.output == "json") {
      json reps = json::array();
      for (auto& rp : rep.replicas) {
        reps.push_back({{"name", rp.name}, {"uuid", rp.uuid.ToString()}, {"size", rp.size}, {"thin", rp.thin},
                        {"allocated_clusters", rp.allocated_clusters()}});
      }
      fmt::print("{}\n", json{{"device", a.device},
                              {"state", rc == kClean ? "clean" : "repairable"},
                              {"note", rep.label_note},
                              {"pool", rep.sb.name},
                              {"uuid", rep.sb.pool_uuid.ToString()},
                              {"exported_cleanly", rep.sb.clean},
                              {"cluster_size", rep.sb.cluster_size},
                              {"clusters", rep.sb.data_clusters},
                              {"used_clusters", rep.used_clusters},
                              {"committed", committed},
                              {"checkpoint_generation", rep.checkpoint_generation},
                              {"records_replayed", rep.records_replayed},
                              {"replicas", reps}}
                             .dump(2));
    } else {
      fmt::print("pool '{}' ({}) on {}: {}\n", rep.sb.name, rep.sb.pool_uuid.ToString(), a.device,
                 rc == kClean ? "clean" : "repairable");
      if (!rep.label_note.empty()) fmt::print("  {}\n", rep.label_note);
      fmt::print("  exported cleanly: {}\n", rep.sb.clean ? "yes" : "no (will be recovered at import)");
      fmt::print("  clusters: {} of {} MiB, {} used; committed {} bytes\n", rep.sb.data_clusters,
                 rep.sb.cluster_size >> 20, rep.used_clusters, committed);
      fmt::print("  metadata: checkpoint generation {}, {} log record(s) after it; every checksum and invariant holds\n",
                 rep.checkpoint_generation, rep.records_replayed);
      fmt::print("  replicas: {}\n", rep.replicas.size());
      for (auto& rp : rep.replicas) {
        fmt::print("    {} {} {} bytes {} ({} cluster(s) allocated)\n", rp.uuid.ToString(), rp.name, rp.size,
                   rp.thin ? "thin" : "thick", rp.allocated_clusters());
      }
    }
    co_return rc;
  });
}

}  // namespace

void add_pool_commands(CLI::App& app, PoolArgs& args, int (**run)(const PoolArgs&)) {
  auto* pool = app.add_subcommand("pool", "Offline pool tools that work on a device directly (the engine must not "
                                          "be using it)");
  pool->require_subcommand(1);
  auto* create = pool->add_subcommand("create", "Write a new, empty pool on a device (refuses one that holds a pool)");
  create->add_option("device", args.device, "Device URI, e.g. uring:///dev/nvme0n1")->required();
  create->add_option("--name", args.name, "Pool name")->required();
  create->add_option("--cluster-mb", args.cluster_mb, "Cluster size in MiB (power of two, 1..1024)")
      ->capture_default_str();
  create->callback([run] { *run = run_create; });
  auto* check = pool->add_subcommand(
      "check",
      "Verify a pool without writing anything: both labels, both checkpoints, the log, every checksum and "
      "invariant.\nExit status: 0 clean, 1 damage that import repairs by itself (a label copy), 4 damage import "
      "refuses (or no pool), 8 the check could not run.");
  check->add_option("device", args.device, "Device URI, e.g. uring:///dev/nvme0n1")->required();
  check->add_option("-o,--output", args.output, "normal or json")->check(CLI::IsMember({"normal", "json"}));
  check->callback([run] { *run = run_check; });
}

}  // namespace tern::ctl
