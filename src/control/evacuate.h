// EvacuationService: moves every replica off a node that is drained with `replicas` (an evacuation), one
// volume at a time per pass, without ever lowering a volume's redundancy.
//
// Per volume with a live replica on the evacuating node (and no operation running on it):
//   1. not published: it is published on another node with a host list no host has
//      (kEvacuationHost): a nexus to copy through, that nobody connects to;
//   2. as many live replicas as the volume wants: one more is placed elsewhere (the node is cordoned)
//      and joined to the nexus — a rebuild, under the heal service's rebuild slots;
//   3. more than it wants, and every other live replica an online, in-sync child: the replica on the
//      evacuating node leaves the nexus and is dropped (destroyed); a publish of step 1 is undone.
// Every step is read back from the specs and the nexus, so a restart (of the agent, or an engine) goes
// on where it was. When the node holds no live replica, `evacuating` and `draining` are cleared; the
// node stays cordoned. A user's publish of a volume held by step 1 takes the target over (a republish
// on the same node with the user's hosts); the evacuation then leaves it published.
//
// Threads: the agent's primary reactor.
#pragma once

#include <string>

#include "control/cluster.h"
#include "control/heal.h"
#include "control/targets.h"
#include "control/volumes.h"
#include "reactor/task.h"

namespace tern::control {

class EvacuationService {
 public:
  EvacuationService(Cluster& c, VolumeService& volumes, TargetService& targets, HealService& heal)
      : c_(c), volumes_(volumes), targets_(targets), heal_(heal) {}

  Task<void> reconcile();

 private:
  // One step for volume `uuid`'s replica `replica` on `node`.
  Task<void> step(std::string uuid, std::string node, std::string replica);

  Cluster& c_;
  VolumeService& volumes_;
  TargetService& targets_;
  HealService& heal_;
};

}  // namespace tern::control
