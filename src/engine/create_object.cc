// PoolManager: the one idempotent create of a pool object, behind CreateReplica, CreateSnapshot and
// CreateClone. A control plane retries, so every create compares the request with what exists:
//
//   validate -> lock the pool -> still open? -> UUID free on the node? ->
//     an object of that name: the first differing argument is kExist; otherwise a share that the first
//       attempt did not finish is finished, and the existing object is the answer;
//     none: created, exposed as a device, shared — and destroyed again if exposing or sharing fails.
//
// The kinds differ only where their requests do: validate (what is required), lock_for_create (whose
// pool: the named one, or the source object's), mismatch (what is compared) and make (the pool call).
#include <algorithm>

#include "common/log.h"
#include "engine/pool_manager.h"
#include "engine/share_props.h"

namespace tern::engine {

namespace {

// Sorted copies compare as sets: the order of allowed hosts carries no meaning.
bool same_hosts(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

void log_created(ObjectKind kind, const std::string& pool, const pool::ReplicaMeta& m, const pool::ReplicaMeta& from) {
  std::string uuid = m.uuid.ToString();
  switch (kind) {
    case ObjectKind::kReplica:
      TLOG_INFO("engine", "replica '{}' ({}) created on pool '{}': {} bytes, {}", m.name, uuid, pool, m.size,
                m.thin ? "thin" : "thick");
      break;
    case ObjectKind::kSnapshot:
      TLOG_INFO("engine", "snapshot '{}' ({}) of '{}' created", m.name, uuid, from.name);
      break;
    case ObjectKind::kClone:
      TLOG_INFO("engine", "clone '{}' ({}) of snapshot '{}' created", m.name, uuid, from.name);
      break;
  }
}

}  // namespace

Task<Result<ReplicaInfo>> PoolManager::create_replica(CreateReplicaArgs a) {
  NewObject o;
  o.kind = ObjectKind::kReplica;
  o.pool = a.pool;
  o.name = a.name;
  o.uuid = a.uuid;
  o.size = a.size;
  o.thin = a.thin;
  o.share = a.share;
  o.hosts = a.allowed_hosts;
  co_return co_await create_object(o);
}

Task<Result<ReplicaInfo>> PoolManager::create_snapshot(CreateSnapshotArgs a) {
  NewObject o;
  o.kind = ObjectKind::kSnapshot;
  o.from = &a.source;
  o.name = a.name;
  o.uuid = a.uuid;
  co_return co_await create_object(o);
}

Task<Result<ReplicaInfo>> PoolManager::create_clone(CreateCloneArgs a) {
  NewObject o;
  o.kind = ObjectKind::kClone;
  o.from = &a.snapshot;
  o.name = a.name;
  o.uuid = a.uuid;
  o.share = a.share;
  o.hosts = a.allowed_hosts;
  co_return co_await create_object(o);
}

Task<Result<ReplicaInfo>> PoolManager::create_object(const NewObject& want) {
  TERN_CO_RETURN_IF_ERROR(validate(want));
  TERN_CO_ASSIGN_OR_RETURN(Locked l, co_await lock_for_create(want));
  PoolEntry& e = *l.entry;
  TERN_CO_RETURN_IF_ERROR(uuid_free(want, e));

  std::optional<pool::ReplicaMeta> existing;
  for (const auto& m : e.pool->ListReplicas()) {
    if (m.name == want.name) existing = m;
  }
  if (existing) {
    TERN_CO_RETURN_IF_ERROR(mismatch(want, e, *existing, l.meta));
    std::string dev = existing->uuid.ToString();
    if (!shares_.find(dev) && want.share != ShareProtocol::kNone) {
      // A retry after the object was made but its share was not: finish the job.
      TERN_CO_RETURN_IF_ERROR(co_await share_and_record(e, *existing, want.share, want.hosts));
    }
    co_return object_info(e, *existing);
  }

  TERN_CO_ASSIGN_OR_RETURN(pool::ReplicaMeta made, co_await make(e, want, l.meta));
  Status s = e.pool->ExposeReplica(made.uuid).status();
  if (!s.ok() && want.kind == ObjectKind::kSnapshot) {
    // A snapshot is the image of one instant, which a retry could not take again: keep it, deviceless.
    TLOG_WARN("engine", "snapshot '{}' made but not exposed: {}", made.name, s.message());
    s = Status::Ok();
  }
  if (s.ok() && want.share != ShareProtocol::kNone) s = co_await share_and_record(e, made, want.share, want.hosts);
  if (!s.ok()) {
    // All or nothing: an object that cannot be exposed and shared as asked is not left behind.
    Status undo = co_await e.pool->DestroyReplica(made.uuid);
    if (!undo.ok()) {
      TLOG_WARN("engine", "removing {} '{}' after it could not be exposed or shared: {}", kind_name(want.kind),
                made.name, undo.message());
    }
    co_return s;
  }
  log_created(want.kind, e.pool->superblock().name, made, l.meta);
  co_return object_info(e, made);
}

// In the order the API's fields are checked. The UUID's syntax was checked where it was parsed.
Status PoolManager::validate(const NewObject& o) {
  const bool replica = o.kind == ObjectKind::kReplica;
  if (replica && o.pool.empty()) return Status(Errc::kInval, "pool: required");
  if (o.name.empty()) return Status(Errc::kInval, "name: required");
  if (replica && o.size == 0) return Status(Errc::kInval, "size: required (bytes, a multiple of 4096)");
  TERN_RETURN_IF_ERROR(Shares::ValidateHosts(o.hosts));
  // Replicas and clones are shared as asked: an unknown protocol is refused before anything is made.
  if (o.kind != ObjectKind::kSnapshot && o.share == ShareProtocol::kUnknown) {
    return Status(Errc::kInval, "share: unknown protocol");
  }
  return Status::Ok();
}

// A replica goes on the pool it names; a snapshot or clone on its source's pool, whose lock also
// settles which object the source is.
Task<Result<PoolManager::Locked>> PoolManager::lock_for_create(const NewObject& want) {
  if (want.kind == ObjectKind::kReplica) {
    PoolEntry* e = find_pool(want.pool);
    if (!e) co_return Status::Errorf(Errc::kNoEnt, "pool: no pool '{}' on this node", want.pool);
    auto guard = co_await e->mu.lock();
    TERN_CO_RETURN_IF_ERROR(still_open(*e));
    co_return Locked{std::move(guard), e, {}};
  }
  TERN_CO_ASSIGN_OR_RETURN(Locked l, co_await lock_object(*want.from));
  if (want.kind == ObjectKind::kSnapshot && l.meta.snapshot) {
    co_return Status::Errorf(Errc::kInval, "replica: '{}' is a snapshot; snapshot a replica or clone", l.meta.name);
  }
  if (want.kind == ObjectKind::kClone && !l.meta.snapshot) {
    co_return Status::Errorf(Errc::kInval, "snapshot: '{}' is not a snapshot", l.meta.name);
  }
  co_return std::move(l);
}

// An object is a device named by its UUID, so a UUID is unique on the node, not only in its pool.
Status PoolManager::uuid_free(const NewObject& want, const PoolEntry& e) const {
  if (!want.uuid) return Status::Ok();
  for (auto& [pname, other] : pools_) {
    for (const auto& m : other->pool->ListReplicas()) {
      // The object this request may be a retry of is judged by mismatch().
      if (m.uuid == *want.uuid && (other.get() != &e || m.name != want.name)) {
        return Status::Errorf(Errc::kExist, "uuid {} is already used by '{}' on pool '{}'", want.uuid->ToString(),
                              m.name, pname);
      }
    }
  }
  return Status::Ok();
}

Status PoolManager::mismatch(const NewObject& want, const PoolEntry& e, const pool::ReplicaMeta& have,
                             const pool::ReplicaMeta& from) const {
  const std::string& pool = e.pool->superblock().name;
  const char* noun = kind_name(want.kind);
  const bool replica = want.kind == ObjectKind::kReplica;
  if (replica && kind_of(have) != ObjectKind::kReplica) {
    return Status::Errorf(Errc::kExist, "'{}' on pool '{}' is a {}, not a replica", have.name, pool,
                          kind_name(kind_of(have)));
  }
  if (!replica && (kind_of(have) != want.kind || have.source != from.uuid)) {
    return Status::Errorf(Errc::kExist, "'{}' already exists on pool '{}' and is not a {} of '{}'", have.name, pool,
                          noun, from.name);
  }
  // A replica's message says where it is; a snapshot's or clone's was placed by its source above.
  std::string where = replica ? fmt::format(" on pool '{}'", pool) : std::string();
  auto differ = [&](const char* field, const auto& was, const auto& asked) {
    return Status::Errorf(Errc::kExist, "{} '{}' already exists{} with {} {} (asked for {})", noun, have.name, where,
                          field, was, asked);
  };
  if (want.uuid && *want.uuid != have.uuid) return differ("uuid", have.uuid.ToString(), want.uuid->ToString());
  // Snapshots and clones take their size and thinness from their source; replicas and clones are
  // compared on their share (docs/api/engine-v1.md: a retry with another share is ALREADY_EXISTS).
  if (want.kind == ObjectKind::kSnapshot) return Status::Ok();
  if (replica && have.size != want.size) return differ("size", have.size, want.size);
  if (replica && have.thin != want.thin) return differ("thin", have.thin, want.thin);
  const ShareInfo* s = shares_.find(have.uuid.ToString());
  if (s && s->protocol != want.share) {
    return differ("share", Shares::ProtocolName(s->protocol), Shares::ProtocolName(want.share));
  }
  if (s && !same_hosts(s->hosts, want.hosts)) return differ("allowed_hosts", join_hosts(s->hosts), join_hosts(want.hosts));
  return Status::Ok();
}

Task<Result<pool::ReplicaMeta>> PoolManager::make(PoolEntry& e, const NewObject& want, const pool::ReplicaMeta& from) {
  if (want.kind == ObjectKind::kSnapshot) {
    pool::SnapshotOptions o;
    o.name = want.name;
    o.uuid = want.uuid;
    co_return co_await e.pool->CreateSnapshot(from.uuid, o);
  }
  pool::ReplicaCreateOptions o;
  o.name = want.name;
  o.uuid = want.uuid;
  if (want.kind == ObjectKind::kClone) co_return co_await e.pool->CreateClone(from.uuid, o);
  o.size = want.size;
  o.thin = want.thin;
  co_return co_await e.pool->CreateReplica(o);
}

}  // namespace tern::engine
