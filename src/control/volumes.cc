#include "control/volumes.h"

#include <algorithm>
#include <cstdlib>
#include <map>

#include "common/log.h"
#include "common/units.h"
#include "common/uuid.h"
#include "nexus/layout.h"
#include "reactor/reactor.h"
#include "reactor/task_scope.h"

namespace tern::control {

namespace {

std::string describe_difference(const VolumeSpec& v, const CreateVolumeArgs& a) {
  if (v.size != a.size) return fmt::format("size {} (asked {})", v.size, a.size);
  if (v.replicas != a.replicas) return fmt::format("{} replicas (asked {})", v.replicas, a.replicas);
  if (v.thin != a.thin) return fmt::format("thin={} (asked {})", v.thin, a.thin);
  if (v.source_snapshot != a.snapshot) {
    return fmt::format("source snapshot '{}' (asked '{}')", v.source_snapshot, a.snapshot);
  }
  if (v.topology.node_labels != a.topology.node_labels || v.topology.pool_labels != a.topology.pool_labels ||
      v.topology.spread != a.topology.spread) {
    return "another topology";
  }
  return {};
}

}  // namespace

void VolumeService::maybe_crash(const char* step) const {
  if (!crash_at.empty() && crash_at == step) {
    TLOG_ERROR("control", "TERN_AGENT_CRASH_AT={}: aborting here (a test of crash recovery)", step);
    std::abort();
  }
}

std::vector<PoolCandidate> VolumeService::candidates() const {
  std::map<std::string, uint32_t> per_node;
  std::map<std::string, uint64_t> reserved, pending;
  for (const auto& [id, r] : c_.specs.replicas) {
    ++per_node[r.node];
    if (r.state == SpecState::kCreating) {
      pending[r.pool] += r.size;
      if (!r.thin) reserved[r.pool] += r.size;
    }
  }
  std::vector<PoolCandidate> out;
  for (const auto& [name, p] : c_.specs.pools) {
    PoolCandidate c;
    c.pool = name;
    c.node = p.node;
    c.pool_labels = p.labels;
    auto n = c_.specs.nodes.find(p.node);
    if (n != c_.specs.nodes.end()) c.node_labels = n->second.labels;
    auto st = c_.pools.find(name);
    if (p.state != SpecState::kCreated) {
      c.unusable = fmt::format("pool is {}", spec_state_name(p.state));
    } else if (!c_.registry.online(p.node)) {
      c.unusable = fmt::format("node {} is offline", p.node);
    } else if (n != c_.specs.nodes.end() && n->second.cordoned()) {
      c.unusable = fmt::format("node {} is cordoned", p.node);
    } else if (st == c_.pools.end() || !st->second.found) {
      c.unusable = "the engine does not report it";
    } else if (st->second.state != "online") {
      c.unusable = fmt::format("pool is {}: {}", st->second.state, st->second.reason);
    }
    if (st != c_.pools.end()) {
      c.capacity = st->second.capacity;
      c.used = st->second.used;
      c.committed = st->second.committed + pending[name];
      c.reserved = reserved[name];
    }
    c.node_replicas = per_node[p.node];
    out.push_back(std::move(c));
  }
  return out;
}

Result<std::vector<std::pair<size_t, std::string>>> VolumeService::place_clones(const SnapshotSpec& s,
                                                                                 const std::vector<PoolCandidate>& pools,
                                                                                 uint32_t count) const {
  std::vector<std::pair<size_t, std::string>> out;
  std::string why;
  for (const SnapshotSpec::Part& part : s.parts) {
    if (out.size() == count) break;
    auto it = std::find_if(pools.begin(), pools.end(), [&](const PoolCandidate& c) { return c.pool == part.pool; });
    if (it == pools.end()) {
      why += fmt::format("{}pool {}: not declared", why.empty() ? "" : "; ", part.pool);
    } else if (!it->unusable.empty()) {
      why += fmt::format("{}pool {}: {}", why.empty() ? "" : "; ", part.pool, it->unusable);
    } else {
      out.emplace_back(size_t(it - pools.begin()), part.uuid);
    }
  }
  if (out.size() < count) {
    return Status::Errorf(Errc::kNoSpc, "restoring snapshot {}: {} replica(s) asked, {} of its {} part(s) usable{}{} (a clone lives "
                          "on its snapshot's pool; restore fewer replicas and scale up afterwards)",
                          s.uuid, count, out.size(), s.parts.size(), why.empty() ? "" : ": ", why);
  }
  return out;
}

Task<Result<VolumeSpec>> VolumeService::create(CreateVolumeArgs a) {
  auto uuid = Uuid::Parse(a.uuid);
  if (!uuid.ok()) co_return Status::Errorf(Errc::kInval, "uuid '{}': not a UUID", a.uuid);
  a.uuid = uuid->ToString();
  if (a.replicas < 1 || a.replicas > 8) co_return Status::Errorf(Errc::kInval, "replicas {}: 1 to 8", a.replicas);
  bool free = co_await c_.wait_free(a.uuid);
  if (!free) co_return Status::Errorf(Errc::kBusy, "volume {}: an operation is in progress", a.uuid);
  if (Status s = co_await c_.specs.ensure_loaded(); !s.ok()) co_return s;
  const SnapshotSpec* source = nullptr;
  if (!a.snapshot.empty()) {
    auto su = Uuid::Parse(a.snapshot);
    if (!su.ok()) co_return Status::Errorf(Errc::kInval, "snapshot '{}': not a UUID", a.snapshot);
    a.snapshot = su->ToString();
    source = c_.specs.snapshot(a.snapshot);
    if (!source) co_return Status::Errorf(Errc::kNoEnt, "snapshot {} does not exist", a.snapshot);
    if (source->state != SpecState::kCreated) {
      co_return Status::Errorf(Errc::kBusy, "snapshot {} is {}", a.snapshot, spec_state_name(source->state));
    }
    if (a.size == 0) a.size = source->size;
    if (a.size != source->size) {
      co_return Status::Errorf(Errc::kInval, "size {}: a volume restored from snapshot {} has its size ({}); expand it afterwards",
                               a.size, a.snapshot, source->size);
    }
    a.thin = true;  // clones are thin
  }
  if (a.size == 0 || a.size % 4096 != 0) {
    co_return Status::Errorf(Errc::kInval, "size {}: a positive multiple of 4096 bytes", a.size);
  }
  if (const VolumeSpec* v = c_.specs.volume(a.uuid)) {
    std::string diff = describe_difference(*v, a);
    if (!diff.empty()) co_return Status::Errorf(Errc::kExist, "volume {} exists with {}", a.uuid, diff);
    if (v->state == SpecState::kCreated) co_return *v;
    co_return Status::Errorf(Errc::kBusy, "volume {} is {}", a.uuid, spec_state_name(v->state));
  }
  BusyGuard guard(c_.busy, a.uuid);
  // Pools on online nodes not read yet (an agent that just took over, a node that just came back):
  // read them now rather than refuse them as unknown.
  std::set<std::string> unread;
  for (const auto& [name, p] : c_.specs.pools) {
    auto st = c_.pools.find(name);
    if ((st == c_.pools.end() || st->second.seen_ns == 0) && c_.registry.online(p.node)) unread.insert(p.node);
  }
  for (const std::string& node : unread) co_await pools_.refresh(node);

  PlacementRequest pr;
  pr.count = a.replicas;
  pr.size = nexus::required_child_bytes(a.size);
  pr.thin = a.thin;
  pr.topology = a.topology;
  pr.thin_commitment = c_.opts.thin_commitment;
  std::vector<PoolCandidate> pools = candidates();
  std::vector<std::string> clone_of;  // restore: the part each chosen pool clones
  Result<std::vector<size_t>> chosen = std::vector<size_t>{};
  if (source) {
    auto picked = place_clones(*source, pools, a.replicas);
    if (!picked.ok()) co_return Status::Errorf(picked.code(), "volume {}: {}", a.uuid, picked.status().message());
    for (const auto& [i, part] : *picked) {
      chosen->push_back(i);
      clone_of.push_back(part);
    }
  } else {
    chosen = place(pools, pr);
  }
  if (!chosen.ok()) co_return Status::Errorf(chosen.code(), "volume {}: {}", a.uuid, chosen.status().message());

  VolumeSpec v;
  v.uuid = a.uuid;
  v.size = a.size;
  v.replicas = a.replicas;
  v.thin = a.thin;
  v.topology = a.topology;
  v.labels = a.labels;
  v.state = SpecState::kCreating;
  if (source) {
    v.source_snapshot = source->uuid;
    v.adopt_labels_of = source->adopt_labels_of;
  }
  std::vector<ReplicaSpec> reps;
  for (size_t k = 0; k < chosen->size(); ++k) {
    const size_t i = (*chosen)[k];
    ReplicaSpec r;
    if (source) r.clone_of = clone_of[k];
    r.uuid = Uuid::Generate().ToString();
    r.volume = v.uuid;
    r.pool = pools[i].pool;
    r.node = pools[i].node;
    r.size = nexus::required_child_bytes(a.size);  // the volume and the nexus's metadata after it
    r.thin = a.thin;
    r.state = SpecState::kCreating;
    v.replica_ids.push_back(r.uuid);
    reps.push_back(std::move(r));
  }
  auto b = c_.specs.batch();
  b.put(v);
  for (const ReplicaSpec& r : reps) b.put(r);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  maybe_crash("create:specs");

  std::vector<Task<Status>> tasks;
  for (const ReplicaSpec& r : reps) tasks.push_back(create_replica(r));
  std::vector<Status> results = co_await when_all(std::move(tasks));
  maybe_crash("create:replica");
  Status failed;
  for (size_t i = 0; i < results.size(); ++i) {
    if (!results[i].ok() && failed.ok()) {
      failed = Status::Errorf(results[i].code(), "volume {}: replica on pool {} (node {}): {}", v.uuid, reps[i].pool,
                              reps[i].node, results[i].message());
    }
  }
  if (!failed.ok()) {
    TLOG_WARN("control", "{}; undoing the volume's creation", failed);
    Status u = co_await undo_create(v.uuid);
    if (!u.ok()) TLOG_WARN("control", "volume {}: undoing: {} (the reconciler finishes it)", v.uuid, u);
    co_return failed;
  }
  auto done = c_.specs.batch();
  v.state = SpecState::kCreated;
  done.put(v);
  for (ReplicaSpec& r : reps) {
    r.state = SpecState::kCreated;
    done.put(r);
  }
  if (Status s = co_await c_.specs.commit(std::move(done)); !s.ok()) co_return s;
  maybe_crash("create:done");
  TLOG_INFO("control", "volume {} created: {}, {} replica(s){}{}", v.uuid, format_size(v.size), v.replicas, v.thin ? ", thin" : "",
            source ? fmt::format(", restored from snapshot {}", source->uuid) : std::string());
  co_return v;
}

Task<Result<VolumeSpec>> VolumeService::scale(std::string uuid, uint32_t n) {
  if (n < 1 || n > 8) co_return Status::Errorf(Errc::kInval, "replicas {}: 1 to 8", n);
  if (Status s = co_await c_.begin_volume_op(&uuid); !s.ok()) co_return s;
  auto found = c_.created_volume(uuid);
  if (!found.ok()) co_return found.status();
  const VolumeSpec* cur = *found;
  BusyGuard guard(c_.busy, uuid);
  const uint32_t was = cur->replicas;
  const bool published = cur->target && cur->target->state == TargetSpec::State::kPublished;
  const std::string node = published ? cur->target->node : std::string();
  std::vector<ReplicaSpec> live;
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) {
    if (r->state != SpecState::kDeleting) live.push_back(*r);
  }
  if (n > live.size()) {
    std::vector<ReplicaSpec> added;
    for (size_t i = live.size(); i < n; ++i) {
      auto r = co_await add_replica(uuid);
      if (!r.ok()) {
        for (const ReplicaSpec& a : added) (void)co_await drop_replica(uuid, a.uuid);
        co_return Status::Errorf(r.code(), "volume {}: scaling to {} replicas: {}", uuid, n, r.status().message());
      }
      added.push_back(*r);
    }
    if (published) {
      // One that cannot join now is joined by the next heal pass.
      for (const ReplicaSpec& r : added) (void)co_await targets_.join(uuid, node, r);
    }
  } else if (n < live.size()) {
    // Which go: offline first, then those the nexus does not have in sync, then remote before local.
    std::map<std::string, int> rank;
    std::set<std::string> synced;
    if (published && c_.registry.online(node)) {
      ev1::ListNexusesRequest lr;
      lr.set_uuid(uuid);
      auto l = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(node), &ev1::NexusService::Stub::async::ListNexuses, lr,
                                                           c_.opts.engine_timeout_ms);
      if (l.ok() && !l->nexuses().empty()) {
        for (const ev1::Child& ch : l->nexuses(0).children()) {
          if (ch.synced() && ch.state() == ev1::CHILD_STATE_ONLINE) synced.insert(ch.uuid());
        }
      }
    }
    for (const ReplicaSpec& r : live) {
      rank[r.uuid] = !c_.registry.online(r.node) ? 0 : (published && !synced.count(r.uuid)) ? 1 : r.node != node ? 2 : 3;
    }
    std::stable_sort(live.begin(), live.end(), [&](const ReplicaSpec& a, const ReplicaSpec& b) { return rank[a.uuid] < rank[b.uuid]; });
    for (size_t i = 0; i < live.size() - n; ++i) {
      const ReplicaSpec& r = live[i];
      if (published && c_.registry.online(node)) {
        ev1::ChildRef ref;
        ref.set_uuid(uuid);
        ref.set_child_uuid(r.uuid);
        auto res = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(node), &ev1::NexusService::Stub::async::RemoveChild, ref,
                                                               c_.opts.engine_timeout_ms);
        if (!res.ok() && res.code() != Errc::kNoEnt) {
          co_return Status::Errorf(res.code(), "volume {}: removing replica {} from its nexus: {}", uuid, r.uuid, res.status().message());
        }
      }
      if (Status s = co_await drop_replica(uuid, r.uuid); !s.ok()) co_return s;
    }
  }
  VolumeSpec v = *c_.specs.volume(uuid);
  v.replicas = n;
  auto b = c_.specs.batch();
  b.put(v);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  TLOG_INFO("control", "volume {}: {} -> {} replicas", uuid, was, n);
  co_return v;
}

Task<Result<VolumeSpec>> VolumeService::expand(std::string uuid, uint64_t size) {
  if (Status s = co_await c_.begin_volume_op(&uuid); !s.ok()) co_return s;
  auto found = c_.created_volume(uuid);
  if (!found.ok()) co_return found.status();
  const VolumeSpec* cur = *found;
  if (size == 0 || size % 4096 != 0) co_return Status::Errorf(Errc::kInval, "size {}: a positive multiple of 4096 bytes", size);
  if (size < cur->size) {
    co_return Status::Errorf(Errc::kInval, "size {}: smaller than the volume ({}); shrinking is not supported", size, cur->size);
  }
  if (size == cur->size) co_return *cur;
  BusyGuard guard(c_.busy, uuid);
  VolumeSpec v = *cur;
  std::vector<ReplicaSpec> reps;
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) {
    if (r->state == SpecState::kDeleting) continue;
    if (!c_.registry.online(r->node)) {
      co_return Status::Errorf(Errc::kBusy, "volume {}: replica {} is on node {}, which is offline (every replica must grow)",
                               uuid, r->uuid, r->node);
    }
    reps.push_back(*r);
  }
  const uint64_t child = nexus::required_child_bytes(size);
  for (ReplicaSpec& r : reps) {
    ev1::ResizeReplicaRequest req;
    req.mutable_replica()->set_uuid(r.uuid);
    req.set_size(child);
    auto res = co_await c_.engines.call<ev1::ReplicaService>(c_.endpoint(r.node), &ev1::ReplicaService::Stub::async::ResizeReplica,
                                                             req, c_.opts.engine_timeout_ms);
    if (!res.ok()) {
      co_return Status::Errorf(res.code(), "volume {}: growing replica {} on {}: {}", uuid, r.uuid, r.node, res.status().message());
    }
    r.size = child;
  }
  if (v.target && v.target->state == TargetSpec::State::kPublished) {
    const std::string node = v.target->node;
    ev1::ResizeNexusRequest req;
    req.set_uuid(uuid);
    req.set_size(size);
    auto res = co_await c_.engines.call<ev1::NexusService>(c_.endpoint(node), &ev1::NexusService::Stub::async::ResizeNexus, req,
                                                           c_.opts.engine_timeout_ms * 2);
    if (!res.ok()) {
      co_return Status::Errorf(res.code(), "volume {}: growing its nexus on {}: {}", uuid, node, res.status().message());
    }
  }
  const uint64_t was = v.size;
  v.size = size;
  auto b = c_.specs.batch();
  b.put(v);
  for (const ReplicaSpec& r : reps) b.put(r);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  TLOG_INFO("control", "volume {} grew from {} to {}", uuid, format_size(was), format_size(size));
  co_return v;
}

Task<Result<VolumeSpec>> VolumeService::set_properties(std::string uuid, VolumeProperties p) {
  if (Status s = co_await c_.begin_volume_op(&uuid); !s.ok()) co_return s;
  auto found = c_.created_volume(uuid);
  if (!found.ok()) co_return found.status();
  const VolumeSpec* cur = *found;
  BusyGuard guard(c_.busy, uuid);
  VolumeSpec v = *cur;
  if (p.labels) v.labels = *p.labels;
  if (p.max_snapshots) v.max_snapshots = *p.max_snapshots;
  if (p.rebuild_rate) v.rebuild_rate = *p.rebuild_rate;
  auto b = c_.specs.batch();
  b.put(v);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  if (p.rebuild_rate && v.target && v.target->state == TargetSpec::State::kPublished) co_await apply_rebuild_rate(v);
  TLOG_INFO("control", "volume {}: properties set (max_snapshots {}, rebuild rate {}/s)", uuid, v.max_snapshots,
            v.rebuild_rate ? format_size(v.rebuild_rate) : std::string("unlimited"));
  co_return v;
}

Task<void> VolumeService::apply_rebuild_rate(VolumeSpec v) {
  if (!v.target || !c_.registry.online(v.target->node)) co_return;
  const std::string ep = c_.endpoint(v.target->node);
  ev1::ListNexusesRequest lr;
  lr.set_uuid(v.uuid);
  auto l = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::ListNexuses, lr, c_.opts.read_timeout_ms());
  if (!l.ok() || l->nexuses().empty()) co_return;
  ev1::Nexus nx = l->nexuses(0);  // (named: GCC 12 and temporaries in co_await expressions)
  co_await apply_rebuild_rate(std::move(v), std::move(nx));
}

Task<void> VolumeService::apply_rebuild_rate(VolumeSpec v, ev1::Nexus nx) {
  if (!v.target || !c_.registry.online(v.target->node)) co_return;
  const std::string ep = c_.endpoint(v.target->node);
  for (const ev1::Child& ch : nx.children()) {
    if (!ch.has_rebuild() || ch.rebuild().rate_limit() == v.rebuild_rate) continue;
    if (ch.rebuild().state() != ev1::REBUILD_STATE_RUNNING && ch.rebuild().state() != ev1::REBUILD_STATE_PAUSED) continue;
    ev1::SetRebuildRateRequest req;
    req.set_uuid(v.uuid);
    req.set_child_uuid(ch.uuid());
    req.set_rate_bytes_per_s(v.rebuild_rate);
    auto r = co_await c_.engines.call<ev1::NexusService>(ep, &ev1::NexusService::Stub::async::SetRebuildRate, req, c_.opts.engine_timeout_ms);
    if (!r.ok() && r.code() != Errc::kNoEnt) TLOG_RL_WARN("control", 10000, "volume {}: rebuild rate of {}: {}", v.uuid, ch.uuid(), r.status());
  }
}

Task<Result<ReplicaSpec>> VolumeService::add_replica(std::string uuid) {
  const VolumeSpec* cur = c_.specs.volume(uuid);
  if (!cur) co_return Status::Errorf(Errc::kNoEnt, "volume {} does not exist", uuid);
  VolumeSpec v = *cur;
  PlacementRequest pr;
  pr.size = nexus::required_child_bytes(v.size);
  pr.thin = v.thin;
  pr.topology = v.topology;
  pr.thin_commitment = c_.opts.thin_commitment;
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) {
    pr.used_nodes.insert(r->node);
    auto n = c_.specs.nodes.find(r->node);
    for (const std::string& k : v.topology.spread) {
      if (n != c_.specs.nodes.end() && n->second.labels.count(k)) pr.used_domains[k].insert(n->second.labels.at(k));
    }
  }
  std::vector<PoolCandidate> pools = candidates();
  auto chosen = place(pools, pr);
  if (!chosen.ok()) co_return Status::Errorf(chosen.code(), "volume {}: a new replica: {}", uuid, chosen.status().message());
  ReplicaSpec r;
  r.uuid = Uuid::Generate().ToString();
  r.volume = uuid;
  r.pool = pools[(*chosen)[0]].pool;
  r.node = pools[(*chosen)[0]].node;
  r.size = pr.size;
  r.thin = v.thin;
  r.state = SpecState::kCreating;
  v.replica_ids.push_back(r.uuid);
  auto b = c_.specs.batch();
  b.put(v);
  b.put(r);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  if (Status s = co_await create_replica(r); !s.ok()) {
    (void)co_await drop_replica(uuid, r.uuid);
    co_return Status::Errorf(s.code(), "volume {}: a new replica on {}: {}", uuid, r.node, s.message());
  }
  r.state = SpecState::kCreated;
  auto done = c_.specs.batch();
  done.put(r);
  if (Status s = co_await c_.specs.commit(std::move(done)); !s.ok()) co_return s;
  TLOG_INFO("control", "volume {}: new replica {} on {} (pool {})", uuid, r.uuid, r.node, r.pool);
  co_return r;
}

Task<Status> VolumeService::drop_replica(std::string uuid, std::string replica) {
  auto b = c_.specs.batch();
  if (const VolumeSpec* v = c_.specs.volume(uuid)) {
    VolumeSpec nv = *v;
    std::erase(nv.replica_ids, replica);
    b.put(nv);
  }
  auto it = c_.specs.replicas.find(replica);
  if (it == c_.specs.replicas.end()) co_return co_await c_.specs.commit(std::move(b));
  ReplicaSpec r = it->second;
  r.state = SpecState::kDeleting;
  b.put(r);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  std::vector<std::string> ids{replica};
  Status s = co_await destroy_replicas(std::move(ids));
  co_return s.code() == Errc::kConnRefused ? Status::Ok() : s;  // its node is away: destroyed when it returns
}

Task<Status> VolumeService::create_replica(ReplicaSpec r) {
  if (!c_.registry.online(r.node)) co_return Status::Errorf(Errc::kConnRefused, "node {} is offline", r.node);
  if (!r.clone_of.empty()) {
    ev1::CreateCloneRequest req;
    req.mutable_snapshot()->set_uuid(r.clone_of);
    req.set_name(r.uuid);
    req.set_uuid(r.uuid);
    req.set_share(ev1::SHARE_PROTOCOL_NVMF);
    auto res = co_await c_.engines.call<ev1::SnapshotService>(c_.endpoint(r.node), &ev1::SnapshotService::Stub::async::CreateClone,
                                                             req, c_.opts.engine_timeout_ms);
    co_return res.status();
  }
  ev1::CreateReplicaRequest req;
  req.set_name(r.uuid);
  req.set_uuid(r.uuid);
  req.set_pool(r.pool);
  req.set_size(r.size);
  req.set_thin(r.thin);
  req.set_share(ev1::SHARE_PROTOCOL_NVMF);
  auto res = co_await c_.engines.call<ev1::ReplicaService>(c_.endpoint(r.node), &ev1::ReplicaService::Stub::async::CreateReplica,
                                                          req, c_.opts.engine_timeout_ms);
  co_return res.status();
}

Task<Status> VolumeService::destroy_replicas(std::vector<std::string> ids) {
  Status first;
  for (const std::string& id : ids) {
    auto it = c_.specs.replicas.find(id);
    if (it == c_.specs.replicas.end()) continue;
    ReplicaSpec r = it->second;
    if (r.state != SpecState::kDeleting) {
      r.state = SpecState::kDeleting;
      auto b = c_.specs.batch();
      b.put(r);
      if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
    }
    if (!c_.registry.online(r.node)) {
      if (first.ok()) first = Status::Errorf(Errc::kConnRefused, "replica {}: node {} is offline", r.uuid, r.node);
      continue;
    }
    ev1::ReplicaRef req;
    req.set_uuid(r.uuid);
    auto res = co_await c_.engines.call<ev1::ReplicaService>(c_.endpoint(r.node), &ev1::ReplicaService::Stub::async::DestroyReplica,
                                                            req, c_.opts.engine_timeout_ms);
    if (!res.ok() && res.code() != Errc::kNoEnt) {
      if (first.ok()) first = res.status();
      continue;
    }
    auto b = c_.specs.batch();
    b.del_replica(r.uuid);
    if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  }
  co_return first;
}

Task<Status> VolumeService::undo_create(std::string uuid) {
  const VolumeSpec* v = c_.specs.volume(uuid);
  if (!v) co_return Status::Ok();
  VolumeSpec dv = *v;
  dv.state = SpecState::kDeleting;
  auto b = c_.specs.batch();
  b.put(dv);
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  // Replicas that could not be destroyed stay as `deleting` specs for the reconciler; the volume goes.
  Status s = co_await destroy_replicas(dv.replica_ids);
  auto d = c_.specs.batch();
  d.del_volume(uuid);
  if (Status ds = co_await c_.specs.commit(std::move(d)); !ds.ok()) co_return ds;
  co_return s.code() == Errc::kConnRefused ? Status::Ok() : s;
}

Task<Status> VolumeService::destroy(std::string uuid) {
  if (Status s = co_await c_.begin_volume_op(&uuid); !s.ok()) co_return s;
  const VolumeSpec* v = c_.specs.volume(uuid);
  if (!v) co_return Status::Errorf(Errc::kNoEnt, "volume {} does not exist", uuid);
  BusyGuard guard(c_.busy, uuid);
  if (v->target) {
    // The nexus first (a node that is down: its nexus is destroyed when it returns).
    if (Status s = co_await targets_.unpublish_locked(uuid); !s.ok()) {
      co_return Status::Errorf(s.code(), "volume {}: unpublishing: {}", uuid, s.message());
    }
    v = c_.specs.volume(uuid);
    if (!v) co_return Status::Ok();
  }
  VolumeSpec dv = *v;
  dv.state = SpecState::kDeleting;
  auto b = c_.specs.batch();
  b.put(dv);
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) {
    ReplicaSpec dr = *r;
    dr.state = SpecState::kDeleting;
    b.put(dr);
  }
  if (Status s = co_await c_.specs.commit(std::move(b)); !s.ok()) co_return s;
  maybe_crash("destroy:marked");
  std::vector<std::string> ids;
  for (const ReplicaSpec* r : c_.specs.replicas_of(uuid)) ids.push_back(r->uuid);
  Status s = co_await destroy_replicas(ids);
  if (!s.ok() && s.code() != Errc::kConnRefused) co_return s;
  if (!s.ok()) TLOG_WARN("control", "volume {}: {}; destroyed when the node returns", uuid, s);
  auto d = c_.specs.batch();
  d.del_volume(uuid);
  if (Status ds = co_await c_.specs.commit(std::move(d)); !ds.ok()) co_return ds;
  TLOG_INFO("control", "volume {} destroyed", uuid);
  co_return Status::Ok();
}

Task<void> VolumeService::reconcile() {
  if (!(co_await c_.specs.ensure_loaded()).ok()) co_return;
  std::vector<std::string> undo, finish;
  for (const auto& [id, v] : c_.specs.volumes) {
    if (busy(id)) continue;
    if (v.state == SpecState::kCreating) undo.push_back(id);
    if (v.state == SpecState::kDeleting) finish.push_back(id);
  }
  for (const std::string& id : undo) {
    TLOG_INFO("control", "volume {} was left half created (an agent stopped): undoing it", id);
    BusyGuard guard(c_.busy, id);
    if (Status s = co_await undo_create(id); !s.ok()) TLOG_RL_WARN("control", 10000, "volume {}: undoing: {}", id, s);
  }
  for (const std::string& id : finish) {
    TLOG_INFO("control", "volume {} was being destroyed: finishing", id);
    if (Status s = co_await destroy(id); !s.ok()) TLOG_RL_WARN("control", 10000, "volume {}: destroying: {}", id, s);
  }
  // Replicas marked deleting (their volume gone or being destroyed) whose node is back; and replicas
  // `creating` whose volume no longer exists (nothing else would ever finish them).
  std::vector<std::string> orphans;
  for (const auto& [id, r] : c_.specs.replicas) {
    if (busy(r.volume)) continue;
    bool orphan = r.state == SpecState::kDeleting || !c_.specs.volume(r.volume);
    if (orphan && c_.registry.online(r.node)) orphans.push_back(id);
  }
  if (!orphans.empty()) {
    if (Status s = co_await destroy_replicas(orphans); !s.ok()) TLOG_RL_WARN("control", 10000, "replicas: {}", s);
  }
}

}  // namespace tern::control
