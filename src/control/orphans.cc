#include "control/orphans.h"

#include <set>

#include "common/log.h"
#include "common/uuid.h"
#include "reactor/reactor.h"

namespace tern::control {

Task<void> OrphanService::reconcile() {
  if (!(co_await c_.specs.ensure_loaded()).ok()) co_return;
  const uint64_t now = Reactor::current()->now();
  std::set<std::string> nodes;
  for (const auto& [name, p] : c_.specs.pools) {
    if (p.state == SpecState::kCreated && c_.registry.online(p.node)) nodes.insert(p.node);
  }
  std::set<std::string> seen;
  for (const std::string& n : nodes) co_await collect(n, now, seen);
  // Only candidates seen in this pass keep their clock (one gone, named again, or on a node not asked
  // this time starts over: the grace counts uninterrupted sightings).
  std::erase_if(first_seen_, [&](const auto& e) { return !seen.count(e.first); });
}

Task<void> OrphanService::collect(std::string node, uint64_t now, std::set<std::string>& seen) {
  ev1::ListReplicasRequest req;
  req.set_include_snapshots(true);
  auto l = co_await c_.engines.call<ev1::ReplicaService>(c_.endpoint(node), &ev1::ReplicaService::Stub::async::ListReplicas, req,
                                                         c_.opts.read_timeout_ms());
  if (!l.ok()) co_return;
  std::set<std::string> parts;
  for (const auto& [id, s] : c_.specs.snapshots) {
    for (const SnapshotSpec::Part& p : s.parts) parts.insert(p.uuid);
  }
  for (const ev1::Replica& r : l->replicas()) {
    const PoolSpec* pool = c_.specs.pool(r.pool());
    if (!pool || pool->node != node || !Uuid::Parse(r.name()).ok()) continue;  // not the agent's to judge
    const bool snapshot = r.kind() == ev1::REPLICA_KIND_SNAPSHOT;
    if (snapshot ? (parts.count(r.uuid()) || r.discarded()) : (c_.specs.replicas.count(r.uuid()) || r.name() != r.uuid())) continue;
    seen.insert(r.uuid());
    auto [it, fresh] = first_seen_.emplace(r.uuid(), now);
    const uint64_t since = it->second;  // (the entry goes below)
    if (fresh || now - since < c_.opts.orphan_grace_ms * 1'000'000) continue;
    ev1::ReplicaRef ref;
    ref.set_uuid(r.uuid());
    Status res;
    if (snapshot) {
      auto d = co_await c_.engines.call<ev1::SnapshotService>(c_.endpoint(node), &ev1::SnapshotService::Stub::async::DestroySnapshot,
                                                              ref, c_.opts.engine_timeout_ms);
      res = d.status();
    } else {
      auto d = co_await c_.engines.call<ev1::ReplicaService>(c_.endpoint(node), &ev1::ReplicaService::Stub::async::DestroyReplica,
                                                             ref, c_.opts.engine_timeout_ms);
      res = d.status();
    }
    if (res.ok() || res.code() == Errc::kNoEnt) {
      seen.erase(r.uuid());
      ++collected_;
      TLOG_WARN("control", "node {}: pool {}: {} {} ('{}') was named by no spec for {} s: destroyed (an orphan)", node, r.pool(),
                snapshot ? "snapshot" : "replica", r.uuid(), r.name(), (now - since) / 1'000'000'000ull);
    } else {
      TLOG_RL_WARN("control", 10000, "node {}: destroying orphan {}: {}", node, r.uuid(), res);
    }
  }
}

}  // namespace tern::control
