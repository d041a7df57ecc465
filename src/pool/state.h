// PoolState: the pool's metadata in memory — the table of replicas, snapshots and clones, each with its
// cluster map, and the allocation map derived from them — and its two persistent forms: log records (one
// per change) and the checkpoint body (the whole state). Pure data: no I/O, no threads; the pool applies
// a change here and appends its record to the MetaLog. The records' kinds and bytes are in records.h:
// Apply decodes a record into its typed form, then applies it with the function for its kind.
//
// Snapshots and clones form chains (docs/design/pools.md): a snapshot takes over the clusters of the
// replica it was taken of, and the replica becomes its child, reading the clusters it has not written
// since from it. A clone is a replica whose parent is a snapshot it was made from. Every cluster is owned
// by exactly one object, so "no cluster owned twice" stays a simple invariant and deleting a snapshot is a
// metadata change: with one child its clusters move to the child, with more it is marked discarded and
// goes when its children drop to one.
//
// Invariants (checked on every Apply and Load; a violation is kCorruption naming it): names and UUIDs
// are unique, every mapped cluster is inside the data area and owned by exactly one object, a parent
// exists and is a snapshot, only objects with a parent hold "zero" entries, only snapshots have children.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/uuid.h"

namespace tern::pool {

struct ReplicaMeta {
  // Map entries: kInherit (read from the parent, or zeros without one), physical cluster + 1 (owned),
  // or kZero (reads zeros, hides the parent's data: unmapped, or grown past the parent).
  static constexpr uint32_t kInherit = 0;
  static constexpr uint32_t kZero = 0xFFFFFFFF;
  static bool owned(uint32_t m) { return m != kInherit && m != kZero; }

  Uuid uuid;
  std::string name;
  uint64_t size = 0;  // bytes
  bool thin = false;
  uint64_t created_ns = 0;
  bool snapshot = false;   // a read-only point-in-time image
  bool discarded = false;  // a deleted snapshot kept while two or more children read from it
  Uuid parent;             // nil: none; else the snapshot unwritten clusters read from
  Uuid source;             // snapshot: the replica it was taken of; clone: its snapshot; else nil
  std::vector<uint32_t> map;
  // Small named settings kept with the object (what the engine needs after a restart: how it is shared,
  // to whom). Keys: 1-64 of [a-z0-9._-]; values up to 1024 bytes; at most 4 KiB per object.
  std::map<std::string, std::string> props;

  uint64_t allocated_clusters() const;  // clusters this object owns
  bool clone() const { return !snapshot && !source.is_nil(); }
  bool operator==(const ReplicaMeta&) const = default;
};

// The typed log records (records.h).
namespace records {
struct CreateObject;
struct Destroy;
struct MapCluster;
struct UnmapCluster;
struct Snapshot;
struct Clone;
struct Resize;
struct SetProperty;
}  // namespace records

class PoolState {
 public:
  // A resolved map entry, as replica I/O sees it: 0 = zeros; else physical cluster + 1, with
  // kInheritedBit set when the cluster belongs to an ancestor (a write must copy it first).
  static constexpr uint32_t kInheritedBit = 0x80000000u;
  static constexpr uint64_t kMaxClusters = 0x7FFFFFFEu;

  PoolState(uint64_t data_clusters, uint64_t cluster_size);

  // Record builders (the change is made by Apply); the bytes of the typed records in records.h.
  static std::vector<uint8_t> CreateReplicaRecord(const ReplicaMeta& r);
  // Destroys a replica or clone; or a snapshot, which with two or more children is only marked
  // discarded. Removing an object lets a discarded parent go (merged into its one remaining child, or
  // freed with none left).
  static std::vector<uint8_t> DestroyReplicaRecord(const Uuid& uuid);
  // Virtual cluster `vc` of the replica gets physical cluster `pc` (it held none).
  static std::vector<uint8_t> MapClusterRecord(const Uuid& uuid, uint32_t vc, uint32_t pc);
  // Virtual cluster `vc` reads zeros from now on; a cluster it owned is freed.
  static std::vector<uint8_t> UnmapClusterRecord(const Uuid& uuid, uint32_t vc);
  // Snapshot `snap` of replica `uuid`: the snapshot takes the replica's clusters; the replica reads
  // through it until it writes.
  static std::vector<uint8_t> SnapshotRecord(const Uuid& uuid, const Uuid& snap, const std::string& name,
                                             uint64_t created_ns);
  // A thin clone of snapshot `snap`.
  static std::vector<uint8_t> CloneRecord(const Uuid& snap, const Uuid& clone, const std::string& name,
                                          uint64_t created_ns);
  // New size; clusters beyond a smaller size are freed; `new_clusters` are the (thick) grown part's.
  static std::vector<uint8_t> ResizeRecord(const Uuid& uuid, uint64_t size, const std::vector<uint32_t>& new_clusters);
  // Sets property `key` of the object to `value`; an empty value removes it.
  static std::vector<uint8_t> SetPropertyRecord(const Uuid& uuid, const std::string& key, const std::string& value);
  static constexpr size_t kMaxPropKey = 64, kMaxPropValue = 1024, kMaxPropBytes = 4096;
  static Status ValidateProperty(std::string_view key, std::string_view value);

  // Applies one record: decodes it (DecodeRecord), then applies it by kind. Errors leave the state
  // unchanged: kCorruption for a record that cannot be decoded (naming its kind and the byte offset) or
  // contradicts the state (duplicate, unknown replica, a cluster owned twice or out of range).
  Status Apply(std::span<const uint8_t> record);
  // The whole state as a checkpoint body, and back (Load replaces the state; errors leave it empty).
  std::vector<uint8_t> Serialize() const;
  Status Load(std::span<const uint8_t> body);

  // Free clusters to allocate from (lowest first); kNoSpc when fewer than `n` are free.
  Result<std::vector<uint32_t>> pick_free(uint64_t n) const;
  // In-memory holds on free clusters (an allocation in progress, a freed cluster that I/O may still
  // reach): pick_free skips them; a map record may take a reserved cluster. Never persisted.
  void reserve(uint32_t pc);
  void unreserve(uint32_t pc);
  // The pool grew (its superblock says so; no record): more clusters to allocate from.
  void grow(uint64_t data_clusters);

  const std::map<Uuid, ReplicaMeta>& replicas() const { return replicas_; }
  const ReplicaMeta* find(const Uuid& uuid) const;
  const ReplicaMeta* find_name(std::string_view name) const;
  std::vector<Uuid> children(const Uuid& uuid) const;
  // What I/O to `uuid` reads at virtual cluster `vc` (see kInheritedBit), and the whole map so.
  uint32_t resolve(const Uuid& uuid, uint64_t vc) const;
  std::vector<uint32_t> resolve_all(const Uuid& uuid) const;
  // Clusters: owned, readable (own + inherited), and owned that no child reads (see ObjectSpace).
  struct Space {
    uint64_t owned = 0, readable = 0, exclusive = 0;
  };
  Space space(const Uuid& uuid) const;
  uint64_t data_clusters() const { return owner_.size(); }
  uint64_t cluster_size() const { return cluster_size_; }
  uint64_t free_clusters() const { return free_; }
  uint64_t committed_bytes() const;  // sum of the sizes of replicas and clones
  // Size of Serialize()'s result, computed without serializing (O(objects)): what a checkpoint needs.
  uint64_t checkpoint_bytes() const;

 private:
  // One per record kind, after decoding: check the record against the state, then change it.
  Status apply(records::CreateObject&& r);
  Status apply(const records::Destroy& r);
  Status apply(const records::MapCluster& r);
  Status apply(const records::UnmapCluster& r);
  Status apply(records::Snapshot&& r);
  Status apply(records::Clone&& r);
  Status apply(const records::Resize& r);
  Status apply(records::SetProperty&& r);
  Status add(ReplicaMeta r);
  Status destroy(const Uuid& uuid);
  void release(uint32_t m);  // frees an owned entry's cluster
  void merge_into_child(ReplicaMeta& snap, ReplicaMeta& child);
  void collect(Uuid parent);  // lets discarded ancestors go once they have fewer than two children
  void clear();

  uint64_t cluster_size_;
  std::vector<uint8_t> owner_;  // 0 free, 1 owned, 2 reserved (in memory only)
  uint64_t free_ = 0;           // clusters pick_free may take
  std::map<Uuid, ReplicaMeta> replicas_;
};

}  // namespace tern::pool
