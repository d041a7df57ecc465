#include "engine/engine.h"

#include <unistd.h>

#include <algorithm>

#include "bdev/fault_bdevs.h"
#include "common/log.h"
#include "nvmf/host/nvmf_bdev.h"

namespace tern::engine {

namespace {

constexpr const char* kPropShare = "share.protocol";
constexpr const char* kPropHosts = "share.hosts";

std::string join(const std::vector<std::string>& v) { return fmt::format("{}", fmt::join(v, ",")); }

std::vector<std::string> split_hosts(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < s.size()) {
    size_t end = s.find(',', start);
    if (end == std::string::npos) end = s.size();
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

v1::ShareProtocol protocol_from(const std::string& s) {
  if (s == "nvmf") return v1::SHARE_PROTOCOL_NVMF;
  if (s == "nbd") return v1::SHARE_PROTOCOL_NBD;
  return v1::SHARE_PROTOCOL_NONE;
}

Result<std::optional<Uuid>> parse_optional_uuid(const std::string& field, const std::string& s) {
  if (s.empty()) return std::optional<Uuid>();
  auto u = Uuid::Parse(s);
  if (!u.ok()) return Status::Errorf(Errc::kInval, "{}: '{}' is not a UUID", field, s);
  return std::optional<Uuid>(*u);
}

// Sorted copies compare as sets: the order of allowed hosts carries no meaning.
bool same_hosts(std::vector<std::string> a, std::vector<std::string> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

}  // namespace

Engine::Engine(ReactorSet& reactors, EngineOptions opts)
    : reactors_(reactors), opts_(std::move(opts)), registry_(reactors), state_(opts_.state_dir) {
  nvmf::register_nvmf_backend(registry_);
  target_ = std::make_unique<nvmf::Target>(reactors_, registry_);
}

Engine::~Engine() = default;

// ---------------------------------------------------------------------------------------------------
// Start and stop

Task<Status> Engine::start() {
  auto port = target_->listen(opts_.nvmf_address, opts_.nvmf_port);
  if (!port.ok()) {
    co_return Status::Errorf(port.code(), "NVMe/TCP listener on {}:{}: {}", opts_.nvmf_address, opts_.nvmf_port,
                             port.status().message());
  }
  opts_.nvmf_port = *port;
  ShareEndpoints ep;
  ep.nvmf = nvmf::ListenAddr{opts_.nvmf_address, *port};
  ep.advertise = opts_.advertise_address;
  if (opts_.nbd_port != 0 || !opts_.nbd_socket.empty()) {
    nbd::ServerOptions no;
    no.tcp = opts_.nbd_port != 0;
    no.tcp_host = opts_.nbd_address;
    no.tcp_port = opts_.nbd_port;
    no.unix_path = opts_.nbd_socket;
    auto n = nbd::Server::Create(reactors_, registry_, no);
    if (!n.ok()) {
      co_return Status::Errorf(n.code(), "NBD server ({}): {}",
                               no.tcp ? fmt::format("{}:{}", no.tcp_host, no.tcp_port) : no.unix_path,
                               n.status().message());
    }
    nbd_ = std::move(*n);
    if (no.tcp) opts_.nbd_port = nbd_->tcp_port();
    ep.nbd_host = nbd_client_host();
    ep.nbd_port = no.tcp ? opts_.nbd_port : 0;
  }
  shares_ = std::make_unique<Shares>(*target_, nbd_.get(), ep);

  // Pools: those this node had, then those configured (create-or-import: a new disk gets a pool).
  auto known = state_.load();
  if (!known.ok()) co_return known.status();
  for (auto& spec : *known) {
    v1::CreatePoolRequest req;
    req.set_name(spec.name);
    req.set_disk(spec.disk);
    auto p = co_await open_pool(req, PoolMode::kImport, /*remember=*/false);
    if (!p.ok()) TLOG_WARN("engine", "pool '{}' on '{}' was not imported: {}", spec.name, spec.disk, p.status().message());
  }
  for (auto& spec : opts_.pools) {
    v1::CreatePoolRequest req;
    req.set_name(spec.name);
    req.set_disk(spec.disk);
    auto p = co_await open_pool(req, PoolMode::kCreateOrImport, /*remember=*/true);
    if (!p.ok()) TLOG_WARN("engine", "configured pool '{}' on '{}' is not available: {}", spec.name, spec.disk, p.status().message());
  }
  co_return Status::Ok();
}

Task<void> Engine::shutdown() {
  if (stopped_) co_return;
  stopped_ = true;
  auto guard = co_await pools_mu_.lock();
  if (shares_) co_await shares_->unshare_all();
  if (nbd_) co_await nbd_->stop();
  co_await target_->shutdown();
  for (auto& [name, e] : pools_) {
    auto pg = co_await e->mu.lock();
    Status s = co_await e->pool->Export();
    if (!s.ok()) {
      TLOG_WARN("engine", "pool '{}' was not exported cleanly: {} (it will be recovered at the next import)", name,
                s.message());
    } else {
      TLOG_INFO("engine", "pool '{}' exported", name);
    }
  }
  pools_.clear();
  co_await registry_.destroy_all();
}

// ---------------------------------------------------------------------------------------------------
// Pools

Status Engine::still_open(const PoolEntry& e) {
  if (!e.closed) return Status::Ok();
  return Status::Errorf(Errc::kNoEnt, "pool on '{}' was exported or destroyed while this request waited", e.disk);
}

Engine::PoolEntry* Engine::find_pool(const std::string& name) const {
  auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : it->second.get();
}

v1::Pool Engine::pool_message(const std::string& name, const PoolEntry& e) const {
  v1::Pool m;
  pool::PoolStats st = e.pool->stats();
  m.set_name(name);
  m.set_uuid(e.pool->superblock().pool_uuid.ToString());
  m.set_disk(e.disk);
  m.set_state(st.online ? v1::POOL_STATE_ONLINE : v1::POOL_STATE_DEGRADED);
  m.set_state_reason(st.state_reason);
  m.set_capacity(st.capacity);
  m.set_used(st.used);
  m.set_committed(st.committed);
  m.set_cluster_size(e.pool->superblock().cluster_size);
  m.set_replica_count(uint32_t(st.replicas));
  m.set_repair_note(e.pool->repair_note());
  return m;
}

std::vector<v1::Pool> Engine::list_pools(const std::string& name_filter) const {
  std::vector<v1::Pool> out;
  for (auto& [name, e] : pools_) {
    if (!name_filter.empty() && name != name_filter) continue;
    out.push_back(pool_message(name, *e));
  }
  return out;
}

Task<Result<v1::Pool>> Engine::create_pool(v1::CreatePoolRequest req, PoolMode mode) {
  co_return co_await open_pool(std::move(req), mode, /*remember=*/true);
}

Task<Result<v1::Pool>> Engine::open_pool(v1::CreatePoolRequest req, PoolMode mode, bool remember) {
  if (stopped_) co_return Status(Errc::kShutdown, "the engine is shutting down");
  if (req.disk().empty()) co_return Status(Errc::kInval, "disk: required (a device URI such as uring:///dev/sdb)");
  if (req.name().empty() && mode != PoolMode::kImport) co_return Status(Errc::kInval, "name: required");
  TERN_CO_ASSIGN_OR_RETURN(std::optional<Uuid> uuid, parse_optional_uuid("uuid", req.uuid()));
  auto guard = co_await pools_mu_.lock();

  if (PoolEntry* e = req.name().empty() ? nullptr : find_pool(req.name())) {
    // Asked again for a pool we have: the same arguments are a success, others name the difference.
    if (e->disk != req.disk() && e->bdev != req.disk()) {
      co_return Status::Errorf(Errc::kExist, "pool '{}' already exists on disk '{}' (asked for disk '{}')", req.name(),
                               e->disk, req.disk());
    }
    if (uuid && *uuid != e->pool->superblock().pool_uuid) {
      co_return Status::Errorf(Errc::kExist, "pool '{}' already exists with uuid {} (asked for {})", req.name(),
                               e->pool->superblock().pool_uuid.ToString(), uuid->ToString());
    }
    if (req.cluster_size() && req.cluster_size() != e->pool->superblock().cluster_size) {
      co_return Status::Errorf(Errc::kExist, "pool '{}' already exists with cluster_size {} (asked for {})",
                               req.name(), e->pool->superblock().cluster_size, req.cluster_size());
    }
    co_return pool_message(req.name(), *e);
  }
  for (auto& [name, e] : pools_) {
    if (e->disk == req.disk() || e->bdev == req.disk()) {
      co_return Status::Errorf(Errc::kBusy, "disk '{}' already holds pool '{}' on this node", req.disk(), name);
    }
  }

  // The device: a URI the engine opens (and closes with the pool), or a device that exists already.
  auto entry = std::make_unique<PoolEntry>();
  entry->disk = req.disk();
  Bdev* dev = nullptr;
  if (req.disk().find("://") != std::string::npos) {
    for (Bdev* b : registry_.list()) {
      if (registry_.created_from(*b) == req.disk()) dev = b;
    }
    if (!dev) {
      auto b = co_await registry_.create(req.disk());
      if (!b.ok()) co_return Status::Errorf(b.code(), "disk: {}", b.status().message());
      dev = *b;
      entry->owns_bdev = true;
    }
  } else {
    dev = registry_.find(req.disk());
    if (!dev) {
      co_return Status::Errorf(Errc::kNoEnt, "disk: no device '{}' (give a URI such as uring:///dev/sdb, or create the "
                               "device first)", req.disk());
    }
  }
  entry->bdev = dev->name();

  Result<std::unique_ptr<pool::Pool>> p = Status(Errc::kInval, "");
  if (mode == PoolMode::kImport) {
    std::optional<std::string> expect;
    if (!req.name().empty()) expect = req.name();
    p = co_await pool::Pool::Import(registry_, entry->bdev, expect);
  } else {
    pool::PoolCreateOptions o;
    o.name = req.name();
    o.uuid = uuid;
    if (req.cluster_size()) o.cluster_size = req.cluster_size();
    if (mode == PoolMode::kCreate) {
      p = co_await pool::Pool::Create(registry_, entry->bdev, o);
      // A disk with a pool on it is a precondition failure, not a duplicate of this request.
      if (!p.ok() && p.code() == Errc::kExist) p = Status(Errc::kBusy, std::string(p.status().message()));
    } else {
      p = co_await pool::Pool::CreateOrImport(registry_, entry->bdev, o);
    }
  }
  if (p.ok() && req.name().empty() && find_pool((*p)->superblock().name)) {
    std::string name = (*p)->superblock().name;
    Status s = co_await (*p)->Export();
    (void)s;
    p = Status::Errorf(Errc::kExist, "a pool named '{}' is already imported on this node", name);
  }
  if (!p.ok()) {
    if (entry->owns_bdev) {
      Status s = co_await registry_.destroy(entry->bdev);
      if (!s.ok()) TLOG_WARN("engine", "closing '{}' after a failed pool open: {}", entry->bdev, s.message());
    }
    co_return p.status();
  }
  entry->pool = std::move(*p);
  std::string name = entry->pool->superblock().name;
  if (!entry->pool->repair_note().empty()) {
    TLOG_WARN("engine", "pool '{}': import repaired: {}", name, entry->pool->repair_note());
  }
  PoolEntry& e = *entry;
  pools_[name] = std::move(entry);
  Status s = co_await expose_and_reshare(e);
  if (!s.ok()) TLOG_WARN("engine", "pool '{}': {}", name, s.message());
  if (remember) {
    if (Status st = save_state(); !st.ok()) TLOG_WARN("engine", "pool '{}' will not be imported at the next start: {}", name, st.message());
  }
  TLOG_INFO("engine", "pool '{}' on '{}': {} objects, {} of {} bytes used", name, e.disk, e.pool->stats().replicas,
            e.pool->stats().used, e.pool->stats().capacity);
  co_return pool_message(name, e);
}

Task<Status> Engine::expose_and_reshare(PoolEntry& e) {
  Status first;
  for (const auto& m : e.pool->ListReplicas()) {
    auto b = e.pool->ExposeReplica(m.uuid);
    if (!b.ok()) {
      if (first.ok()) first = b.status();
      continue;
    }
    auto it = m.props.find(kPropShare);
    if (it == m.props.end()) continue;
    auto hit = m.props.find(kPropHosts);
    std::vector<std::string> hosts = hit == m.props.end() ? std::vector<std::string>{} : split_hosts(hit->second);
    auto r = co_await shares_->share(m.uuid.ToString(), m.uuid.ToString(), protocol_from(it->second), hosts, m.snapshot);
    if (!r.ok()) {
      TLOG_WARN("engine", "'{}' ({}) was shared over {} before; sharing it again failed: {}", m.name,
                m.uuid.ToString(), it->second, r.status().message());
      if (first.ok()) first = r.status();
    }
  }
  co_return first;
}

Status Engine::save_state() const {
  std::vector<PoolSpec> specs;
  for (auto& [name, e] : pools_) specs.push_back({name, e->disk});
  return state_.save(specs);
}

Task<Status> Engine::export_pool(std::string name) { co_return co_await close_pool(std::move(name), false); }
Task<Status> Engine::destroy_pool(std::string name) { co_return co_await close_pool(std::move(name), true); }

Task<Status> Engine::close_pool(std::string name, bool destroy) {
  if (name.empty()) co_return Status(Errc::kInval, "name: required");
  auto guard = co_await pools_mu_.lock();
  PoolEntry* e = find_pool(name);
  if (!e) co_return Status::Errorf(Errc::kNoEnt, "no pool '{}' on this node", name);
  auto pg = co_await e->mu.lock();
  // Refuse before changing anything if a replica is open by something other than its share.
  for (const auto& m : e->pool->ListReplicas()) {
    Bdev* b = registry_.find(m.uuid.ToString());
    size_t ours = shares_->find(m.uuid.ToString()) ? 1 : 0;
    if (b && b->open_count() > ours) {
      co_return Status::Errorf(Errc::kBusy, "pool '{}': '{}' ({}) is open by {} user(s) besides its share; close it first",
                               name, m.name, m.uuid.ToString(), b->open_count() - ours);
    }
  }
  for (const auto& m : e->pool->ListReplicas()) {
    Status s = co_await shares_->unshare(m.uuid.ToString());
    if (!s.ok()) co_return s;
  }
  Status s = destroy ? co_await e->pool->Destroy() : co_await e->pool->Export();
  if (!s.ok()) {
    Status again = co_await expose_and_reshare(*e);
    (void)again;
    co_return s;
  }
  if (e->owns_bdev) {
    Status d = co_await registry_.destroy(e->bdev);
    if (!d.ok()) TLOG_WARN("engine", "closing '{}': {}", e->bdev, d.message());
  }
  // Requests queued on this pool's lock see `closed` and return before the entry goes (they run
  // inside release(), before it returns).
  e->closed = true;
  pg.release();
  pools_.erase(name);
  if (Status st = save_state(); !st.ok()) TLOG_WARN("engine", "{}", st.message());
  TLOG_INFO("engine", "pool '{}' {}", name, destroy ? "destroyed" : "exported");
  co_return Status::Ok();
}

Task<Result<v1::Pool>> Engine::grow_pool(std::string name) {
  PoolEntry* e = find_pool(name);
  if (!e) co_return Status::Errorf(Errc::kNoEnt, "no pool '{}' on this node", name);
  auto pg = co_await e->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*e));
  auto st = co_await e->pool->Grow();
  if (!st.ok()) co_return st.status();
  co_return pool_message(name, *e);
}

// ---------------------------------------------------------------------------------------------------
// Replicas

Result<Engine::Found> Engine::find_replica(const v1::ReplicaRef& ref) const {
  if (ref.uuid().empty() && ref.name().empty()) return Status(Errc::kInval, "uuid or name: one is required");
  std::optional<Uuid> uuid;
  if (!ref.uuid().empty()) {
    auto u = Uuid::Parse(ref.uuid());
    if (!u.ok()) return Status::Errorf(Errc::kInval, "uuid: '{}' is not a UUID", ref.uuid());
    uuid = *u;
  }
  std::vector<Found> hits;
  for (auto& [pname, e] : pools_) {
    if (!ref.pool().empty() && pname != ref.pool()) continue;
    for (const auto& m : e->pool->ListReplicas()) {
      if (uuid && m.uuid != *uuid) continue;
      if (!ref.name().empty() && m.name != ref.name()) continue;
      hits.push_back({e.get(), m});
    }
  }
  std::string what = uuid ? uuid->ToString() : fmt::format("'{}'", ref.name());
  if (hits.empty()) {
    return Status::Errorf(Errc::kNoEnt, "no replica {}{}", what,
                          ref.pool().empty() ? std::string() : fmt::format(" on pool '{}'", ref.pool()));
  }
  if (hits.size() > 1) {
    return Status::Errorf(Errc::kInval, "name '{}' is used on several pools; give the pool or the uuid", ref.name());
  }
  return hits[0];
}

v1::Replica Engine::replica_message(const PoolEntry& e, const pool::ReplicaMeta& m) const {
  v1::Replica r;
  r.set_name(m.name);
  r.set_uuid(m.uuid.ToString());
  r.set_pool(e.pool->superblock().name);
  r.set_pool_uuid(e.pool->superblock().pool_uuid.ToString());
  r.set_size(m.size);
  r.set_thin(m.thin);
  r.set_kind(m.snapshot ? v1::REPLICA_KIND_SNAPSHOT : m.clone() ? v1::REPLICA_KIND_CLONE : v1::REPLICA_KIND_REPLICA);
  if (!m.source.is_nil()) r.set_parent_uuid(m.source.ToString());
  std::string dev = m.uuid.ToString();
  if (const ShareInfo* s = shares_->find(dev)) {
    r.mutable_share()->set_protocol(s->protocol);
    r.mutable_share()->set_uri(s->uri);
    for (auto& h : s->hosts) r.mutable_share()->add_allowed_hosts(h);
  }
  pool::ObjectSpace sp = e.pool->Space(m.uuid);
  r.set_allocated(sp.allocated);
  r.set_referenced(sp.referenced);
  r.set_exclusive(sp.exclusive);
  r.set_discarded(m.discarded);
  if (registry_.find(dev)) r.set_device(dev);
  return r;
}

std::vector<v1::Replica> Engine::list_replicas(const v1::ListReplicasRequest& f) const {
  std::vector<v1::Replica> out;
  for (auto& [pname, e] : pools_) {
    if (!f.pool().empty() && pname != f.pool()) continue;
    for (const auto& m : e->pool->ListReplicas()) {
      if (m.snapshot && !f.include_snapshots()) continue;
      if (!f.name().empty() && m.name != f.name()) continue;
      if (!f.uuid().empty() && m.uuid.ToString() != f.uuid()) continue;
      out.push_back(replica_message(*e, m));
    }
  }
  return out;
}

std::vector<v1::Replica> Engine::list_snapshots(const v1::ListSnapshotsRequest& f, bool clones) const {
  std::vector<v1::Replica> out;
  for (auto& [pname, e] : pools_) {
    if (!f.pool().empty() && pname != f.pool()) continue;
    for (const auto& m : e->pool->ListReplicas()) {
      if (clones ? !m.clone() : !m.snapshot) continue;
      if (!f.source_uuid().empty() && m.source.ToString() != f.source_uuid()) continue;
      if (!f.uuid().empty() && m.uuid.ToString() != f.uuid()) continue;
      out.push_back(replica_message(*e, m));
    }
  }
  return out;
}

Task<Status> Engine::share_object(PoolEntry& e, const pool::ReplicaMeta& m, v1::ShareProtocol protocol,
                                  std::vector<std::string> hosts) {
  std::string dev = m.uuid.ToString();
  bool was_shared = shares_->find(dev) != nullptr;
  auto r = co_await shares_->share(dev, dev, protocol, hosts, m.snapshot);
  if (!r.ok()) co_return r.status();
  // Remembered in the pool, so the share comes back after a restart (or on another node).
  Status s = co_await e.pool->SetProperty(m.uuid, kPropShare, Shares::ProtocolName(protocol));
  if (s.ok()) s = co_await e.pool->SetProperty(m.uuid, kPropHosts, join(hosts));
  if (!s.ok() && !was_shared) {
    Status u = co_await shares_->unshare(dev);
    (void)u;
  }
  co_return s;
}

Task<Status> Engine::unshare_object(PoolEntry& e, const pool::ReplicaMeta& m) {
  TERN_CO_RETURN_IF_ERROR(co_await shares_->unshare(m.uuid.ToString()));
  if (m.props.count(kPropShare)) TERN_CO_RETURN_IF_ERROR(co_await e.pool->SetProperty(m.uuid, kPropShare, ""));
  if (m.props.count(kPropHosts)) TERN_CO_RETURN_IF_ERROR(co_await e.pool->SetProperty(m.uuid, kPropHosts, ""));
  co_return Status::Ok();
}

Task<Result<v1::Replica>> Engine::create_replica(v1::CreateReplicaRequest req) {
  if (req.pool().empty()) co_return Status(Errc::kInval, "pool: required");
  if (req.name().empty()) co_return Status(Errc::kInval, "name: required");
  if (req.size() == 0) co_return Status(Errc::kInval, "size: required (bytes, a multiple of 4096)");
  TERN_CO_ASSIGN_OR_RETURN(std::optional<Uuid> uuid, parse_optional_uuid("uuid", req.uuid()));
  std::vector<std::string> hosts(req.allowed_hosts().begin(), req.allowed_hosts().end());
  TERN_CO_RETURN_IF_ERROR(Shares::ValidateHosts(hosts));
  if (!v1::ShareProtocol_IsValid(req.share())) co_return Status(Errc::kInval, "share: unknown protocol");
  PoolEntry* e = find_pool(req.pool());
  if (!e) co_return Status::Errorf(Errc::kNoEnt, "pool: no pool '{}' on this node", req.pool());
  auto pg = co_await e->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*e));
  if (uuid) {
    for (auto& [pname, other] : pools_) {
      for (const auto& m : other->pool->ListReplicas()) {
        if (m.uuid == *uuid && (other.get() != e || m.name != req.name())) {
          co_return Status::Errorf(Errc::kExist, "uuid {} is already used by '{}' on pool '{}'", uuid->ToString(), m.name,
                                   pname);
        }
      }
    }
  }
  std::optional<pool::ReplicaMeta> existing;
  for (const auto& m : e->pool->ListReplicas()) {
    if (m.name == req.name()) existing = m;
  }
  if (existing) {
    const auto& m = *existing;
    auto differ = [&](const char* field, auto have, auto want) {
      return Status::Errorf(Errc::kExist, "replica '{}' already exists on pool '{}' with {} {} (asked for {})", m.name,
                            req.pool(), field, have, want);
    };
    if (m.snapshot || m.clone()) {
      co_return Status::Errorf(Errc::kExist, "'{}' on pool '{}' is a {}, not a replica", m.name, req.pool(),
                               m.snapshot ? "snapshot" : "clone");
    }
    if (uuid && *uuid != m.uuid) co_return differ("uuid", m.uuid.ToString(), uuid->ToString());
    if (m.size != req.size()) co_return differ("size", m.size, req.size());
    if (m.thin != req.thin()) co_return differ("thin", m.thin, req.thin());
    const ShareInfo* s = shares_->find(m.uuid.ToString());
    if (s && s->protocol != req.share()) {
      co_return differ("share", Shares::ProtocolName(s->protocol), Shares::ProtocolName(req.share()));
    }
    if (s && !same_hosts(s->hosts, hosts)) co_return differ("allowed_hosts", join(s->hosts), join(hosts));
    if (!s && req.share() != v1::SHARE_PROTOCOL_NONE) {
      // A retry after the replica was made but its share was not: finish the job.
      TERN_CO_RETURN_IF_ERROR(co_await share_object(*e, m, req.share(), hosts));
    }
    co_return replica_message(*e, m);
  }
  pool::ReplicaCreateOptions o;
  o.name = req.name();
  o.uuid = uuid;
  o.size = req.size();
  o.thin = req.thin();
  auto meta = co_await e->pool->CreateReplica(o);
  if (!meta.ok()) co_return meta.status();
  auto dev = e->pool->ExposeReplica(meta->uuid);
  Status s = dev.status();
  if (s.ok() && req.share() != v1::SHARE_PROTOCOL_NONE) s = co_await share_object(*e, *meta, req.share(), hosts);
  if (!s.ok()) {
    // All or nothing: a replica that cannot be shared as asked is not left behind.
    Status undo = co_await e->pool->DestroyReplica(meta->uuid);
    if (!undo.ok()) TLOG_WARN("engine", "removing '{}' after a failed share: {}", meta->name, undo.message());
    co_return s;
  }
  TLOG_INFO("engine", "replica '{}' ({}) created on pool '{}': {} bytes, {}", meta->name, meta->uuid.ToString(),
            req.pool(), meta->size, meta->thin ? "thin" : "thick");
  co_return replica_message(*e, *meta);
}

Task<Status> Engine::destroy_replica(v1::ReplicaRef ref, bool snapshot) {
  TERN_CO_ASSIGN_OR_RETURN(Found f, find_replica(ref));
  auto pg = co_await f.entry->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*f.entry));
  TERN_CO_ASSIGN_OR_RETURN(f, find_replica(ref));  // again: it may have changed while we waited
  if (f.meta.snapshot != snapshot) {
    co_return Status::Errorf(Errc::kInval, "'{}' is a {}; use {}", f.meta.name, f.meta.snapshot ? "snapshot" : "replica",
                             f.meta.snapshot ? "DestroySnapshot (ternctl snapshot destroy)" : "DestroyReplica (ternctl replica destroy)");
  }
  std::string dev = f.meta.uuid.ToString();
  Bdev* b = registry_.find(dev);
  size_t ours = shares_->find(dev) ? 1 : 0;
  if (b && b->open_count() > ours) {
    co_return Status::Errorf(Errc::kBusy, "'{}' is open by {} user(s) besides its share; close it first", f.meta.name,
                             b->open_count() - ours);
  }
  TERN_CO_RETURN_IF_ERROR(co_await shares_->unshare(dev));
  Status s = co_await f.entry->pool->DestroyReplica(f.meta.uuid);
  if (!s.ok()) {
    Status again = co_await expose_and_reshare(*f.entry);
    (void)again;
    co_return s;
  }
  TLOG_INFO("engine", "{} '{}' ({}) destroyed", snapshot ? "snapshot" : "replica", f.meta.name, dev);
  co_return Status::Ok();
}

Task<Result<v1::Replica>> Engine::resize_replica(v1::ResizeReplicaRequest req) {
  if (req.size() == 0) co_return Status(Errc::kInval, "size: required");
  TERN_CO_ASSIGN_OR_RETURN(Found f, find_replica(req.replica()));
  auto pg = co_await f.entry->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*f.entry));
  TERN_CO_ASSIGN_OR_RETURN(f, find_replica(req.replica()));
  if (shares_->find(f.meta.uuid.ToString())) {
    co_return Status::Errorf(Errc::kBusy, "'{}' is shared; unshare it before resizing (hosts see a fixed size)",
                             f.meta.name);
  }
  auto m = co_await f.entry->pool->ResizeReplica(f.meta.uuid, req.size(), req.allow_shrink());
  if (!m.ok()) co_return m.status();
  co_return replica_message(*f.entry, *m);
}

Task<Result<v1::Replica>> Engine::share_replica(v1::ReplicaRef ref, v1::ShareProtocol protocol,
                                                std::vector<std::string> hosts) {
  if (protocol == v1::SHARE_PROTOCOL_NONE || !v1::ShareProtocol_IsValid(protocol)) {
    co_return Status(Errc::kInval, "protocol: choose nvmf or nbd");
  }
  TERN_CO_ASSIGN_OR_RETURN(Found f, find_replica(ref));
  auto pg = co_await f.entry->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*f.entry));
  TERN_CO_ASSIGN_OR_RETURN(f, find_replica(ref));
  TERN_CO_RETURN_IF_ERROR(co_await share_object(*f.entry, f.meta, protocol, hosts));
  co_return replica_message(*f.entry, f.meta);
}

Task<Result<v1::Replica>> Engine::unshare_replica(v1::ReplicaRef ref) {
  TERN_CO_ASSIGN_OR_RETURN(Found f, find_replica(ref));
  auto pg = co_await f.entry->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*f.entry));
  TERN_CO_ASSIGN_OR_RETURN(f, find_replica(ref));
  TERN_CO_RETURN_IF_ERROR(co_await unshare_object(*f.entry, f.meta));
  co_return replica_message(*f.entry, f.meta);
}

Task<Result<v1::Replica>> Engine::set_allowed_hosts(v1::ReplicaRef ref, std::vector<std::string> hosts) {
  TERN_CO_ASSIGN_OR_RETURN(Found f, find_replica(ref));
  auto pg = co_await f.entry->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*f.entry));
  TERN_CO_ASSIGN_OR_RETURN(f, find_replica(ref));
  const ShareInfo* s = shares_->find(f.meta.uuid.ToString());
  if (!s) co_return Status::Errorf(Errc::kBusy, "'{}' is not shared; share it with the allowed hosts instead", f.meta.name);
  TERN_CO_RETURN_IF_ERROR(shares_->set_hosts(f.meta.uuid.ToString(), hosts));
  TERN_CO_RETURN_IF_ERROR(co_await f.entry->pool->SetProperty(f.meta.uuid, kPropHosts, join(hosts)));
  co_return replica_message(*f.entry, f.meta);
}

// ---------------------------------------------------------------------------------------------------
// Snapshots and clones

Task<Result<v1::Replica>> Engine::create_snapshot(v1::CreateSnapshotRequest req) {
  if (req.name().empty()) co_return Status(Errc::kInval, "name: required");
  TERN_CO_ASSIGN_OR_RETURN(std::optional<Uuid> uuid, parse_optional_uuid("uuid", req.uuid()));
  TERN_CO_ASSIGN_OR_RETURN(Found f, find_replica(req.replica()));
  auto pg = co_await f.entry->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*f.entry));
  TERN_CO_ASSIGN_OR_RETURN(f, find_replica(req.replica()));
  if (f.meta.snapshot) co_return Status::Errorf(Errc::kInval, "replica: '{}' is a snapshot; snapshot a replica or clone", f.meta.name);
  for (const auto& m : f.entry->pool->ListReplicas()) {
    if (m.name != req.name()) continue;
    if (!m.snapshot || m.source != f.meta.uuid) {
      co_return Status::Errorf(Errc::kExist, "'{}' already exists on pool '{}' and is not a snapshot of '{}'", m.name,
                               f.entry->pool->superblock().name, f.meta.name);
    }
    if (uuid && *uuid != m.uuid) {
      co_return Status::Errorf(Errc::kExist, "snapshot '{}' already exists with uuid {} (asked for {})", m.name,
                               m.uuid.ToString(), uuid->ToString());
    }
    co_return replica_message(*f.entry, m);
  }
  pool::SnapshotOptions o;
  o.name = req.name();
  o.uuid = uuid;
  auto m = co_await f.entry->pool->CreateSnapshot(f.meta.uuid, o);
  if (!m.ok()) co_return m.status();
  auto dev = f.entry->pool->ExposeReplica(m->uuid);
  if (!dev.ok()) TLOG_WARN("engine", "snapshot '{}' made but not exposed: {}", m->name, dev.status().message());
  TLOG_INFO("engine", "snapshot '{}' ({}) of '{}' created", m->name, m->uuid.ToString(), f.meta.name);
  co_return replica_message(*f.entry, *m);
}

Task<Result<v1::Replica>> Engine::create_clone(v1::CreateCloneRequest req) {
  if (req.name().empty()) co_return Status(Errc::kInval, "name: required");
  TERN_CO_ASSIGN_OR_RETURN(std::optional<Uuid> uuid, parse_optional_uuid("uuid", req.uuid()));
  std::vector<std::string> hosts(req.allowed_hosts().begin(), req.allowed_hosts().end());
  TERN_CO_RETURN_IF_ERROR(Shares::ValidateHosts(hosts));
  TERN_CO_ASSIGN_OR_RETURN(Found f, find_replica(req.snapshot()));
  auto pg = co_await f.entry->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*f.entry));
  TERN_CO_ASSIGN_OR_RETURN(f, find_replica(req.snapshot()));
  if (!f.meta.snapshot) co_return Status::Errorf(Errc::kInval, "snapshot: '{}' is not a snapshot", f.meta.name);
  for (const auto& m : f.entry->pool->ListReplicas()) {
    if (m.name != req.name()) continue;
    if (!m.clone() || m.source != f.meta.uuid) {
      co_return Status::Errorf(Errc::kExist, "'{}' already exists on pool '{}' and is not a clone of '{}'", m.name,
                               f.entry->pool->superblock().name, f.meta.name);
    }
    if (uuid && *uuid != m.uuid) {
      co_return Status::Errorf(Errc::kExist, "clone '{}' already exists with uuid {} (asked for {})", m.name,
                               m.uuid.ToString(), uuid->ToString());
    }
    if (!shares_->find(m.uuid.ToString()) && req.share() != v1::SHARE_PROTOCOL_NONE) {
      TERN_CO_RETURN_IF_ERROR(co_await share_object(*f.entry, m, req.share(), hosts));
    }
    co_return replica_message(*f.entry, m);
  }
  pool::ReplicaCreateOptions o;
  o.name = req.name();
  o.uuid = uuid;
  auto m = co_await f.entry->pool->CreateClone(f.meta.uuid, o);
  if (!m.ok()) co_return m.status();
  auto dev = f.entry->pool->ExposeReplica(m->uuid);
  Status s = dev.status();
  if (s.ok() && req.share() != v1::SHARE_PROTOCOL_NONE) s = co_await share_object(*f.entry, *m, req.share(), hosts);
  if (!s.ok()) {
    Status undo = co_await f.entry->pool->DestroyReplica(m->uuid);
    (void)undo;
    co_return s;
  }
  TLOG_INFO("engine", "clone '{}' ({}) of snapshot '{}' created", m->name, m->uuid.ToString(), f.meta.name);
  co_return replica_message(*f.entry, *m);
}
}  // namespace tern::engine
