#include "pool/state.h"

#include <algorithm>
#include <cstring>

#include "common/endian.h"

namespace tern::pool {
namespace {

// Record types (first byte). Record layouts, little-endian (docs/design/pool-format.md):
//   kCreateReplica: type(1) uuid(16) name_len(1) name size(8) thin(1) created_ns(8) flags(1: 1 snapshot,
//                   2 discarded) parent(16) source(16) map_len(4) map(4 each)
//   kDestroyReplica: type(1) uuid(16)
//   kMapCluster: type(1) uuid(16) vc(4) pc(4);  kUnmapCluster: type(1) uuid(16) vc(4)
//   kSnapshot: type(1) replica(16) snapshot(16) created_ns(8) name_len(1) name
//   kClone: type(1) snapshot(16) clone(16) created_ns(8) name_len(1) name
//   kResize: type(1) uuid(16) size(8) count(4) new clusters(4 each)
//   kSetProperty: type(1) uuid(16) key_len(1) key value_len(2) value (empty value: remove)
// kCreateReplica ends with: prop_count(2), then per property key_len(1) key value_len(2) value.
// Checkpoint body: version(4)=1 replica_count(4), then each object as a kCreateReplica record prefixed
// by its length(4), parents before their children.
enum : uint8_t {
  kCreateReplica = 1,
  kDestroyReplica = 2,
  kMapCluster = 3,
  kUnmapCluster = 4,
  kSnapshot = 5,
  kClone = 6,
  kResize = 7,
  kSetProperty = 8
};

class Writer {
 public:
  void u8(uint8_t v) { b_.push_back(v); }
  void u16(uint16_t v) { put(v); }
  void u32(uint32_t v) { put(v); }
  void u64(uint64_t v) { put(v); }
  void bytes(const void* p, size_t n) {
    auto* c = static_cast<const uint8_t*>(p);
    b_.insert(b_.end(), c, c + n);
  }
  std::vector<uint8_t> take() { return std::move(b_); }

 private:
  template <typename T>
  void put(T v) {
    b_.resize(b_.size() + sizeof(T));
    store_le<T>(b_.data() + b_.size() - sizeof(T), v);
  }
  std::vector<uint8_t> b_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> s) : s_(s) {}
  bool u8(uint8_t& v) { return get(&v, 1); }
  bool u16(uint16_t& v) { return take(v); }
  bool u32(uint32_t& v) { return take(v); }
  bool u64(uint64_t& v) { return take(v); }
  bool get(void* p, size_t n) {
    if (n > s_.size() - at_) return false;
    std::memcpy(p, s_.data() + at_, n);
    at_ += n;
    return true;
  }
  bool done() const { return at_ == s_.size(); }
  size_t left() const { return s_.size() - at_; }

 private:
  template <typename T>
  bool take(T& v) {
    uint8_t b[sizeof(T)];
    if (!get(b, sizeof(T))) return false;
    v = load_le<T>(b);
    return true;
  }
  std::span<const uint8_t> s_;
  size_t at_ = 0;
};

void write_uuid(Writer& w, const Uuid& u) { w.bytes(u.bytes().data(), 16); }

bool read_uuid(Reader& rd, Uuid& u) {
  std::array<uint8_t, 16> b;
  if (!rd.get(b.data(), 16)) return false;
  u = Uuid(b);
  return true;
}

void write_replica(Writer& w, const ReplicaMeta& r) {
  w.u8(kCreateReplica);
  write_uuid(w, r.uuid);
  w.u8(uint8_t(r.name.size()));
  w.bytes(r.name.data(), r.name.size());
  w.u64(r.size);
  w.u8(r.thin ? 1 : 0);
  w.u64(r.created_ns);
  w.u8(uint8_t((r.snapshot ? 1 : 0) | (r.discarded ? 2 : 0)));
  write_uuid(w, r.parent);
  write_uuid(w, r.source);
  w.u32(uint32_t(r.map.size()));
  for (uint32_t m : r.map) w.u32(m);
  w.u16(uint16_t(r.props.size()));
  for (auto& [k, v] : r.props) {
    w.u8(uint8_t(k.size()));
    w.bytes(k.data(), k.size());
    w.u16(uint16_t(v.size()));
    w.bytes(v.data(), v.size());
  }
}

bool read_prop(Reader& rd, std::string& k, std::string& v) {
  uint8_t kl = 0;
  uint16_t vl = 0;
  if (!rd.u8(kl)) return false;
  k.resize(kl);
  if (!rd.get(k.data(), kl) || !rd.u16(vl)) return false;
  v.resize(vl);
  return rd.get(v.data(), vl);
}

Result<ReplicaMeta> read_replica_body(Reader& rd) {
  ReplicaMeta r;
  uint8_t name_len = 0, thin = 0, flags = 0;
  uint32_t n = 0;
  if (!read_uuid(rd, r.uuid) || !rd.u8(name_len)) return Status::Errorf(Errc::kCorruption, "truncated replica record");
  r.name.resize(name_len);
  if (!rd.get(r.name.data(), name_len) || !rd.u64(r.size) || !rd.u8(thin) || !rd.u64(r.created_ns) || !rd.u8(flags) ||
      !read_uuid(rd, r.parent) || !read_uuid(rd, r.source) || !rd.u32(n) || uint64_t(n) * 4 > rd.left()) {
    return Status::Errorf(Errc::kCorruption, "truncated replica record");
  }
  if (flags & ~3u) return Status::Errorf(Errc::kCorruption, "replica record has unknown flags {:#x}", flags);
  r.thin = thin != 0;
  r.snapshot = flags & 1;
  r.discarded = flags & 2;
  r.map.resize(n);
  for (uint32_t i = 0; i < n; ++i) rd.u32(r.map[i]);
  uint16_t np = 0;
  if (!rd.u16(np)) return Status::Errorf(Errc::kCorruption, "truncated replica record");
  for (uint16_t i = 0; i < np; ++i) {
    std::string k, v;
    if (!read_prop(rd, k, v)) return Status::Errorf(Errc::kCorruption, "truncated replica record");
    TERN_RETURN_IF_ERROR(PoolState::ValidateProperty(k, v));
    r.props[k] = std::move(v);
  }
  return r;
}

// Snapshot and clone records share a layout: source(16) new(16) created_ns(8) name_len(1) name.
std::vector<uint8_t> derive_record(uint8_t type, const Uuid& from, const Uuid& made, const std::string& name,
                                   uint64_t created_ns) {
  Writer w;
  w.u8(type);
  write_uuid(w, from);
  write_uuid(w, made);
  w.u64(created_ns);
  w.u8(uint8_t(name.size()));
  w.bytes(name.data(), name.size());
  return w.take();
}

uint64_t clusters_for(uint64_t size, uint64_t cluster_size) { return (size + cluster_size - 1) / cluster_size; }

}  // namespace

uint64_t ReplicaMeta::allocated_clusters() const {
  uint64_t n = 0;
  for (uint32_t m : map) n += owned(m);
  return n;
}

PoolState::PoolState(uint64_t data_clusters, uint64_t cluster_size)
    : cluster_size_(cluster_size), owner_(data_clusters, 0), free_(data_clusters) {}

std::vector<uint8_t> PoolState::CreateReplicaRecord(const ReplicaMeta& r) {
  Writer w;
  write_replica(w, r);
  return w.take();
}

std::vector<uint8_t> PoolState::DestroyReplicaRecord(const Uuid& uuid) {
  Writer w;
  w.u8(kDestroyReplica);
  write_uuid(w, uuid);
  return w.take();
}

std::vector<uint8_t> PoolState::MapClusterRecord(const Uuid& uuid, uint32_t vc, uint32_t pc) {
  Writer w;
  w.u8(kMapCluster);
  write_uuid(w, uuid);
  w.u32(vc);
  w.u32(pc);
  return w.take();
}

std::vector<uint8_t> PoolState::UnmapClusterRecord(const Uuid& uuid, uint32_t vc) {
  Writer w;
  w.u8(kUnmapCluster);
  write_uuid(w, uuid);
  w.u32(vc);
  return w.take();
}

std::vector<uint8_t> PoolState::SnapshotRecord(const Uuid& uuid, const Uuid& snap, const std::string& name,
                                               uint64_t created_ns) {
  return derive_record(kSnapshot, uuid, snap, name, created_ns);
}

std::vector<uint8_t> PoolState::CloneRecord(const Uuid& snap, const Uuid& clone, const std::string& name,
                                            uint64_t created_ns) {
  return derive_record(kClone, snap, clone, name, created_ns);
}

std::vector<uint8_t> PoolState::ResizeRecord(const Uuid& uuid, uint64_t size, const std::vector<uint32_t>& new_clusters) {
  Writer w;
  w.u8(kResize);
  write_uuid(w, uuid);
  w.u64(size);
  w.u32(uint32_t(new_clusters.size()));
  for (uint32_t pc : new_clusters) w.u32(pc);
  return w.take();
}

std::vector<uint8_t> PoolState::SetPropertyRecord(const Uuid& uuid, const std::string& key, const std::string& value) {
  Writer w;
  w.u8(kSetProperty);
  write_uuid(w, uuid);
  w.u8(uint8_t(key.size()));
  w.bytes(key.data(), key.size());
  w.u16(uint16_t(value.size()));
  w.bytes(value.data(), value.size());
  return w.take();
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
  Reader rd(record);
  uint8_t type = 0;
  if (!rd.u8(type)) return Status::Errorf(Errc::kCorruption, "empty metadata record");
  switch (type) {
    case kCreateReplica: {
      auto r = read_replica_body(rd);
      if (!r.ok()) return r.status();
      if (!rd.done()) return Status::Errorf(Errc::kCorruption, "replica record has trailing bytes");
      return add(std::move(*r));
    }
    case kDestroyReplica: {
      Uuid u;
      if (!read_uuid(rd, u) || !rd.done()) return Status::Errorf(Errc::kCorruption, "bad destroy record");
      return destroy(u);
    }
    case kMapCluster:
    case kUnmapCluster: {
      Uuid u;
      uint32_t vc = 0, pc = 0;
      if (!read_uuid(rd, u) || !rd.u32(vc) || (type == kMapCluster && !rd.u32(pc)) || !rd.done()) {
        return Status::Errorf(Errc::kCorruption, "bad cluster map record");
      }
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
      if (type == kUnmapCluster) {
        release(r.map[vc]);
        r.map[vc] = r.parent.is_nil() ? ReplicaMeta::kInherit : ReplicaMeta::kZero;
        return Status::Ok();
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
    case kSnapshot:
    case kClone: {
      Uuid from, made;
      uint64_t created = 0;
      uint8_t name_len = 0;
      std::string name;
      if (!read_uuid(rd, from) || !read_uuid(rd, made) || !rd.u64(created) || !rd.u8(name_len)) {
        return Status::Errorf(Errc::kCorruption, "bad snapshot/clone record");
      }
      name.resize(name_len);
      if (!rd.get(name.data(), name_len) || !rd.done()) {
        return Status::Errorf(Errc::kCorruption, "bad snapshot/clone record");
      }
      auto it = replicas_.find(from);
      if (it == replicas_.end()) {
        return Status::Errorf(Errc::kCorruption, "{} of unknown replica {}", type == kSnapshot ? "snapshot" : "clone",
                              from.ToString());
      }
      ReplicaMeta& src = it->second;
      ReplicaMeta m;
      m.uuid = made;
      m.name = std::move(name);
      m.size = src.size;
      m.thin = true;
      m.created_ns = created;
      m.source = from;
      if (type == kClone) {
        if (!src.snapshot || src.discarded) {
          return Status::Errorf(Errc::kCorruption, "clone of {} {}", from.ToString(),
                                src.snapshot ? "a discarded snapshot" : "a replica that is no snapshot");
        }
        m.parent = from;
        m.map.assign(src.map.size(), ReplicaMeta::kInherit);
        return add(std::move(m));
      }
      if (src.snapshot) return Status::Errorf(Errc::kCorruption, "snapshot of snapshot {}", from.ToString());
      m.snapshot = true;
      m.parent = src.parent;
      // The snapshot is added holding no clusters, then takes the replica's: nothing is owned twice.
      m.map.assign(src.map.size(), ReplicaMeta::kInherit);
      TERN_RETURN_IF_ERROR(add(std::move(m)));
      ReplicaMeta& s = replicas_.at(made);
      ReplicaMeta& r = replicas_.at(from);
      s.map.swap(r.map);
      r.parent = made;
      return Status::Ok();
    }
    case kResize: {
      Uuid u;
      uint64_t size = 0;
      uint32_t n = 0;
      if (!read_uuid(rd, u) || !rd.u64(size) || !rd.u32(n) || uint64_t(n) * 4 != rd.left()) {
        return Status::Errorf(Errc::kCorruption, "bad resize record");
      }
      std::vector<uint32_t> pcs(n);
      for (uint32_t& pc : pcs) rd.u32(pc);
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
          if (pcs[i] == pcs[j]) return Status::Errorf(Errc::kCorruption, "resize of {}: cluster {} given twice",
                                                      u.ToString(), pcs[i]);
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
    case kSetProperty: {
      Uuid u;
      std::string k, v;
      if (!read_uuid(rd, u) || !read_prop(rd, k, v) || !rd.done()) {
        return Status::Errorf(Errc::kCorruption, "bad property record");
      }
      auto it = replicas_.find(u);
      if (it == replicas_.end()) {
        return Status::Errorf(Errc::kCorruption, "property record for unknown replica {}", u.ToString());
      }
      if (Status s = ValidateProperty(k, v); !s.ok()) {
        return Status::Errorf(Errc::kCorruption, "property record: {}", s.message());
      }
      std::map<std::string, std::string> next = it->second.props;
      if (v.empty()) {
        next.erase(k);
      } else {
        next[k] = std::move(v);
      }
      uint64_t bytes = 0;
      for (auto& [pk, pv] : next) bytes += pk.size() + pv.size();
      if (bytes > kMaxPropBytes) {
        return Status::Errorf(Errc::kCorruption, "replica {}: properties exceed {} bytes", u.ToString(), kMaxPropBytes);
      }
      it->second.props = std::move(next);
      return Status::Ok();
    }
    default:
      return Status::Errorf(Errc::kCorruption, "unknown metadata record type {}", type);
  }
}

std::vector<uint8_t> PoolState::Serialize() const {
  Writer w;
  w.u32(1);
  w.u32(uint32_t(replicas_.size()));
  // Parents first, so that Load can check every parent link as it goes.
  std::map<Uuid, bool> done;
  for (auto& [id, r] : replicas_) {
    std::vector<const ReplicaMeta*> chain;
    for (const ReplicaMeta* x = &r; x && !done[x->uuid]; x = x->parent.is_nil() ? nullptr : find(x->parent)) {
      chain.push_back(x);
    }
    for (auto c = chain.rbegin(); c != chain.rend(); ++c) {
      done[(*c)->uuid] = true;
      std::vector<uint8_t> rec = CreateReplicaRecord(**c);
      w.u32(uint32_t(rec.size()));
      w.bytes(rec.data(), rec.size());
    }
  }
  return w.take();
}

void PoolState::clear() {
  replicas_.clear();
  std::fill(owner_.begin(), owner_.end(), 0);
  free_ = owner_.size();
}

Status PoolState::Load(std::span<const uint8_t> body) {
  clear();
  if (body.empty()) return Status::Ok();  // a new pool's first checkpoint
  Reader rd(body);
  uint32_t version = 0, count = 0;
  if (!rd.u32(version) || !rd.u32(count)) return Status::Errorf(Errc::kCorruption, "truncated checkpoint body");
  if (version != 1) return Status::Errorf(Errc::kCorruption, "checkpoint body version {} is unknown", version);
  for (uint32_t i = 0; i < count; ++i) {
    uint32_t len = 0;
    if (!rd.u32(len) || len > rd.left()) {
      clear();
      return Status::Errorf(Errc::kCorruption, "checkpoint body: replica {} of {} is truncated", i + 1, count);
    }
    std::vector<uint8_t> rec(len);
    rd.get(rec.data(), len);
    Status s = rec.empty() || rec[0] != kCreateReplica
                   ? Status::Errorf(Errc::kCorruption, "entry {} is not a replica", i + 1)
                   : Apply(rec);
    if (!s.ok()) {
      clear();
      return Status::Errorf(Errc::kCorruption, "checkpoint body: {}", s.message());
    }
  }
  if (!rd.done()) {
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
    // length prefix + the type-1 record (see write_replica)
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
