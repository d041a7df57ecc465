#include "control/evacuate.h"

#include <map>
#include <set>

#include "common/log.h"

namespace tern::control {

Task<void> EvacuationService::reconcile() {
  std::vector<std::string> nodes;
  for (const auto& [id, n] : c_.specs.nodes) {
    if (n.evacuating) nodes.push_back(id);
  }
  for (const std::string& node : nodes) {
    std::map<std::string, std::string> here;  // volume -> its replica on the node
    for (const auto& [id, r] : c_.specs.replicas) {
      if (r.node == node && r.state != SpecState::kDeleting && c_.specs.volume(r.volume)) here[r.volume] = id;
    }
    if (here.empty()) {
      auto it = c_.specs.nodes.find(node);
      if (it == c_.specs.nodes.end()) continue;
      NodeSpec n = it->second;
      n.evacuating = false;
      n.draining = false;
      auto b = c_.specs.batch();
      b.put(n);
      if (Status s = co_await c_.specs.commit(std::move(b)); s.ok()) {
        TLOG_INFO("control", "node {} is evacuated: no replica is left on it (it stays cordoned)", node);
      }
      continue;
    }
    for (const auto& [vol, rep] : here) {
      if (c_.busy.count(vol)) continue;
      co_await step(vol, node, rep);
    }
  }
}

Task<void> EvacuationService::step(std::string uuid, std::string node, std::string replica) {
  const VolumeSpec* v = c_.specs.volume(uuid);
  if (!v || v->state != SpecState::kCreated) co_return;
  if (!v->target) {
    PublishArgs a;
    a.allowed_hosts = {std::string(kEvacuationHost)};
    auto r = co_await targets_.publish(uuid, a);
    if (r.ok()) {
      TLOG_INFO("control", "evacuating {}: volume {} published on {} (no host may connect) to copy its replica", node, uuid,
                r->target->node);
    } else {
      TLOG_RL_WARN("control", 10000, "evacuating {}: volume {}: a nexus to copy through: {}", node, uuid, r.status());
    }
    co_return;
  }
  const TargetSpec t = *v->target;
  if (t.state != TargetSpec::State::kPublished) co_return;
  if (t.node == node) {
    TLOG_RL_WARN("control", 10000, "evacuating {}: volume {} is still served there (drain again to move it)", node, uuid);
    co_return;
  }
  std::vector<ReplicaSpec> live;
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) {
    if (r->state != SpecState::kDeleting) live.push_back(*r);
  }
  const bool ours = t.allowed_hosts == std::vector<std::string>{std::string(kEvacuationHost)};
  if (live.size() <= v->replicas) {
    if (!heal_.take_slot(uuid, fmt::format("moving replica {} off {}", replica, node))) co_return;
    BusyGuard guard(c_.busy, uuid);
    auto r = co_await volumes_.add_replica(uuid);
    if (!r.ok()) {
      TLOG_RL_WARN("control", 10000, "evacuating {}: volume {}: a replica elsewhere: {}", node, uuid, r.status());
      co_return;
    }
    (void)co_await targets_.join(uuid, t.node, *r);
    TLOG_INFO("control", "evacuating {}: volume {}: replica {} on {} is rebuilt to replace {}", node, uuid, r->uuid, r->node, replica);
    co_return;
  }
  // The replacement is there: once every other replica is an online, in-sync child, this one goes.
  if (!c_.registry.online(t.node)) co_return;
  ev1::ListNexusesRequest lr;
  lr.set_uuid(uuid);
  auto l = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(t.node), &ev1::NexusService::Stub::async::ListNexuses, lr,
                                                       c_.opts.read_timeout_ms());
  if (!l.ok() || l->nexuses().empty()) co_return;
  std::set<std::string> synced;
  for (const ev1::Child& ch : l->nexuses(0).children()) {
    if (ch.synced() && ch.state() == ev1::CHILD_STATE_ONLINE) synced.insert(ch.uuid());
  }
  for (const ReplicaSpec& r : live) {
    if (r.uuid != replica && !synced.count(r.uuid)) co_return;  // still rebuilding
  }
  {
    BusyGuard guard(c_.busy, uuid);
    ev1::ChildRef ref;
    ref.set_uuid(uuid);
    ref.set_child_uuid(replica);
    auto res = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(t.node), &ev1::NexusService::Stub::async::RemoveChild, ref,
                                                           c_.opts.engine_timeout_ms);
    if (!res.ok() && res.code() != Errc::kNoEnt) {
      TLOG_RL_WARN("control", 10000, "evacuating {}: volume {}: removing replica {} from its nexus: {}", node, uuid, replica, res.status());
      co_return;
    }
    Status s = co_await volumes_.drop_replica(uuid, replica);
    if (!s.ok()) {
      TLOG_RL_WARN("control", 10000, "evacuating {}: volume {}: dropping replica {}: {}", node, uuid, replica, s);
      co_return;
    }
  }
  TLOG_INFO("control", "evacuating {}: volume {}: replica {} moved off the node", node, uuid, replica);
  if (ours) {
    Status s = co_await targets_.unpublish(uuid);
    if (!s.ok()) TLOG_RL_WARN("control", 10000, "evacuating {}: volume {}: unpublishing the copy's nexus: {}", node, uuid, s);
  }
}

}  // namespace tern::control
