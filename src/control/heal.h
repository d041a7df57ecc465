// HealService: keeps published volumes served and redundant (one pass per reconcile).
//
// For each volume whose target is published (and no other operation runs on it):
//   - its target's node is offline: republish on another node (switch-over; TargetService::publish with
//     republish — only replicas holding current data are served, so a switch-over may have to wait for
//     a node to return);
//   - its nexus is missing on its online node (the engine restarted): recreate it there;
//   - a child is faulted and its node is online: OnlineChild — the child rejoins and is rebuilt from the
//     dirty-region log the other children kept (a partial rebuild, docs/design/rebuild.md);
//   - a child is faulted and its node has been offline for longer than `faulted_child_wait_ms`: a new
//     replica is placed elsewhere, added to the nexus (a full rebuild), and the old one is dropped from
//     the volume (destroyed when its node returns);
//   - the volume has fewer replicas than it should (one was dropped, a pool force-destroyed): new ones
//     are added.
// At most `max_rebuilds` rebuilds this service started run at once in the cluster (0: no limit).
//
// Threads: the agent's primary reactor.
#pragma once

#include "control/cluster.h"
#include "control/targets.h"
#include "control/volumes.h"
#include "reactor/task.h"

namespace tern::control {

class HealService {
 public:
  HealService(Cluster& c, VolumeService& volumes, TargetService& targets) : c_(c), volumes_(volumes), targets_(targets) {}
  Task<void> reconcile();

 private:
  Task<void> heal(std::string uuid);

  Cluster& c_;
  VolumeService& volumes_;
  TargetService& targets_;
};

}  // namespace tern::control
