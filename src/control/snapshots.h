// SnapshotService: volume snapshots — one pool snapshot of each current replica, all of one instant —
// and their removal. Restoring (a new volume whose replicas are clones of a snapshot's parts) is
// VolumeService::create with a source snapshot.
//
// create(volume, uuid, name)  Idempotent by the snapshot's UUID (the same volume again: the snapshot;
//     another volume: kExist). The volume must be created and free. Which replicas: published, the
//     nexus's online in-sync children (asked of the target's engine; its node must be online); not
//     published, the replicas its nexus record calls healthy (all of them when it never had a nexus) on
//     online nodes — a stale replica is never a part. The spec is recorded `creating` with the parts'
//     UUIDs before any engine is asked; then the snapshot is taken — through the nexus
//     (CreateNexusSnapshot: host I/O held while every child snapshots) when published, else replica by
//     replica (nothing writes meanwhile) — and the spec becomes `created` with the parts taken. A failure
//     destroys what was taken and removes the spec. Each pool snapshot is named by the snapshot's UUID
//     (names are unique per pool; the user's name is the spec's).
// destroy(uuid)  Marks the spec `deleting`, destroys each part on its engine (a clone made from it keeps
//     its data: the engine keeps a snapshot its clones read from until they are gone); parts on offline
//     nodes stay in the spec and are destroyed when their nodes return. kNoEnt for an unknown snapshot.
// reconcile()  Undoes `creating` snapshots an earlier leader left (destroys their parts), finishes
//     `deleting` ones on nodes that are back.
//
// Threads: the agent's primary reactor.
#pragma once

#include <string>
#include <vector>

#include "control/cluster.h"
#include "reactor/task.h"

namespace tern::control {

class SnapshotService {
 public:
  explicit SnapshotService(Cluster& c) : c_(c) {}

  Task<Result<SnapshotSpec>> create(std::string volume, std::string uuid, std::string name);
  Task<Status> destroy(std::string uuid);
  Task<void> reconcile();

  // For tests of crash recovery ("snapshot:recorded", "snapshot:taken"; env TERN_AGENT_CRASH_AT).
  std::string crash_at;

 private:
  // The replicas whose data is current: the parts a snapshot of `v` takes.
  Task<Result<std::vector<SnapshotSpec::Part>>> choose_parts(const VolumeSpec& v);
  Task<Status> take_through_nexus(const VolumeSpec& v, SnapshotSpec& s);
  Task<Status> take_one_by_one(SnapshotSpec& s);
  // Destroys the spec's parts on their engines; those on offline nodes stay. The spec goes when none
  // is left, else stays `deleting` with the rest. OK when every part is gone.
  Task<Status> destroy_parts(SnapshotSpec s);
  void maybe_crash(const char* step) const;

  Cluster& c_;
};

}  // namespace tern::control
