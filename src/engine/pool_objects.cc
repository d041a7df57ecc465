// PoolManager: a pool's objects — finding and listing them, destroy, resize, share, unshare, allowed
// hosts. Their create is create_object.cc.
#include "common/log.h"
#include "engine/pool_manager.h"
#include "engine/share_props.h"

namespace tern::engine {

ObjectKind PoolManager::kind_of(const pool::ReplicaMeta& m) {
  return m.snapshot ? ObjectKind::kSnapshot : m.clone() ? ObjectKind::kClone : ObjectKind::kReplica;
}

Status PoolManager::still_open(const PoolEntry& e) {
  if (!e.closed) return Status::Ok();
  return Status::Errorf(Errc::kNoEnt, "pool on '{}' was exported or destroyed while this request waited", e.disk);
}

Result<PoolManager::Found> PoolManager::find_object(const ReplicaRef& ref) const {
  if (!ref.uuid && ref.name.empty()) return Status(Errc::kInval, "uuid or name: one is required");
  std::vector<Found> hits;
  for (auto& [pname, e] : pools_) {
    if (!ref.pool.empty() && pname != ref.pool) continue;
    for (const auto& m : e->pool->ListReplicas()) {
      if (ref.uuid && m.uuid != *ref.uuid) continue;
      if (!ref.name.empty() && m.name != ref.name) continue;
      hits.push_back({e.get(), m});
    }
  }
  if (hits.empty()) {
    std::string what = ref.uuid ? ref.uuid->ToString() : fmt::format("'{}'", ref.name);
    return Status::Errorf(Errc::kNoEnt, "no replica {}{}", what,
                          ref.pool.empty() ? std::string() : fmt::format(" on pool '{}'", ref.pool));
  }
  if (hits.size() > 1) {
    return Status::Errorf(Errc::kInval, "name '{}' is used on several pools; give the pool or the uuid", ref.name);
  }
  return hits[0];
}

Task<Result<PoolManager::Locked>> PoolManager::lock_object(const ReplicaRef& ref) {
  for (;;) {
    TERN_CO_ASSIGN_OR_RETURN(Found f, find_object(ref));
    auto guard = co_await f.entry->mu.lock();
    TERN_CO_RETURN_IF_ERROR(still_open(*f.entry));
    TERN_CO_ASSIGN_OR_RETURN(Found now, find_object(ref));
    // The name may have moved to another pool while we waited: that pool's lock is the one to hold.
    if (now.entry == f.entry) co_return Locked{std::move(guard), now.entry, std::move(now.meta)};
  }
}

ReplicaInfo PoolManager::object_info(const PoolEntry& e, const pool::ReplicaMeta& m) const {
  ReplicaInfo r;
  r.name = m.name;
  r.uuid = m.uuid;
  r.pool = e.pool->superblock().name;
  r.pool_uuid = e.pool->superblock().pool_uuid;
  r.size = m.size;
  r.thin = m.thin;
  r.kind = kind_of(m);
  r.source = m.source;
  std::string dev = m.uuid.ToString();
  if (const ShareInfo* s = shares_.find(dev)) r.share = *s;
  pool::ObjectSpace sp = e.pool->Space(m.uuid);
  r.allocated = sp.allocated;
  r.referenced = sp.referenced;
  r.exclusive = sp.exclusive;
  r.discarded = m.discarded;
  if (registry_.find(dev)) r.device = dev;
  return r;
}

std::vector<ReplicaInfo> PoolManager::list_objects(const ObjectFilter& f) const {
  std::vector<ReplicaInfo> out;
  for (auto& [pname, e] : pools_) {
    if (!f.pool.empty() && pname != f.pool) continue;
    for (const auto& m : e->pool->ListReplicas()) {
      ObjectKind k = kind_of(m);
      if (!(k == ObjectKind::kReplica ? f.replicas : k == ObjectKind::kSnapshot ? f.snapshots : f.clones)) continue;
      if (!f.name.empty() && m.name != f.name) continue;
      if (!f.uuid.empty() && m.uuid.ToString() != f.uuid) continue;
      if (!f.source_uuid.empty() && m.source.ToString() != f.source_uuid) continue;
      out.push_back(object_info(*e, m));
    }
  }
  return out;
}

Task<Status> PoolManager::destroy_replica(ReplicaRef ref) { co_return co_await destroy(std::move(ref), false); }
Task<Status> PoolManager::destroy_snapshot(ReplicaRef ref) { co_return co_await destroy(std::move(ref), true); }

Task<Status> PoolManager::destroy(ReplicaRef ref, bool snapshot) {
  TERN_CO_ASSIGN_OR_RETURN(Locked l, co_await lock_object(ref));
  const pool::ReplicaMeta& m = l.meta;
  if (m.snapshot != snapshot) {
    co_return Status::Errorf(Errc::kInval, "'{}' is a {}; use {}", m.name, m.snapshot ? "snapshot" : "replica",
                             m.snapshot ? "DestroySnapshot (ternctl snapshot destroy)" : "DestroyReplica (ternctl replica destroy)");
  }
  std::string dev = m.uuid.ToString();
  Bdev* b = registry_.find(dev);
  size_t ours = shares_.find(dev) ? 1 : 0;
  if (b && b->open_count() > ours) {
    co_return Status::Errorf(Errc::kBusy, "'{}' is open by {} user(s) besides its share; close it first", m.name,
                             b->open_count() - ours);
  }
  TERN_CO_RETURN_IF_ERROR(co_await shares_.unshare(dev));
  Status s = co_await l.entry->pool->DestroyReplica(m.uuid);
  if (!s.ok()) {
    Status again = co_await expose_and_reshare(*l.entry);
    (void)again;
    co_return s;
  }
  TLOG_INFO("engine", "{} '{}' ({}) destroyed", snapshot ? "snapshot" : "replica", m.name, dev);
  co_return Status::Ok();
}

Task<Result<ReplicaInfo>> PoolManager::resize_replica(ReplicaRef ref, uint64_t size, bool allow_shrink) {
  if (size == 0) co_return Status(Errc::kInval, "size: required");
  TERN_CO_ASSIGN_OR_RETURN(Locked l, co_await lock_object(ref));
  std::string dev = l.meta.uuid.ToString();
  // A shared replica can grow (its hosts see a namespace change); shrinking under hosts is refused.
  if (shares_.find(dev) && size < l.meta.size) {
    co_return Status::Errorf(Errc::kBusy, "'{}' is shared; unshare it before shrinking it", l.meta.name);
  }
  auto m = co_await l.entry->pool->ResizeReplica(l.meta.uuid, size, allow_shrink);
  if (!m.ok()) co_return m.status();
  co_return object_info(*l.entry, *m);
}

Task<Result<ReplicaInfo>> PoolManager::share_object(ReplicaRef ref, ShareProtocol protocol,
                                                    std::vector<std::string> hosts) {
  if (protocol == ShareProtocol::kNone || protocol == ShareProtocol::kUnknown) {
    co_return Status(Errc::kInval, "protocol: choose nvmf or nbd");
  }
  TERN_CO_ASSIGN_OR_RETURN(Locked l, co_await lock_object(ref));
  TERN_CO_RETURN_IF_ERROR(co_await share_and_record(*l.entry, l.meta, protocol, hosts));
  co_return object_info(*l.entry, l.meta);
}

Task<Result<ReplicaInfo>> PoolManager::unshare_object(ReplicaRef ref) {
  TERN_CO_ASSIGN_OR_RETURN(Locked l, co_await lock_object(ref));
  TERN_CO_RETURN_IF_ERROR(co_await unshare_and_forget(*l.entry, l.meta));
  co_return object_info(*l.entry, l.meta);
}

Task<Result<ReplicaInfo>> PoolManager::set_allowed_hosts(ReplicaRef ref, std::vector<std::string> hosts) {
  TERN_CO_ASSIGN_OR_RETURN(Locked l, co_await lock_object(ref));
  std::string dev = l.meta.uuid.ToString();
  if (!shares_.find(dev)) {
    co_return Status::Errorf(Errc::kBusy, "'{}' is not shared; share it with the allowed hosts instead", l.meta.name);
  }
  TERN_CO_RETURN_IF_ERROR(shares_.set_hosts(dev, hosts));
  std::string key = kPropHosts, value = join_hosts(hosts);
  TERN_CO_RETURN_IF_ERROR(co_await l.entry->pool->SetProperty(l.meta.uuid, key, value));
  co_return object_info(*l.entry, l.meta);
}

Task<Status> PoolManager::share_and_record(PoolEntry& e, const pool::ReplicaMeta& m, ShareProtocol protocol,
                                           std::vector<std::string> hosts) {
  std::string dev = m.uuid.ToString();
  bool was_shared = shares_.find(dev) != nullptr;
  ShareOptions so;
  so.read_only = m.snapshot;
  auto r = co_await shares_.share(dev, dev, protocol, hosts, so);
  if (!r.ok()) co_return r.status();
  // Recorded in the pool, so the share comes back after a restart (or on another node).
  std::string share_key = kPropShare, share_value = Shares::ProtocolName(protocol);
  std::string hosts_key = kPropHosts, hosts_value = join_hosts(hosts);
  Status s = co_await e.pool->SetProperty(m.uuid, share_key, share_value);
  if (s.ok()) s = co_await e.pool->SetProperty(m.uuid, hosts_key, hosts_value);
  if (!s.ok() && !was_shared) {
    Status u = co_await shares_.unshare(dev);
    (void)u;
  }
  co_return s;
}

Task<Status> PoolManager::unshare_and_forget(PoolEntry& e, const pool::ReplicaMeta& m) {
  std::string dev = m.uuid.ToString();
  TERN_CO_RETURN_IF_ERROR(co_await shares_.unshare(dev));
  const std::string none;
  for (const char* key : {kPropShare, kPropHosts}) {
    std::string k = key;
    if (m.props.count(k)) TERN_CO_RETURN_IF_ERROR(co_await e.pool->SetProperty(m.uuid, k, none));
  }
  co_return Status::Ok();
}

}  // namespace tern::engine
