// Pool: one device holding replicas, snapshots and clones (docs/design/pools.md): the label life cycle —
// create, import (with repair of a damaged or stale superblock copy), export (marks clean) and destroy
// (wipes both labels) — on a device it claims exclusively; the metadata log with checkpoints; the table of
// replicas, snapshots and clones, every change durable before its call returns; and the objects exposed
// as bdevs (replica_bdev.h), whose thin allocation, copy-on-write and cluster release come back here.
//
// Threads: a Pool lives on the primary reactor; every method runs there (the engine submits to it).
#pragma once

#include <coroutine>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "bdev/registry.h"
#include "pool/metalog.h"
#include "pool/state.h"
#include "pool/superblock.h"
#include "reactor/async_mutex.h"

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

struct SnapshotOptions {
  std::string name;
  std::optional<Uuid> uuid;  // default: a new one
};

struct PoolStats {
  uint64_t capacity = 0;   // bytes of data clusters
  uint64_t used = 0;       // bytes of allocated clusters
  uint64_t committed = 0;  // sum of replica and clone sizes (thin ones included)
  uint64_t replicas = 0;   // objects: replicas, clones and snapshots
  bool online = true;      // false after a failed metadata write: reads and writes into allocated
                           // clusters go on, changes are refused until the pool is re-imported
  std::string state_reason;  // why not online
};


// Space of one object. For a snapshot, `exclusive` is what deleting it would free now (its clusters no
// child still reads); `referenced` is everything readable through the object (its own and inherited).
struct ObjectSpace {
  uint64_t allocated = 0;
  uint64_t referenced = 0;
  uint64_t exclusive = 0;
};
// What `pool check` reports: read-only, nothing is written or claimed.
struct PoolReport {
  Superblock sb;
  std::string label_note;  // damage import would repair ("" when both labels agree)
  uint64_t checkpoint_generation = 0;
  uint64_t records_replayed = 0;
  std::vector<ReplicaMeta> replicas;
  std::vector<ObjectSpace> space;  // per entry of `replicas`
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
  // Imports the pool on `device` if it holds one (its name must be `opts.name`), else creates it: what a
  // node does at start for its configured pools. A damaged label is refused as by Import, never
  // overwritten.
  static Task<Result<std::unique_ptr<Pool>>> CreateOrImport(BdevRegistry& reg, std::string device,
                                                            PoolCreateOptions opts);
  // Reads everything import reads — both labels, both checkpoints, the log — and checks every checksum
  // and invariant, without writing or claiming the device. Errors are what import would refuse with.
  static Task<Result<PoolReport>> Inspect(BdevRegistry& reg, std::string device);
  ~Pool();

  // Marks the pool clean and releases the device. The object is unusable afterwards.
  Task<Status> Export();
  // Wipes both labels and releases the device: the device no longer holds a pool.
  Task<Status> Destroy();
  // The device got bigger (a grown disk, partition or file): re-reads its size and adds the new space
  // as clusters. The backup superblock is written at the new end and flushed before the primary records
  // the new size, so a crash leaves the old pool or the grown one. Idempotent (nothing to add: the
  // current stats). Errors: kRange (the device is smaller than the pool), kNoSpc (beyond what the
  // metadata areas were sized for: about 4x the size at create), kIo.
  Task<Result<PoolStats>> Grow();

  // Replicas. Each call returns once its change is durable (logged and flushed). Errors: kExist (name or
  // UUID taken), kInval (bad name or size), kNoSpc (a thick replica needs more free clusters than there
  // are), kNoEnt (no such replica), kIo after a failed metadata write (the pool then refuses further
  // changes until it is re-imported).
  Task<Result<ReplicaMeta>> CreateReplica(ReplicaCreateOptions opts);
  Task<Status> DestroyReplica(Uuid uuid);
  std::vector<ReplicaMeta> ListReplicas() const;
  ObjectSpace Space(const Uuid& uuid) const;
  PoolStats stats() const;
  // Snapshot of a replica or clone: a read-only image of it as of the call. If the replica is exposed, new
  // requests are held and those in flight drain first, so every write completed before the call is in
  // the snapshot and none completed after it is. Errors: kNoEnt, kExist (name/UUID taken), kInval (the
  // source is a snapshot), kIo.
  Task<Result<ReplicaMeta>> CreateSnapshot(Uuid replica, SnapshotOptions opts);
  // A thin writable clone of a snapshot. kInval when `snapshot` is no snapshot or is discarded.
  Task<Result<ReplicaMeta>> CreateClone(Uuid snapshot, ReplicaCreateOptions opts);
  // New size (a multiple of 4096). Shrinking frees the clusters past the end and needs `allow_shrink`
  // (kInval without it: data past the end is lost). A thick replica reserves its grown clusters (kNoSpc).
  // Growing makes the new range read zeros. An open replica (a nexus's child, a shared namespace) can
  // only grow: its requests are held while the map grows, then its device grows under its users (they
  // get kResized). Shrinking an open one: kBusy. kInval for a snapshot.
  Task<Result<ReplicaMeta>> ResizeReplica(Uuid uuid, uint64_t size, bool allow_shrink);
  // Sets a property of a replica, snapshot or clone (an empty value removes it); durable on return.
  // kInval for a bad name or value (PoolState::ValidateProperty), kNoSpc past 4 KiB per object.
  Task<Status> SetProperty(Uuid uuid, std::string key, std::string value);
  // Registers the replica as a bdev named by its UUID (the device any module opens: ioperf, the NVMe/TCP
  // target, later the nexus). Idempotent. The bdev is removed by DestroyReplica, Export and Destroy,
  // which fail with EBUSY while it is open.
  Result<Bdev*> ExposeReplica(const Uuid& uuid);
  // Thin allocation (called by a replica bdev on the first write into a cluster): returns the physical
  // cluster of virtual cluster `vc`, allocating it — zeroed, its map record durable — if needed.
  // kNoSpc when the pool is full ("pool 'p' is full"): only that write fails.
  // A write into an inherited cluster copies it from the ancestor first (copy-on-write). Concurrent
  // calls for the same cluster wait for the first; different clusters allocate concurrently and their
  // records share log batches.
  Task<Result<uint32_t>> AllocateCluster(Uuid uuid, uint32_t vc);
  // Unmap of a whole cluster (called by a replica bdev): `vc` reads zeros from now on; a thin replica's
  // cluster returns to the pool once no request in flight can reach it.
  Task<Status> ReleaseCluster(Uuid uuid, uint32_t vc);
  // Internal (ReleaseCluster's grace period): the cluster may be allocated again.
  void unreserve_cluster(uint32_t pc) {
    if (state_) state_->unreserve(pc);
  }

  const Superblock& superblock() const { return sb_; }
  const std::string& device() const { return device_; }
  // What import had to repair, for the caller's log and tests ("" if nothing).
  const std::string& repair_note() const { return repair_note_; }

 private:
  Task<Result<ReplicaMeta>> resize_replica(Uuid uuid, uint64_t size, bool allow_shrink,
                                           std::shared_ptr<struct ReplicaShared> online);
  Pool(BdevRegistry& reg, std::string device, std::unique_ptr<BdevDesc> desc)
      : reg_(reg), device_(std::move(device)), desc_(std::move(desc)) {}
  // Writes the superblock: backup, flush, primary, flush — so a cut leaves at least one good copy.
  Task<Status> write_superblock(bool primary, bool backup);
  Task<Result<PoolStats>> grow_locked();
  // Removes the bdevs of `only` (or all exposed replicas); EBUSY if one is open.
  Task<Status> unexpose(std::optional<Uuid> only);
  // Makes the clusters read as zeros (write-zeroes on the device, or zero writes where it has none).
  Task<Status> zero_clusters(const std::vector<uint32_t>& map);
  // Zeroes `blocks` device blocks from byte `byte` of physical cluster `pc`.
  Task<Status> zero_range(uint32_t pc, uint64_t byte, uint64_t bytes);
  Task<Status> copy_cluster(uint32_t from, uint32_t to);
  // Applies `record` in memory and queues it in the log (metadata lock held). A record that does not
  // apply is a bug in the caller's checks (kInval); the pool refuses further changes once a queued
  // record fails to become durable.
  Result<MetaLog::Ticket> stage(const std::vector<uint8_t>& record);
  // stage + wait for durability + checkpoint when the log is half full (metadata lock held throughout).
  Task<Status> commit(const std::vector<uint8_t>& record);
  Task<Status> wait_durable(MetaLog::Ticket ticket);
  Task<void> checkpoint_if_due();  // metadata lock held
  Task<void> checkpoint_soon();    // takes the lock if a checkpoint is due
  // The replica `uuid` if it is writable (no snapshot), has cluster `vc`, and the pool takes changes.
  Result<const ReplicaMeta*> writable_cluster(const Uuid& uuid, uint32_t vc) const;
  Status refuse_if_failed() const;
  // kNoSpc unless the checkpoint still fits after growing by `extra` bytes (a replica's map, a
  // snapshot's, properties): the metadata areas are finite, a change they cannot hold is refused.
  Status metadata_room(uint64_t extra) const;
  // Recomputes the resolved maps of exposed objects after a change to the chains.
  void republish();

  BdevRegistry& reg_;
  std::string device_;
  // Shared with the replica bdevs: the device stays open (and claimed) while any of them exists, even if
  // the pool object is dropped without an export.
  std::shared_ptr<BdevDesc> desc_;
  Superblock sb_;
  std::string repair_note_;
  std::unique_ptr<MetaLog> log_;
  std::unique_ptr<PoolState> state_;
  // The metadata lock: changes run one at a time (`auto g = co_await meta_mu_.lock();`), so a change is
  // applied in memory and its record queued in the log before the next starts, and a checkpoint never
  // misses a change that is in memory but not yet in the log. Holders release it early (g.release())
  // before waiting for durability, zeroing or copying, so other changes proceed and share log batches.
  AsyncMutex meta_mu_;
  Status failed_;  // set when a metadata write failed: no further changes
  std::vector<std::string> exposed_;  // bdev names of exposed replicas
  std::map<Uuid, std::shared_ptr<struct ReplicaShared>> shared_;  // maps shared with exposed replicas' bdevs
  // Allocations in progress, by (object, virtual cluster): later writes to the same cluster wait.
  std::map<std::pair<Uuid, uint32_t>, std::vector<std::coroutine_handle<>>> allocating_;
  // Background work (clusters returned once the requests that may still reach them drain); Export and
  // Destroy close it. A pool dropped without either (a crash, in tests) must have none running.
  TaskScope tasks_{"pool"};
};

}  // namespace tern::pool
