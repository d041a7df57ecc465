#include "engine_cmds.h"

#include <grpcpp/grpcpp.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <map>
#include <memory>

#include "common/units.h"
#include "common/uuid.h"
#include "engine_client.h"
#include "output.h"
#include "rebuild_cmds.h"
#include "tern/engine/v1/bdev.grpc.pb.h"
#include "tern/engine/v1/nexus.grpc.pb.h"
#include "tern/engine/v1/node.grpc.pb.h"
#include "tern/engine/v1/nvmf.grpc.pb.h"
#include "tern/engine/v1/pool.grpc.pb.h"
#include "tern/engine/v1/replica.grpc.pb.h"
#include "tern/engine/v1/snapshot.grpc.pb.h"
#include "tern/engine/v1/stats.grpc.pb.h"
#include "tern/engine/v1/test.grpc.pb.h"

namespace tern::ctl {

namespace v1 = ::tern::engine::v1;

namespace {

// A replica by name or UUID.
v1::ReplicaRef ref(const std::string& what, const std::string& pool) {
  v1::ReplicaRef r;
  if (Uuid::Parse(what).ok()) {
    r.set_uuid(what);
  } else {
    r.set_name(what);
  }
  r.set_pool(pool);
  return r;
}

v1::ShareProtocol protocol(const std::string& s) {
  if (s == "nvmf") return v1::SHARE_PROTOCOL_NVMF;
  if (s == "nbd") return v1::SHARE_PROTOCOL_NBD;
  return v1::SHARE_PROTOCOL_NONE;
}

std::string share_cell(const v1::Share& s) { return s.protocol() == v1::SHARE_PROTOCOL_NONE ? "-" : s.uri(); }

const char* kind_name(v1::ReplicaKind k) {
  switch (k) {
    case v1::REPLICA_KIND_SNAPSHOT:
      return "snapshot";
    case v1::REPLICA_KIND_CLONE:
      return "clone";
    default:
      return "replica";
  }
}

// ------------------------------------------------------------------------------------------------
// Tables

void pools_table(const google::protobuf::RepeatedPtrField<v1::Pool>& pools) {
  print_rows<v1::Pool>({{"NAME", [](auto& p) { return p.name(); }},
                        {"STATE", [](auto& p) { return p.state() == v1::POOL_STATE_ONLINE ? std::string("online")
                                                                                          : "degraded: " + p.state_reason(); }},
                        {"CAPACITY", [](auto& p) { return sz(p.capacity()); }},
                        {"USED", [](auto& p) { return sz(p.used()); }},
                        {"COMMITTED", [](auto& p) { return sz(p.committed()); }},
                        {"OBJECTS", [](auto& p) { return std::to_string(p.replica_count()); }},
                        {"DISK", [](auto& p) { return p.disk(); }}},
                       pools, "pools");
}

void replicas_table(const google::protobuf::RepeatedPtrField<v1::Replica>& reps) {
  print_rows<v1::Replica>({{"NAME", [](auto& r) { return r.name(); }},
                           {"UUID", [](auto& r) { return r.uuid(); }},
                           {"POOL", [](auto& r) { return r.pool(); }},
                           {"KIND", [](auto& r) { return std::string(kind_name(r.kind())) + (r.discarded() ? " (discarded)" : ""); }},
                           {"SIZE", [](auto& r) { return sz(r.size()); }},
                           {"THIN", [](auto& r) { return std::string(r.thin() ? "yes" : "no"); }},
                           {"ALLOCATED", [](auto& r) { return sz(r.allocated()); }},
                           {"SHARE", [](auto& r) { return share_cell(r.share()); }}},
                          reps, "replicas");
}

void bdevs_table(const google::protobuf::RepeatedPtrField<v1::Bdev>& bdevs) {
  print_rows<v1::Bdev>({{"NAME", [](auto& b) { return b.name(); }},
                        {"PRODUCT", [](auto& b) { return b.product(); }},
                        {"SIZE", [](auto& b) { return sz(b.size()); }},
                        {"BLOCK", [](auto& b) { return std::to_string(b.block_size()); }},
                        {"CLAIMED BY", [](auto& b) { return b.claimed_by().empty() ? std::string("-") : b.claimed_by(); }},
                        {"OPEN", [](auto& b) { return std::to_string(b.open_count()); }},
                        {"SHARE", [](auto& b) { return share_cell(b.share()); }},
                        {"URI", [](auto& b) { return b.uri().empty() ? (b.pool().empty() ? "-" : "pool " + b.pool()) : b.uri(); }}},
                       bdevs, "devices");
}

std::string us(uint64_t ns) { return fmt::format("{:.1f}", double(ns) / 1000.0); }

void stats_table(const google::protobuf::RepeatedPtrField<v1::IoStats>& st) {
  print_rows<v1::IoStats>({{"NAME", [](auto& s) { return s.name(); }},
                           {"READS", [](auto& s) { return std::to_string(s.num_read_ops()); }},
                           {"READ", [](auto& s) { return sz(s.bytes_read()); }},
                           {"WRITES", [](auto& s) { return std::to_string(s.num_write_ops()); }},
                           {"WRITTEN", [](auto& s) { return sz(s.bytes_written()); }},
                           {"UNMAPS", [](auto& s) { return std::to_string(s.num_unmap_ops()); }},
                           {"FLUSHES", [](auto& s) { return std::to_string(s.num_flush_ops()); }},
                           {"ERRORS", [](auto& s) { return std::to_string(s.read_errors() + s.write_errors() + s.other_errors()); }},
                           {"READ P50/P99 us", [](auto& s) { return us(s.read_latency().p50_ns()) + "/" + us(s.read_latency().p99_ns()); }},
                           {"WRITE P50/P99 us", [](auto& s) { return us(s.write_latency().p50_ns()) + "/" + us(s.write_latency().p99_ns()); }}},
                          st, "devices");
}

void subsystems_table(const google::protobuf::RepeatedPtrField<v1::Subsystem>& subs) {
  print_rows<v1::Subsystem>(
      {{"NQN", [](auto& s) { return s.nqn(); }},
       {"NAMESPACES", [](auto& s) {
          std::vector<std::string> v;
          for (auto& n : s.namespaces()) v.push_back(fmt::format("{}:{}", n.nsid(), n.device()));
          return v.empty() ? std::string("-") : fmt::format("{}", fmt::join(v, ","));
        }},
       {"HOSTS", [](auto& s) {
          return s.allow_any_host() ? std::string("any") : fmt::format("{}", fmt::join(s.allowed_hosts(), ","));
        }},
       {"CONNECTED", [](auto& s) {
          std::vector<std::string> v;
          for (auto& c : s.controllers()) v.push_back(fmt::format("{}({}q)", c.host_nqn(), c.io_queues()));
          return v.empty() ? std::string("-") : fmt::format("{}", fmt::join(v, ","));
        }},
       {"LISTENERS", [](auto& s) { return fmt::format("{}", fmt::join(s.listeners(), ",")); }}},
      subs, "subsystems");
}

// ------------------------------------------------------------------------------------------------
// Command groups

struct Args {
  std::string name, disk, uuid, pool, size = "", share = "none", of, uri, state, listener, nqn, device;
  std::string key, child, reason = "offline", protocol = "nvmf", ana;
  std::vector<std::string> children;
  uint32_t cntlid_min = 0, cntlid_max = 0;
  std::string cluster_size;
  bool thin = false, or_import = false, allow_shrink = false, all = false, force = false;
  std::vector<std::string> hosts, rules;
  uint32_t group = 1;
  uint64_t read_us = 0, write_us = 0, other_us = 0, jitter_us = 0, generation = 1;
  std::string offset = "0", length;
  std::string resv_key, resv_type, preempt = "holder", preempt_key;
  std::string snapshot_uuid;
  std::vector<std::string> child_snapshots;  // CHILD=SNAPSHOT
  bool no_auto_rebuild = false;
  uint32_t al_extents = 0;
  std::string region;
  std::string rebuild_rate, rebuild_segment;
  uint32_t rebuild_concurrency = 0;
};
Args a;

int bad(const Status& s) {
  fmt::print(stderr, "ternctl: {}\n", s.message());
  return 2;
}

void add_pool(CLI::App& app, std::function<int()>* run) {
  auto* pool = app.add_subcommand("pool", "Pools on the engine's node: create, import, list, grow, export, destroy");
  pool->require_subcommand(1);
  auto* create = pool->add_subcommand("create", "Create a pool on a disk (refuses a disk that holds a pool unless --or-import)");
  create->add_option("name", a.name, "Pool name")->required();
  create->add_option("disk", a.disk, "Disk URI (uring:///dev/sdb, uring:///var/lib/tern/p.img) or device name")->required();
  create->add_option("--uuid", a.uuid, "Pool UUID (default: a new one)");
  create->add_option("--cluster-size", a.cluster_size, "Allocation unit, a power of two >= 1MiB (default 4MiB)");
  create->add_flag("--or-import", a.or_import, "Import the pool if the disk holds one with this name");
  create->callback([run] {
    *run = [] {
      v1::CreatePoolRequest r;
      r.set_name(a.name);
      r.set_disk(a.disk);
      r.set_uuid(a.uuid);
      if (!a.cluster_size.empty()) {
        auto cs = size_arg(a.cluster_size);
        if (!cs.ok()) return bad(cs.status());
        r.set_cluster_size(*cs);
      }
      v1::Pool p;
      int rc = call(a.or_import ? &v1::PoolService::Stub::CreateOrImportPool : &v1::PoolService::Stub::CreatePool, r, &p);
      if (rc) return rc;
      v1::ListPoolsReply l;
      *l.add_pools() = p;
      return show(p, [&] { pools_table(l.pools()); });
    };
  });
  auto* imp = pool->add_subcommand("import", "Import the pool on a disk (after a move, or one exported earlier)");
  imp->add_option("disk", a.disk, "Disk URI or device name")->required();
  imp->add_option("--name", a.name, "Refuse unless the pool has this name");
  imp->callback([run] {
    *run = [] {
      v1::ImportPoolRequest r;
      r.set_disk(a.disk);
      r.set_name(a.name);
      v1::Pool p;
      if (int rc = call(&v1::PoolService::Stub::ImportPool, r, &p)) return rc;
      v1::ListPoolsReply l;
      *l.add_pools() = p;
      return show(p, [&] { pools_table(l.pools()); });
    };
  });
  auto* list = pool->add_subcommand("list", "List pools with capacity, used and committed space");
  list->add_option("name", a.name, "Only this pool");
  list->callback([run] {
    *run = [] {
      v1::ListPoolsRequest r;
      r.set_name(a.name);
      v1::ListPoolsReply l;
      if (int rc = call(&v1::PoolService::Stub::ListPools, r, &l)) return rc;
      if (!a.name.empty() && l.pools().empty()) {
        fmt::print(stderr, "ternctl: no pool '{}'\n", a.name);
        return 3;
      }
      return show(l, [&] { pools_table(l.pools()); });
    };
  });
  for (auto [verb, help] : {std::pair{"export", "Unshare its replicas, mark the pool clean and release its disk"},
                            std::pair{"destroy", "Delete the pool and wipe its labels (refused while it holds replicas, "
                                                 "snapshots or clones, unless --force: then they go too)"},
                            std::pair{"grow", "Use new space after the disk grew"}}) {
    auto* c = pool->add_subcommand(verb, help);
    c->add_option("name", a.name, "Pool name")->required();
    if (std::string(verb) == "destroy") {
      c->add_flag("--force", a.force, "Destroy the replicas, snapshots and clones it holds too (their data is lost)");
    }
    std::string v = verb;
    c->callback([run, v] {
      *run = [v] {
        v1::PoolRef r;
        r.set_name(a.name);
        if (v == "grow") {
          v1::Pool p;
          if (int rc = call(&v1::PoolService::Stub::GrowPool, r, &p)) return rc;
          v1::ListPoolsReply l;
          *l.add_pools() = p;
          return show(p, [&] { pools_table(l.pools()); });
        }
        v1::Empty e;
        int rc = 0;
        if (v == "export") {
          rc = call(&v1::PoolService::Stub::ExportPool, r, &e);
        } else {
          v1::DestroyPoolRequest d;
          d.set_name(a.name);
          d.set_force(a.force);
          rc = call(&v1::PoolService::Stub::DestroyPool, d, &e);
        }
        if (rc == 0 && g.format() == Format::kTable) fmt::print("pool '{}' {}\n", a.name, v == "export" ? "exported" : "destroyed");
        if (rc == 0 && g.format() != Format::kTable) print_message(e, g.format());
        return rc;
      };
    });
  }
}

int replica_reply(const v1::Replica& r) {
  v1::ListReplicasReply l;
  *l.add_replicas() = r;
  return show(r, [&] { replicas_table(l.replicas()); });
}

void add_replica(CLI::App& app, std::function<int()>* run) {
  auto* rep = app.add_subcommand("replica", "Replicas (thin or thick volumes on a pool): create, list, share, resize, destroy");
  rep->require_subcommand(1);
  auto* create = rep->add_subcommand("create", "Create a replica; with --share, share it at once");
  create->add_option("name", a.name, "Replica name (unique in its pool)")->required();
  create->add_option("--pool", a.pool, "Pool")->required();
  create->add_option("--size", a.size, "Size: 1GiB, 512m, ... (a multiple of 4 KiB)")->required();
  create->add_flag("--thin", a.thin, "Allocate space on first write (default: reserve it all now)");
  create->add_option("--uuid", a.uuid, "UUID (default: a new one)");
  create->add_option("--share", a.share, "Share over nvmf or nbd")->check(CLI::IsMember({"none", "nvmf", "nbd"}));
  create->add_option("--allowed-host", a.hosts, "Host NQN allowed to connect (repeat; none = any host)");
  create->callback([run] {
    *run = [] {
      auto s = size_arg(a.size);
      if (!s.ok()) return bad(s.status());
      v1::CreateReplicaRequest r;
      r.set_name(a.name);
      r.set_pool(a.pool);
      r.set_size(*s);
      r.set_thin(a.thin);
      r.set_uuid(a.uuid);
      r.set_share(protocol(a.share));
      for (auto& h : a.hosts) r.add_allowed_hosts(h);
      v1::Replica out;
      if (int rc = call(&v1::ReplicaService::Stub::CreateReplica, r, &out)) return rc;
      return replica_reply(out);
    };
  });
  auto* list = rep->add_subcommand("list", "List replicas and clones (--all: snapshots too)");
  list->add_option("--pool", a.pool, "Only on this pool");
  list->add_option("--name", a.name, "Only with this name");
  list->add_option("--uuid", a.uuid, "Only this UUID");
  list->add_flag("--all", a.all, "Include snapshots");
  list->callback([run] {
    *run = [] {
      v1::ListReplicasRequest r;
      r.set_pool(a.pool);
      r.set_name(a.name);
      r.set_uuid(a.uuid);
      r.set_include_snapshots(a.all);
      v1::ListReplicasReply l;
      if (int rc = call(&v1::ReplicaService::Stub::ListReplicas, r, &l)) return rc;
      return show(l, [&] { replicas_table(l.replicas()); });
    };
  });
  auto* destroy = rep->add_subcommand("destroy", "Unshare and destroy a replica or clone");
  destroy->add_option("replica", a.name, "Name or UUID")->required();
  destroy->add_option("--pool", a.pool, "Pool (when the name is used on several)");
  destroy->callback([run] {
    *run = [] {
      v1::Empty e;
      if (int rc = call(&v1::ReplicaService::Stub::DestroyReplica, ref(a.name, a.pool), &e)) return rc;
      if (g.format() == Format::kTable) fmt::print("replica '{}' destroyed\n", a.name);
      else print_message(e, g.format());
      return 0;
    };
  });
  auto* resize = rep->add_subcommand("resize", "Grow a replica (shrink with --allow-shrink: data past the end is lost)");
  resize->add_option("replica", a.name, "Name or UUID")->required();
  resize->add_option("size", a.size, "New size")->required();
  resize->add_option("--pool", a.pool, "Pool");
  resize->add_flag("--allow-shrink", a.allow_shrink, "Allow a smaller size");
  resize->callback([run] {
    *run = [] {
      auto s = size_arg(a.size);
      if (!s.ok()) return bad(s.status());
      v1::ResizeReplicaRequest r;
      *r.mutable_replica() = ref(a.name, a.pool);
      r.set_size(*s);
      r.set_allow_shrink(a.allow_shrink);
      v1::Replica out;
      if (int rc = call(&v1::ReplicaService::Stub::ResizeReplica, r, &out)) return rc;
      return replica_reply(out);
    };
  });
  auto* share = rep->add_subcommand("share", "Share over NVMe/TCP (nvmf) or NBD; prints the URI to connect to");
  share->add_option("replica", a.name, "Name or UUID")->required();
  share->add_option("protocol", a.share, "nvmf or nbd")->required()->check(CLI::IsMember({"nvmf", "nbd"}));
  share->add_option("--pool", a.pool, "Pool");
  share->add_option("--allowed-host", a.hosts, "Host NQN allowed to connect (repeat; none = any host)");
  share->callback([run] {
    *run = [] {
      v1::ShareReplicaRequest r;
      *r.mutable_replica() = ref(a.name, a.pool);
      r.set_protocol(protocol(a.share));
      for (auto& h : a.hosts) r.add_allowed_hosts(h);
      v1::Replica out;
      if (int rc = call(&v1::ReplicaService::Stub::ShareReplica, r, &out)) return rc;
      return replica_reply(out);
    };
  });
  auto* unshare = rep->add_subcommand("unshare", "Stop sharing (connected hosts are disconnected after their I/O drains)");
  unshare->add_option("replica", a.name, "Name or UUID")->required();
  unshare->add_option("--pool", a.pool, "Pool");
  unshare->callback([run] {
    *run = [] {
      v1::Replica out;
      if (int rc = call(&v1::ReplicaService::Stub::UnshareReplica, ref(a.name, a.pool), &out)) return rc;
      return replica_reply(out);
    };
  });
  auto* hosts = rep->add_subcommand("allowed-hosts", "Replace the host NQNs allowed to connect (none given: any host)");
  hosts->add_option("replica", a.name, "Name or UUID")->required();
  hosts->add_option("hosts", a.hosts, "Host NQNs");
  hosts->add_option("--pool", a.pool, "Pool");
  hosts->callback([run] {
    *run = [] {
      v1::SetAllowedHostsRequest r;
      *r.mutable_replica() = ref(a.name, a.pool);
      for (auto& h : a.hosts) r.add_allowed_hosts(h);
      v1::Replica out;
      if (int rc = call(&v1::ReplicaService::Stub::SetReplicaAllowedHosts, r, &out)) return rc;
      return replica_reply(out);
    };
  });
  auto* stats = rep->add_subcommand("stats", "I/O counters and latencies of replicas");
  stats->add_option("replica", a.name, "Name or UUID (default: all)");
  stats->add_option("--pool", a.pool, "Pool");
  stats->callback([run] {
    *run = [] {
      v1::ListReplicasRequest r;
      r.set_pool(a.pool);
      if (Uuid::Parse(a.name).ok()) {
        r.set_uuid(a.name);
      } else {
        r.set_name(a.name);
      }
      v1::ReplicaStatsReply l;
      if (int rc = call(&v1::ReplicaService::Stub::GetReplicaStats, r, &l)) return rc;
      return show(l, [&] { stats_table(l.stats()); });
    };
  });
}

void add_snapshot(CLI::App& app, std::function<int()>* run) {
  auto* snap = app.add_subcommand("snapshot", "Snapshots: read-only images of a replica or clone");
  snap->require_subcommand(1);
  auto* create = snap->add_subcommand("create", "Snapshot a replica or clone (every write completed before is in it)");
  create->add_option("replica", a.of, "The replica or clone: name or UUID")->required();
  create->add_option("name", a.name, "Snapshot name")->required();
  create->add_option("--pool", a.pool, "Pool");
  create->add_option("--uuid", a.uuid, "UUID (default: a new one)");
  create->callback([run] {
    *run = [] {
      v1::CreateSnapshotRequest r;
      *r.mutable_replica() = ref(a.of, a.pool);
      r.set_name(a.name);
      r.set_uuid(a.uuid);
      v1::Replica out;
      if (int rc = call(&v1::SnapshotService::Stub::CreateSnapshot, r, &out)) return rc;
      return replica_reply(out);
    };
  });
  auto* list = snap->add_subcommand("list", "List snapshots");
  list->add_option("--pool", a.pool, "Only on this pool");
  list->add_option("--of", a.of, "Only snapshots of this replica UUID");
  list->callback([run] {
    *run = [] {
      v1::ListSnapshotsRequest r;
      r.set_pool(a.pool);
      r.set_source_uuid(a.of);
      v1::ListReplicasReply l;
      if (int rc = call(&v1::SnapshotService::Stub::ListSnapshots, r, &l)) return rc;
      return show(l, [&] { replicas_table(l.replicas()); });
    };
  });
  auto* destroy = snap->add_subcommand("destroy", "Delete a snapshot (kept, marked discarded, while clones read from it)");
  destroy->add_option("snapshot", a.name, "Name or UUID")->required();
  destroy->add_option("--pool", a.pool, "Pool");
  destroy->callback([run] {
    *run = [] {
      v1::Empty e;
      if (int rc = call(&v1::SnapshotService::Stub::DestroySnapshot, ref(a.name, a.pool), &e)) return rc;
      if (g.format() == Format::kTable) fmt::print("snapshot '{}' destroyed\n", a.name);
      else print_message(e, g.format());
      return 0;
    };
  });

  auto* clone = app.add_subcommand("clone", "Clones: thin writable replicas made from a snapshot");
  clone->require_subcommand(1);
  auto* cc = clone->add_subcommand("create", "Create a clone of a snapshot");
  cc->add_option("snapshot", a.of, "The snapshot: name or UUID")->required();
  cc->add_option("name", a.name, "Clone name")->required();
  cc->add_option("--pool", a.pool, "Pool");
  cc->add_option("--uuid", a.uuid, "UUID (default: a new one)");
  cc->add_option("--share", a.share, "Share over nvmf or nbd")->check(CLI::IsMember({"none", "nvmf", "nbd"}));
  cc->add_option("--allowed-host", a.hosts, "Host NQN allowed to connect (repeat)");
  cc->callback([run] {
    *run = [] {
      v1::CreateCloneRequest r;
      *r.mutable_snapshot() = ref(a.of, a.pool);
      r.set_name(a.name);
      r.set_uuid(a.uuid);
      r.set_share(protocol(a.share));
      for (auto& h : a.hosts) r.add_allowed_hosts(h);
      v1::Replica out;
      if (int rc = call(&v1::SnapshotService::Stub::CreateClone, r, &out)) return rc;
      return replica_reply(out);
    };
  });
  auto* cl = clone->add_subcommand("list", "List clones");
  cl->add_option("--pool", a.pool, "Only on this pool");
  cl->add_option("--of", a.of, "Only clones of this snapshot UUID");
  cl->callback([run] {
    *run = [] {
      v1::ListSnapshotsRequest r;
      r.set_pool(a.pool);
      r.set_source_uuid(a.of);
      v1::ListReplicasReply l;
      if (int rc = call(&v1::SnapshotService::Stub::ListClones, r, &l)) return rc;
      return show(l, [&] { replicas_table(l.replicas()); });
    };
  });
}

int bdev_reply(const v1::Bdev& b) {
  v1::ListBdevsReply l;
  *l.add_bdevs() = b;
  return show(b, [&] { bdevs_table(l.bdevs()); });
}

void add_bdev(CLI::App& app, std::function<int()>* run) {
  auto* bdev = app.add_subcommand("bdev", "Devices the engine does I/O to: create from a URI, list, share, destroy");
  bdev->require_subcommand(1);
  auto* create = bdev->add_subcommand("create", "Create a device from a URI (malloc:///m0?size_mb=64, nvmf://host:port/nqn, ...)");
  create->add_option("uri", a.uri, "Device URI (docs/design/bdev.md lists every scheme and parameter)")->required();
  create->callback([run] {
    *run = [] {
      v1::CreateBdevRequest r;
      r.set_uri(a.uri);
      v1::Bdev out;
      if (int rc = call(&v1::BdevService::Stub::CreateBdev, r, &out)) return rc;
      return bdev_reply(out);
    };
  });
  auto* destroy = bdev->add_subcommand("destroy", "Destroy a device (refused while it is open, unless --force)");
  destroy->add_option("name", a.name, "Device name or UUID")->required();
  destroy->add_flag("--force", a.force, "Tell its users to close it, fail new I/O, then destroy it");
  destroy->callback([run] {
    *run = [] {
      v1::DestroyBdevRequest r;
      r.set_name(a.name);
      r.set_force(a.force);
      v1::Empty e;
      if (int rc = call(&v1::BdevService::Stub::DestroyBdev, r, &e)) return rc;
      if (g.format() == Format::kTable) fmt::print("device '{}' destroyed\n", a.name);
      else print_message(e, g.format());
      return 0;
    };
  });
  auto* list = bdev->add_subcommand("list", "List devices");
  list->add_option("name", a.name, "Only this device");
  list->callback([run] {
    *run = [] {
      v1::ListBdevsRequest r;
      r.set_name(a.name);
      v1::ListBdevsReply l;
      if (int rc = call(&v1::BdevService::Stub::ListBdevs, r, &l)) return rc;
      return show(l, [&] { bdevs_table(l.bdevs()); });
    };
  });
  auto* share = bdev->add_subcommand("share", "Share a device over nvmf or nbd");
  share->add_option("name", a.name, "Device name")->required();
  share->add_option("protocol", a.share, "nvmf or nbd")->required()->check(CLI::IsMember({"nvmf", "nbd"}));
  share->add_option("--allowed-host", a.hosts, "Host NQN allowed to connect (repeat; none = any host)");
  share->callback([run] {
    *run = [] {
      v1::ShareBdevRequest r;
      r.set_name(a.name);
      r.set_protocol(protocol(a.share));
      for (auto& h : a.hosts) r.add_allowed_hosts(h);
      v1::Bdev out;
      if (int rc = call(&v1::BdevService::Stub::ShareBdev, r, &out)) return rc;
      return bdev_reply(out);
    };
  });
  auto* unshare = bdev->add_subcommand("unshare", "Stop sharing a device");
  unshare->add_option("name", a.name, "Device name")->required();
  unshare->callback([run] {
    *run = [] {
      v1::BdevRef r;
      r.set_name(a.name);
      v1::Bdev out;
      if (int rc = call(&v1::BdevService::Stub::UnshareBdev, r, &out)) return rc;
      return bdev_reply(out);
    };
  });
}

void add_nvmf(CLI::App& app, std::function<int()>* run) {
  auto* nvmf = app.add_subcommand("nvmf", "The engine's NVMe/TCP target: subsystems, connected hosts, listeners, ANA");
  nvmf->require_subcommand(1);
  auto* subs = nvmf->add_subcommand("subsystems", "List subsystems with namespaces, allowed and connected hosts");
  subs->add_option("nqn", a.nqn, "Only this subsystem");
  subs->callback([run] {
    *run = [] {
      v1::ListSubsystemsRequest r;
      r.set_nqn(a.nqn);
      v1::ListSubsystemsReply l;
      if (int rc = call(&v1::NvmfService::Stub::ListSubsystems, r, &l)) return rc;
      return show(l, [&] { subsystems_table(l.subsystems()); });
    };
  });
  auto* lis = nvmf->add_subcommand("listeners", "List the addresses the target listens on");
  lis->callback([run] {
    *run = [] {
      v1::ListListenersReply l;
      if (int rc = call(&v1::NvmfService::Stub::ListListeners, v1::Empty(), &l)) return rc;
      return show(l, [&] {
        std::vector<std::vector<std::string>> rows;
        for (auto& x : l.listeners()) rows.push_back({x});
        print_table({"LISTENER"}, rows, "listeners");
      });
    };
  });
  auto* ana = nvmf->add_subcommand("ana-set", "Set the ANA state hosts see for a subsystem through a listener");
  ana->add_option("nqn", a.nqn, "Subsystem NQN")->required();
  ana->add_option("state", a.state, "optimized | non-optimized | inaccessible | persistent-loss | change")->required();
  ana->add_option("--listener", a.listener, "host:port (default: the engine's listener)");
  ana->add_option("--group", a.group, "ANA group")->capture_default_str();
  ana->callback([run] {
    *run = [] {
      v1::SetAnaStateRequest r;
      r.set_nqn(a.nqn);
      r.set_state(a.state);
      r.set_listener(a.listener);
      r.set_group(a.group);
      v1::Empty e;
      if (int rc = call(&v1::NvmfService::Stub::SetAnaState, r, &e)) return rc;
      if (g.format() == Format::kTable) fmt::print("{}: ANA group {} is {}\n", a.nqn, a.group, a.state);
      else print_message(e, g.format());
      return 0;
    };
  });
}

void add_stats(CLI::App& app, std::function<int()>* run) {
  auto* stats = app.add_subcommand("stats", "I/O statistics of devices, and reactor busy/idle time");
  stats->require_subcommand(1);
  auto* io = stats->add_subcommand("io", "Per-device counters and latencies");
  io->add_option("name", a.name, "Only this device (name or UUID)");
  io->callback([run] {
    *run = [] {
      v1::GetIoStatsRequest r;
      r.set_name(a.name);
      v1::GetIoStatsReply l;
      if (int rc = call(&v1::StatsService::Stub::GetIoStats, r, &l)) return rc;
      return show(l, [&] { stats_table(l.stats()); });
    };
  });
  auto* reset = stats->add_subcommand("reset", "Zero the counters of one device (or all)");
  reset->add_option("name", a.name, "Only this device");
  reset->callback([run] {
    *run = [] {
      v1::GetIoStatsRequest r;
      r.set_name(a.name);
      v1::Empty e;
      if (int rc = call(&v1::StatsService::Stub::ResetIoStats, r, &e)) return rc;
      if (g.format() == Format::kTable) fmt::print("statistics reset\n");
      else print_message(e, g.format());
      return 0;
    };
  });
  auto* reactors = stats->add_subcommand("reactors", "Busy and idle time of each reactor since start");
  reactors->callback([run] {
    *run = [] {
      v1::GetReactorStatsReply l;
      if (int rc = call(&v1::StatsService::Stub::GetReactorStats, v1::Empty(), &l)) return rc;
      return show(l, [&] {
        print_rows<v1::ReactorStats>(
            {{"REACTOR", [](auto& r) { return std::to_string(r.id()); }},
             {"CORE", [](auto& r) { return std::to_string(r.core()); }},
             {"BUSY s", [](auto& r) { return fmt::format("{:.2f}", double(r.busy_ns()) / 1e9); }},
             {"IDLE s", [](auto& r) { return fmt::format("{:.2f}", double(r.idle_ns()) / 1e9); }},
             {"BUSY %", [](auto& r) {
                double t = double(r.busy_ns() + r.idle_ns());
                return fmt::format("{:.1f}", t > 0 ? 100.0 * double(r.busy_ns()) / t : 0.0);
              }}},
            l.reactors(), "reactors");
      });
    };
  });
}

void add_node(CLI::App& app, std::function<int()>* run) {
  auto* node = app.add_subcommand("node", "The engine's node: name, version, cores, uptime");
  node->require_subcommand(1);
  auto* info = node->add_subcommand("info", "Show the node's identity and endpoints");
  info->callback([run] {
    *run = [] {
      v1::NodeInfo n;
      if (int rc = call(&v1::NodeService::Stub::GetNodeInfo, v1::Empty(), &n)) return rc;
      return show(n, [&] {
        fmt::print("node:       {}\nversion:    {} ({})\ninstance:   {}\ncores:      {}\nuptime:     {:.1f} s (started in {} ms)\n"
                   "gRPC:       {}\nNVMe/TCP:   {}\nNBD:        {}\n",
                   n.node_name(), n.version(), n.build(), n.instance_uuid(), fmt::join(n.cores(), ","),
                   double(n.uptime_ms()) / 1000.0, n.startup_ms(), n.grpc_endpoint(), n.nvmf_endpoint(),
                   n.nbd_endpoint().empty() ? "off" : n.nbd_endpoint());
      });
    };
  });
}

void add_test(CLI::App& app, std::function<int()>* run) {
  auto* t = app.add_subcommand("test", "Fault injection and data checks, for tests and reproducing problems");
  t->require_subcommand(1);
  auto* er = t->add_subcommand("error-rules", "Replace the rules of an error:// device (none given: clear them)");
  er->add_option("device", a.device, "The error:// device")->required();
  er->add_option("rules", a.rules, "Rules, e.g. 'op=write,lba=0-100,errno=EIO' (docs/design/bdev.md)");
  er->callback([run] {
    *run = [] {
      v1::SetErrorRulesRequest r;
      r.set_device(a.device);
      for (auto& x : a.rules) r.add_rules(x);
      v1::Empty e;
      if (int rc = call(&v1::TestService::Stub::SetErrorRules, r, &e)) return rc;
      return show(e, [] { fmt::print("{}: {} rule(s)\n", a.device, a.rules.size()); });
    };
  });
  auto* dl = t->add_subcommand("delay", "Set the added latencies of a delay:// device");
  dl->add_option("device", a.device, "The delay:// device")->required();
  dl->add_option("--read-us", a.read_us, "Added to reads");
  dl->add_option("--write-us", a.write_us, "Added to writes");
  dl->add_option("--other-us", a.other_us, "Added to flushes, unmaps, write zeroes");
  dl->add_option("--jitter-us", a.jitter_us, "Random extra, up to this");
  dl->callback([run] {
    *run = [] {
      v1::SetDelayRequest r;
      r.set_device(a.device);
      r.set_read_us(a.read_us);
      r.set_write_us(a.write_us);
      r.set_other_us(a.other_us);
      r.set_jitter_us(a.jitter_us);
      v1::Empty e;
      if (int rc = call(&v1::TestService::Stub::SetDelay, r, &e)) return rc;
      return show(e, [] { fmt::print("{}: delays set\n", a.device); });
    };
  });
  for (std::string verb : {"write-pattern", "verify-pattern"}) {
    auto* c = t->add_subcommand(verb, verb == "write-pattern" ? "Write the verify pattern over a range, then flush"
                                                              : "Check a range against the verify pattern (exit 1 on a mismatch)");
    c->add_option("device", a.device, "Device name or UUID")->required();
    c->add_option("--offset", a.offset, "Start (bytes)")->capture_default_str();
    c->add_option("--length", a.length, "Length (bytes, at most 1GiB)")->required();
    c->add_option("--generation", a.generation, "Pattern generation")->capture_default_str();
    c->callback([run, verb] {
      *run = [verb] {
        auto off = size_arg(a.offset);
        if (!off.ok()) return bad(off.status());
        auto len = size_arg(a.length);
        if (!len.ok()) return bad(len.status());
        v1::PatternRequest r;
        r.set_device(a.device);
        r.set_offset(*off);
        r.set_length(*len);
        r.set_generation(a.generation);
        if (verb == "write-pattern") {
          v1::Empty e;
          if (int rc = call(&v1::TestService::Stub::WritePattern, r, &e)) return rc;
          uint64_t n = *len;
          return show(e, [n] { fmt::print("wrote {} with generation {}\n", sz(n), a.generation); });
        }
        v1::VerifyPatternReply v;
        if (int rc = call(&v1::TestService::Stub::VerifyPattern, r, &v)) return rc;
        show(v, [&] {
          if (v.ok()) {
            fmt::print("verify OK: {} checked\n", sz(v.bytes_checked()));
          } else {
            fmt::print("verify FAILED after {}: {}\n", sz(v.bytes_checked()), v.mismatch());
          }
        });
        return v.ok() ? 0 : 1;
      };
    });
  }
}

// ------------------------------------------------------------------------------------------------
// Nexuses

const char* nexus_state(v1::NexusState s) {
  switch (s) {
    case v1::NEXUS_STATE_ONLINE: return "online";
    case v1::NEXUS_STATE_DEGRADED: return "degraded";
    case v1::NEXUS_STATE_FAULTED: return "faulted";
    case v1::NEXUS_STATE_SHUTTING_DOWN: return "shutting down";
    case v1::NEXUS_STATE_SHUTDOWN: return "shutdown";
    default: return "unknown";
  }
}

std::string child_cell(const v1::Child& c) {
  const char* st = c.state() == v1::CHILD_STATE_ONLINE ? (c.synced() ? "online" : "out-of-sync")
                   : c.state() == v1::CHILD_STATE_CLOSED ? "closed"
                                                          : "faulted";
  std::string s = fmt::format("{} {}", c.uuid().substr(0, 8), st);
  if (c.state() == v1::CHILD_STATE_FAULTED) {
    s += fmt::format("({})", v1::ChildReason_Name(c.reason()).substr(strlen("CHILD_REASON_")));
  }
  return s;
}

void nexuses_table(const google::protobuf::RepeatedPtrField<v1::Nexus>& ns) {
  print_rows<v1::Nexus>({{"UUID", [](auto& n) { return n.uuid(); }},
                         {"SIZE", [](auto& n) { return sz(n.size()); }},
                         {"STATE", [](auto& n) { return std::string(nexus_state(n.state())); }},
                         {"CHILDREN", [](auto& n) {
                            std::vector<std::string> v;
                            for (auto& c : n.children()) v.push_back(child_cell(c));
                            return fmt::format("{}", fmt::join(v, ", "));
                          }},
                         {"SHARE", [](auto& n) { return share_cell(n.share()); }}},
                        ns, "nexuses");
}

int nexus_reply(const v1::Nexus& n) {
  v1::ListNexusesReply l;
  *l.add_nexuses() = n;
  return show(n, [&] {
    nexuses_table(l.nexuses());
    if (g.format() == Format::kTable && !n.children().empty()) {
      fmt::print("\n");
      print_rows<v1::Child>({{"CHILD", [](auto& c) { return c.uuid(); }},
                             {"STATE", [](auto& c) { return child_cell(c).substr(9); }},
                             {"LOCAL", [](auto& c) { return std::string(c.local() ? "yes" : "no"); }},
                             {"READS", [](auto& c) { return std::to_string(c.io().reads()); }},
                             {"WRITES", [](auto& c) { return std::to_string(c.io().writes()); }},
                             {"ERRORS", [](auto& c) { return std::to_string(c.io().errors()); }},
                             {"GEN", [](auto& c) { return std::to_string(c.generation()); }},
                             {"DIRTY", [](auto& c) {
                                return c.tracked() ? fmt::format("{} since gen {}", sz(c.dirty_bytes()),
                                                                 c.tracked_since_generation())
                                                   : std::string("-");
                              }},
                             {"REBUILD", [](auto& c) {
                                if (!c.has_rebuild()) return std::string("-");
                                const auto& b = c.rebuild();
                                return fmt::format("{} {:.0f}%", rebuild_state_name(b.state()),
                                                   b.total_bytes() ? 100.0 * double(b.done_bytes()) / double(b.total_bytes()) : 0.0);
                              }},
                             {"URI", [](auto& c) { return c.uri(); }}},
                            n.children(), "children");
      const auto& al = n.activity_log();
      fmt::print("\nactivity log: {} of {} extents hot, {} log writes, {} evictions{}\n", al.hot_extents(), al.capacity(),
                 al.transactions(), al.evictions(),
                 al.reconciled_bytes() ? fmt::format(", {} reconciled at start (unclean stop)", sz(al.reconciled_bytes()))
                                       : std::string());
    }
  });
}

v1::ChildReason reason_arg(const std::string& s) {
  if (s == "io_error") return v1::CHILD_REASON_IO_ERROR;
  if (s == "timed_out") return v1::CHILD_REASON_TIMED_OUT;
  if (s == "no_space") return v1::CHILD_REASON_NO_SPACE;
  if (s == "cannot_open") return v1::CHILD_REASON_CANNOT_OPEN;
  if (s == "rebuild_failed") return v1::CHILD_REASON_REBUILD_FAILED;
  return v1::CHILD_REASON_OFFLINE;
}

void add_nexus(CLI::App& app, std::function<int()>* run) {
  auto* nx = app.add_subcommand("nexus", "Nexuses: volumes mirrored to replicas (children) here and on other nodes");
  nx->require_subcommand(1);
  auto* create = nx->add_subcommand("create", "Create a nexus over its children (each child must hold the volume plus the "
                                              "nexus metadata: see required_child_size in 'nexus list -o json')");
  create->add_option("uuid", a.uuid, "The volume's UUID")->required();
  create->add_option("--size", a.size, "Volume size (10GiB, 1073741824)")->required();
  create->add_option("--child", a.children,
                     "A child URI, repeatable: bdev:///<replica uuid>?uuid=<replica uuid> (local), "
                     "nvmf://host:port/<nqn>?uuid=<replica uuid> (remote)")
      ->required();
  create->add_option("--persistence-key", a.key, "Where the nexus keeps its record in etcd (default: none)");
  create->add_option("--resv-key", a.resv_key,
                     "Fence with NVMe reservations: the key (non-zero, e.g. 0x1234) registered on every remote child; a "
                     "nexus that finds another holding it takes over per --preempt, and the one taken over from shuts "
                     "down at its next write (default: no reservations)");
  create->add_option("--resv-type", a.resv_type,
                     "Reservation type: write_exclusive (default), exclusive_access, write_exclusive_registrants, "
                     "exclusive_access_registrants");
  create->add_option("--preempt", a.preempt,
                     "When another host holds the reservation: holder (take it, the default), key (only from "
                     "--preempt-key), none (fail)")
      ->capture_default_str();
  create->add_option("--preempt-key", a.preempt_key, "The key that may be preempted with --preempt key");
  create->add_option("--cntlid-min", a.cntlid_min, "Lowest controller ID when published (default 1)");
  create->add_option("--cntlid-max", a.cntlid_max, "Highest controller ID when published (default 65519)");
  create->add_flag("--no-auto-rebuild", a.no_auto_rebuild,
                   "Do not rebuild a child by itself when it joins or comes back out of sync ('nexus rebuild start' does)");
  create->add_option("--rebuild-rate", a.rebuild_rate, "Rebuilds copy at most this many bytes per second (default: no limit)");
  create->add_option("--rebuild-segment", a.rebuild_segment, "Bytes per rebuild copy request, 4KiB..16MiB (default 1MiB)");
  create->add_option("--rebuild-concurrency", a.rebuild_concurrency, "Rebuild segments copied at once, 1..16 (default 2)");
  create->add_option("--al-extents", a.al_extents,
                     "Activity-log size in 4MiB extents, 1..1000 (default 256): writes there cost no log write, and "
                     "at most this much is reconciled after an unclean stop");
  create->add_option("--region", a.region,
                     "Dirty-region size of the logs kept for absent children, 64KiB..1MiB (default 64KiB): a partial "
                     "rebuild copies a whole region per write");
  create->callback([run] {
    *run = [] {
      v1::CreateNexusRequest r;
      r.set_uuid(a.uuid);
      auto size = size_arg(a.size);
      if (!size.ok()) return bad(size.status());
      r.set_size(*size);
      for (auto& c : a.children) r.add_children(c);
      r.set_persistence_key(a.key);
      auto key = [](const std::string& what, const std::string& v) -> Result<uint64_t> {
        if (v.empty()) return uint64_t{0};
        errno = 0;
        char* end = nullptr;
        unsigned long long k = std::strtoull(v.c_str(), &end, 0);
        if (errno || !end || *end || k == 0) {
          return Status::Errorf(Errc::kInval, "{}: '{}' is not a non-zero 64-bit number", what, v);
        }
        return uint64_t(k);
      };
      auto rk = key("--resv-key", a.resv_key);
      if (!rk.ok()) return bad(rk.status());
      auto pk = key("--preempt-key", a.preempt_key);
      if (!pk.ok()) return bad(pk.status());
      r.set_resv_key(*rk);
      r.set_preempt_key(*pk);
      static const std::map<std::string, v1::ReservationType> types = {
          {"", v1::RESERVATION_TYPE_DEFAULT},
          {"write_exclusive", v1::RESERVATION_TYPE_WRITE_EXCLUSIVE},
          {"exclusive_access", v1::RESERVATION_TYPE_EXCLUSIVE_ACCESS},
          {"write_exclusive_registrants", v1::RESERVATION_TYPE_WRITE_EXCLUSIVE_REGISTRANTS_ONLY},
          {"exclusive_access_registrants", v1::RESERVATION_TYPE_EXCLUSIVE_ACCESS_REGISTRANTS_ONLY}};
      static const std::map<std::string, v1::PreemptPolicy> policies = {
          {"holder", v1::PREEMPT_POLICY_HOLDER}, {"key", v1::PREEMPT_POLICY_KEY}, {"none", v1::PREEMPT_POLICY_NONE}};
      auto t = types.find(a.resv_type);
      if (t == types.end()) return bad(Status::Errorf(Errc::kInval, "--resv-type: unknown type '{}'", a.resv_type));
      auto p = policies.find(a.preempt);
      if (p == policies.end()) return bad(Status::Errorf(Errc::kInval, "--preempt: choose holder, key or none"));
      r.set_resv_type(t->second);
      r.set_preempt_policy(p->second);
      r.set_cntlid_min(a.cntlid_min);
      r.set_cntlid_max(a.cntlid_max);
      r.set_no_auto_rebuild(a.no_auto_rebuild);
      r.set_al_extents(a.al_extents);
      if (!a.region.empty()) {
        auto region = size_arg(a.region);
        if (!region.ok()) return bad(region.status());
        r.set_region_bytes(uint32_t(std::min<uint64_t>(*region, UINT32_MAX)));
      }
      if (!a.rebuild_rate.empty() || !a.rebuild_segment.empty() || a.rebuild_concurrency) {
        auto* rs = r.mutable_rebuild();
        if (!a.rebuild_rate.empty()) {
          auto rate = rate_arg(a.rebuild_rate);
          if (!rate.ok()) return bad(rate.status());
          rs->set_rate_bytes_per_s(*rate);
        }
        if (!a.rebuild_segment.empty()) {
          auto seg = size_arg(a.rebuild_segment);
          if (!seg.ok()) return bad(seg.status());
          rs->set_segment_bytes(*seg);
        }
        rs->set_concurrency(a.rebuild_concurrency);
      }
      v1::Nexus n;
      if (int rc = call(&v1::NexusService::Stub::CreateNexus, r, &n)) return rc;
      return nexus_reply(n);
    };
  });
  auto* list = nx->add_subcommand("list", "List nexuses with their state and children");
  list->add_option("uuid", a.uuid, "Only this nexus");
  list->callback([run] {
    *run = [] {
      v1::ListNexusesRequest r;
      r.set_uuid(a.uuid);
      v1::ListNexusesReply l;
      if (int rc = call(&v1::NexusService::Stub::ListNexuses, r, &l)) return rc;
      if (!a.uuid.empty()) {
        if (l.nexuses().empty()) {
          fmt::print(stderr, "ternctl: no nexus {}\n", a.uuid);
          return 3;
        }
        return nexus_reply(l.nexuses(0));
      }
      return show(l, [&] { nexuses_table(l.nexuses()); });
    };
  });
  for (auto [verb, help] : {std::pair{"destroy", "Unpublish, close the children and destroy the nexus"},
                            std::pair{"shutdown", "Hold all I/O (hosts wait), close the children, record a clean shutdown"},
                            std::pair{"unpublish", "Stop sharing the nexus (hosts are disconnected once their I/O drains)"}}) {
    auto* c = nx->add_subcommand(verb, help);
    c->add_option("uuid", a.uuid, "The nexus (volume) UUID")->required();
    std::string v = verb;
    c->callback([run, v] {
      *run = [v] {
        v1::NexusRef r;
        r.set_uuid(a.uuid);
        if (v == "destroy") {
          v1::Empty e;
          int rc = call(&v1::NexusService::Stub::DestroyNexus, r, &e);
          if (rc == 0) show(e, [] { fmt::print("nexus {} destroyed\n", a.uuid); });
          return rc;
        }
        v1::Nexus n;
        if (int rc = call(v == "shutdown" ? &v1::NexusService::Stub::ShutdownNexus : &v1::NexusService::Stub::UnpublishNexus,
                          r, &n)) {
          return rc;
        }
        return nexus_reply(n);
      };
    });
  }
  auto* rs = nx->add_subcommand("resize", "Grow the volume after every child grew (each must hold the new "
                                          "required_child_size); hosts on NVMe/TCP see a namespace change");
  rs->add_option("uuid", a.uuid, "The nexus UUID")->required();
  rs->add_option("--size", a.size, "The new volume size (20GiB, 21474836480)")->required();
  rs->callback([run] {
    *run = [] {
      v1::ResizeNexusRequest r;
      r.set_uuid(a.uuid);
      auto size = size_arg(a.size);
      if (!size.ok()) return bad(size.status());
      r.set_size(*size);
      v1::Nexus n;
      if (int rc = call(&v1::NexusService::Stub::ResizeNexus, r, &n)) return rc;
      return nexus_reply(n);
    };
  });
  auto* add = nx->add_subcommand("add-child", "Add a child (it joins out of sync: written, not read, until rebuilt; the rebuild starts by itself)");
  add->add_option("uuid", a.uuid, "The nexus UUID")->required();
  add->add_option("uri", a.uri, "The child's URI, with ?uuid=")->required();
  add->callback([run] {
    *run = [] {
      v1::AddChildRequest r;
      r.set_uuid(a.uuid);
      r.set_uri(a.uri);
      v1::Nexus n;
      if (int rc = call(&v1::NexusService::Stub::AddChild, r, &n)) return rc;
      return nexus_reply(n);
    };
  });
  for (auto [verb, help] : {std::pair{"remove-child", "Remove a child (not the only one, nor the last healthy one)"},
                            std::pair{"online-child", "Reopen a faulted or closed child (it comes back out of sync, and is rebuilt)"},
                            std::pair{"fault-child", "Fault a child by request (not the last healthy one)"}}) {
    auto* c = nx->add_subcommand(verb, help);
    c->add_option("uuid", a.uuid, "The nexus UUID")->required();
    c->add_option("child", a.child, "The child's UUID")->required();
    std::string v = verb;
    if (v == "fault-child") {
      c->add_option("--reason", a.reason, "offline (default), io_error, timed_out, no_space, cannot_open, rebuild_failed");
    }
    c->callback([run, v] {
      *run = [v] {
        v1::Nexus n;
        int rc;
        if (v == "fault-child") {
          v1::FaultChildRequest r;
          r.set_uuid(a.uuid);
          r.set_child_uuid(a.child);
          r.set_reason(reason_arg(a.reason));
          rc = call(&v1::NexusService::Stub::FaultChild, r, &n);
        } else {
          v1::ChildRef r;
          r.set_uuid(a.uuid);
          r.set_child_uuid(a.child);
          rc = call(v == "remove-child" ? &v1::NexusService::Stub::RemoveChild : &v1::NexusService::Stub::OnlineChild, r, &n);
        }
        if (rc) return rc;
        return nexus_reply(n);
      };
    });
  }
  auto* pub = nx->add_subcommand("publish", "Share the nexus to hosts over NVMe/TCP (or NBD)");
  pub->add_option("uuid", a.uuid, "The nexus UUID")->required();
  pub->add_option("--protocol", a.protocol, "nvmf (default) or nbd")->check(CLI::IsMember({"nvmf", "nbd"}));
  pub->add_option("--host", a.hosts, "A host NQN allowed to connect, repeatable (default: any host)");
  pub->add_option("--cntlid-min", a.cntlid_min, "Lowest controller ID (two engines publishing one volume need disjoint ranges)");
  pub->add_option("--cntlid-max", a.cntlid_max, "Highest controller ID");
  pub->add_option("--ana", a.ana, "ANA state of this path: optimized (default), non_optimized, inaccessible");
  pub->callback([run] {
    *run = [] {
      v1::PublishNexusRequest r;
      r.set_uuid(a.uuid);
      r.set_protocol(protocol(a.protocol));
      for (auto& h : a.hosts) r.add_allowed_hosts(h);
      r.set_cntlid_min(a.cntlid_min);
      r.set_cntlid_max(a.cntlid_max);
      r.set_ana_state(a.ana);
      v1::Nexus n;
      if (int rc = call(&v1::NexusService::Stub::PublishNexus, r, &n)) return rc;
      return nexus_reply(n);
    };
  });
  auto* ana = nx->add_subcommand("ana", "Set the ANA state of a published nexus on this engine's path");
  ana->add_option("uuid", a.uuid, "The nexus UUID")->required();
  ana->add_option("state", a.ana, "optimized, non_optimized or inaccessible")->required();
  ana->callback([run] {
    *run = [] {
      v1::SetNexusAnaStateRequest r;
      r.set_uuid(a.uuid);
      r.set_ana_state(a.ana);
      v1::Nexus n;
      if (int rc = call(&v1::NexusService::Stub::SetNexusAnaState, r, &n)) return rc;
      return nexus_reply(n);
    };
  });
  add_rebuild_commands(nx, run);
  auto* snap = nx->add_subcommand(
      "snapshot",
      "Snapshot the volume: every in-sync child's replica at the same point of the write stream (host I/O is "
      "held, not failed, meanwhile). Each replica snapshot is a pool snapshot named NAME on the child's node "
      "('ternctl snapshot list' there). All or nothing: if a child fails, what was taken is destroyed again");
  snap->add_option("uuid", a.uuid, "The nexus UUID")->required();
  snap->add_option("name", a.name, "The snapshot's name on every replica's pool")->required();
  snap->add_option("--snapshot-uuid", a.snapshot_uuid,
                   "The volume snapshot's UUID (default: derived from the nexus and the name, so a retry is the same "
                   "snapshot)");
  snap->add_option("--child-snapshot", a.child_snapshots,
                   "CHILD_UUID=SNAPSHOT_UUID: that child's snapshot UUID, repeatable (default: derived from the "
                   "volume snapshot's UUID and the child's)");
  snap->callback([run] {
    *run = [] {
      v1::CreateNexusSnapshotRequest r;
      r.set_uuid(a.uuid);
      r.set_name(a.name);
      r.set_snapshot_uuid(a.snapshot_uuid);
      for (auto& cs : a.child_snapshots) {
        const size_t eq = cs.find('=');
        if (eq == std::string::npos) {
          return bad(Status::Errorf(Errc::kInval, "--child-snapshot '{}': expected CHILD_UUID=SNAPSHOT_UUID", cs));
        }
        auto* c = r.add_replicas();
        c->set_child_uuid(cs.substr(0, eq));
        c->set_snapshot_uuid(cs.substr(eq + 1));
      }
      v1::NexusSnapshot out;
      if (int rc = call(&v1::NexusService::Stub::CreateNexusSnapshot, r, &out)) return rc;
      return show(out, [&] {
        fmt::print("snapshot '{}' ({}) of nexus {}: host I/O held {} us\n\n", out.name(), out.uuid(), out.nexus_uuid(),
                   out.frozen_us());
        print_rows<v1::ChildSnapshot>({{"CHILD", [](auto& c) { return c.child_uuid(); }},
                                       {"SNAPSHOT", [](auto& c) { return c.snapshot_uuid(); }},
                                       {"OUTCOME", [](auto& c) { return c.outcome(); }},
                                       {"DETAIL", [](auto& c) { return c.detail(); }}},
                                      out.children(), "children");
      });
    };
  });
}

}  // namespace

void add_engine_commands(CLI::App& app, std::function<int()>* run) {
  if (const char* e = getenv("TERN_ENGINE")) g.engine = e;
  // -o json etc. may also follow the subcommand (ternctl pool list -o json).
  app.fallthrough();
  app.add_option("-e,--engine", g.engine, "The io-engine's gRPC endpoint (host:port) [TERN_ENGINE]")->capture_default_str();
  app.add_option("-o,--output", g.output, "Output: table, json or yaml")
      ->check(CLI::IsMember({"table", "json", "yaml"}))
      ->capture_default_str();
  app.add_option("--timeout", g.timeout_s, "Seconds to wait for the engine's answer")->capture_default_str();
  add_pool(app, run);
  add_replica(app, run);
  add_snapshot(app, run);
  add_bdev(app, run);
  add_nvmf(app, run);
  add_stats(app, run);
  add_node(app, run);
  add_test(app, run);
  add_nexus(app, run);
}

}  // namespace tern::ctl
