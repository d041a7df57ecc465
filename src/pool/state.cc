#include "pool/state.h"

#include <algorithm>
#include <variant>

#include "common/endian.h"
#include "pool/records.h"

namespace tern::pool {
namespace {

uint64_t clusters_for(uint64_t size, uint64_t cluster_size) { return (size + cluster_size - 1) / cluster_size; }

// The object a snapshot or clone record adds: the size of `src`, thin, holding no clusters yet.
ReplicaMeta derived_object(const ReplicaMeta& src, const Uuid& uuid, std::string name, uint64_t created_ns) {
  ReplicaMeta m;
  m.uuid = uuid;
  m.name = std::move(name);
  m.size = src.size;
  m.thin = true;
  m.created_ns = created_ns;
  m.source = src.uuid;
  m.map.assign(src.map.size(), ReplicaMeta::kInherit);
  return m;
}

}  // namespace

uint64_t ReplicaMeta::allocated_clusters() const {
  uint64_t n = 0;
  for (uint32_t m : map) n += owned(m);
  return n;
}

PoolState::PoolState(uint64_t data_clusters, uint64_t cluster_size)
    : cluster_size_(cluster_size), owner_(data_clusters, 0), free_(data_clusters) {}

std::vector<uint8_t> PoolState::CreateReplicaRecord(const ReplicaMeta& r) { return EncodeObjectRecord(r); }

std::vector<uint8_t> PoolState::DestroyReplicaRecord(const Uuid& uuid) { return EncodeRecord(records::Destroy{uuid}); }

std::vector<uint8_t> PoolState::MapClusterRecord(const Uuid& uuid, uint32_t vc, uint32_t pc) {
  return EncodeRecord(records::MapCluster{uuid, vc, pc});
}

std::vector<uint8_t> PoolState::UnmapClusterRecord(const Uuid& uuid, uint32_t vc) {
  return EncodeRecord(records::UnmapCluster{uuid, vc});
}

std::vector<uint8_t> PoolState::SnapshotRecord(const Uuid& uuid, const Uuid& snap, const std::string& name,
                                               uint64_t created_ns) {
  return EncodeRecord(records::Snapshot{uuid, snap, created_ns, name});
}

std::vector<uint8_t> PoolState::CloneRecord(const Uuid& snap, const Uuid& clone, const std::string& name,
                                            uint64_t created_ns) {
  return EncodeRecord(records::Clone{snap, clone, created_ns, name});
}

std::vector<uint8_t> PoolState::ResizeRecord(const Uuid& uuid, uint64_t size, const std::vector<uint32_t>& new_clusters) {
  return EncodeRecord(records::Resize{uuid, size, new_clusters});
}

std::vector<uint8_t> PoolState::SetPropertyRecord(const Uuid& uuid, const std::string& key, const std::string& value) {
  return EncodeRecord(records::SetProperty{uuid, key, value});
}

Status PoolState::ValidateProperty(std::string_view key, std::string_view value) {
  if (key.empty() || key.size() > kMaxPropKey) {
    return Status::Errorf(Errc::kInval, "property name '{}' must have 1 to {} characters", key, kMaxPropKey);
  }
  for (char c : key) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-')) {
      return Status::Errorf(Errc::kInval, "property name '{}' contains '{}'; use a-z, 0-9, '.', '_' and '-'", key, c);
    }
  }
  if (value.size() > kMaxPropValue) {
    return Status::Errorf(Errc::kInval, "property '{}': {} bytes; at most {}", key, value.size(), kMaxPropValue);
  }
  return Status::Ok();
}

Status PoolState::add(ReplicaMeta r) {
  const std::string id = r.uuid.ToString();
  if (r.uuid.is_nil()) return Status::Errorf(Errc::kCorruption, "replica '{}' has a nil UUID", r.name);
  if (replicas_.count(r.uuid)) return Status::Errorf(Errc::kCorruption, "replica {} is created twice", id);
  if (find_name(r.name)) return Status::Errorf(Errc::kCorruption, "replica name '{}' is used twice", r.name);
  if (r.size == 0 || r.map.size() != clusters_for(r.size, cluster_size_)) {
    return Status::Errorf(Errc::kCorruption, "replica {}: {} map entries for {} bytes", id, r.map.size(), r.size);
  }
  if (r.discarded && !r.snapshot) return Status::Errorf(Errc::kCorruption, "replica {} is discarded but no snapshot", id);
  if (!r.parent.is_nil()) {
    const ReplicaMeta* p = find(r.parent);
    if (!p || !p->snapshot) {
      return Status::Errorf(Errc::kCorruption, "replica {}: parent {} {}", id, r.parent.ToString(),
                            p ? "is not a snapshot" : "does not exist");
    }
  }
  // Check first, then mark: an error leaves the allocation map untouched.
  std::vector<uint32_t> seen;
  for (size_t i = 0; i < r.map.size(); ++i) {
    const uint32_t m = r.map[i];
    if (m == ReplicaMeta::kZero && r.parent.is_nil()) {
      return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is marked zero but there is no parent", id, i);
    }
    if (!ReplicaMeta::owned(m)) continue;
    if (m > owner_.size()) {
      return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} maps to {}, outside the pool's {} clusters", id,
                            i, m - 1, owner_.size());
    }
    if (owner_[m - 1] == 1) {
      return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} maps to {}, which is already owned", id, i,
                            m - 1);
    }
    seen.push_back(m);
  }
  std::sort(seen.begin(), seen.end());
  if (auto d = std::adjacent_find(seen.begin(), seen.end()); d != seen.end()) {
    return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is listed twice in its map", id, *d - 1);
  }
  for (uint32_t m : seen) {
    if (owner_[m - 1] == 0) --free_;  // a reserved cluster was counted when it was reserved
    owner_[m - 1] = 1;
  }
  replicas_.emplace(r.uuid, std::move(r));
  return Status::Ok();
}

void PoolState::release(uint32_t m) {
  if (!ReplicaMeta::owned(m)) return;
  owner_[m - 1] = 0;
  ++free_;
}

void PoolState::merge_into_child(ReplicaMeta& snap, ReplicaMeta& child) {
  for (size_t vc = 0; vc < child.map.size(); ++vc) {
    if (child.map[vc] != ReplicaMeta::kInherit) continue;
    // The child read this cluster from `snap`: it now holds what `snap` held, or zeros past its end.
    child.map[vc] = vc < snap.map.size() ? snap.map[vc] : ReplicaMeta::kZero;
    if (vc < snap.map.size()) snap.map[vc] = ReplicaMeta::kInherit;  // moved, not freed
  }
  for (uint32_t m : snap.map) release(m);  // what the child had overwritten
  snap.map.clear();
  child.parent = snap.parent;
  if (child.parent.is_nil()) {
    for (uint32_t& m : child.map) {
      if (m == ReplicaMeta::kZero) m = ReplicaMeta::kInherit;  // nothing left to hide
    }
  }
}

Status PoolState::destroy(const Uuid& uuid) {
  auto it = replicas_.find(uuid);
  if (it == replicas_.end()) return Status::Errorf(Errc::kCorruption, "destroy of unknown replica {}", uuid.ToString());
  ReplicaMeta& r = it->second;
  const std::vector<Uuid> kids = children(uuid);
  if (!r.snapshot && !kids.empty()) {
    return Status::Errorf(Errc::kCorruption, "replica {} has children but is no snapshot", uuid.ToString());
  }
  if (kids.size() >= 2) {
    r.discarded = true;
    return Status::Ok();
  }
  const Uuid parent = r.parent;
  if (kids.size() == 1) {
    merge_into_child(r, replicas_.at(kids[0]));
    replicas_.erase(it);
    return Status::Ok();  // the parent's child count is unchanged: the child took this one's place
  }
  for (uint32_t m : r.map) release(m);
  replicas_.erase(it);
  collect(parent);
  return Status::Ok();
}

void PoolState::collect(Uuid parent) {
  while (!parent.is_nil()) {
    auto it = replicas_.find(parent);
    if (it == replicas_.end() || !it->second.discarded) return;
    const std::vector<Uuid> kids = children(parent);
    if (kids.size() >= 2) return;
    ReplicaMeta& p = it->second;
    const Uuid up = p.parent;
    if (kids.size() == 1) {
      merge_into_child(p, replicas_.at(kids[0]));
      replicas_.erase(it);
      return;
    }
    for (uint32_t m : p.map) release(m);
    replicas_.erase(it);
    parent = up;
  }
}

Status PoolState::Apply(std::span<const uint8_t> record) {
  auto decoded = DecodeRecord(record);
  if (!decoded.ok()) return decoded.status();
  return std::visit([this](auto&& r) { return apply(std::move(r)); }, std::move(*decoded));
}

Status PoolState::apply(records::CreateObject&& r) { return add(std::move(r.object)); }

Status PoolState::apply(const records::Destroy& r) { return destroy(r.uuid); }

Status PoolState::apply(const records::MapCluster& rec) {
  const Uuid& u = rec.uuid;
  const uint32_t vc = rec.vc, pc = rec.pc;
  auto it = replicas_.find(u);
  if (it == replicas_.end()) {
    return Status::Errorf(Errc::kCorruption, "cluster map record for unknown replica {}", u.ToString());
  }
  ReplicaMeta& r = it->second;
  if (r.snapshot) return Status::Errorf(Errc::kCorruption, "cluster map record for snapshot {}", u.ToString());
  if (vc >= r.map.size()) {
    return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is beyond its {} clusters", u.ToString(), vc,
                          r.map.size());
  }
  if (ReplicaMeta::owned(r.map[vc])) {
    return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is mapped twice", u.ToString(), vc);
  }
  if (pc >= owner_.size() || owner_[pc] == 1) {
    return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} maps to {}, which is {}", u.ToString(), vc, pc,
                          pc >= owner_.size() ? "outside the pool" : "already owned");
  }
  if (owner_[pc] == 0) --free_;  // a reserved cluster was counted when it was reserved
  owner_[pc] = 1;
  r.map[vc] = pc + 1;
  return Status::Ok();
}

Status PoolState::apply(const records::UnmapCluster& rec) {
  const Uuid& u = rec.uuid;
  const uint32_t vc = rec.vc;
  auto it = replicas_.find(u);
  if (it == replicas_.end()) {
    return Status::Errorf(Errc::kCorruption, "cluster map record for unknown replica {}", u.ToString());
  }
  ReplicaMeta& r = it->second;
  if (r.snapshot) return Status::Errorf(Errc::kCorruption, "cluster map record for snapshot {}", u.ToString());
  if (vc >= r.map.size()) {
    return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is beyond its {} clusters", u.ToString(), vc,
                          r.map.size());
  }
  release(r.map[vc]);
  r.map[vc] = r.parent.is_nil() ? ReplicaMeta::kInherit : ReplicaMeta::kZero;
  return Status::Ok();
}

Status PoolState::apply(records::Snapshot&& rec) {
  auto it = replicas_.find(rec.replica);
  if (it == replicas_.end()) {
    return Status::Errorf(Errc::kCorruption, "snapshot of unknown replica {}", rec.replica.ToString());
  }
  const ReplicaMeta& src = it->second;
  if (src.snapshot) return Status::Errorf(Errc::kCorruption, "snapshot of snapshot {}", rec.replica.ToString());
  ReplicaMeta m = derived_object(src, rec.snapshot, std::move(rec.name), rec.created_ns);
  m.snapshot = true;
  m.parent = src.parent;
  // The snapshot is added holding no clusters, then takes the replica's: nothing is owned twice.
  TERN_RETURN_IF_ERROR(add(std::move(m)));
  ReplicaMeta& s = replicas_.at(rec.snapshot);
  ReplicaMeta& r = replicas_.at(rec.replica);
  s.map.swap(r.map);
  r.parent = rec.snapshot;
  return Status::Ok();
}

Status PoolState::apply(records::Clone&& rec) {
  auto it = replicas_.find(rec.snapshot);
  if (it == replicas_.end()) {
    return Status::Errorf(Errc::kCorruption, "clone of unknown replica {}", rec.snapshot.ToString());
  }
  const ReplicaMeta& src = it->second;
  if (!src.snapshot || src.discarded) {
    return Status::Errorf(Errc::kCorruption, "clone of {} {}", rec.snapshot.ToString(),
                          src.snapshot ? "a discarded snapshot" : "a replica that is no snapshot");
  }
  ReplicaMeta m = derived_object(src, rec.clone, std::move(rec.name), rec.created_ns);
  m.parent = rec.snapshot;
  return add(std::move(m));
}

Status PoolState::apply(const records::Resize& rec) {
  const Uuid& u = rec.uuid;
  const uint64_t size = rec.size;
  const std::vector<uint32_t>& pcs = rec.new_clusters;
  const size_t n = pcs.size();
  auto it = replicas_.find(u);
  if (it == replicas_.end() || it->second.snapshot || size == 0 || size % 4096) {
    return Status::Errorf(Errc::kCorruption, "resize of {} to {} bytes: {}", u.ToString(), size,
                          it == replicas_.end() ? "no such replica"
                          : it->second.snapshot ? "a snapshot"
                                                : "bad size");
  }
  ReplicaMeta& r = it->second;
  const size_t old = r.map.size(), now = clusters_for(size, cluster_size_);
  if (n != 0 && n != (now > old ? now - old : 0)) {
    return Status::Errorf(Errc::kCorruption, "resize of {}: {} new clusters for {} more", u.ToString(), n,
                          now > old ? now - old : 0);
  }
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < i; ++j) {
      if (pcs[i] == pcs[j]) {
        return Status::Errorf(Errc::kCorruption, "resize of {}: cluster {} given twice", u.ToString(), pcs[i]);
      }
    }
    if (pcs[i] >= owner_.size() || owner_[pcs[i]] == 1) {
      return Status::Errorf(Errc::kCorruption, "resize of {}: cluster {} is {}", u.ToString(), pcs[i],
                            pcs[i] >= owner_.size() ? "outside the pool" : "already owned");
    }
  }
  for (size_t vc = now; vc < old; ++vc) release(r.map[vc]);
  // Grown clusters hide whatever the parent holds there (it may be larger than a shrunk replica).
  r.map.resize(now, r.parent.is_nil() ? ReplicaMeta::kInherit : ReplicaMeta::kZero);
  for (size_t i = 0; i < n; ++i) {
    if (owner_[pcs[i]] == 0) --free_;
    owner_[pcs[i]] = 1;
    r.map[old + i] = pcs[i] + 1;
  }
  r.size = size;
  return Status::Ok();
}

Status PoolState::apply(records::SetProperty&& rec) {
  const Uuid& u = rec.uuid;
  auto it = replicas_.find(u);
  if (it == replicas_.end()) {
    return Status::Errorf(Errc::kCorruption, "property record for unknown replica {}", u.ToString());
  }
  if (Status s = ValidateProperty(rec.key, rec.value); !s.ok()) {
    return Status::Errorf(Errc::kCorruption, "property record: {}", s.message());
  }
  std::map<std::string, std::string> next = it->second.props;
  if (rec.value.empty()) {
    next.erase(rec.key);
  } else {
    next[rec.key] = std::move(rec.value);
  }
  uint64_t bytes = 0;
  for (auto& [pk, pv] : next) bytes += pk.size() + pv.size();
  if (bytes > kMaxPropBytes) {
    return Status::Errorf(Errc::kCorruption, "replica {}: properties exceed {} bytes", u.ToString(), kMaxPropBytes);
  }
  it->second.props = std::move(next);
  return Status::Ok();
}

namespace {
void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  out.resize(out.size() + 4);
  store_le<uint32_t>(out.data() + out.size() - 4, v);
}
}  // namespace

std::vector<uint8_t> PoolState::Serialize() const {
  std::vector<uint8_t> out;
  out.reserve(checkpoint_bytes());
  put_u32(out, 1);  // version
  put_u32(out, uint32_t(replicas_.size()));
  // Parents first, so that Load can check every parent link as it goes.
  std::map<Uuid, bool> done;
  for (auto& [id, r] : replicas_) {
    std::vector<const ReplicaMeta*> chain;
    for (const ReplicaMeta* x = &r; x && !done[x->uuid]; x = x->parent.is_nil() ? nullptr : find(x->parent)) {
      chain.push_back(x);
    }
    for (auto c = chain.rbegin(); c != chain.rend(); ++c) {
      done[(*c)->uuid] = true;
      const std::vector<uint8_t> entry = EncodeObjectRecord(**c);
      put_u32(out, uint32_t(entry.size()));
      out.insert(out.end(), entry.begin(), entry.end());
    }
  }
  return out;
}

void PoolState::clear() {
  replicas_.clear();
  std::fill(owner_.begin(), owner_.end(), 0);
  free_ = owner_.size();
}

Status PoolState::Load(std::span<const uint8_t> body) {
  clear();
  if (body.empty()) return Status::Ok();  // a new pool's first checkpoint
  // version(4) count(4), then per object its length(4) and a create-object record.
  if (body.size() < 8) return Status::Errorf(Errc::kCorruption, "truncated checkpoint body");
  const uint32_t version = load_le<uint32_t>(body.data()), count = load_le<uint32_t>(body.data() + 4);
  if (version != 1) return Status::Errorf(Errc::kCorruption, "checkpoint body version {} is unknown", version);
  size_t at = 8;
  for (uint32_t i = 0; i < count; ++i) {
    const uint32_t len = body.size() - at >= 4 ? load_le<uint32_t>(body.data() + at) : 0;
    if (body.size() - at < 4 || len > body.size() - at - 4) {
      clear();
      return Status::Errorf(Errc::kCorruption, "checkpoint body: replica {} of {} is truncated", i + 1, count);
    }
    const std::span<const uint8_t> entry = body.subspan(at + 4, len);
    at += 4 + len;
    Status s = entry.empty() || entry[0] != records::CreateObject::kType
                   ? Status::Errorf(Errc::kCorruption, "entry {} is not a replica", i + 1)
                   : Apply(entry);
    if (!s.ok()) {
      clear();
      return Status::Errorf(Errc::kCorruption, "checkpoint body: {}", s.message());
    }
  }
  if (at != body.size()) {
    clear();
    return Status::Errorf(Errc::kCorruption, "checkpoint body has trailing bytes");
  }
  return Status::Ok();
}

Result<std::vector<uint32_t>> PoolState::pick_free(uint64_t n) const {
  if (n > free_) {
    return Status::Errorf(Errc::kNoSpc, "{} free cluster(s), {} needed", free_, n);
  }
  std::vector<uint32_t> out;
  out.reserve(n);
  for (uint32_t c = 0; c < owner_.size() && out.size() < n; ++c) {
    if (!owner_[c]) out.push_back(c);
  }
  return out;
}

void PoolState::reserve(uint32_t pc) {
  if (pc < owner_.size() && owner_[pc] == 0) {
    owner_[pc] = 2;
    --free_;
  }
}

void PoolState::unreserve(uint32_t pc) {
  if (pc < owner_.size() && owner_[pc] == 2) {
    owner_[pc] = 0;
    ++free_;
  }
}

void PoolState::grow(uint64_t data_clusters) {
  if (data_clusters <= owner_.size()) return;
  free_ += data_clusters - owner_.size();
  owner_.resize(data_clusters, 0);
}

const ReplicaMeta* PoolState::find(const Uuid& uuid) const {
  auto it = replicas_.find(uuid);
  return it == replicas_.end() ? nullptr : &it->second;
}

const ReplicaMeta* PoolState::find_name(std::string_view name) const {
  for (auto& [id, r] : replicas_) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

std::vector<Uuid> PoolState::children(const Uuid& uuid) const {
  std::vector<Uuid> out;
  for (auto& [id, r] : replicas_) {
    if (r.parent == uuid) out.push_back(id);
  }
  return out;
}

uint32_t PoolState::resolve(const Uuid& uuid, uint64_t vc) const {
  bool inherited = false;
  for (const ReplicaMeta* r = find(uuid); r; r = r->parent.is_nil() ? nullptr : find(r->parent)) {
    if (vc >= r->map.size()) return 0;
    const uint32_t m = r->map[vc];
    if (m == ReplicaMeta::kZero) return 0;
    if (m != ReplicaMeta::kInherit) return inherited ? (m | kInheritedBit) : m;
    inherited = true;
  }
  return 0;
}

std::vector<uint32_t> PoolState::resolve_all(const Uuid& uuid) const {
  const ReplicaMeta* r = find(uuid);
  std::vector<uint32_t> out(r ? r->map.size() : 0);
  for (size_t vc = 0; vc < out.size(); ++vc) out[vc] = resolve(uuid, vc);
  return out;
}

PoolState::Space PoolState::space(const Uuid& uuid) const {
  Space sp;
  const ReplicaMeta* r = find(uuid);
  if (!r) return sp;
  const std::vector<Uuid> kids = children(uuid);
  for (size_t vc = 0; vc < r->map.size(); ++vc) {
    sp.readable += resolve(uuid, vc) != 0;
    if (!ReplicaMeta::owned(r->map[vc])) continue;
    ++sp.owned;
    bool read_by_child = false;
    for (const Uuid& k : kids) {
      const ReplicaMeta* c = find(k);
      read_by_child |= vc < c->map.size() && c->map[vc] == ReplicaMeta::kInherit;
    }
    sp.exclusive += !read_by_child;
  }
  return sp;
}

uint64_t PoolState::checkpoint_bytes() const {
  uint64_t n = 8;  // version, count
  for (auto& [id, r] : replicas_) {
    // length prefix + the create-object record (see EncodeObjectRecord in records.cc)
    n += 4 + 1 + 16 + 1 + r.name.size() + 8 + 1 + 8 + 1 + 16 + 16 + 4 + 4 * uint64_t(r.map.size()) + 2;
    for (auto& [k, v] : r.props) n += 1 + k.size() + 2 + v.size();
  }
  return n;
}

uint64_t PoolState::committed_bytes() const {
  uint64_t n = 0;
  for (auto& [id, r] : replicas_) n += r.snapshot ? 0 : r.size;
  return n;
}

}  // namespace tern::pool
