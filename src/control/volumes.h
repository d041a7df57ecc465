// VolumeService: volumes — create, destroy, and (as the control plane grows) publish, scale, expand.
//
// create(args)  Idempotent by UUID: the same arguments again return the volume; other arguments are
//     kExist naming the difference. Otherwise: placement picks `replicas` pools (placement.h); the volume
//     spec (creating) and one replica spec per choice (creating) are committed in one transaction before
//     any engine is asked; the replicas are created (in parallel, shared over NVMe/TCP); then every spec
//     becomes created in one transaction. A failed step undoes the ones before (replicas destroyed, specs
//     removed) and returns the engine's error. An agent that dies in between leaves `creating` specs,
//     which the next leader undoes (reconcile): a half-created volume never stays, and no replica exists
//     that no spec names.
//     With a source snapshot (restore): the replicas are clones of the snapshot's parts, each on its
//     part's pool (distinct nodes already); the volume is thin and its nexus adopts the clones' labels
//     (VolumeSpec::adopt_labels_of), so the new volume starts in sync with the snapshot's data.
// destroy(uuid)  Unpublishes it (targets.h), marks the volume and its replicas deleting (one
//     transaction), destroys the replicas,
//     removes their specs and then the volume's (its nexus record with it). A replica whose node is away
//     stays as a `deleting` replica spec and is destroyed when the node returns. kNoEnt for an unknown
//     volume.
// One operation per volume at a time: another one meanwhile is kBusy ("in progress").
//
// Threads: the agent's primary reactor.
#pragma once

#include <optional>
#include <set>
#include <string>
#include <vector>

#include "control/cluster.h"
#include "control/placement.h"
#include "control/pools.h"
#include "control/targets.h"
#include "reactor/task.h"

namespace tern::control {

// What PUT /v1/volumes/{uuid}/properties changes: the fields given.
struct VolumeProperties {
  std::optional<Labels> labels;
  std::optional<uint32_t> max_snapshots;
  std::optional<uint64_t> rebuild_rate;
};

struct CreateVolumeArgs {
  std::string uuid;
  uint64_t size = 0;
  uint32_t replicas = 1;
  bool thin = false;
  Topology topology;
  Labels labels;
  // Restore: the volume's replicas are thin clones of this snapshot's parts, on their pools (size 0 or
  // the snapshot's; at most as many replicas as the snapshot has parts on usable pools).
  std::string snapshot;
};

class VolumeService {
 public:
  VolumeService(Cluster& c, PoolService& pools, TargetService& targets) : c_(c), pools_(pools), targets_(targets) {}

  Task<Result<VolumeSpec>> create(CreateVolumeArgs args);
  Task<Status> destroy(std::string uuid);
  // Undoes creations an earlier leader left half done, finishes deletions, destroys replicas marked
  // deleting whose nodes are back. Skips volumes with an operation in progress.
  Task<void> reconcile();

  bool busy(const std::string& uuid) const { return c_.busy.count(uuid) > 0; }
  // Changes how many replicas the volume has. Up: new replicas placed (all or none: a placement that
  // fails leaves the count as it was) and, when published, joined to the nexus (rebuilt in full). Down:
  // replicas leave — first those on offline nodes, then out-of-sync ones, never the target's local one
  // while another will do — out of the nexus first (the nexus refuses to lose its last healthy child).
  Task<Result<VolumeSpec>> scale(std::string uuid, uint32_t replicas);

  // Grows the volume online: every replica grows (each node must be online) to hold the new size and
  // the nexus's metadata, then the nexus (hosts see a namespace change), then the specs. Each step is
  // idempotent, so a failed or interrupted expand is finished by doing it again; until then the volume
  // keeps its old size (larger replicas are harmless). Shrinking is refused.
  Task<Result<VolumeSpec>> expand(std::string uuid, uint64_t size);

  // Sets the given properties. A new rebuild rate reaches the running rebuilds of a published volume at
  // once (the heal pass keeps them at it) and the nexus's next ones through its next publish.
  Task<Result<VolumeSpec>> set_properties(std::string uuid, VolumeProperties p);
  // Brings the running rebuilds of the volume's nexus to its rebuild rate (logged on failure): as listed
  // now, or as `nx` (a listing the caller has) says.
  Task<void> apply_rebuild_rate(VolumeSpec v);
  Task<void> apply_rebuild_rate(VolumeSpec v, ev1::Nexus nx);

  // One more replica for a volume (the volume is busy: the caller holds it): placed away from the
  // volume's other replicas, recorded `creating` with the volume's list, created, then `created`.
  Task<Result<ReplicaSpec>> add_replica(std::string uuid);
  // Takes a replica out of its volume (the caller holds the volume): out of the volume's list and
  // `deleting` in one transaction, then destroyed (now, or when its node returns).
  Task<Status> drop_replica(std::string uuid, std::string replica);

  // The candidate pools for placement, from the specs, the registry and the pools' last status.
  std::vector<PoolCandidate> candidates() const;

  // For tests of crash recovery: the agent aborts at this step of a create or destroy when set
  // ("create:specs", "create:replica", "create:done", "destroy:marked"; env TERN_AGENT_CRASH_AT).
  std::string crash_at;

 private:
  Task<Status> create_replica(ReplicaSpec r);
  // Restore: `count` of the snapshot's parts whose pools are usable, as (index in `pools`, part UUID).
  Result<std::vector<std::pair<size_t, std::string>>> place_clones(const SnapshotSpec& s, const std::vector<PoolCandidate>& pools,
                                                                   uint32_t count) const;
  // Destroys `ids` on their engines and removes their specs; replicas on offline nodes stay `deleting`.
  Task<Status> destroy_replicas(std::vector<std::string> ids);
  Task<Status> undo_create(std::string uuid);
  void maybe_crash(const char* step) const;

  Cluster& c_;
  PoolService& pools_;
  TargetService& targets_;
};

}  // namespace tern::control
