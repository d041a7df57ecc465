#include "engine/metrics.h"

#include "engine/engine.h"
#include "metrics/exposition.h"

#ifndef TERN_VERSION
#define TERN_VERSION "0.0.0"
#endif
#ifndef TERN_GIT_REV
#define TERN_GIT_REV "unknown"
#endif

namespace tern::engine {

namespace {

using metrics::MetricType;
using metrics::MetricsWriter;

struct OpKind {
  IoType type;
  const char* name;
};
constexpr OpKind kOps[] = {{IoType::kRead, "read"},     {IoType::kWrite, "write"}, {IoType::kFlush, "flush"},
                           {IoType::kUnmap, "unmap"},   {IoType::kWriteZeroes, "write_zeroes"},
                           {IoType::kReset, "reset"}};

// The I/O families of one kind of object ("device" or "replica"), declared once.
void declare_io(MetricsWriter& w, const std::string& p, const char* what) {
  w.declare(p + "_ops_total", MetricType::kCounter, fmt::format("I/O operations completed by {}, by type", what));
  w.declare(p + "_bytes_total", MetricType::kCounter, fmt::format("Bytes moved by {}, by type", what));
  w.declare(p + "_errors_total", MetricType::kCounter, fmt::format("I/O operations of {} that failed, by type", what));
  w.declare(p + "_inflight", MetricType::kGauge, fmt::format("I/O operations of {} in flight", what));
  w.declare(p + "_latency_seconds", MetricType::kHistogram,
            fmt::format("Latency of {} I/O: read, write, other (flush, unmap, write zeroes)", what));
}

void sample_io(MetricsWriter& w, const std::string& p, std::vector<metrics::Label> labels, const BdevStats& st) {
  for (const OpKind& k : kOps) {
    auto l = labels;
    l.push_back({"op", k.name});
    w.sample(p + "_ops_total", l, st.of(k.type).ops);
    if (k.type == IoType::kRead || k.type == IoType::kWrite || k.type == IoType::kUnmap) {
      w.sample(p + "_bytes_total", l, st.of(k.type).bytes);
    }
    w.sample(p + "_errors_total", l, st.of(k.type).errors);
  }
  w.sample(p + "_inflight", labels, st.inflight);
  const std::pair<const char*, const LatencyHistogram*> hs[] = {
      {"read", &st.read_latency}, {"write", &st.write_latency}, {"other", &st.other_latency}};
  for (auto& [op, h] : hs) {
    auto l = labels;
    l.push_back({"op", op});
    w.latency_histogram(p + "_latency_seconds", l, *h);
  }
}

}  // namespace

Task<std::string> metrics_page(Engine& engine) {
  MetricsWriter w;
  w.declare("tern_build_info", MetricType::kInfo, "The engine's version and build");
  w.declare("tern_uptime_seconds", MetricType::kGauge, "Seconds since the engine started");
  w.declare("tern_pool_capacity_bytes", MetricType::kGauge, "Bytes a pool can hold");
  w.declare("tern_pool_used_bytes", MetricType::kGauge, "Bytes allocated in a pool");
  w.declare("tern_pool_committed_bytes", MetricType::kGauge, "Sum of the sizes of a pool's replicas and clones");
  w.declare("tern_pool_objects", MetricType::kGauge, "Replicas, snapshots and clones in a pool");
  w.declare("tern_pool_online", MetricType::kGauge, "1 when the pool takes changes, 0 when degraded");
  w.declare("tern_replica_size_bytes", MetricType::kGauge, "Size of a replica, snapshot or clone");
  w.declare("tern_replica_allocated_bytes", MetricType::kGauge, "Bytes of clusters a replica owns");
  w.declare("tern_replica_shared", MetricType::kGauge, "1 when the replica is shared (label protocol)");
  declare_io(w, "tern_replica", "a replica, snapshot or clone");
  declare_io(w, "tern_device", "a device (not a pool's replica)");
  w.declare("tern_reactor_busy_seconds_total", MetricType::kCounter, "Time a reactor was awake (working or spinning)");
  w.declare("tern_reactor_idle_seconds_total", MetricType::kCounter, "Time a reactor slept waiting for work");
  w.declare("tern_reactor_sleeps_total", MetricType::kCounter,
            "Times a reactor went to sleep in the kernel (each one a wake-up paid when work came)");
  w.declare("tern_reactor_submit_calls_total", MetricType::kCounter, "io_uring_enter calls that submitted work");
  w.declare("tern_reactor_sqes_total", MetricType::kCounter,
            "Submission entries handed to the kernel (per submit call: the batching)");
  w.declare("tern_reactor_completions_total", MetricType::kCounter, "Completions a reactor dispatched");
  w.declare("tern_nvmf_subsystems", MetricType::kGauge, "NVMe/TCP subsystems (discovery included)");
  w.declare("tern_nvmf_connected_hosts", MetricType::kGauge, "Controllers (connected hosts) of a subsystem");
  w.declare("tern_nvmf_io_queues", MetricType::kGauge, "I/O queues of a subsystem's connected hosts");
  w.declare("tern_nvmf_listeners", MetricType::kGauge, "Addresses the NVMe/TCP target listens on");

  w.declare("tern_nexus_state", MetricType::kGauge, "1 for a nexus's current state (label state)");
  w.declare("tern_nexus_child_synced", MetricType::kGauge, "1 when a nexus child is online and in sync, else 0");
  w.declare("tern_nexus_rebuild_running", MetricType::kGauge, "1 while a child's rebuild runs, 0 when paused");
  w.declare("tern_nexus_rebuild_done_bytes", MetricType::kGauge, "Bytes of the volume a running or paused rebuild has done");
  w.declare("tern_nexus_rebuild_total_bytes", MetricType::kGauge, "Bytes a running or paused rebuild copies in all");
  w.declare("tern_nexus_rebuilds_total", MetricType::kCounter,
            "Rebuilds that ended since the nexus started, by result (completed, stopped, failed)");
  w.declare("tern_nexus_rebuild_copied_bytes_total", MetricType::kCounter, "Bytes copied by rebuilds that ended");
  w.declare("tern_nexus_child_dirty_bytes", MetricType::kGauge,
            "Bytes written since a child left in sync (its dirty-region log: what its partial rebuild copies)");
  w.declare("tern_nexus_al_hot_extents", MetricType::kGauge, "4 MiB extents in a nexus's activity log");
  w.declare("tern_nexus_al_transactions_total", MetricType::kCounter, "Activity-log writes since the nexus started");
  w.declare("tern_nexus_al_evictions_total", MetricType::kCounter, "Extents that left the activity log");
  w.declare("tern_nexus_reconciled_bytes", MetricType::kGauge,
            "Bytes copied between a nexus's children when it started after an unclean stop");

  w.info("tern_build_info", {{"version", TERN_VERSION}, {"revision", TERN_GIT_REV}, {"node", engine.options().node_name}});
  w.sample("tern_uptime_seconds", {}, std::chrono::duration<double>(engine.node_info().uptime).count());

  // Pools and their objects; which devices are objects (the pools may change while stats are gathered).
  PoolManager& pools = engine.pools();
  std::map<std::string, ReplicaInfo> objects;  // by device name (the UUID)
  for (const PoolInfo& p : pools.list_pools("")) {
    std::vector<metrics::Label> pl = {{"pool", p.name}};
    w.sample("tern_pool_capacity_bytes", pl, p.capacity);
    w.sample("tern_pool_used_bytes", pl, p.used);
    w.sample("tern_pool_committed_bytes", pl, p.committed);
    w.sample("tern_pool_objects", pl, p.objects);
    w.sample("tern_pool_online", pl, p.online ? 1 : 0);
    ObjectFilter every_object;
    every_object.pool = p.name;
    for (ReplicaInfo& r : pools.list_objects(every_object)) {
      std::string uuid = r.uuid.ToString();
      std::vector<metrics::Label> rl = {{"pool", p.name}, {"replica", r.name}, {"uuid", uuid}, {"kind", kind_name(r.kind)}};
      w.sample("tern_replica_size_bytes", rl, r.size);
      w.sample("tern_replica_allocated_bytes", rl, r.allocated);
      rl.push_back({"protocol", r.share ? Shares::ProtocolName(r.share->protocol) : "none"});
      w.sample("tern_replica_shared", rl, r.share ? 1 : 0);
      objects[uuid] = std::move(r);
    }
  }

  // Per-device I/O (each device's stats are merged from every reactor).
  DeviceManager& devices = engine.devices();
  auto stats = co_await devices.io_stats("", /*objects_only=*/false);
  if (stats.ok()) {
    for (const DeviceStats& d : *stats) {
      if (auto it = objects.find(d.name); it != objects.end()) {
        sample_io(w, "tern_replica", {{"pool", it->second.pool}, {"replica", it->second.name}, {"uuid", d.name}}, d.stats);
      } else {
        sample_io(w, "tern_device", {{"device", d.name}}, d.stats);
      }
    }
  }

  std::vector<ReactorLoad> loads = co_await devices.reactor_stats();
  for (const ReactorLoad& r : loads) {
    std::string id = std::to_string(r.id), core = std::to_string(r.core);  // labels are views: keep these
    std::vector<metrics::Label> l = {{"reactor", id}, {"core", core}};
    w.sample("tern_reactor_busy_seconds_total", l, double(r.busy_ns) / 1e9);
    w.sample("tern_reactor_idle_seconds_total", l, double(r.idle_ns) / 1e9);
    w.sample("tern_reactor_sleeps_total", l, r.sleeps);
    w.sample("tern_reactor_submit_calls_total", l, r.submit_calls);
    w.sample("tern_reactor_sqes_total", l, r.sqes);
    w.sample("tern_reactor_completions_total", l, r.completions);
  }

  auto subs = devices.subsystems("");
  w.sample("tern_nvmf_subsystems", {}, subs.size());
  w.sample("tern_nvmf_listeners", {}, devices.listeners().size());
  for (auto& s : subs) {
    uint64_t queues = 0;
    for (auto& c : s.controllers) queues += c.io_queues;
    std::vector<metrics::Label> l = {{"nqn", s.nqn}};
    w.sample("tern_nvmf_connected_hosts", l, s.controllers.size());
    w.sample("tern_nvmf_io_queues", l, queues);
  }
  // Nexuses and their rebuilds.
  NexusManager& nexuses = engine.nexuses();
  for (const NexusDesc& n : co_await nexuses.list(std::nullopt)) {
    const std::string id = n.info.uuid.ToString();
    w.sample("tern_nexus_state", {{"nexus", id}, {"state", nexus::nexus_status_name(n.info.status)}}, 1);
    w.sample("tern_nexus_al_hot_extents", {{"nexus", id}}, n.info.log.hot_extents);
    w.sample("tern_nexus_al_transactions_total", {{"nexus", id}}, n.info.log.transactions);
    w.sample("tern_nexus_al_evictions_total", {{"nexus", id}}, n.info.log.evictions);
    w.sample("tern_nexus_reconciled_bytes", {{"nexus", id}}, n.info.log.reconciled_bytes);
    for (const nexus::ChildInfo& c : n.info.children) {
      const std::string child = c.uuid.ToString();
      std::vector<metrics::Label> cl = {{"nexus", id}, {"child", child}};
      w.sample("tern_nexus_child_synced", cl,
               c.state == nexus::ChildState::kOnline && c.sync == nexus::SyncState::kSynced ? 1 : 0);
      if (c.tracked) w.sample("tern_nexus_child_dirty_bytes", cl, c.dirty_bytes);
      if (c.rebuild && !c.rebuild->finished()) {
        w.sample("tern_nexus_rebuild_running", cl, c.rebuild->state == nexus::RebuildState::kRunning ? 1 : 0);
        w.sample("tern_nexus_rebuild_done_bytes", cl, c.rebuild->done_bytes);
        w.sample("tern_nexus_rebuild_total_bytes", cl, c.rebuild->total_bytes);
      }
    }
    auto rl = co_await nexuses.rebuilds(n.info.uuid);
    if (!rl.ok()) continue;
    const auto& t = rl->totals;
    for (auto [result, count] : {std::pair{"completed", t.completed}, std::pair{"stopped", t.stopped},
                                 std::pair{"failed", t.failed}}) {
      w.sample("tern_nexus_rebuilds_total", {{"nexus", id}, {"result", result}}, count);
    }
    w.sample("tern_nexus_rebuild_copied_bytes_total", {{"nexus", id}}, t.copied_bytes);
  }
  co_return w.str();
}

}  // namespace tern::engine
