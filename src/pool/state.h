// PoolState: the pool's metadata in memory — the replica table and each replica's cluster map, with the
// allocation map derived from them — and its two persistent forms: log records (one per change) and the
// checkpoint body (the whole state). Pure data: no I/O, no threads; the pool applies a change here and
// appends its record to the MetaLog.
//
// Invariants (checked on every Apply and Load; a violation is kCorruption naming it): names and UUIDs
// are unique, every mapped cluster is inside the data area and owned by exactly one replica.
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
  Uuid uuid;
  std::string name;
  uint64_t size = 0;  // bytes
  bool thin = false;
  uint64_t created_ns = 0;
  std::vector<uint32_t> map;  // per virtual cluster: physical cluster + 1, or 0 when not allocated

  uint64_t allocated_clusters() const;
};

class PoolState {
 public:
  PoolState(uint64_t data_clusters, uint64_t cluster_size);

  // Record builders (the change is made by Apply).
  static std::vector<uint8_t> CreateReplicaRecord(const ReplicaMeta& r);
  static std::vector<uint8_t> DestroyReplicaRecord(const Uuid& uuid);
  // Thin allocation: virtual cluster `vc` of the replica gets physical cluster `pc`, or loses its cluster.
  static std::vector<uint8_t> MapClusterRecord(const Uuid& uuid, uint32_t vc, uint32_t pc);
  static std::vector<uint8_t> UnmapClusterRecord(const Uuid& uuid, uint32_t vc);

  // Applies one record. Errors leave the state unchanged: kCorruption for a record that cannot be parsed
  // or contradicts the state (duplicate, unknown replica, a cluster owned twice or out of range).
  Status Apply(std::span<const uint8_t> record);
  // The whole state as a checkpoint body, and back (Load replaces the state; errors leave it empty).
  std::vector<uint8_t> Serialize() const;
  Status Load(std::span<const uint8_t> body);

  // Free clusters to allocate from (lowest first); kNoSpc when fewer than `n` are free.
  Result<std::vector<uint32_t>> pick_free(uint64_t n) const;

  const std::map<Uuid, ReplicaMeta>& replicas() const { return replicas_; }
  const ReplicaMeta* find(const Uuid& uuid) const;
  const ReplicaMeta* find_name(std::string_view name) const;
  uint64_t data_clusters() const { return owner_.size(); }
  uint64_t cluster_size() const { return cluster_size_; }
  uint64_t free_clusters() const { return free_; }
  uint64_t committed_bytes() const;

 private:
  Status add(ReplicaMeta r);
  void clear();

  uint64_t cluster_size_;
  std::vector<uint8_t> owner_;  // 1 when the cluster is allocated
  uint64_t free_ = 0;
  std::map<Uuid, ReplicaMeta> replicas_;
};

}  // namespace tern::pool
