// ReplicaSnapshots: snapshots of this node's replicas asked for by nexuses — a nexus on this node for
// its local children (nexus::LocalSnapshots), and a nexus on another node for the replicas this node
// exposes over NVMe/TCP, with tern's vendor admin commands (nvmf/vendor.h) on the connection that nexus
// already holds. Both end in PoolManager::create_snapshot / destroy_snapshot, so the rules (names,
// idempotent creates, space) are the pools' own.
//
// Threads: lives on reactor 0 (the primary), like the PoolManager it uses; the target calls its
// handlers there.
#pragma once

#include "engine/pool_manager.h"
#include "nexus/nexus.h"
#include "nvmf/target/target.h"

namespace tern::engine {

class ReplicaSnapshots final : public nexus::LocalSnapshots {
 public:
  explicit ReplicaSnapshots(PoolManager& pools) : pools_(pools) {}

  // Answers the vendor snapshot commands of `target` from now on; stop() before the pools go.
  void serve(nvmf::Target& target);
  void stop(nvmf::Target& target);

  // nexus::LocalSnapshots: `device` is a pool object's device (named by its UUID).
  Task<Result<bool>> take(std::string device, std::string name, Uuid uuid) override;
  Task<Status> drop(std::string device, Uuid uuid) override;

 private:
  // The replica or clone exposed as `device`.
  Result<ReplicaInfo> source_of(const std::string& device) const;
  Task<nvmf::AdminResult> command(nvmf::VendorCommand cmd);

  PoolManager& pools_;
};

}  // namespace tern::engine
