#include "pool/state.h"

#include <cstring>

#include "common/endian.h"

namespace tern::pool {
namespace {

// Record types (first byte). Record layouts, little-endian:
//   kCreateReplica: type(1) uuid(16) name_len(1) name size(8) thin(1) created_ns(8) map_len(4) map(4 each)
//   kDestroyReplica: type(1) uuid(16)
//   kMapCluster: type(1) uuid(16) vc(4) pc(4);  kUnmapCluster: type(1) uuid(16) vc(4)
// Checkpoint body: version(4)=1 replica_count(4), then each replica as a kCreateReplica record prefixed
// by its length(4).
enum : uint8_t { kCreateReplica = 1, kDestroyReplica = 2, kMapCluster = 3, kUnmapCluster = 4 };

class Writer {
 public:
  void u8(uint8_t v) { b_.push_back(v); }
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

void write_replica(Writer& w, const ReplicaMeta& r) {
  w.u8(kCreateReplica);
  w.bytes(r.uuid.bytes().data(), 16);
  w.u8(uint8_t(r.name.size()));
  w.bytes(r.name.data(), r.name.size());
  w.u64(r.size);
  w.u8(r.thin ? 1 : 0);
  w.u64(r.created_ns);
  w.u32(uint32_t(r.map.size()));
  for (uint32_t m : r.map) w.u32(m);
}

Result<ReplicaMeta> read_replica_body(Reader& rd) {
  ReplicaMeta r;
  std::array<uint8_t, 16> u;
  uint8_t name_len = 0, thin = 0;
  uint32_t n = 0;
  if (!rd.get(u.data(), 16) || !rd.u8(name_len)) return Status::Errorf(Errc::kCorruption, "truncated replica record");
  r.uuid = Uuid(u);
  r.name.resize(name_len);
  if (!rd.get(r.name.data(), name_len) || !rd.u64(r.size) || !rd.u8(thin) || !rd.u64(r.created_ns) || !rd.u32(n) ||
      uint64_t(n) * 4 > rd.left()) {
    return Status::Errorf(Errc::kCorruption, "truncated replica record");
  }
  r.thin = thin != 0;
  r.map.resize(n);
  for (uint32_t i = 0; i < n; ++i) rd.u32(r.map[i]);
  return r;
}

}  // namespace

uint64_t ReplicaMeta::allocated_clusters() const {
  uint64_t n = 0;
  for (uint32_t m : map) n += m != 0;
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
  w.bytes(uuid.bytes().data(), 16);
  return w.take();
}

std::vector<uint8_t> PoolState::MapClusterRecord(const Uuid& uuid, uint32_t vc, uint32_t pc) {
  Writer w;
  w.u8(kMapCluster);
  w.bytes(uuid.bytes().data(), 16);
  w.u32(vc);
  w.u32(pc);
  return w.take();
}

std::vector<uint8_t> PoolState::UnmapClusterRecord(const Uuid& uuid, uint32_t vc) {
  Writer w;
  w.u8(kUnmapCluster);
  w.bytes(uuid.bytes().data(), 16);
  w.u32(vc);
  return w.take();
}

Status PoolState::add(ReplicaMeta r) {
  if (r.uuid.is_nil()) return Status::Errorf(Errc::kCorruption, "replica '{}' has a nil UUID", r.name);
  if (replicas_.count(r.uuid)) {
    return Status::Errorf(Errc::kCorruption, "replica {} is created twice", r.uuid.ToString());
  }
  if (find_name(r.name)) return Status::Errorf(Errc::kCorruption, "replica name '{}' is used twice", r.name);
  const uint64_t clusters = (r.size + cluster_size_ - 1) / cluster_size_;
  if (r.size == 0 || r.map.size() != clusters) {
    return Status::Errorf(Errc::kCorruption, "replica {}: {} map entries for {} bytes", r.uuid.ToString(),
                          r.map.size(), r.size);
  }
  for (size_t i = 0; i < r.map.size(); ++i) {
    const uint32_t m = r.map[i];
    if (m == 0) continue;
    if (m > owner_.size()) {
      return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} maps to {}, outside the pool's {} clusters",
                            r.uuid.ToString(), i, m - 1, owner_.size());
    }
    // Also catches a cluster listed twice in this map: the first listing marks it.
    if (owner_[m - 1]) {
      for (size_t j = 0; j < i; ++j) {
        if (r.map[j]) owner_[r.map[j] - 1] = 0;  // undo this replica's marks
      }
      return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is already owned", r.uuid.ToString(), m - 1);
    }
    owner_[m - 1] = 1;
  }
  free_ -= r.allocated_clusters();
  replicas_.emplace(r.uuid, std::move(r));
  return Status::Ok();
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
      std::array<uint8_t, 16> u;
      if (!rd.get(u.data(), 16) || !rd.done()) return Status::Errorf(Errc::kCorruption, "bad destroy record");
      auto it = replicas_.find(Uuid(u));
      if (it == replicas_.end()) {
        return Status::Errorf(Errc::kCorruption, "destroy of unknown replica {}", Uuid(u).ToString());
      }
      for (uint32_t m : it->second.map) {
        if (m) owner_[m - 1] = 0;
      }
      free_ += it->second.allocated_clusters();
      replicas_.erase(it);
      return Status::Ok();
    }
    case kMapCluster:
    case kUnmapCluster: {
      std::array<uint8_t, 16> u;
      uint32_t vc = 0, pc = 0;
      if (!rd.get(u.data(), 16) || !rd.u32(vc) || (type == kMapCluster && !rd.u32(pc)) || !rd.done()) {
        return Status::Errorf(Errc::kCorruption, "bad cluster map record");
      }
      auto it = replicas_.find(Uuid(u));
      if (it == replicas_.end()) {
        return Status::Errorf(Errc::kCorruption, "cluster map record for unknown replica {}", Uuid(u).ToString());
      }
      ReplicaMeta& r = it->second;
      if (vc >= r.map.size()) {
        return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is beyond its {} clusters", r.uuid.ToString(),
                              vc, r.map.size());
      }
      if (type == kUnmapCluster) {
        if (r.map[vc] == 0) {
          return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is not mapped", r.uuid.ToString(), vc);
        }
        owner_[r.map[vc] - 1] = 0;
        r.map[vc] = 0;
        ++free_;
        return Status::Ok();
      }
      if (r.map[vc] != 0) {
        return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} is mapped twice", r.uuid.ToString(), vc);
      }
      if (pc >= owner_.size() || owner_[pc]) {
        return Status::Errorf(Errc::kCorruption, "replica {}: cluster {} maps to {}, which is {}", r.uuid.ToString(),
                              vc, pc, pc >= owner_.size() ? "outside the pool" : "already owned");
      }
      owner_[pc] = 1;
      r.map[vc] = pc + 1;
      --free_;
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
  for (auto& [id, r] : replicas_) {
    std::vector<uint8_t> rec = CreateReplicaRecord(r);
    w.u32(uint32_t(rec.size()));
    w.bytes(rec.data(), rec.size());
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
    Status s = Apply(rec);
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

uint64_t PoolState::committed_bytes() const {
  uint64_t n = 0;
  for (auto& [id, r] : replicas_) n += r.size;
  return n;
}

}  // namespace tern::pool
