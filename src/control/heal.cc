#include "control/heal.h"

#include <optional>
#include <set>

#include "common/log.h"
#include "reactor/reactor.h"

namespace tern::control {

Task<void> HealService::reconcile() {
  std::vector<std::string> ids;
  for (const auto& [id, v] : c_.specs.volumes) {
    if (v.state == SpecState::kCreated && !c_.busy.count(id)) ids.push_back(id);
  }
  running_ = ids.empty() ? 0 : co_await count_rebuilds();
  seen_ = running_;
  for (const std::string& id : ids) co_await heal(id);
}

Task<uint32_t> HealService::count_rebuilds() {
  std::set<std::string> nodes;
  for (const auto& [id, v] : c_.specs.volumes) {
    if (v.target && c_.registry.online(v.target->node)) nodes.insert(v.target->node);
  }
  uint32_t n = 0;
  for (const std::string& node : nodes) {
    ev1::ListNexusesRequest lr;
    auto l = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(node), &ev1::NexusService::Stub::async::ListNexuses, lr,
                                                         c_.opts.read_timeout_ms());
    if (!l.ok()) continue;
    for (const ev1::Nexus& nx : l->nexuses()) {
      for (const ev1::Child& ch : nx.children()) {
        if (ch.has_rebuild() && (ch.rebuild().state() == ev1::REBUILD_STATE_RUNNING || ch.rebuild().state() == ev1::REBUILD_STATE_PAUSED)) ++n;
      }
    }
  }
  co_return n;
}

bool HealService::take_slot(const std::string& uuid, const std::string& what) {
  if (c_.opts.max_rebuilds != 0 && running_ >= c_.opts.max_rebuilds) {
    TLOG_RL_AT(::tern::log::Level::kInfo, "control", 10000, "volume {}: {} waits: {} rebuilds run (--max-rebuilds {})", uuid, what, running_, c_.opts.max_rebuilds);
    return false;
  }
  ++running_;
  return true;
}

Task<void> HealService::heal(std::string uuid) {
  const VolumeSpec* v = c_.specs.volume(uuid);
  if (!v || c_.busy.count(uuid)) co_return;
  const bool published = v->target && v->target->state == TargetSpec::State::kPublished;
  if (published && !c_.registry.online(v->target->node)) {
    const std::string from = v->target->node;
    PublishArgs a;
    a.protocol = v->target->protocol;
    a.allowed_hosts = v->target->allowed_hosts;
    a.republish = true;
    auto r = co_await targets_.publish(uuid, a);
    if (r.ok()) {
      TLOG_WARN("control", "volume {}: its target's node {} is offline: republished on {} (generation {})", uuid, from,
                r->target->node, r->target->generation);
    } else {
      TLOG_RL_WARN("control", 10000, "volume {}: its target's node {} is offline and it cannot move yet: {}", uuid, from, r.status());
    }
    co_return;
  }
  std::optional<BusyGuard> guard;
  guard.emplace(c_.busy, uuid);
  // Too few replicas: add (and, when published, join them to the nexus).
  size_t have = 0;
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) have += r->state != SpecState::kDeleting;
  std::vector<ReplicaSpec> added;
  for (size_t i = have; i < v->replicas; ++i) {
    if (published && !take_slot(uuid, "a missing replica")) break;
    auto r = co_await volumes_.add_replica(uuid);
    if (!r.ok()) {
      TLOG_RL_WARN("control", 10000, "volume {}: {} of {} replicas: {}", uuid, have + added.size(), v->replicas, r.status());
      break;
    }
    added.push_back(*r);
    v = c_.specs.volume(uuid);
    if (!v) co_return;
  }
  if (!published) co_return;
  const std::string node = v->target->node;
  const std::string ep = c_.endpoint(node);
  for (const ReplicaSpec& r : added) (void)co_await targets_.join(uuid, node, r);
  ev1::ListNexusesRequest lr;
  lr.set_uuid(uuid);
  auto l = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::ListNexuses, lr, c_.opts.read_timeout_ms());
  if (!l.ok()) co_return;
  if (l->nexuses().empty()) {
    // The engine restarted and its nexus is gone: recreate it where it was (publish takes the volume).
    PublishArgs a;
    a.node = node;
    a.protocol = v->target->protocol;
    a.allowed_hosts = v->target->allowed_hosts;
    a.republish = true;
    guard.reset();
    auto r = co_await targets_.publish(uuid, a);
    if (r.ok()) TLOG_WARN("control", "volume {}: its nexus on {} was gone: recreated (generation {})", uuid, node, r->target->generation);
    if (!r.ok()) TLOG_RL_WARN("control", 10000, "volume {}: recreating its nexus on {}: {}", uuid, node, r.status());
    co_return;
  }
  const ev1::Nexus& nx = l->nexuses(0);
  const uint64_t now = Reactor::current()->now();
  // Running rebuilds at the volume's rate (a property changed since they started).
  for (const ev1::Child& ch : nx.children()) {
    if (ch.has_rebuild() && ch.rebuild().state() == ev1::REBUILD_STATE_RUNNING && ch.rebuild().rate_limit() != v->rebuild_rate) {
      VolumeSpec spec = *v;  // (named: GCC 12)
      co_await volumes_.apply_rebuild_rate(std::move(spec), nx);
      v = c_.specs.volume(uuid);
      if (!v) co_return;
      break;
    }
  }
  // Replicas that are no child (their node was down when this nexus was made): join them; the nexus
  // rebuilds what they miss.
  std::set<std::string> kids;
  for (const ev1::Child& ch : nx.children()) kids.insert(ch.uuid());
  std::vector<ReplicaSpec> strays;
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) {
    if (r->state == SpecState::kCreated && !kids.count(r->uuid) && c_.registry.online(r->node)) strays.push_back(*r);
  }
  // Replicas that are no child and whose node has been away too long: out of the volume (destroyed when
  // the node returns); the next pass places a new one and joins it.
  std::vector<ReplicaSpec> gone;
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) {
    if (r->state != SpecState::kCreated || kids.count(r->uuid) || c_.registry.online(r->node)) continue;
    if (c_.registry.silent_ns(r->node, now) >= c_.opts.faulted_child_wait_ms * 1'000'000) gone.push_back(*r);
  }
  for (const ReplicaSpec& r : gone) {
    Status s = co_await volumes_.drop_replica(uuid, r.uuid);
    if (s.ok()) TLOG_WARN("control", "volume {}: replica {} dropped (node {} away too long); a new one follows", uuid, r.uuid, r.node);
  }
  for (const ReplicaSpec& r : strays) {
    if (take_slot(uuid, fmt::format("joining replica {}", r.uuid))) (void)co_await targets_.join(uuid, node, r);
  }
  for (const ev1::Child& ch : nx.children()) {
    if (ch.state() != ev1::CHILD_STATE_FAULTED) continue;
    auto it = c_.specs.replicas.find(ch.uuid());
    if (it == c_.specs.replicas.end()) continue;
    const ReplicaSpec r = it->second;
    if (c_.registry.online(r.node)) {
      if (!take_slot(uuid, fmt::format("onlining replica {}", r.uuid))) continue;
      ev1::ChildRef ref;
      ref.set_uuid(uuid);
      ref.set_child_uuid(r.uuid);
      auto res = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::OnlineChild, ref, c_.opts.engine_timeout_ms);
      if (res.ok()) TLOG_INFO("control", "volume {}: replica {} on {} is back: onlined (it rebuilds what it missed)", uuid, r.uuid, r.node);
      if (!res.ok()) TLOG_RL_WARN("control", 10000, "volume {}: onlining replica {}: {}", uuid, r.uuid, res.status());
      continue;
    }
    const uint64_t away_ns = c_.registry.silent_ns(r.node, now);
    if (away_ns < c_.opts.faulted_child_wait_ms * 1'000'000) continue;
    // Away too long: a new replica elsewhere, rebuilt in full; the old one leaves the volume.
    if (!take_slot(uuid, fmt::format("replacing replica {}", r.uuid))) continue;
    auto nr = co_await volumes_.add_replica(uuid);
    if (!nr.ok()) {
      TLOG_RL_WARN("control", 10000, "volume {}: replacing replica {} (node {} away): {}", uuid, r.uuid, r.node, nr.status());
      continue;
    }
    if (Status s = co_await targets_.join(uuid, node, *nr); !s.ok()) {
      (void)co_await volumes_.drop_replica(uuid, nr->uuid);
      continue;
    }
    ev1::ChildRef rm;
    rm.set_uuid(uuid);
    rm.set_child_uuid(r.uuid);
    auto gone = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::RemoveChild, rm, c_.opts.engine_timeout_ms);
    if (!gone.ok() && gone.code() != Errc::kNoEnt) {
      TLOG_WARN("control", "volume {}: removing replica {} from its nexus: {}", uuid, r.uuid, gone.status());
      continue;
    }
    (void)co_await volumes_.drop_replica(uuid, r.uuid);
    TLOG_WARN("control", "volume {}: replica {} replaced by {} on {} (node {} away for {} s)", uuid, r.uuid, nr->uuid, nr->node, r.node,
              away_ns / 1'000'000'000);
  }
}

}  // namespace tern::control
