// Agent: the core agent — leadership, the registry, the specs and the services that change them, and
// the loops that keep the cluster as the specs say (docs/design/control-plane.md).
//
// Life: start() campaigns in the background. A standby keeps the registry (engines register with every
// agent) and answers reads with kUnavailable naming the leader. Once it leads: the specs are loaded, every
// online node's pools are reconciled (imported, created, destroyed as their specs say), and the periodic
// loops run — the watchdog (overdue heartbeats: probe, then offline), the pools poll (capacity), the
// reconcile pass (half-done operations of an earlier leader, deletions waiting for a node). Losing the
// lease stops acting at once (writes are fenced anyway), drops the loaded specs and campaigns again.
//
// Threads: everything on the primary reactor of the agent's ReactorSet; the gRPC registration service
// and the REST server's threads enter with run_sync.
#pragma once

#include <memory>
#include <string>

#include "control/cluster.h"
#include "control/evacuate.h"
#include "control/heal.h"
#include "control/leadership.h"
#include "control/orphans.h"
#include "control/pools.h"
#include "control/snapshots.h"
#include "control/targets.h"
#include "control/volumes.h"
#include "reactor/task_scope.h"
#include "store/etcd_client.h"

namespace tern::control {

struct AgentStatus {
  std::string id;
  bool leading = false;
  int64_t term = 0;
  std::string leader;  // the leader's id as etcd has it ("" when unknown)
  uint64_t reconcile_passes = 0;
  uint64_t orphans_collected = 0;
  uint32_t rebuilds = 0;  // running or paused at the last heal pass
};

class Agent {
 public:
  Agent(store::EtcdClient& etcd, std::string id, AgentOptions opts);
  ~Agent();

  void start();
  Task<void> stop();

  // Registration service (gRPC threads -> run_sync).
  Task<Status> on_register(Registration r);
  void on_deregister(const std::string& node, const std::string& instance);

  // kUnavailable naming the leader when this agent is a standby.
  Task<Status> require_leader();
  Task<AgentStatus> status();

  Cluster& cluster() { return cluster_; }
  SpecStore& specs() { return specs_; }
  Registry& registry() { return registry_; }
  PoolService& pools() { return pools_; }
  VolumeService& volumes() { return volumes_; }
  SnapshotService& snapshots() { return snapshots_; }
  const OrphanService& orphans() const { return orphans_; }
  TargetService& targets() { return targets_; }
  const AgentOptions& options() const { return opts_; }
  const std::string& id() const { return id_; }
  bool leading() const { return leading_; }

  // Node operations: cordon / uncordon (by label; idempotent).
  Task<Result<NodeSpec>> cordon(std::string node, std::string label, bool on);
  // Drain: cordons the node under `label`, marks it draining, and republishes every volume whose target
  // is there on another node (the old nexus shut down first); draining ends when none is left. A volume
  // that cannot move is named in a kBusy error (the node stays cordoned; drain again to retry). With
  // `replicas` the node is also marked evacuating: its replicas are moved by the reconcile passes
  // (evacuate.h), and draining ends when the last one is gone.
  Task<Result<NodeSpec>> drain(std::string node, std::string label, bool replicas = false);

 private:
  Task<void> run();
  Task<void> lead();
  Task<void> watchdog_loop();
  Task<void> poll_loop();
  Task<void> reconcile_loop();
  Task<void> reconcile_pass();
  // Waits (within the take-over grace) until every node in the specs has registered.
  Task<void> await_nodes();

  store::EtcdClient& etcd_;
  std::string id_;
  AgentOptions opts_;
  std::unique_ptr<Leadership> leadership_;
  SpecStore specs_;
  Registry registry_;
  Engines engines_;
  Cluster cluster_;
  PoolService pools_;
  TargetService targets_;
  VolumeService volumes_;
  SnapshotService snapshots_;
  HealService heal_;
  EvacuationService evacuation_;
  OrphanService orphans_;
  TaskScope scope_{"agent"};
  bool stopping_ = false;
  bool leading_ = false;
  uint64_t epoch_ = 0;  // bumped when leadership is won or lost: loops of an older epoch end
  std::set<std::string> to_reconcile_;  // nodes that came online or restarted
  uint64_t reconcile_passes_ = 0;
  uint64_t grace_until_ = 0;
};

}  // namespace tern::control
