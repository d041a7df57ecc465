// Engine: one storage node's data plane as a set of operations — pools, replicas, snapshots, devices,
// shares over NVMe/TCP and NBD, statistics — behind the io-engine's gRPC API (api/) and run by the
// io-engine daemon (tools/io-engine).
//
// Threads: an Engine lives on the primary reactor (reactor 0). Every operation below is a coroutine that
// runs there; other threads (gRPC handlers, the metrics server, main) reach it with
// ReactorSet::run_sync(0, ...), which blocks only the calling thread. Operations that change one pool
// hold that pool's AsyncMutex from the first check to the last change, so two requests for the same
// object never interleave at a co_await point; operations on different pools interleave freely.
//
// The API's protobuf messages (proto/tern/engine/v1) are the engine's value types: an operation takes
// a request message and returns a reply message or a Status whose Errc the API maps to a gRPC code
// (api/status_map.h). Errors name what was wrong (the field, the existing object's differing argument).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "bdev/registry.h"
#include "common/result.h"
#include "common/uuid.h"
#include "engine/options.h"
#include "engine/shares.h"
#include "engine/state_file.h"
#include "nbd/server.h"
#include "nvmf/target/target.h"
#include "pool/pool.h"
#include "reactor/async_mutex.h"
#include "reactor/reactor_set.h"
#include "tern/engine/v1/bdev.pb.h"
#include "tern/engine/v1/node.pb.h"
#include "tern/engine/v1/nvmf.pb.h"
#include "tern/engine/v1/pool.pb.h"
#include "tern/engine/v1/replica.pb.h"
#include "tern/engine/v1/snapshot.pb.h"
#include "tern/engine/v1/stats.pb.h"
#include "tern/engine/v1/test.pb.h"

namespace tern::engine {

namespace v1 = ::tern::engine::v1;

class Engine {
 public:
  Engine(ReactorSet& reactors, EngineOptions opts);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Start-up: device backends, the NVMe/TCP listener, the NBD server, then every pool this node had
  // (the state file) and every pool configured, with their replicas exposed and their shares back.
  // A pool that fails to import is logged and skipped (listed nowhere); the engine still starts.
  Task<Status> start();
  // Orderly stop: shares removed (hosts' I/O drains), pools exported clean, devices closed.
  Task<void> shutdown();

  // --- pools ---
  enum class PoolMode { kCreate, kCreateOrImport, kImport };
  Task<Result<v1::Pool>> create_pool(v1::CreatePoolRequest req, PoolMode mode);
  Task<Status> export_pool(std::string name);
  Task<Status> destroy_pool(std::string name);
  Task<Result<v1::Pool>> grow_pool(std::string name);
  std::vector<v1::Pool> list_pools(const std::string& name_filter) const;

  // --- replicas, snapshots, clones ---
  Task<Result<v1::Replica>> create_replica(v1::CreateReplicaRequest req);
  Task<Status> destroy_replica(v1::ReplicaRef ref, bool snapshot);
  // kind: replicas and clones, plus snapshots when `snapshots`; or only snapshots / clones of a source.
  std::vector<v1::Replica> list_replicas(const v1::ListReplicasRequest& f) const;
  std::vector<v1::Replica> list_snapshots(const v1::ListSnapshotsRequest& f, bool clones) const;
  Task<Result<v1::Replica>> resize_replica(v1::ResizeReplicaRequest req);
  Task<Result<v1::Replica>> share_replica(v1::ReplicaRef ref, v1::ShareProtocol protocol,
                                          std::vector<std::string> hosts);
  Task<Result<v1::Replica>> unshare_replica(v1::ReplicaRef ref);
  Task<Result<v1::Replica>> set_allowed_hosts(v1::ReplicaRef ref, std::vector<std::string> hosts);
  Task<Result<v1::Replica>> create_snapshot(v1::CreateSnapshotRequest req);
  Task<Result<v1::Replica>> create_clone(v1::CreateCloneRequest req);

  // --- devices ---
  Task<Result<v1::Bdev>> create_bdev(std::string uri);
  Task<Status> destroy_bdev(std::string name, bool force);
  std::vector<v1::Bdev> list_bdevs(const std::string& name_filter) const;
  Task<Result<v1::Bdev>> share_bdev(std::string name, v1::ShareProtocol protocol, std::vector<std::string> hosts);
  Task<Result<v1::Bdev>> unshare_bdev(std::string name);

  // --- NVMe/TCP ---
  std::vector<v1::Subsystem> list_subsystems(const std::string& nqn_filter) const;
  std::vector<std::string> list_listeners() const;
  Status set_ana_state(const v1::SetAnaStateRequest& req);

  // --- statistics ---
  Task<Result<std::vector<v1::IoStats>>> io_stats(std::string name_filter, bool replicas_only);
  Task<Status> reset_io_stats(std::string name_filter);
  Task<std::vector<v1::ReactorStats>> reactor_stats();

  // --- metrics: the Prometheus text page (metrics.cc) ---
  Task<std::string> metrics_text();

  // --- node ---
  v1::NodeInfo node_info() const;
  void set_startup_ms(uint64_t ms) { startup_ms_ = ms; }

  // --- test hooks ---
  Status set_error_rules(const v1::SetErrorRulesRequest& req);
  Status set_delay(const v1::SetDelayRequest& req);
  Task<Status> write_pattern(v1::PatternRequest req);
  Task<Result<v1::VerifyPatternReply>> verify_pattern(v1::PatternRequest req);

  ReactorSet& reactors() { return reactors_; }
  BdevRegistry& devices() { return registry_; }
  nvmf::Target& target() { return *target_; }
  const EngineOptions& options() const { return opts_; }

 private:
  // The host clients are told for NBD over TCP: a wildcard listen address is no address a client can
  // use, so it is the advertised one then.
  const std::string& nbd_client_host() const {
    const bool wildcard = opts_.nbd_address == "0.0.0.0" || opts_.nbd_address == "::";
    return wildcard ? opts_.advertise_address : opts_.nbd_address;
  }
  struct PoolEntry {
    std::unique_ptr<pool::Pool> pool;
    std::string disk;       // as given by the user (URI or device name)
    std::string bdev;       // the device's name
    bool owns_bdev = false; // the engine created the device from a URI (and destroys it on export)
    bool closed = false;    // exported or destroyed: requests that waited for `mu` give up
    AsyncMutex mu;
  };
  // A replica located: its pool entry and metadata (a copy).
  struct Found {
    PoolEntry* entry;
    pool::ReplicaMeta meta;
  };

  Task<Result<v1::Pool>> open_pool(v1::CreatePoolRequest req, PoolMode mode, bool remember);
  Task<Status> close_pool(std::string name, bool destroy);
  Task<Status> expose_and_reshare(PoolEntry& e);
  Result<Found> find_replica(const v1::ReplicaRef& ref) const;
  PoolEntry* find_pool(const std::string& name) const;
  // kNoEnt once the pool was exported or destroyed (checked right after taking its lock).
  static Status still_open(const PoolEntry& e);
  v1::Pool pool_message(const std::string& name, const PoolEntry& e) const;
  v1::Replica replica_message(const PoolEntry& e, const pool::ReplicaMeta& m) const;
  // Shares `device` and records the share in the object's properties (so it comes back at start).
  Task<Status> share_object(PoolEntry& e, const pool::ReplicaMeta& m, v1::ShareProtocol protocol,
                            std::vector<std::string> hosts);
  Task<Status> unshare_object(PoolEntry& e, const pool::ReplicaMeta& m);
  Status save_state() const;

  ReactorSet& reactors_;
  EngineOptions opts_;
  BdevRegistry registry_;
  std::unique_ptr<nvmf::Target> target_;
  std::unique_ptr<nbd::Server> nbd_;  // null when NBD is off
  std::unique_ptr<Shares> shares_;
  StateFile state_;
  std::map<std::string, std::unique_ptr<PoolEntry>> pools_;
  AsyncMutex pools_mu_;  // the pools table: create, import, export, destroy
  Uuid instance_ = Uuid::Generate();
  std::chrono::steady_clock::time_point started_ = std::chrono::steady_clock::now();
  uint64_t startup_ms_ = 0;
  bool stopped_ = false;
};

}  // namespace tern::engine
