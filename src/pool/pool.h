// Pool: one device holding replicas (issue 5). Built so far: the label life cycle — create, import
// (with repair of a damaged or stale superblock copy), export (marks clean) and destroy (wipes both
// labels) — on a device it claims exclusively; the metadata log with checkpoints; and the replica table
// (create thick or thin, destroy, list), durable before each call returns. Replica I/O comes next
// (docs/design/pools.md).
//
// Threads: a Pool lives on the primary reactor; every method runs there (the engine submits to it).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include <coroutine>
#include <deque>
#include <map>

#include "bdev/registry.h"
#include "pool/metalog.h"
#include "pool/state.h"
#include "pool/superblock.h"

namespace tern::pool {

struct PoolCreateOptions {
  std::string name;
  std::optional<Uuid> uuid;  // default: a new one
  uint64_t cluster_size = Superblock::kDefaultClusterSize;
};

struct ReplicaCreateOptions {
  std::string name;
  std::optional<Uuid> uuid;  // default: a new one
  uint64_t size = 0;         // bytes, a multiple of 4096
  bool thin = false;         // thick replicas reserve all their clusters now
};

struct PoolStats {
  uint64_t capacity = 0;   // bytes of data clusters
  uint64_t used = 0;       // bytes of allocated clusters
  uint64_t committed = 0;  // sum of replica sizes (thin ones included)
  uint64_t replicas = 0;
};

// What `pool check` reports: read-only, nothing is written or claimed.
struct PoolReport {
  Superblock sb;
  std::string label_note;  // damage import would repair ("" when both labels agree)
  uint64_t checkpoint_generation = 0;
  uint64_t records_replayed = 0;
  std::vector<ReplicaMeta> replicas;
  uint64_t used_clusters = 0;
};

class Pool {
 public:
  // Writes a new pool on `device` (a registered bdev). Refuses a device that holds a pool label, valid
  // or damaged ("import it, or destroy it first"): nothing is overwritten by accident.
  static Task<Result<std::unique_ptr<Pool>>> Create(BdevRegistry& reg, std::string device, PoolCreateOptions opts);
  // Opens the pool on `device`. `expect_name`, if given, must match. A damaged or stale superblock copy is
  // rewritten from the good one (logged). Errors: kNoEnt (no pool there), kCorruption (both copies bad,
  // or they disagree about which pool this is), kNotSup (newer format), kInval (name mismatch).
  static Task<Result<std::unique_ptr<Pool>>> Import(BdevRegistry& reg, std::string device,
                                                    std::optional<std::string> expect_name = {});
  // Reads everything import reads — both labels, both checkpoints, the log — and checks every checksum
  // and invariant, without writing or claiming the device. Errors are what import would refuse with.
  static Task<Result<PoolReport>> Inspect(BdevRegistry& reg, std::string device);
  ~Pool();

  // Marks the pool clean and releases the device. The object is unusable afterwards.
  Task<Status> Export();
  // Wipes both labels and releases the device: the device no longer holds a pool.
  Task<Status> Destroy();

  // Replicas. Each call returns once its change is durable (logged and flushed). Errors: kExist (name or
  // UUID taken), kInval (bad name or size), kNoSpc (a thick replica needs more free clusters than there
  // are), kNoEnt (no such replica), kIo after a failed metadata write (the pool then refuses further
  // changes until it is re-imported).
  Task<Result<ReplicaMeta>> CreateReplica(ReplicaCreateOptions opts);
  Task<Status> DestroyReplica(Uuid uuid);
  std::vector<ReplicaMeta> ListReplicas() const;
  PoolStats stats() const;
  // Registers the replica as a bdev named by its UUID (the device any module opens: ioperf, the NVMe/TCP
  // target, later the nexus). Idempotent. The bdev is removed by DestroyReplica, Export and Destroy,
  // which fail with EBUSY while it is open.
  Result<Bdev*> ExposeReplica(const Uuid& uuid);
  // Thin allocation (called by a replica bdev on the first write into a cluster): returns the physical
  // cluster of virtual cluster `vc`, allocating it — zeroed, its map record durable — if needed.
  // kNoSpc when the pool is full ("pool 'p' is full"): only that write fails.
  Task<Result<uint32_t>> AllocateCluster(Uuid uuid, uint32_t vc);

  const Superblock& superblock() const { return sb_; }
  const std::string& device() const { return device_; }
  // What import had to repair, for the caller's log and tests ("" if nothing).
  const std::string& repair_note() const { return repair_note_; }

 private:
  Pool(BdevRegistry& reg, std::string device, std::unique_ptr<BdevDesc> desc)
      : reg_(reg), device_(std::move(device)), desc_(std::move(desc)) {}
  // Writes the superblock: backup, flush, primary, flush — so a cut leaves at least one good copy.
  Task<Status> write_superblock(bool primary, bool backup);
  // Metadata changes run one at a time: a change is applied in memory and its record appended before the
  // next starts, so a checkpoint never misses a change that is in memory but not yet in the log.
  struct MetaLock;
  MetaLock lock_meta();
  void unlock_meta();
  // Removes the bdevs of `only` (or all exposed replicas); EBUSY if one is open.
  Task<Status> unexpose(std::optional<Uuid> only);
  // Makes the clusters read as zeros (write-zeroes on the device, or zero writes where it has none).
  Task<Status> zero_clusters(const std::vector<uint32_t>& map);
  // Applies `record` in memory, appends it, and checkpoints when the log is half full.
  Task<Status> commit(const std::vector<uint8_t>& record, const std::vector<uint8_t>& undo);

  BdevRegistry& reg_;
  std::string device_;
  // Shared with the replica bdevs: the device stays open (and claimed) while any of them exists, even if
  // the pool object is dropped without an export.
  std::shared_ptr<BdevDesc> desc_;
  Superblock sb_;
  std::string repair_note_;
  std::unique_ptr<MetaLog> log_;
  std::unique_ptr<PoolState> state_;
  bool meta_busy_ = false;
  std::deque<std::coroutine_handle<>> meta_waiters_;
  Status failed_;  // set when a metadata write failed: no further changes
  std::vector<std::string> exposed_;  // bdev names of exposed replicas
  std::map<Uuid, std::shared_ptr<struct ReplicaShared>> shared_;  // maps shared with exposed replicas' bdevs
};

}  // namespace tern::pool
