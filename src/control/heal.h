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
// Rebuild slots: each pass first counts the rebuilds running or paused on every online node's nexuses;
// an action that starts one (onlining, joining or replacing a replica, adding a missing one to a
// published volume) takes a slot, and when `max_rebuilds` are taken (0: no limit) it waits for a later
// pass (logged, rate-limited). A nexus's own rebuilds of stale children at its creation are not held back
// (the volume would otherwise stay degraded) but count against the others.
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
  // A slot for a rebuild about to start for `what` (this pass's count); false (logged) when all are
  // taken. Also for the evacuation, which runs after the heal pass.
  bool take_slot(const std::string& uuid, const std::string& what);
  // Rebuilds running or paused at the start of the last pass.
  uint32_t rebuilds_seen() const { return seen_; }

 private:
  Task<void> heal(std::string uuid);
  // Rebuilds now running or paused on the online nodes' nexuses.
  Task<uint32_t> count_rebuilds();
  uint32_t running_ = 0;
  uint32_t seen_ = 0;  // this pass: counted at its start, plus the slots taken since

  Cluster& c_;
  VolumeService& volumes_;
  TargetService& targets_;
};

}  // namespace tern::control
