// DeviceManager: the node's devices as the API sees them — create, destroy, list, share, unshare — their
// I/O statistics and the reactors' load, and the NVMe/TCP target's view (subsystems, listeners, ANA
// states). A device that is a pool's object is the pool's business: it is shared through PoolManager
// (so the share is recorded in the pool) and destroyed as a replica, not here.
//
// Threads: owned by the Engine, lives on reactor 0 (the primary); every method runs there. Other
// threads call it through ReactorSet::run_sync(0, ...). Statistics visit each reactor with submit_to.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "bdev/registry.h"
#include "common/result.h"
#include "engine/pool_manager.h"
#include "engine/shares.h"
#include "engine/types.h"
#include "nvmf/target/target.h"
#include "reactor/reactor_set.h"

namespace tern::engine {

class DeviceManager {
 public:
  // `listener`: the engine's NVMe/TCP listener (what an ANA change without a listener means).
  DeviceManager(ReactorSet& reactors, BdevRegistry& registry, nvmf::Target& target, nvmf::ListenAddr listener,
                Shares& shares, PoolManager& pools);

  // Creating a URI that made a device already: OK, that device.
  Task<Result<DeviceInfo>> create(std::string uri);
  Task<Status> destroy(std::string name, bool force);
  // Every device, or the one with this name or UUID (an empty list if there is none).
  std::vector<DeviceInfo> list(const std::string& name_or_uuid) const;
  Task<Result<DeviceInfo>> share(std::string name, ShareProtocol protocol, std::vector<std::string> hosts);
  Task<Result<DeviceInfo>> unshare(std::string name);

  // Every device's statistics (or one's, by name or UUID: kNoEnt if there is none); `objects_only`
  // keeps only pools' objects.
  Task<Result<std::vector<DeviceStats>>> io_stats(std::string name_filter, bool objects_only);
  Task<Status> reset_io_stats(std::string name_filter);
  Task<std::vector<ReactorLoad>> reactor_stats();

  std::vector<nvmf::SubsystemInfo> subsystems(const std::string& nqn_filter) const;
  std::vector<nvmf::ListenAddr> listeners() const;
  // `listener`: host:port ("" = the engine's); `group`: 0 = 1; `state` as nvmf::parse_ana_state takes it.
  Status set_ana_state(const std::string& nqn, const std::string& listener, uint32_t group, const std::string& state);

 private:
  DeviceInfo info(const Bdev& b, const std::map<std::string, std::string>& object_pools) const;
  DeviceInfo describe(const Bdev& b) const;
  // A pool object's device, as a reference PoolManager takes; nullopt for any other device.
  std::optional<ReplicaRef> object_ref(const std::string& device) const;

  ReactorSet& reactors_;
  BdevRegistry& registry_;
  nvmf::Target& target_;
  nvmf::ListenAddr listener_;
  Shares& shares_;
  PoolManager& pools_;
};

}  // namespace tern::engine
