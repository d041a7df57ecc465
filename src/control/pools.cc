#include "control/pools.h"

#include "common/log.h"
#include "reactor/reactor.h"

namespace tern::control {

namespace {

// Errors that say the declaration itself is wrong (not that the node is away or busy).
bool permanent(const Status& s) {
  return s.code() == Errc::kInval || s.code() == Errc::kNoEnt || s.code() == Errc::kNoDev || s.code() == Errc::kExist ||
         s.code() == Errc::kCorruption || s.code() == Errc::kNotSup;
}

}  // namespace

Task<Result<PoolSpec>> PoolService::declare(std::string name, std::string node, std::string disk, Labels labels) {
  if (Status s = check_name("pool", name); !s.ok()) co_return s;
  if (node.empty()) co_return Status(Errc::kInval, "node: required");
  if (disk.empty()) co_return Status(Errc::kInval, "disk: required (a device URI on the node, e.g. uring:///dev/sdb)");
  if (Status s = co_await c_.specs.ensure_loaded(); !s.ok()) co_return s;
  if (!c_.specs.nodes.count(node)) {
    co_return Status::Errorf(Errc::kNoEnt, "node '{}' has never registered (see GET /v1/nodes)", node);
  }
  if (const PoolSpec* p = c_.specs.pool(name)) {
    if (p->node != node || p->disk != disk) {
      co_return Status::Errorf(Errc::kExist, "pool '{}' exists on node {} with disk {}", name, p->node, p->disk);
    }
    if (p->state == SpecState::kDeleting) co_return Status::Errorf(Errc::kBusy, "pool '{}' is being destroyed", name);
    if (p->labels != labels) {
      // The same pool with other labels: relabelled (placement reads them at the next volume).
      PoolSpec relabelled = *p;
      relabelled.labels = std::move(labels);
      auto b = c_.specs.batch();
      b.put(relabelled);
      if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
      std::string text;
      for (const auto& [k, v] : relabelled.labels) text += fmt::format("{}{}={}", text.empty() ? "" : ",", k, v);
      TLOG_INFO("control", "pool {}: labels now '{}'", name, text);
      p = c_.specs.pool(name);
      if (!p) co_return Status::Errorf(Errc::kNoEnt, "pool '{}' was destroyed meanwhile", name);
    }
    if (p->state == SpecState::kCreated) co_return *p;
    PoolSpec again = *p;
    Status s = co_await realize(again);
    if (!s.ok() && permanent(s)) co_return s;
    co_return *c_.specs.pool(name);
  }
  for (const auto& [n, p] : c_.specs.pools) {
    if (p.node == node && p.disk == disk) {
      co_return Status::Errorf(Errc::kExist, "disk {} on node {} already holds pool '{}'", disk, node, n);
    }
  }
  PoolSpec spec{name, node, disk, std::move(labels), SpecState::kCreating};
  auto b = c_.specs.batch();
  b.put(spec);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  Status s = co_await realize(spec);
  if (!s.ok() && permanent(s)) {
    auto undo = c_.specs.batch();
    undo.del_pool(name);
    (void)co_await c_.specs.commit(std::move(undo));
    co_return s;
  }
  if (!s.ok()) TLOG_WARN("control", "pool {} on {}: {} (it is created when the node can)", name, node, s);
  co_return *c_.specs.pool(name);
}

Task<Status> PoolService::realize(PoolSpec spec) {
  if (!c_.registry.online(spec.node)) co_return Status::Errorf(Errc::kConnRefused, "node {} is offline", spec.node);
  ev1::CreatePoolRequest req;
  req.set_name(spec.name);
  req.set_disk(spec.disk);
  auto r = co_await c_.engines.call<ev1::PoolService>(c_.endpoint(spec.node), &ev1::PoolService::Stub::async::CreateOrImportPool, req,
                                                     c_.opts.engine_timeout_ms * 4);
  if (!r.ok()) co_return r.status();
  PoolStatus& st = c_.pools[spec.name];
  st.found = true;
  st.capacity = r->capacity();
  st.used = r->used();
  st.committed = r->committed();
  st.objects = r->replica_count();
  st.state = r->state() == ev1::POOL_STATE_DEGRADED ? "degraded" : "online";
  st.reason = r->state_reason();
  st.seen_ns = Reactor::current()->now();
  if (spec.state != SpecState::kCreated) {
    spec.state = SpecState::kCreated;
    auto b = c_.specs.batch();
    b.put(spec);
    if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
    TLOG_INFO("control", "pool {} on node {} is created ({})", spec.name, spec.node, spec.disk);
  }
  co_return Status::Ok();
}

Task<Status> PoolService::destroy(std::string name, bool force) {
  if (Status s = co_await c_.specs.ensure_loaded(); !s.ok()) co_return s;
  const PoolSpec* p = c_.specs.pool(name);
  if (!p) co_return Status::Errorf(Errc::kNoEnt, "pool '{}' is not declared", name);
  auto held = c_.specs.replicas_in(name);
  std::vector<const SnapshotSpec*> snaps;  // volume snapshots with a part in this pool
  for (const auto& [id, sn] : c_.specs.snapshots) {
    for (const SnapshotSpec::Part& part : sn.parts) {
      if (part.pool == name) {
        snaps.push_back(&sn);
        break;
      }
    }
  }
  if ((!held.empty() || !snaps.empty()) && !force) {
    std::string list;
    for (const ReplicaSpec* r : held) {
      list += fmt::format("{}{} {} of volume {}", list.empty() ? "" : ", ", r->clone_of.empty() ? "replica" : "clone", r->uuid,
                          r->volume);
    }
    for (const SnapshotSpec* sn : snaps) list += fmt::format("{}snapshot {} of volume {}", list.empty() ? "" : ", ", sn->uuid, sn->volume);
    co_return Status::Errorf(Errc::kBusy, "pool '{}' holds {} replica(s) and {} snapshot(s): {} (destroy them, or force)", name,
                             held.size(), snaps.size(), list);
  }
  PoolSpec spec = *p;
  spec.state = SpecState::kDeleting;
  auto b = c_.specs.batch();
  b.put(spec);
  // Forced: its replicas leave their volumes (which then rebuild elsewhere).
  for (const ReplicaSpec* r : held) {
    if (const VolumeSpec* v = c_.specs.volume(r->volume)) {
      VolumeSpec nv = *v;
      std::erase(nv.replica_ids, r->uuid);
      b.put(nv);
    }
    b.del_replica(r->uuid);
  }
  // ... and its snapshot parts leave their volume snapshots (a snapshot left with none is gone).
  for (const SnapshotSpec* sn : snaps) {
    SnapshotSpec ns = *sn;
    std::erase_if(ns.parts, [&](const SnapshotSpec::Part& part) { return part.pool == name; });
    if (ns.parts.empty()) {
      b.del_snapshot(ns.uuid);
    } else {
      b.put(ns);
    }
  }
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  Status s = co_await destroy_on_engine(spec, force);
  if (!s.ok() && s.code() != Errc::kConnRefused && s.code() != Errc::kTimedOut) co_return s;
  if (!s.ok()) TLOG_WARN("control", "pool {}: {}; destroyed when node {} returns", name, s, spec.node);
  co_return Status::Ok();
}

Task<Status> PoolService::destroy_on_engine(PoolSpec spec, bool force) {
  if (!c_.registry.online(spec.node)) co_return Status::Errorf(Errc::kConnRefused, "node {} is offline", spec.node);
  ev1::DestroyPoolRequest req;
  req.set_name(spec.name);
  req.set_force(force);
  auto r = co_await c_.engines.call<ev1::PoolService>(c_.endpoint(spec.node), &ev1::PoolService::Stub::async::DestroyPool, req,
                                                     c_.opts.engine_timeout_ms * 4);
  if (!r.ok() && r.code() != Errc::kNoEnt) co_return r.status();
  auto b = c_.specs.batch();
  b.del_pool(spec.name);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  c_.pools.erase(spec.name);
  TLOG_INFO("control", "pool {} on node {} is destroyed", spec.name, spec.node);
  co_return Status::Ok();
}

Task<void> PoolService::refresh(std::string node) {
  std::string ep = c_.endpoint(node);
  if (ep.empty()) co_return;
  ev1::ListPoolsRequest req;
  auto r = co_await c_.engines.call<ev1::PoolService>(ep, &ev1::PoolService::Stub::async::ListPools, req, c_.opts.engine_timeout_ms);
  uint64_t now = Reactor::current()->now();
  if (!r.ok()) {
    for (auto& [name, spec] : c_.specs.pools) {
      if (spec.node == node) c_.pools[name].reason = std::string(r.status().message());
    }
    co_return;
  }
  std::set<std::string> seen;
  for (const ev1::Pool& p : r->pools()) {
    seen.insert(p.name());
    PoolStatus& st = c_.pools[p.name()];
    st.found = true;
    st.capacity = p.capacity();
    st.used = p.used();
    st.committed = p.committed();
    st.objects = p.replica_count();
    st.state = p.state() == ev1::POOL_STATE_DEGRADED ? "degraded" : "online";
    st.reason = p.state_reason();
    st.seen_ns = now;
  }
  for (auto& [name, spec] : c_.specs.pools) {
    if (spec.node != node || seen.count(name)) continue;
    PoolStatus& st = c_.pools[name];
    st.found = false;
    st.state.clear();
    st.reason = "the engine does not have it";
    st.seen_ns = now;
  }
}

Task<void> PoolService::reconcile_node(std::string node) {
  if (!c_.registry.online(node)) co_return;
  co_await refresh(node);
  std::vector<PoolSpec> todo;
  for (const auto& [name, spec] : c_.specs.pools) {
    if (spec.node == node) todo.push_back(spec);
  }
  for (const PoolSpec& spec : todo) {
    const PoolStatus& st = c_.pools[spec.name];
    Status s;
    if (spec.state == SpecState::kDeleting) {
      s = co_await destroy_on_engine(spec, true);
    } else if (spec.state == SpecState::kCreating || !st.found) {
      s = co_await realize(spec);
      if (s.ok() && spec.state == SpecState::kCreated) TLOG_INFO("control", "pool {} imported again on node {}", spec.name, node);
    }
    if (!s.ok()) TLOG_RL_WARN("control", 10000, "pool {} on node {}: {}", spec.name, node, s);
  }
}

}  // namespace tern::control
