// TargetService: a volume's target — the nexus that mirrors it to its replicas, on one node, published
// over NVMe/TCP (or NBD).
//
// publish(uuid, args)  Idempotent: published on the asked node (or anywhere, when none is asked) with the
//     same protocol returns the volume. Published elsewhere: kBusy naming the node, unless `republish`.
//     Otherwise:
//       1. the node: the one asked, else an online, uncordoned node holding a replica of the volume (its
//          replica becomes a direct, local child), else any online uncordoned node; fewest targets first;
//       2. the children: the volume's replicas on online nodes (remote ones by their NVMe/TCP share). When
//          the volume has a nexus record (an earlier nexus), at least one of them must be healthy in it —
//          the others are stale and are rebuilt by the nexus (docs/design/rebuild.md); if every replica
//          the record calls healthy is on a node that is down, publishing is refused (kBusy): a nexus
//          built from stale replicas would serve old data;
//       3. the record: the volume's generation + 1 becomes the target's generation, and the target is
//          committed `publishing` before the nexus exists;
//       4. CreateNexus on the node (persistence key P/records/<uuid>; reservation key = the generation,
//          preempting the holder: an older nexus of the volume loses its remote children at once;
//          controller IDs from a range that changes with the generation), then PublishNexus; the target
//          becomes `published` with its URI. A failed step destroys the new nexus and clears the target
//          (also when the node died meanwhile: a nexus left there is fenced by the next publish's
//          reservations and destroyed when the node returns).
//     Republish: an old nexus on a node that is online is shut down and destroyed first (a local child
//     is not fenced by a reservation); on a node that is down its replicas are not children (they are
//     offline) and its nexus is destroyed when it returns (reconcile).
// unpublish(uuid)  The target becomes `unpublishing`; the nexus is shut down (its record says clean) and
//     destroyed; the target is cleared. A node that is down finishes later (reconcile).
// reconcile()  Undoes `publishing` targets an earlier leader left, finishes `unpublishing` ones whose
//     node is back, and destroys nexuses on online nodes that no target names (a volume destroyed or
//     moved while the node was away).
//
// Threads: the agent's primary reactor.
#pragma once

#include <string>
#include <vector>

#include "control/cluster.h"
#include "reactor/task.h"

namespace tern::control {

// The host list of a target the agent publishes for itself (evacuate.h): no host has this NQN. A user's
// publish of such a volume takes the target over (republished on its node with the user's arguments).
inline constexpr std::string_view kEvacuationHost = "nqn.2026-11.io.tern:agent-evacuation";

struct PublishArgs {
  std::string node;        // empty: the agent chooses
  std::string protocol = "nvmf";
  std::vector<std::string> allowed_hosts;  // host NQNs (NVMe/TCP); empty: any
  bool republish = false;  // move a published volume
};

class TargetService {
 public:
  explicit TargetService(Cluster& c) : c_(c) {}

  Task<Result<VolumeSpec>> publish(std::string uuid, PublishArgs args);
  Task<Status> unpublish(std::string uuid);
  // For VolumeService::destroy (the volume is already busy).
  Task<Status> unpublish_locked(std::string uuid);
  Task<void> reconcile();
  // The URI a nexus on `node` uses for replica `r`: bdev:// when local, else its NVMe/TCP share (asked
  // of its engine) with the agent's child parameters.
  Task<Result<std::string>> child_uri(ReplicaSpec r, std::string node);

  // Adds replica `r` to the volume's nexus on `node` (it is rebuilt there); logs what happened.
  Task<Status> join(std::string uuid, std::string node, ReplicaSpec r);

  // For tests of crash recovery ("publish:recorded", "publish:created"; env TERN_AGENT_CRASH_AT).
  std::string crash_at;

 private:
  Result<std::string> choose_node(const VolumeSpec& v, const std::string& asked) const;
  Task<Result<std::vector<std::string>>> children(const VolumeSpec& v, const std::string& node);
  // Shuts down and destroys the volume's nexus on `node`; OK when it is not there.
  Task<Status> destroy_nexus(std::string node, std::string uuid);
  Task<Status> clear_target(std::string uuid, uint64_t generation);
  void maybe_crash(const char* step) const;

  Cluster& c_;
};

}  // namespace tern::control
