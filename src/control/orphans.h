// OrphanService: garbage-collects pool objects on the engines that no spec names.
//
// Every spec is written before its engine object is made and removed only after the object is gone
// (volumes.h, snapshots.h), so an object in a declared pool with no spec is left over from something
// that went wrong outside the agent's records: an etcd restored from an older backup, a destroy whose
// engine answered after the agent gave up, a nexus snapshot of a child that joined while it was taken.
// Only objects the agent would have made are candidates — named by a UUID (replicas and clones by
// their own, snapshot parts by their volume snapshot's) — so what an operator made by hand with another
// name is never touched; nor are snapshots already deleted and kept for their clones.
//
// reconcile()  Lists every object on each online node (one call per node) and destroys the candidates
//     seen unnamed in every pass for at least `orphan_grace_ms` (one missed by a pass — named again,
//     gone, its node not asked — starts over; a create in flight is never collected: its spec came
//     first, and the grace covers anything not yet recorded), logging each.
//
// Threads: the agent's primary reactor.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "control/cluster.h"
#include "reactor/task.h"

namespace tern::control {

class OrphanService {
 public:
  explicit OrphanService(Cluster& c) : c_(c) {}

  Task<void> reconcile();
  uint64_t collected() const { return collected_; }

 private:
  // One node's candidates: destroyed once past the grace; those left are added to `seen`.
  Task<void> collect(std::string node, uint64_t now, std::set<std::string>& seen);

  Cluster& c_;
  std::map<std::string, uint64_t> first_seen_;  // object UUID -> reactor clock when first seen unnamed
  uint64_t collected_ = 0;
};

}  // namespace tern::control
