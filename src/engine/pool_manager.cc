// PoolManager: the pools table — start-up, shutdown, create / import / export / destroy / grow, and the
// state file. Objects are in pool_objects.cc, their one create routine in create_object.cc.
#include "engine/pool_manager.h"

#include "common/log.h"
#include "engine/share_props.h"

namespace tern::engine {

namespace {

CreatePoolArgs pool_at(const PoolSpec& spec) {
  CreatePoolArgs a;
  a.name = spec.name;
  a.disk = spec.disk;
  return a;
}

}  // namespace

PoolManager::PoolManager(BdevRegistry& registry, Shares& shares, std::string state_dir)
    : registry_(registry), shares_(shares), state_(std::move(state_dir)) {}

PoolManager::~PoolManager() = default;

// ---------------------------------------------------------------------------------------------------
// Start and stop

Task<Status> PoolManager::start(std::vector<PoolSpec> configured) {
  // Those this node had, then those configured (create-or-import: a new disk gets a pool).
  auto known = state_.load();
  if (!known.ok()) co_return known.status();
  for (auto& spec : *known) {
    CreatePoolArgs args = pool_at(spec);
    auto p = co_await open_pool(args, PoolMode::kImport, /*remember=*/false);
    if (!p.ok()) TLOG_WARN("engine", "pool '{}' on '{}' was not imported: {}", spec.name, spec.disk, p.status().message());
  }
  for (auto& spec : configured) {
    CreatePoolArgs args = pool_at(spec);
    auto p = co_await open_pool(args, PoolMode::kCreateOrImport, /*remember=*/true);
    if (!p.ok()) {
      TLOG_WARN("engine", "configured pool '{}' on '{}' is not available: {}", spec.name, spec.disk, p.status().message());
    }
  }
  co_return Status::Ok();
}

Task<void> PoolManager::stop() {
  stopped_ = true;
  auto guard = co_await table_mu_.lock();
  closing_ = std::move(guard);
}

Task<void> PoolManager::export_all() {
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
  closing_.release();
}

// ---------------------------------------------------------------------------------------------------
// Pools

PoolManager::PoolEntry* PoolManager::find_pool(const std::string& name) const {
  auto it = pools_.find(name);
  return it == pools_.end() ? nullptr : it->second.get();
}

PoolInfo PoolManager::pool_info(const std::string& name, const PoolEntry& e) const {
  pool::PoolStats st = e.pool->stats();
  PoolInfo p;
  p.name = name;
  p.uuid = e.pool->superblock().pool_uuid;
  p.disk = e.disk;
  p.online = st.online;
  p.state_reason = st.state_reason;
  p.capacity = st.capacity;
  p.used = st.used;
  p.committed = st.committed;
  p.cluster_size = e.pool->superblock().cluster_size;
  p.objects = uint32_t(st.replicas);
  p.repair_note = e.pool->repair_note();
  return p;
}

std::vector<PoolInfo> PoolManager::list_pools(const std::string& name_filter) const {
  std::vector<PoolInfo> out;
  for (auto& [name, e] : pools_) {
    if (!name_filter.empty() && name != name_filter) continue;
    out.push_back(pool_info(name, *e));
  }
  return out;
}

Task<Result<PoolInfo>> PoolManager::create_pool(CreatePoolArgs args, PoolMode mode) {
  co_return co_await open_pool(std::move(args), mode, /*remember=*/true);
}

Task<Result<PoolInfo>> PoolManager::open_pool(CreatePoolArgs args, PoolMode mode, bool remember) {
  if (stopped_) co_return Status(Errc::kShutdown, "the engine is shutting down");
  if (args.disk.empty()) co_return Status(Errc::kInval, "disk: required (a device URI such as uring:///dev/sdb)");
  if (args.name.empty() && mode != PoolMode::kImport) co_return Status(Errc::kInval, "name: required");
  auto guard = co_await table_mu_.lock();

  if (PoolEntry* e = args.name.empty() ? nullptr : find_pool(args.name)) {
    // Asked again for a pool we have: the same arguments are a success, others name the difference.
    const pool::Superblock& sb = e->pool->superblock();
    if (e->disk != args.disk && e->bdev != args.disk) {
      co_return Status::Errorf(Errc::kExist, "pool '{}' already exists on disk '{}' (asked for disk '{}')", args.name,
                               e->disk, args.disk);
    }
    if (args.uuid && *args.uuid != sb.pool_uuid) {
      co_return Status::Errorf(Errc::kExist, "pool '{}' already exists with uuid {} (asked for {})", args.name,
                               sb.pool_uuid.ToString(), args.uuid->ToString());
    }
    if (args.cluster_size && args.cluster_size != sb.cluster_size) {
      co_return Status::Errorf(Errc::kExist, "pool '{}' already exists with cluster_size {} (asked for {})", args.name,
                               sb.cluster_size, args.cluster_size);
    }
    co_return pool_info(args.name, *e);
  }
  for (auto& [name, e] : pools_) {
    if (e->disk == args.disk || e->bdev == args.disk) {
      co_return Status::Errorf(Errc::kBusy, "disk '{}' already holds pool '{}' on this node", args.disk, name);
    }
  }

  auto entry = std::make_unique<PoolEntry>();
  entry->disk = args.disk;
  TERN_CO_ASSIGN_OR_RETURN(Bdev * dev, co_await open_disk(args.disk, &entry->owns_bdev));
  entry->bdev = dev->name();

  Result<std::unique_ptr<pool::Pool>> p = Status(Errc::kInval, "");
  if (mode == PoolMode::kImport) {
    std::optional<std::string> expect;
    if (!args.name.empty()) expect = args.name;
    p = co_await pool::Pool::Import(registry_, entry->bdev, expect);
  } else {
    pool::PoolCreateOptions o;
    o.name = args.name;
    o.uuid = args.uuid;
    if (args.cluster_size) o.cluster_size = args.cluster_size;
    if (mode == PoolMode::kCreate) {
      p = co_await pool::Pool::Create(registry_, entry->bdev, o);
      // A disk with a pool on it is a precondition failure, not a duplicate of this request.
      if (!p.ok() && p.code() == Errc::kExist) p = Status(Errc::kBusy, std::string(p.status().message()));
    } else {
      p = co_await pool::Pool::CreateOrImport(registry_, entry->bdev, o);
    }
  }
  if (p.ok() && args.name.empty() && find_pool((*p)->superblock().name)) {
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
    if (Status st = save_state(); !st.ok()) {
      TLOG_WARN("engine", "pool '{}' will not be imported at the next start: {}", name, st.message());
    }
  }
  TLOG_INFO("engine", "pool '{}' on '{}': {} objects, {} of {} bytes used", name, e.disk, e.pool->stats().replicas,
            e.pool->stats().used, e.pool->stats().capacity);
  co_return pool_info(name, e);
}

// The pool's device: a URI is opened by us (and closed with the pool) unless a device made from that
// URI exists; anything else names a device that must exist.
Task<Result<Bdev*>> PoolManager::open_disk(const std::string& disk, bool* created) {
  if (disk.find("://") == std::string::npos) {
    if (Bdev* dev = registry_.find(disk)) co_return dev;
    co_return Status::Errorf(Errc::kNoEnt, "disk: no device '{}' (give a URI such as uring:///dev/sdb, or create the "
                             "device first)", disk);
  }
  Bdev* dev = nullptr;
  for (Bdev* b : registry_.list()) {
    if (registry_.created_from(*b) == disk) dev = b;
  }
  if (dev) co_return dev;
  std::string uri = disk;
  auto b = co_await registry_.create(uri);
  if (!b.ok()) co_return Status::Errorf(b.code(), "disk: {}", b.status().message());
  *created = true;
  co_return *b;
}

Task<Status> PoolManager::expose_and_reshare(PoolEntry& e) {
  Status first;
  for (const auto& m : e.pool->ListReplicas()) {
    auto b = e.pool->ExposeReplica(m.uuid);
    if (!b.ok()) {
      if (first.ok()) first = b.status();
      continue;
    }
    std::optional<RecordedShare> rec = recorded_share(m);
    if (!rec) continue;
    std::string dev = m.uuid.ToString();
    ShareOptions so;
    so.read_only = m.snapshot;
    auto r = co_await shares_.share(dev, dev, rec->protocol, rec->hosts, so);
    if (!r.ok()) {
      TLOG_WARN("engine", "'{}' ({}) was shared over {} before; sharing it again failed: {}", m.name, dev,
                rec->protocol_text, r.status().message());
      if (first.ok()) first = r.status();
    }
  }
  co_return first;
}

Status PoolManager::save_state() const {
  std::vector<PoolSpec> specs;
  for (auto& [name, e] : pools_) specs.push_back({name, e->disk});
  return state_.save(specs);
}

Task<Status> PoolManager::export_pool(std::string name) { co_return co_await close_pool(std::move(name), false); }
Task<Status> PoolManager::destroy_pool(std::string name, bool force) {
  if (!force) {
    auto guard = co_await table_mu_.lock();
    if (PoolEntry* e = find_pool(name)) {
      // Data would go with the pool: say what, and how to mean it.
      size_t replicas = 0, snapshots = 0, clones = 0;
      std::vector<std::string> names;
      for (const auto& m : e->pool->ListReplicas()) {
        (m.snapshot ? snapshots : m.clone() ? clones : replicas)++;
        if (names.size() < 8) {
          names.push_back(fmt::format("{} '{}' ({})", m.snapshot ? "snapshot" : m.clone() ? "clone" : "replica", m.name,
                                      m.uuid.ToString()));
        }
      }
      const size_t n = replicas + snapshots + clones;
      if (n > 0) {
        co_return Status::Errorf(Errc::kBusy,
                                 "pool '{}' holds {} replica(s), {} snapshot(s) and {} clone(s): {}{}; destroy them first, "
                                 "or force the destruction of the pool with everything in it",
                                 name, replicas, snapshots, clones, fmt::join(names, ", "),
                                 n > names.size() ? fmt::format(" and {} more", n - names.size()) : std::string());
      }
    }
  }
  co_return co_await close_pool(std::move(name), true);
}

Task<Status> PoolManager::close_pool(std::string name, bool destroy) {
  if (name.empty()) co_return Status(Errc::kInval, "name: required");
  auto guard = co_await table_mu_.lock();
  PoolEntry* e = find_pool(name);
  if (!e) co_return Status::Errorf(Errc::kNoEnt, "no pool '{}' on this node", name);
  auto pg = co_await e->mu.lock();
  // Refuse before changing anything if an object is open by something other than its share.
  for (const auto& m : e->pool->ListReplicas()) {
    std::string dev = m.uuid.ToString();
    Bdev* b = registry_.find(dev);
    size_t ours = shares_.find(dev) ? 1 : 0;
    if (b && b->open_count() > ours) {
      co_return Status::Errorf(Errc::kBusy, "pool '{}': '{}' ({}) is open by {} user(s) besides its share; close it first",
                               name, m.name, dev, b->open_count() - ours);
    }
  }
  for (const auto& m : e->pool->ListReplicas()) {
    std::string dev = m.uuid.ToString();
    Status s = co_await shares_.unshare(dev);
    if (!s.ok()) co_return s;
  }
  // Not `c ? co_await x : co_await y`: GCC 12 may destroy the temporary that expression makes twice.
  Status s;
  if (destroy) s = co_await e->pool->Destroy();
  else s = co_await e->pool->Export();
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

Task<Result<PoolInfo>> PoolManager::grow_pool(std::string name) {
  PoolEntry* e = find_pool(name);
  if (!e) co_return Status::Errorf(Errc::kNoEnt, "no pool '{}' on this node", name);
  auto pg = co_await e->mu.lock();
  TERN_CO_RETURN_IF_ERROR(still_open(*e));
  auto st = co_await e->pool->Grow();
  if (!st.ok()) co_return st.status();
  co_return pool_info(name, *e);
}

// ---------------------------------------------------------------------------------------------------
// What the device side asks

std::optional<PoolManager::DeviceUse> PoolManager::device_use(const std::string& device) const {
  for (auto& [pname, e] : pools_) {
    if (e->bdev == device) return DeviceUse{pname, true, {}, {}};
    for (auto& m : e->pool->ListReplicas()) {
      if (m.uuid.ToString() == device) return DeviceUse{pname, false, m.name, kind_of(m)};
    }
  }
  return std::nullopt;
}

std::map<std::string, std::string> PoolManager::object_devices() const {
  std::map<std::string, std::string> out;
  for (auto& [pname, e] : pools_) {
    for (const auto& m : e->pool->ListReplicas()) out[m.uuid.ToString()] = pname;
  }
  return out;
}

}  // namespace tern::engine
