// PoolService: pools declared per node, created or imported on their engines, listed with capacity.
//
//   declare(name, node, disk, labels)  records the spec (creating) and asks the node's engine to create
//       the pool, or import it when the disk already holds it (CreateOrImportPool); created when the
//       engine agrees. Idempotent: the same declaration again is the same pool (with other labels: the
//       pool relabelled); another node or disk under the same name is kExist. A node that is offline leaves the pool `creating`: the reconciler
//       finishes it when the node returns. A disk the engine refuses (missing, not a device) removes the
//       declaration again and returns the engine's error.
//   destroy(name, force)  refuses (kBusy) while replicas, clones or volume snapshots live in the pool,
//       naming them; with force the replicas are taken out of their volumes and the snapshots lose their
//       parts there first. Marks the spec deleting, destroys the pool on the
//       engine, removes the spec; an offline node finishes later (reconcile).
//   reconcile_node(node)  after a node came online or its engine restarted: creates pools still
//       `creating`, imports created ones the engine does not have, destroys `deleting` ones.
//   refresh(node)  reads the node's pools (ListPools) into Cluster::pools.
//
// Threads: the agent's primary reactor.
#pragma once

#include <string>
#include <vector>

#include "control/cluster.h"
#include "reactor/task.h"

namespace tern::control {

class PoolService {
 public:
  explicit PoolService(Cluster& c) : c_(c) {}

  Task<Result<PoolSpec>> declare(std::string name, std::string node, std::string disk, Labels labels);
  Task<Status> destroy(std::string name, bool force);
  Task<void> reconcile_node(std::string node);
  Task<void> refresh(std::string node);

 private:
  // Asks the engine to create or import `spec`; on success marks it created.
  Task<Status> realize(PoolSpec spec);
  Task<Status> destroy_on_engine(PoolSpec spec, bool force);

  Cluster& c_;
};

}  // namespace tern::control
