#include "control/targets.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include "common/log.h"
#include "common/uuid.h"

namespace tern::control {

void TargetService::maybe_crash(const char* step) const {
  if (!crash_at.empty() && crash_at == step) {
    TLOG_ERROR("control", "TERN_AGENT_CRASH_AT={}: aborting here (a test of crash recovery)", step);
    std::abort();
  }
}

Result<std::string> TargetService::choose_node(const VolumeSpec& v, const std::string& asked) const {
  auto usable = [&](const std::string& n) -> std::string {
    auto it = c_.specs.nodes.find(n);
    if (it == c_.specs.nodes.end()) return fmt::format("node '{}' has never registered", n);
    if (!c_.registry.online(n)) return fmt::format("node {} is offline", n);
    if (it->second.cordoned()) return fmt::format("node {} is cordoned", n);
    return {};
  };
  if (!asked.empty()) {
    std::string why = usable(asked);
    if (!why.empty()) return Status::Errorf(c_.specs.nodes.count(asked) ? Errc::kBusy : Errc::kNoEnt, "{}", why);
    return asked;
  }
  std::map<std::string, int> targets;
  for (const auto& [id, vol] : c_.specs.volumes) {
    if (vol.target) ++targets[vol.target->node];
  }
  std::set<std::string> holders;
  for (const ReplicaSpec* r : c_.specs.replicas_of(v.uuid)) holders.insert(r->node);
  std::string best;
  auto better = [&](const std::string& a, const std::string& b) {
    auto key = [&](const std::string& n) { return std::make_tuple(holders.count(n) ? 0 : 1, targets[n], n); };
    return b.empty() || key(a) < key(b);
  };
  for (const auto& [n, spec] : c_.specs.nodes) {
    if (usable(n).empty() && better(n, best)) best = n;
  }
  if (best.empty()) return Status(Errc::kBusy, "no node can take the volume's target: every node is offline or cordoned");
  return best;
}

Task<Result<std::vector<std::string>>> TargetService::children(const VolumeSpec& v, const std::string& node) {
  // Which replicas the last nexus called healthy (all when there was no nexus yet).
  auto current = co_await c_.current_replicas(v.uuid);
  if (!current.ok()) co_return current.status();
  std::vector<std::string> uris;
  std::vector<std::string> offline_current;
  bool any_current = false;
  for (const ReplicaSpec* r : c_.specs.replicas_of(v.uuid)) {
    if (r->state != SpecState::kCreated) continue;
    if (!c_.registry.online(r->node)) {
      if (current->recorded && current->holds(r->uuid)) offline_current.push_back(fmt::format("{} on {}", r->uuid, r->node));
      continue;
    }
    auto uri = co_await child_uri(*r, node);
    if (!uri.ok()) {
      TLOG_WARN("control", "volume {}: replica {} on {} is left out: {}", v.uuid, r->uuid, r->node, uri.status().message());
      if (current->recorded && current->holds(r->uuid)) offline_current.push_back(fmt::format("{} on {}", r->uuid, r->node));
      continue;
    }
    any_current |= current->holds(r->uuid);
    uris.push_back(std::move(*uri));
  }
  if (uris.empty()) co_return Status::Errorf(Errc::kBusy, "volume {}: none of its replicas is reachable", v.uuid);
  if (!any_current) {
    std::string list;
    for (const std::string& s : offline_current) list += (list.empty() ? "" : ", ") + s;
    co_return Status::Errorf(Errc::kBusy,
                             "volume {}: the replicas holding its current data ({}) are unreachable; the others are stale "
                             "and are not used alone (bring a node back, then publish again)",
                             v.uuid, list.empty() ? "none recorded" : list);
  }
  co_return uris;
}

Task<Result<std::string>> TargetService::child_uri(ReplicaSpec r, std::string node) {
  if (r.node == node) co_return fmt::format("bdev:///{}?uuid={}", r.uuid, r.uuid);
  ev1::ListReplicasRequest req;
  req.set_uuid(r.uuid);
  auto l = co_await c_.engines.call<ev1::ReplicaService>(c_.endpoint(r.node), &ev1::ReplicaService::Stub::async::ListReplicas, req,
                                                         c_.opts.read_timeout_ms());
  if (!l.ok()) co_return l.status();
  if (l->replicas().empty()) co_return Status::Errorf(Errc::kNoEnt, "its engine does not have it");
  if (l->replicas(0).share().uri().empty()) co_return Status::Errorf(Errc::kBusy, "its engine does not share it");
  co_return fmt::format("{}?uuid={}{}{}", l->replicas(0).share().uri(), r.uuid, c_.opts.child_params.empty() ? "" : "&",
                        c_.opts.child_params);
}

Task<Status> TargetService::join(std::string uuid, std::string node, ReplicaSpec r) {
  auto uri = co_await child_uri(r, node);
  if (!uri.ok()) co_return uri.status();
  ev1::AddChildRequest req;
  req.set_uuid(uuid);
  req.set_uri(*uri);
  auto res = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(node), &ev1::NexusService::Stub::async::AddChild, req,
                                                         c_.opts.engine_timeout_ms);
  if (res.ok()) TLOG_INFO("control", "volume {}: replica {} on {} joined its nexus on {} (rebuilding)", uuid, r.uuid, r.node, node);
  if (!res.ok()) TLOG_RL_WARN("control", 10000, "volume {}: adding replica {} to its nexus: {}", uuid, r.uuid, res.status());
  co_return res.status();
}

Task<Status> TargetService::destroy_nexus(std::string node, std::string uuid) {
  std::string ep = c_.endpoint(node);
  ev1::NexusRef ref;
  ref.set_uuid(uuid);
  auto s = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::ShutdownNexus, ref,
                                                       c_.opts.engine_timeout_ms * 2);
  if (!s.ok() && s.code() != Errc::kNoEnt) co_return s.status();
  auto d = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::DestroyNexus, ref,
                                                       c_.opts.engine_timeout_ms * 2);
  if (!d.ok() && d.code() != Errc::kNoEnt) co_return d.status();
  co_return Status::Ok();
}

Task<Status> TargetService::clear_target(std::string uuid, uint64_t generation) {
  const VolumeSpec* v = c_.specs.volume(uuid);
  if (!v || !v->target || v->target->generation != generation) co_return Status::Ok();
  VolumeSpec nv = *v;
  nv.target.reset();
  auto b = c_.specs.batch();
  b.put(nv);
  co_return co_await c_.specs.commit(std::move(b));
}

Task<Result<VolumeSpec>> TargetService::publish(std::string uuid, PublishArgs a) {
  if (a.protocol != "nvmf" && a.protocol != "nbd") {
    co_return Status::Errorf(Errc::kInval, "protocol '{}': nvmf or nbd", a.protocol);
  }
  if (Status s = co_await c_.begin_volume_op(&uuid); !s.ok()) co_return s;
  auto cur = c_.created_volume(uuid);
  if (!cur.ok()) co_return cur.status();
  BusyGuard guard(c_.busy, uuid);
  VolumeSpec v = **cur;
  if (v.target && v.target->allowed_hosts == std::vector<std::string>{std::string(kEvacuationHost)} &&
      a.allowed_hosts != v.target->allowed_hosts) {
    // The agent's own target (an evacuation copying a replica): the user's publish takes it over.
    a.republish = true;
    if (a.node.empty() && c_.registry.online(v.target->node)) a.node = v.target->node;
  }
  if (v.target) {
    const TargetSpec& t = *v.target;
    bool same = (a.node.empty() || a.node == t.node) && a.protocol == t.protocol;
    if (same && t.state == TargetSpec::State::kPublished && !a.republish) co_return v;
    if (!a.republish) {
      co_return Status::Errorf(Errc::kBusy, "volume {} is {} on node {} over {} (unpublish it first, or republish)", uuid,
                               target_state_name(t.state), t.node, t.protocol);
    }
    // Republish: the old nexus goes first when its node can be asked (a local child is not fenced).
    if (c_.registry.online(t.node)) {
      if (Status s = co_await destroy_nexus(t.node, uuid); !s.ok()) {
        co_return Status::Errorf(s.code(), "volume {}: removing the old nexus on {}: {}", uuid, t.node, s.message());
      }
    }
    if (a.node.empty() || a.node == t.node) {
      // Moving off a node that is down: choose another.
      if (!c_.registry.online(t.node)) a.node.clear();
    }
  }
  auto node = choose_node(v, a.node);
  if (!node.ok()) co_return Status::Errorf(node.code(), "volume {}: {}", uuid, node.status().message());
  auto uris = co_await children(v, *node);
  if (!uris.ok()) co_return uris.status();

  v.generation += 1;
  TargetSpec t;
  t.node = *node;
  t.protocol = a.protocol;
  t.allowed_hosts = a.allowed_hosts;
  t.generation = v.generation;
  t.state = TargetSpec::State::kPublishing;
  v.target = t;
  auto b = c_.specs.batch();
  b.put(v);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  maybe_crash("publish:recorded");

  std::string ep = c_.endpoint(*node);
  ev1::CreateNexusRequest cr;
  cr.set_uuid(uuid);
  cr.set_size(v.size);
  for (const std::string& u : *uris) cr.add_children(u);
  cr.set_persistence_key(c_.specs.keys().record(uuid));
  for (const std::string& a : v.adopt_labels_of) cr.add_adopt_labels_of(a);  // a restored volume's clones
  if (v.rebuild_rate) cr.mutable_rebuild()->set_rate_bytes_per_s(v.rebuild_rate);
  cr.set_resv_key(v.generation);
  cr.set_preempt_policy(ev1::PREEMPT_POLICY_HOLDER);
  // Each generation its own controller-ID range, so a host connected to an old and a new nexus of the
  // volume (multipath) never sees two controllers with one ID.
  uint32_t block = uint32_t(v.generation % 8);
  cr.set_cntlid_min(1 + block * 8000);
  cr.set_cntlid_max(8000 + block * 8000);
  auto created = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::CreateNexus, cr,
                                                             c_.opts.engine_timeout_ms * 4);
  Status failed = created.status();
  std::string uri;
  if (failed.ok()) {
    maybe_crash("publish:created");
    ev1::PublishNexusRequest pr;
    pr.set_uuid(uuid);
    pr.set_protocol(a.protocol == "nbd" ? ev1::SHARE_PROTOCOL_NBD : ev1::SHARE_PROTOCOL_NVMF);
    for (const std::string& h : a.allowed_hosts) pr.add_allowed_hosts(h);
    auto pub = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::PublishNexus, pr,
                                                           c_.opts.engine_timeout_ms);
    failed = pub.status();
    if (pub.ok()) uri = pub->share().uri();
  }
  if (!failed.ok()) {
    TLOG_WARN("control", "volume {}: publishing on {}: {}; undoing", uuid, *node, failed);
    if (Status s = co_await destroy_nexus(*node, uuid); !s.ok()) {
      // The node cannot be asked (it died under the publish). The target is cleared all the same, so the
      // volume can be published elsewhere at once: the next publish's reservations fence a nexus left
      // there off the remote children (at its first write it shuts itself down), and the stray-nexus pass
      // destroys it when the node returns.
      TLOG_WARN("control", "volume {}: removing the nexus on {}: {} (destroyed when the node is back)", uuid, *node, s);
    }
    (void)co_await clear_target(uuid, v.generation);
    co_return Status::Errorf(failed.code(), "volume {}: publishing on node {}: {}", uuid, *node, failed.message());
  }
  v.target->uri = uri;
  v.target->state = TargetSpec::State::kPublished;
  auto done = c_.specs.batch();
  done.put(v);
  if (Status s = co_await c_.specs.commit(std::move(done)); !s.ok()) co_return s;
  TLOG_INFO("control", "volume {} published on {} (generation {}, {} child(ren)): {}", uuid, *node, v.generation, uris->size(), uri);
  co_return v;
}

Task<Status> TargetService::unpublish(std::string uuid) {
  if (Status s = co_await c_.begin_volume_op(&uuid); !s.ok()) co_return s;
  const VolumeSpec* v = c_.specs.volume(uuid);
  if (!v) co_return Status::Errorf(Errc::kNoEnt, "volume {} does not exist", uuid);
  if (!v->target) co_return Status::Errorf(Errc::kNoEnt, "volume {} is not published", uuid);
  BusyGuard guard(c_.busy, uuid);
  co_return co_await unpublish_locked(uuid);
}

Task<Status> TargetService::unpublish_locked(std::string uuid) {
  const VolumeSpec* cur = c_.specs.volume(uuid);
  if (!cur || !cur->target) co_return Status::Ok();
  VolumeSpec v = *cur;
  if (v.target->state != TargetSpec::State::kUnpublishing) {
    v.target->state = TargetSpec::State::kUnpublishing;
    auto b = c_.specs.batch();
    b.put(v);
    if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  }
  const std::string node = v.target->node;
  if (!c_.registry.online(node)) {
    TLOG_WARN("control", "volume {}: its nexus on {} is removed when the node returns", uuid, node);
    co_return Status::Ok();
  }
  if (Status s = co_await destroy_nexus(node, uuid); !s.ok()) co_return s;
  if (Status s = co_await clear_target(uuid, v.target->generation); !s.ok()) co_return s;
  TLOG_INFO("control", "volume {} unpublished from {}", uuid, node);
  co_return Status::Ok();
}

Task<void> TargetService::reconcile() {
  // Targets an earlier leader left in the middle, and removals waiting for a node.
  std::vector<std::string> ids;
  for (const auto& [id, v] : c_.specs.volumes) {
    if (!c_.busy.count(id) && v.target && v.target->state != TargetSpec::State::kPublished) ids.push_back(id);
  }
  for (const std::string& id : ids) {
    const VolumeSpec* v = c_.specs.volume(id);
    if (!v || !v->target || !c_.registry.online(v->target->node) || c_.busy.count(id)) continue;
    BusyGuard guard(c_.busy, id);
    if (v->target->state == TargetSpec::State::kPublishing) {
      TLOG_INFO("control", "volume {}: a publish on {} was left unfinished; undoing it", id, v->target->node);
    }
    Status s = co_await unpublish_locked(id);
    if (!s.ok()) TLOG_RL_WARN("control", 10000, "volume {}: {}", id, s);
  }
  // Nexuses no target names, on online nodes (a volume destroyed or moved while the node was away).
  std::vector<std::string> nodes;
  for (const auto& [n, l] : c_.registry.all()) {
    if (l.online) nodes.push_back(n);
  }
  for (const std::string& node : nodes) {
    ev1::ListNexusesRequest req;
    auto l = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(node), &ev1::NexusService::Stub::async::ListNexuses, req,
                                                         c_.opts.read_timeout_ms());
    if (!l.ok()) continue;
    for (const ev1::Nexus& nx : l->nexuses()) {
      // Only nexuses of this cluster's volumes: their record lives under our prefix.
      if (nx.persistence_key() != c_.specs.keys().record(nx.uuid())) continue;
      const VolumeSpec* v = c_.specs.volume(nx.uuid());
      bool wanted = v && v->target && v->target->node == node;
      if (wanted || c_.busy.count(nx.uuid())) continue;
      TLOG_INFO("control", "node {}: nexus of volume {} is no volume's target any more; destroying it", node, nx.uuid());
      if (Status s = co_await destroy_nexus(node, nx.uuid()); !s.ok()) TLOG_RL_WARN("control", 10000, "node {}: {}", node, s);
    }
  }
}

}  // namespace tern::control
