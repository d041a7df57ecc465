// Engine: one storage node's io-engine, wired together. It owns the device registry, the NVMe/TCP
// target, the NBD server and the managers that do the work, and starts and stops them in order:
//
//   PoolManager    pools and their objects (replicas, snapshots, clones), the state file
//   DeviceManager  devices, statistics, the NVMe/TCP target's view
//   Shares         what is shared over NVMe/TCP or NBD, to whom
//   TestHooks      fault injection and pattern checks
//   NexusManager   nexuses (volumes mirrored to replicas here and on other nodes), published to hosts
//
// The managers speak the domain types of engine/types.h; the gRPC services (api/) translate the API's
// messages to and from them, and the metrics page (metrics.h) is built from them. The nexus manager and
// the control plane's registration client join as further members, not as methods here.
//
// Threads: an Engine lives on reactor 0 (the primary): start, shutdown and every manager method run
// there. Other threads (main, gRPC handlers, the metrics server) use ReactorSet::run_sync(0, ...), which
// blocks only the caller.
#pragma once

#include <chrono>
#include <memory>

#include "bdev/registry.h"
#include "engine/device_manager.h"
#include "engine/nexus_manager.h"
#include "engine/options.h"
#include "engine/pool_manager.h"
#include "engine/replica_snapshots.h"
#include "engine/shares.h"
#include "engine/test_hooks.h"
#include "engine/types.h"
#include "nbd/server.h"
#include "nvmf/target/target.h"
#include "reactor/reactor_set.h"
#include "store/etcd_client.h"

namespace tern::engine {

class Engine {
 public:
  Engine(ReactorSet& reactors, EngineOptions opts);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Start-up: the NVMe/TCP listener, the NBD server, the managers, then every pool this node had (the
  // state file) and every pool configured, with their objects exposed and their shares back. A pool
  // that fails to import is logged and skipped (listed nowhere); the engine still starts.
  Task<Status> start();
  // Orderly stop: pools closed to changes, shares removed (hosts' I/O drains), NBD and the target
  // stopped, pools exported clean, devices closed. Safe after a failed start.
  Task<void> shutdown();

  // The managers, once start() has succeeded.
  PoolManager& pools() { return *pools_; }
  DeviceManager& devices() { return *devices_; }
  Shares& shares() { return *shares_; }
  TestHooks& test_hooks() { return *test_hooks_; }
  NexusManager& nexuses() { return *nexuses_; }

  // Who this engine is, where it listens, how long it has run.
  NodeInfo node_info() const;
  void set_startup_ms(uint64_t ms) { startup_ms_ = ms; }

  ReactorSet& reactors() { return reactors_; }
  BdevRegistry& registry() { return registry_; }
  nvmf::Target& target() { return *target_; }
  const EngineOptions& options() const { return opts_; }

 private:
  // The host clients are told for NBD over TCP: a wildcard listen address is no address a client can
  // use, so it is the advertised one then.
  const std::string& nbd_client_host() const;
  // The NBD server, when configured; fills in where clients reach it.
  Status start_nbd(ShareEndpoints& ep);

  ReactorSet& reactors_;
  EngineOptions opts_;
  BdevRegistry registry_;
  std::unique_ptr<nvmf::Target> target_;
  std::unique_ptr<nbd::Server> nbd_;  // null when NBD is off
  std::unique_ptr<Shares> shares_;
  std::unique_ptr<PoolManager> pools_;
  std::unique_ptr<DeviceManager> devices_;
  std::unique_ptr<TestHooks> test_hooks_;
  std::unique_ptr<store::EtcdClient> etcd_;         // when --etcd is given
  std::unique_ptr<nexus::RecordStore> store_;       // where nexuses keep their records (none: not configured)
  std::unique_ptr<ReplicaSnapshots> snapshots_;  // replicas' snapshots for nexuses here and elsewhere
  std::unique_ptr<NexusManager> nexuses_;
  Uuid instance_ = Uuid::Generate();
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  uint64_t startup_ms_ = 0;
  bool stopped_ = false;
};

}  // namespace tern::engine
