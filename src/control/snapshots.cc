#include "control/snapshots.h"

#include <cstdlib>
#include <set>

#include "common/clock.h"
#include "common/log.h"
#include "common/uuid.h"

namespace tern::control {

void SnapshotService::maybe_crash(const char* step) const {
  if (!crash_at.empty() && crash_at == step) {
    TLOG_ERROR("control", "TERN_AGENT_CRASH_AT={}: aborting here (a test of crash recovery)", step);
    std::abort();
  }
}

Task<Result<std::vector<SnapshotSpec::Part>>> SnapshotService::choose_parts(const VolumeSpec& v) {
  std::vector<SnapshotSpec::Part> parts;
  auto part_of = [](const ReplicaSpec& r) { return SnapshotSpec::Part{Uuid::Generate().ToString(), r.uuid, r.pool, r.node}; };
  if (v.target && v.target->state == TargetSpec::State::kPublished) {
    const std::string node = v.target->node;
    if (!c_.registry.online(node)) {
      co_return Status::Errorf(Errc::kBusy, "volume {}: its target's node {} is offline (the volume is being moved); try again",
                               v.uuid, node);
    }
    ev1::ListNexusesRequest lr;
    lr.set_uuid(v.uuid);
    auto l = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(node), &ev1::NexusService::Stub::async::ListNexuses, lr,
                                                         c_.opts.engine_timeout_ms);
    if (!l.ok()) co_return Status::Errorf(l.code(), "volume {}: asking its nexus on {}: {}", v.uuid, node, l.status().message());
    if (l->nexuses().empty()) co_return Status::Errorf(Errc::kBusy, "volume {}: its nexus on {} is not there (being recreated); try again", v.uuid, node);
    for (const ev1::Child& ch : l->nexuses(0).children()) {
      if (!ch.synced() || ch.state() != ev1::CHILD_STATE_ONLINE) continue;
      auto it = c_.specs.replicas.find(ch.uuid());
      if (it != c_.specs.replicas.end()) parts.push_back(part_of(it->second));
    }
    if (parts.empty()) co_return Status::Errorf(Errc::kBusy, "volume {}: its nexus has no healthy child", v.uuid);
    co_return parts;
  }
  auto current = co_await c_.current_replicas(v.uuid);
  if (!current.ok()) co_return current.status();
  std::vector<std::string> away;
  for (const ReplicaSpec* r : c_.specs.replicas_of(v.uuid)) {
    if (r->state != SpecState::kCreated || !current->holds(r->uuid)) continue;  // stale: never a part
    if (!c_.registry.online(r->node)) {
      away.push_back(fmt::format("{} on {}", r->uuid, r->node));
      continue;
    }
    parts.push_back(part_of(*r));
  }
  if (parts.empty()) {
    std::string list;
    for (const std::string& a : away) list += (list.empty() ? "" : ", ") + a;
    co_return Status::Errorf(Errc::kBusy, "volume {}: no replica with its current data is reachable ({})", v.uuid,
                             list.empty() ? "none recorded" : list);
  }
  co_return parts;
}

Task<Result<SnapshotSpec>> SnapshotService::create(std::string volume, std::string uuid, std::string name) {
  auto su = Uuid::Parse(uuid);
  if (!su.ok()) co_return Status::Errorf(Errc::kInval, "snapshot uuid '{}': not a UUID", uuid);
  uuid = su->ToString();
  if (name.empty()) name = uuid;
  if (name.size() > 255) co_return Status::Errorf(Errc::kInval, "snapshot name: at most 255 bytes ({} given)", name.size());
  if (Status s = co_await c_.begin_volume_op(&volume); !s.ok()) co_return s;
  const VolumeSpec* cur = c_.specs.volume(volume);
  if (!cur) co_return Status::Errorf(Errc::kNoEnt, "volume {} does not exist", volume);
  if (const SnapshotSpec* have = c_.specs.snapshot(uuid)) {
    if (have->volume != volume) co_return Status::Errorf(Errc::kExist, "snapshot {} exists, of volume {}", uuid, have->volume);
    if (have->name != name) co_return Status::Errorf(Errc::kExist, "snapshot {} exists, named '{}'", uuid, have->name);
    if (have->state == SpecState::kCreated) co_return *have;
    co_return Status::Errorf(Errc::kBusy, "snapshot {} is {}", uuid, spec_state_name(have->state));
  }
  if (cur->state != SpecState::kCreated) co_return Status::Errorf(Errc::kBusy, "volume {} is {}", volume, spec_state_name(cur->state));
  if (cur->max_snapshots) {
    uint32_t n = 0;
    for (const auto& [id, sn] : c_.specs.snapshots) n += sn.volume == volume && sn.state != SpecState::kDeleting;
    if (n >= cur->max_snapshots) {
      co_return Status::Errorf(Errc::kBusy, "volume {} has {} snapshot(s), its max_snapshots: destroy one first (or raise the limit)",
                               volume, n);
    }
  }
  if (cur->target && cur->target->state != TargetSpec::State::kPublished) {
    co_return Status::Errorf(Errc::kBusy, "volume {}: its target is {}; try again", volume, target_state_name(cur->target->state));
  }
  BusyGuard guard(c_.busy, volume);
  const VolumeSpec v = *cur;
  auto parts = co_await choose_parts(v);
  if (!parts.ok()) co_return parts.status();

  SnapshotSpec s;
  s.uuid = uuid;
  s.volume = volume;
  s.name = name;
  s.size = v.size;
  s.created_unix_s = wall_clock_ns() / 1'000'000'000ull;
  s.state = SpecState::kCreating;
  s.parts = std::move(*parts);
  s.adopt_labels_of = v.adopt_labels_of;
  s.adopt_labels_of.insert(s.adopt_labels_of.begin(), v.uuid);
  auto b = c_.specs.batch();
  b.put(s);
  if (Status st = co_await c_.specs.commit(std::move(b)); !st.ok()) co_return st;
  maybe_crash("snapshot:recorded");

  const bool published = v.target && v.target->state == TargetSpec::State::kPublished;
  Status taken = published ? co_await take_through_nexus(v, s) : co_await take_one_by_one(s);
  maybe_crash("snapshot:taken");
  if (!taken.ok()) {
    TLOG_WARN("control", "volume {}: snapshot {}: {}; removing what was taken", volume, uuid, taken);
    s.state = SpecState::kDeleting;
    Status u = co_await destroy_parts(s);
    if (!u.ok()) TLOG_WARN("control", "snapshot {}: removing its parts: {} (the reconciler finishes it)", uuid, u);
    co_return Status::Errorf(taken.code(), "volume {}: snapshot {}: {}", volume, uuid, taken.message());
  }
  s.state = SpecState::kCreated;
  auto done = c_.specs.batch();
  done.put(s);
  if (Status st = co_await c_.specs.commit(std::move(done)); !st.ok()) co_return st;
  TLOG_INFO("control", "volume {}: snapshot {} ('{}') taken on {} replica(s)", volume, uuid, name, s.parts.size());
  co_return s;
}

Task<Status> SnapshotService::take_through_nexus(const VolumeSpec& v, SnapshotSpec& s) {
  ev1::CreateNexusSnapshotRequest req;
  req.set_uuid(v.uuid);
  req.set_name(s.uuid);
  req.set_snapshot_uuid(s.uuid);
  for (const SnapshotSpec::Part& p : s.parts) {
    auto* c = req.add_replicas();
    c->set_child_uuid(p.replica);
    c->set_snapshot_uuid(p.uuid);
  }
  auto r = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(v.target->node), &ev1::NexusService::Stub::async::CreateNexusSnapshot,
                                                       req, c_.opts.engine_timeout_ms * 4);
  if (!r.ok()) co_return r.status();
  // What the nexus took: in-sync children at that instant (one that fell out meanwhile is skipped; one
  // that joined is taken under a derived UUID, recorded here so that nothing is left unnamed).
  std::vector<SnapshotSpec::Part> taken;
  for (const ev1::ChildSnapshot& ch : r->children()) {
    if (ch.outcome() == "skipped") continue;
    auto rep = c_.specs.replicas.find(ch.child_uuid());
    std::string pool = rep == c_.specs.replicas.end() ? std::string() : rep->second.pool;
    std::string node = rep == c_.specs.replicas.end() ? std::string() : rep->second.node;
    taken.push_back(SnapshotSpec::Part{ch.snapshot_uuid(), ch.child_uuid(), pool, node});
  }
  // Parts not taken stay in `s` until the caller records the result: nothing to destroy for them (the
  // engine never made them), but a crash before then must not leave a made one unnamed.
  if (taken.empty()) co_return Status(Errc::kBusy, "the nexus has no healthy child to snapshot");
  s.parts = std::move(taken);
  co_return Status::Ok();
}

Task<Status> SnapshotService::take_one_by_one(SnapshotSpec& s) {
  for (const SnapshotSpec::Part& p : s.parts) {
    ev1::CreateSnapshotRequest req;
    req.mutable_replica()->set_uuid(p.replica);
    req.set_name(s.uuid);
    req.set_uuid(p.uuid);
    auto r = co_await c_.engines.call<ev1::SnapshotService>(c_.endpoint(p.node), &ev1::SnapshotService::Stub::async::CreateSnapshot,
                                                           req, c_.opts.engine_timeout_ms);
    if (!r.ok()) co_return Status::Errorf(r.code(), "replica {} on {}: {}", p.replica, p.node, r.status().message());
  }
  co_return Status::Ok();
}

Task<Status> SnapshotService::destroy_parts(SnapshotSpec s) {
  std::vector<SnapshotSpec::Part> left;
  Status first;
  for (const SnapshotSpec::Part& p : s.parts) {
    if (!c_.registry.online(p.node)) {
      left.push_back(p);
      if (first.ok()) first = Status::Errorf(Errc::kConnRefused, "part {} on node {}: the node is offline", p.uuid, p.node);
      continue;
    }
    ev1::ReplicaRef ref;
    ref.set_uuid(p.uuid);
    auto r = co_await c_.engines.call<ev1::SnapshotService>(c_.endpoint(p.node), &ev1::SnapshotService::Stub::async::DestroySnapshot,
                                                           ref, c_.opts.engine_timeout_ms);
    if (!r.ok() && r.code() != Errc::kNoEnt) {
      left.push_back(p);
      if (first.ok()) first = Status::Errorf(r.code(), "part {} on {}: {}", p.uuid, p.node, r.status().message());
    }
  }
  auto b = c_.specs.batch();
  if (left.empty()) {
    b.del_snapshot(s.uuid);
  } else {
    s.parts = std::move(left);
    s.state = SpecState::kDeleting;
    b.put(s);
  }
  if (Status st = co_await c_.specs.commit(std::move(b)); !st.ok()) co_return st;
  co_return first;
}

Task<Status> SnapshotService::destroy(std::string uuid) {
  auto su = Uuid::Parse(uuid);
  if (!su.ok()) co_return Status::Errorf(Errc::kInval, "snapshot uuid '{}': not a UUID", uuid);
  uuid = su->ToString();
  if (Status s = co_await c_.specs.ensure_loaded(); !s.ok()) co_return s;
  const SnapshotSpec* cur = c_.specs.snapshot(uuid);
  if (!cur) co_return Status::Errorf(Errc::kNoEnt, "snapshot {} does not exist", uuid);
  const std::string key = "snapshot:" + uuid;  // one operation per snapshot at a time
  bool free = co_await c_.wait_free(key);
  if (!free) co_return Status::Errorf(Errc::kBusy, "snapshot {}: an operation is in progress", uuid);
  cur = c_.specs.snapshot(uuid);
  if (!cur) co_return Status::Ok();  // removed while we waited
  if (cur->state == SpecState::kCreating && c_.busy.count(cur->volume)) {
    co_return Status::Errorf(Errc::kBusy, "snapshot {} is being taken", uuid);
  }
  BusyGuard guard(c_.busy, key);
  SnapshotSpec s = *cur;
  s.state = SpecState::kDeleting;
  auto b = c_.specs.batch();
  b.put(s);
  if (Status st = co_await c_.specs.commit(std::move(b)); !st.ok()) co_return st;
  Status st = co_await destroy_parts(s);
  if (st.code() == Errc::kConnRefused) {
    TLOG_WARN("control", "snapshot {}: {}; destroyed when the node returns", uuid, st);
    co_return Status::Ok();
  }
  if (st.ok()) TLOG_INFO("control", "snapshot {} of volume {} destroyed", uuid, s.volume);
  co_return st;
}

Task<void> SnapshotService::reconcile() {
  if (!(co_await c_.specs.ensure_loaded()).ok()) co_return;
  std::vector<SnapshotSpec> work;
  for (const auto& [id, s] : c_.specs.snapshots) {
    if (c_.busy.count(s.volume) || c_.busy.count("snapshot:" + id)) continue;
    if (s.state == SpecState::kCreated) continue;
    bool reachable = false;
    for (const SnapshotSpec::Part& p : s.parts) reachable |= c_.registry.online(p.node);
    if (reachable || s.parts.empty()) work.push_back(s);
  }
  for (SnapshotSpec& s : work) {
    if (s.state == SpecState::kCreating) {
      TLOG_INFO("control", "snapshot {} of volume {} was left half taken (an agent stopped): removing it", s.uuid, s.volume);
    }
    BusyGuard guard(c_.busy, "snapshot:" + s.uuid);
    s.state = SpecState::kDeleting;
    Status st = co_await destroy_parts(s);
    if (!st.ok() && st.code() != Errc::kConnRefused) TLOG_RL_WARN("control", 10000, "snapshot {}: {}", s.uuid, st);
  }
}

}  // namespace tern::control
