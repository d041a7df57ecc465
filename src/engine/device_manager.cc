#include "engine/device_manager.h"

#include <algorithm>

#include "common/clock.h"
#include "common/log.h"

namespace tern::engine {

DeviceManager::DeviceManager(ReactorSet& reactors, BdevRegistry& registry, nvmf::Target& target,
                             nvmf::ListenAddr listener, Shares& shares, PoolManager& pools)
    : reactors_(reactors),
      registry_(registry),
      target_(target),
      listener_(std::move(listener)),
      shares_(shares),
      pools_(pools) {}

// ---------------------------------------------------------------------------------------------------
// Devices

DeviceInfo DeviceManager::info(const Bdev& b, const std::map<std::string, std::string>& object_pools) const {
  const BdevProps& p = b.props();
  DeviceInfo d;
  d.name = p.name;
  d.uuid = p.uuid;
  d.uri = registry_.created_from(b);
  d.product = p.product;
  d.block_size = p.block_size;
  d.num_blocks = b.num_blocks();
  d.size = b.num_blocks() * p.block_size;
  d.claimed_by = b.claimed_by();
  d.open_count = uint32_t(b.open_count());
  if (const ShareInfo* s = shares_.find(p.name)) d.share = *s;
  if (auto it = object_pools.find(p.name); it != object_pools.end()) d.pool = it->second;
  return d;
}

DeviceInfo DeviceManager::describe(const Bdev& b) const { return info(b, pools_.object_devices()); }

std::vector<DeviceInfo> DeviceManager::list(const std::string& name_or_uuid) const {
  std::vector<DeviceInfo> out;
  auto object_pools = pools_.object_devices();
  for (Bdev* b : registry_.list()) {
    const BdevProps& p = b->props();
    if (!name_or_uuid.empty() && p.name != name_or_uuid && p.uuid.ToString() != name_or_uuid) continue;
    out.push_back(info(*b, object_pools));
  }
  return out;
}

std::optional<ReplicaRef> DeviceManager::object_ref(const std::string& device) const {
  if (!pools_.object_devices().count(device)) return std::nullopt;
  auto uuid = Uuid::Parse(device);  // an object's device is named by its UUID
  if (!uuid.ok()) return std::nullopt;
  ReplicaRef ref;
  ref.uuid = *uuid;
  return ref;
}

Task<Result<DeviceInfo>> DeviceManager::create(std::string uri) {
  if (uri.empty()) co_return Status(Errc::kInval, "uri: required (e.g. malloc:///m0?size_mb=64)");
  for (Bdev* b : registry_.list()) {
    if (registry_.created_from(*b) == uri) co_return describe(*b);
  }
  auto b = co_await registry_.create(uri);
  if (!b.ok()) co_return b.status();
  TLOG_INFO("engine", "device '{}' created from {}", (*b)->name(), uri);
  co_return describe(**b);
}

Task<Status> DeviceManager::destroy(std::string name, bool force) {
  if (name.empty()) co_return Status(Errc::kInval, "name: required");
  Bdev* b = registry_.find(name);
  if (!b) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name);
  name = b->name();
  if (auto use = pools_.device_use(name)) {
    if (use->holds_pool) {
      co_return Status::Errorf(Errc::kBusy, "pool '{}' lives on '{}'; export or destroy the pool instead", use->pool,
                               name);
    }
    // Clones are destroyed as replicas.
    const char* kind = use->kind == ObjectKind::kSnapshot ? "snapshot" : "replica";
    co_return Status::Errorf(Errc::kInval, "'{}' is {} '{}' of pool '{}'; destroy it with ternctl {} destroy", name, kind,
                             use->object, use->pool, kind);
  }
  TERN_CO_RETURN_IF_ERROR(co_await shares_.unshare(name));
  Status s = co_await registry_.destroy(name, force);
  if (s.ok()) TLOG_INFO("engine", "device '{}' destroyed", name);
  co_return s;
}

Task<Result<DeviceInfo>> DeviceManager::share(std::string name, ShareProtocol protocol, std::vector<std::string> hosts) {
  Bdev* b = registry_.find(name);
  if (!b) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name);
  name = b->name();
  if (std::optional<ReplicaRef> ref = object_ref(name)) {
    auto r = co_await pools_.share_object(*ref, protocol, hosts);
    if (!r.ok()) co_return r.status();
  } else {
    auto r = co_await shares_.share(name, name, protocol, hosts);
    if (!r.ok()) co_return r.status();
  }
  // Looked up again: sharing awaited, and a device can go meanwhile.
  b = registry_.find(name);
  if (!b) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name);
  co_return describe(*b);
}

Task<Result<DeviceInfo>> DeviceManager::unshare(std::string name) {
  Bdev* b = registry_.find(name);
  if (!b) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name);
  name = b->name();
  if (std::optional<ReplicaRef> ref = object_ref(name)) {
    auto r = co_await pools_.unshare_object(*ref);
    if (!r.ok()) co_return r.status();
  } else {
    TERN_CO_RETURN_IF_ERROR(co_await shares_.unshare(name));
  }
  b = registry_.find(name);
  if (!b) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name);
  co_return describe(*b);
}

// ---------------------------------------------------------------------------------------------------
// Statistics

Task<Result<std::vector<DeviceStats>>> DeviceManager::io_stats(std::string name_filter, bool objects_only) {
  auto objects = pools_.object_devices();
  bool found = false;
  // Names first (devices can go while we await their stats; look each one up again).
  std::vector<std::string> names;
  for (Bdev* b : registry_.list()) {
    if (!name_filter.empty() && b->name() != name_filter && b->props().uuid.ToString() != name_filter) continue;
    found = true;
    if (objects_only && !objects.count(b->name())) continue;
    names.push_back(b->name());
  }
  if (!name_filter.empty() && !found) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name_filter);
  std::vector<DeviceStats> out;
  for (auto& n : names) {
    Bdev* b = registry_.find(n);
    if (!b) continue;
    Uuid uuid = b->props().uuid;
    BdevStats st = co_await b->stats(reactors_);
    out.push_back(DeviceStats{.name = n, .uuid = uuid, .stats = std::move(st)});
  }
  co_return out;
}

Task<Status> DeviceManager::reset_io_stats(std::string name_filter) {
  std::vector<std::string> names;
  for (Bdev* b : registry_.list()) {
    if (name_filter.empty() || b->name() == name_filter || b->props().uuid.ToString() == name_filter) {
      names.push_back(b->name());
    }
  }
  if (!name_filter.empty() && names.empty()) co_return Status::Errorf(Errc::kNoEnt, "no device '{}'", name_filter);
  for (auto& n : names) {
    if (Bdev* b = registry_.find(n)) co_await b->reset_stats(reactors_);
  }
  co_return Status::Ok();
}

Task<std::vector<ReactorLoad>> DeviceManager::reactor_stats() {
  std::vector<ReactorLoad> out;
  for (unsigned r = 0; r < reactors_.size(); ++r) {
    ReactorSet* set = &reactors_;
    ReactorCounters c = co_await reactors_.submit_to(r, [set, r] { return set->reactor(r).counters(); });
    uint64_t now = now_ns();
    uint64_t total = now > c.started_ns ? now - c.started_ns : 0;
    ReactorLoad l;
    l.id = r;
    l.core = uint32_t(reactors_.reactor(r).cpu());
    l.idle_ns = std::min(c.idle_ns, total);
    l.busy_ns = total - l.idle_ns;
    l.polls = c.loops;
    l.sleeps = c.sleeps;
    l.submit_calls = c.submit_calls;
    l.sqes = c.sqes;
    l.completions = c.completions;
    out.push_back(l);
  }
  co_return out;
}

// ---------------------------------------------------------------------------------------------------
// NVMe/TCP

std::vector<nvmf::SubsystemInfo> DeviceManager::subsystems(const std::string& nqn_filter) const {
  std::vector<nvmf::SubsystemInfo> out;
  for (auto& s : target_.list_subsystems()) {
    if (nqn_filter.empty() || s.nqn == nqn_filter) out.push_back(std::move(s));
  }
  return out;
}

std::vector<nvmf::ListenAddr> DeviceManager::listeners() const { return target_.listeners(); }

Status DeviceManager::set_ana_state(const std::string& nqn, const std::string& listener, uint32_t group,
                                   const std::string& state) {
  if (nqn.empty()) return Status(Errc::kInval, "nqn: required");
  nvmf::ListenAddr l = listener_;
  if (!listener.empty()) {
    size_t colon = listener.rfind(':');
    if (colon == std::string::npos) return Status::Errorf(Errc::kInval, "listener: '{}' is not host:port", listener);
    l.host = listener.substr(0, colon);
    if (l.host.size() > 1 && l.host.front() == '[') l.host = l.host.substr(1, l.host.size() - 2);
    try {
      int port = std::stoi(listener.substr(colon + 1));
      if (port <= 0 || port > 65535) throw std::out_of_range("port");
      l.port = uint16_t(port);
    } catch (const std::exception&) {
      return Status::Errorf(Errc::kInval, "listener: '{}' has no valid port", listener);
    }
  }
  auto st = nvmf::parse_ana_state(state);
  if (!st.ok()) return Status::Errorf(Errc::kInval, "state: {}", st.status().message());
  return target_.set_ana_state(nqn, l, group ? group : 1, *st);
}

}  // namespace tern::engine
