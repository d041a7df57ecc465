#include "pool_cmds.h"

#include <sched.h>

#include <nlohmann/json.hpp>

#include "bdev/registry.h"
#include "common/log.h"
#include "common/units.h"
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
  ro.reactor.await_spin_ns = 0;
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
    for (auto& rp : rep.replicas) committed += rp.snapshot ? 0 : rp.size;
    if (a.output == "json") {
      json reps = json::array();
      for (size_t i = 0; i < rep.replicas.size(); ++i) {
        const pool::ReplicaMeta& rp = rep.replicas[i];
        reps.push_back({{"name", rp.name},
                        {"uuid", rp.uuid.ToString()},
                        {"kind", rp.snapshot ? "snapshot" : rp.clone() ? "clone" : "replica"},
                        {"size", rp.size},
                        {"thin", rp.thin},
                        {"discarded", rp.discarded},
                        {"parent", rp.parent.is_nil() ? "" : rp.parent.ToString()},
                        {"source", rp.source.is_nil() ? "" : rp.source.ToString()},
                        {"created_ns", rp.created_ns},
                        {"map", rp.map},
                        {"properties", rp.props},
                        {"allocated_clusters", rp.allocated_clusters()},
                        {"allocated_bytes", rep.space[i].allocated},
                        {"referenced_bytes", rep.space[i].referenced},
                        {"exclusive_bytes", rep.space[i].exclusive}});
      }
      fmt::print("{}\n", json{{"device", a.device},
                              {"state", rc == kClean ? "clean" : "repairable"},
                              {"note", rep.label_note},
                              {"pool", rep.sb.name},
                              {"uuid", rep.sb.pool_uuid.ToString()},
                              {"exported_cleanly", rep.sb.clean},
                              {"cluster_size", rep.sb.cluster_size},
                              {"data_offset", rep.sb.data_offset},
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
        fmt::print("    {} {} {} bytes {}{}{} ({} cluster(s) allocated)\n", rp.uuid.ToString(), rp.name, rp.size,
                   rp.snapshot ? "snapshot" : rp.clone() ? "clone" : rp.thin ? "thin" : "thick",
                   rp.discarded ? " discarded" : "", rp.parent.is_nil() ? "" : " reads through " + rp.parent.ToString(),
                   rp.allocated_clusters());
      }
    }
    co_return rc;
  });
}

// Imports the pool, runs `change` on it, exports it cleanly. Exit status 0, or 1 with the error printed.
template <typename Change>
int with_pool(const PoolArgs& a, Change change) {
  return with_device(a, [&a, &change](BdevRegistry& reg, std::string name) -> Task<int> {
    auto p = co_await pool::Pool::Import(reg, name);
    if (!p.ok()) {
      fmt::print(stderr, "ternctl: {}\n", p.status().message());
      co_return 1;
    }
    pool::Pool& pl = **p;
    Status s = co_await change(pl);
    Status ex = co_await pl.Export();
    if (s.ok()) s = ex;
    if (!s.ok()) {
      fmt::print(stderr, "ternctl: {}\n", s.message());
      co_return 1;
    }
    co_return 0;
  });
}

// A replica, snapshot or clone by name or UUID.
Result<pool::ReplicaMeta> find_object(pool::Pool& p, const std::string& what) {
  for (const auto& r : p.ListReplicas()) {
    if (!r.discarded && (r.name == what || r.uuid.ToString() == what)) return r;
  }
  return Status::Errorf(Errc::kNoEnt, "pool '{}' has no replica, snapshot or clone '{}'", p.superblock().name, what);
}

std::string describe(const pool::ReplicaMeta& r) {
  return fmt::format("{} '{}' ({}), {} bytes", r.snapshot ? "snapshot" : r.clone() ? "clone" : r.thin ? "thin replica" : "thick replica",
                     r.name, r.uuid.ToString(), r.size);
}

int run_add_replica(const PoolArgs& a) {
  auto size = parse_size(a.size);
  if (!size.ok()) {
    fmt::print(stderr, "ternctl: --size: {}\n", size.status().message());
    return 2;
  }
  return with_pool(a, [&a, &size](pool::Pool& p) -> Task<Status> {
    pool::ReplicaCreateOptions o{a.name, std::nullopt, *size, a.thin};
    auto r = co_await p.CreateReplica(o);
    if (!r.ok()) co_return r.status();
    fmt::print("created {}\n", describe(*r));
    co_return Status::Ok();
  });
}

int run_snapshot(const PoolArgs& a) {
  return with_pool(a, [&a](pool::Pool& p) -> Task<Status> {
    auto of = find_object(p, a.of);
    if (!of.ok()) co_return of.status();
    pool::SnapshotOptions o{a.name, std::nullopt};
    auto r = co_await p.CreateSnapshot(of->uuid, o);
    if (!r.ok()) co_return r.status();
    fmt::print("created {} of '{}'\n", describe(*r), of->name);
    co_return Status::Ok();
  });
}

int run_clone(const PoolArgs& a) {
  return with_pool(a, [&a](pool::Pool& p) -> Task<Status> {
    auto of = find_object(p, a.of);
    if (!of.ok()) co_return of.status();
    pool::ReplicaCreateOptions o{a.name, std::nullopt, 0, true};
    auto r = co_await p.CreateClone(of->uuid, o);
    if (!r.ok()) co_return r.status();
    fmt::print("created {} of '{}'\n", describe(*r), of->name);
    co_return Status::Ok();
  });
}

int run_remove(const PoolArgs& a) {
  return with_pool(a, [&a](pool::Pool& p) -> Task<Status> {
    auto r = find_object(p, a.name);
    if (!r.ok()) co_return r.status();
    Status s = co_await p.DestroyReplica(r->uuid);
    if (!s.ok()) co_return s;
    bool discarded = false;
    for (const auto& x : p.ListReplicas()) discarded |= x.uuid == r->uuid;
    fmt::print("removed {}{}\n", describe(*r),
               discarded ? " (its space stays in use until fewer than two clones read from it)" : "");
    co_return Status::Ok();
  });
}

int run_grow(const PoolArgs& a) {
  return with_pool(a, [](pool::Pool& p) -> Task<Status> {
    const uint64_t before = p.stats().capacity;
    auto r = co_await p.Grow();
    if (!r.ok()) co_return r.status();
    if (r->capacity == before) {
      fmt::print("pool '{}' already uses the whole device ({} bytes of clusters)\n", p.superblock().name, before);
    } else {
      fmt::print("pool '{}' grew from {} to {} bytes of clusters\n", p.superblock().name, before, r->capacity);
    }
    co_return Status::Ok();
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

  auto* add = pool->add_subcommand("add-replica", "Create a replica (thick unless --thin) in the pool on a device");
  add->add_option("device", args.device, "Device URI")->required();
  add->add_option("--name", args.name, "Replica name")->required();
  add->add_option("--size", args.size, "Size: bytes or 512m, 10g, ... (a multiple of 4 KiB)")->required();
  add->add_flag("--thin", args.thin, "Allocate clusters on first write instead of now");
  add->callback([run] { *run = run_add_replica; });
  auto* snap = pool->add_subcommand("snapshot", "Take a read-only snapshot of a replica or clone");
  snap->add_option("device", args.device, "Device URI")->required();
  snap->add_option("--of", args.of, "The replica or clone (name or UUID)")->required();
  snap->add_option("--name", args.name, "Snapshot name")->required();
  snap->callback([run] { *run = run_snapshot; });
  auto* clone = pool->add_subcommand("clone", "Create a thin writable clone of a snapshot");
  clone->add_option("device", args.device, "Device URI")->required();
  clone->add_option("--of", args.of, "The snapshot (name or UUID)")->required();
  clone->add_option("--name", args.name, "Clone name")->required();
  clone->callback([run] { *run = run_clone; });
  auto* rm = pool->add_subcommand("remove",
                                  "Destroy a replica, clone or snapshot (a snapshot two or more others still read from "
                                  "is kept, discarded, until fewer do)");
  rm->add_option("device", args.device, "Device URI")->required();
  rm->add_option("--name", args.name, "Name or UUID")->required();
  rm->callback([run] { *run = run_remove; });
  auto* grow = pool->add_subcommand("grow",
                                    "Take the new space of a device that got bigger (disk, partition or file); the "
                                    "backup label moves to the new end first");
  grow->add_option("device", args.device, "Device URI")->required();
  grow->callback([run] { *run = run_grow; });
}

}  // namespace tern::ctl
