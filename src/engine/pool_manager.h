// PoolManager: this node's pools and their objects — pool create / import / export / destroy / grow,
// replicas, snapshots and clones, resize, and sharing of pool objects, whose shares are recorded in the
// pool (properties share.protocol, share.hosts) so they come back wherever the pool is imported. Also
// the state file: which pools to import at the next start.
//
// Threads: owned by the Engine, lives on reactor 0 (the primary); every method runs there. Other threads
// call it through ReactorSet::run_sync(0, ...). A request that changes a pool holds that pool's
// AsyncMutex from its first check to its last change, so two requests for one object never interleave
// at a co_await; different pools interleave freely. Opening and closing pools also holds the table's
// mutex. Closing marks the entry closed before its lock is released: queued requests answer NOT_FOUND.
//
// Creates of replicas, snapshots and clones are one routine (create_object.cc): validate, lock the pool,
// check the UUID is free on the node, then either answer with the existing object (identical
// arguments; a half-done share is finished) or kExist naming the first argument that differs, or
// create, expose and share it — undone if a step fails.
#pragma once

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bdev/registry.h"
#include "common/result.h"
#include "engine/options.h"
#include "engine/shares.h"
#include "engine/state_file.h"
#include "engine/types.h"
#include "pool/pool.h"
#include "reactor/async_mutex.h"

namespace tern::engine {

class PoolManager {
 public:
  PoolManager(BdevRegistry& registry, Shares& shares, std::string state_dir);
  ~PoolManager();
  PoolManager(const PoolManager&) = delete;
  PoolManager& operator=(const PoolManager&) = delete;

  // Start-up: the pools of the state file (imported), then `configured` (created or imported), each
  // object exposed and re-shared as its properties say. A pool that fails is logged and skipped; only
  // a damaged state file is an error.
  Task<Status> start(std::vector<PoolSpec> configured);
  // Shutdown, first step: no pool is opened or closed any more (one in progress finishes first).
  Task<void> stop();
  // Shutdown, last step (after the shares and the target are gone): every pool exported clean.
  Task<void> export_all();

  // --- pools ---
  Task<Result<PoolInfo>> create_pool(CreatePoolArgs args, PoolMode mode);
  Task<Status> export_pool(std::string name);
  // Refused (kBusy, naming them) while the pool holds replicas, snapshots or clones unless `force`.
  Task<Status> destroy_pool(std::string name, bool force = false);
  Task<Result<PoolInfo>> grow_pool(std::string name);
  std::vector<PoolInfo> list_pools(const std::string& name_filter) const;

  // --- objects ---
  Task<Result<ReplicaInfo>> create_replica(CreateReplicaArgs args);
  Task<Result<ReplicaInfo>> create_snapshot(CreateSnapshotArgs args);
  Task<Result<ReplicaInfo>> create_clone(CreateCloneArgs args);
  // Unshares and destroys a replica or clone (destroy_replica) or a snapshot (destroy_snapshot); the
  // other kind is kInval naming the right call.
  Task<Status> destroy_replica(ReplicaRef ref);
  Task<Status> destroy_snapshot(ReplicaRef ref);
  std::vector<ReplicaInfo> list_objects(const ObjectFilter& f) const;
  Task<Result<ReplicaInfo>> resize_replica(ReplicaRef ref, uint64_t size, bool allow_shrink);
  Task<Result<ReplicaInfo>> share_object(ReplicaRef ref, ShareProtocol protocol, std::vector<std::string> hosts);
  Task<Result<ReplicaInfo>> unshare_object(ReplicaRef ref);
  Task<Result<ReplicaInfo>> set_allowed_hosts(ReplicaRef ref, std::vector<std::string> hosts);

  // --- what the device side needs to know ---
  // What a pool uses a device for, if anything: it holds the pool, or it is one of the pool's objects.
  struct DeviceUse {
    std::string pool;
    bool holds_pool = false;
    std::string object;  // otherwise: the object's name and kind
    ObjectKind kind = ObjectKind::kReplica;
  };
  std::optional<DeviceUse> device_use(const std::string& device) const;
  // Every object's device, with its pool's name.
  std::map<std::string, std::string> object_devices() const;

 private:
  struct PoolEntry {
    std::unique_ptr<pool::Pool> pool;
    std::string disk;        // as given by the user (URI or device name)
    std::string bdev;        // the device's name
    bool owns_bdev = false;  // created from a URI by us (and destroyed on export)
    bool closed = false;     // exported or destroyed: requests that waited for `mu` give up
    AsyncMutex mu;
  };
  // A pool this request holds the lock of and, for a request naming an object, that object as found
  // once the lock was held.
  struct Locked {
    AsyncMutex::Guard guard;
    PoolEntry* entry = nullptr;
    pool::ReplicaMeta meta;
  };
  struct Found {
    PoolEntry* entry;
    pool::ReplicaMeta meta;
  };
  // A create of any kind (create_object.cc).
  struct NewObject {
    ObjectKind kind = ObjectKind::kReplica;
    std::string pool;                  // replica: its pool
    const ReplicaRef* from = nullptr;  // snapshot: the object to snapshot; clone: the snapshot
    std::string name;
    std::optional<Uuid> uuid;
    uint64_t size = 0;  // replica only
    bool thin = false;  // replica only
    ShareProtocol share = ShareProtocol::kNone;
    std::vector<std::string> hosts;
  };

  // pool_manager.cc
  Task<Result<PoolInfo>> open_pool(CreatePoolArgs args, PoolMode mode, bool remember);
  Task<Result<Bdev*>> open_disk(const std::string& disk, bool* created);
  Task<Status> close_pool(std::string name, bool destroy);
  Task<Status> expose_and_reshare(PoolEntry& e);
  PoolEntry* find_pool(const std::string& name) const;
  PoolInfo pool_info(const std::string& name, const PoolEntry& e) const;
  Status save_state() const;

  // pool_objects.cc
  static ObjectKind kind_of(const pool::ReplicaMeta& m);
  // kNoEnt once the pool was exported or destroyed (checked right after taking its lock).
  static Status still_open(const PoolEntry& e);
  Result<Found> find_object(const ReplicaRef& ref) const;
  // Finds the object, takes its pool's lock, and finds it again (it may have changed meanwhile).
  Task<Result<Locked>> lock_object(const ReplicaRef& ref);
  Task<Status> destroy(ReplicaRef ref, bool snapshot);
  ReplicaInfo object_info(const PoolEntry& e, const pool::ReplicaMeta& m) const;
  // Shares the object's device and records the share in its properties (undone if recording fails).
  Task<Status> share_and_record(PoolEntry& e, const pool::ReplicaMeta& m, ShareProtocol protocol,
                                std::vector<std::string> hosts);
  Task<Status> unshare_and_forget(PoolEntry& e, const pool::ReplicaMeta& m);

  // create_object.cc
  Task<Result<ReplicaInfo>> create_object(const NewObject& want);
  static Status validate(const NewObject& o);
  Task<Result<Locked>> lock_for_create(const NewObject& want);
  Status uuid_free(const NewObject& want, const PoolEntry& e) const;
  Status mismatch(const NewObject& want, const PoolEntry& e, const pool::ReplicaMeta& have,
                  const pool::ReplicaMeta& from) const;
  Task<Result<pool::ReplicaMeta>> make(PoolEntry& e, const NewObject& want, const pool::ReplicaMeta& from);

  BdevRegistry& registry_;
  Shares& shares_;
  StateFile state_;
  std::map<std::string, std::unique_ptr<PoolEntry>> pools_;
  AsyncMutex table_mu_;  // the pools table: create, import, export, destroy
  AsyncMutex::Guard closing_;  // table_mu_, held from stop() to the end of export_all()
  bool stopped_ = false;
};

}  // namespace tern::engine
