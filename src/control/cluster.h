// Cluster: what the agent's services share — the specs (what should be), the registry (who is alive),
// the engines' API, and the last state each engine reported for its pools (what is).
//
// Threads: the agent's primary reactor.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <set>
#include <string>

#include "common/uuid.h"
#include "control/engines.h"
#include "control/registry.h"
#include "control/spec_store.h"
#include "reactor/reactor.h"

namespace tern::control {

// A pool as its engine last reported it.
struct PoolStatus {
  bool found = false;       // the engine has it
  std::string state;        // online | degraded (the engine's), when found
  std::string reason;       // the engine's state reason, or why it could not be asked
  uint64_t capacity = 0;
  uint64_t used = 0;
  uint64_t committed = 0;
  uint32_t objects = 0;     // replicas, snapshots and clones in it
  uint64_t seen_ns = 0;     // when (reactor clock); 0: never
};

struct AgentOptions {
  Keys keys;
  uint64_t node_deadline_ms = 5000;   // no heartbeat for this long: the node is probed
  uint64_t heartbeat_ms = 1000;       // what engines are told
  uint64_t poll_ms = 5000;            // the engines' pools are read this often
  uint64_t reconcile_ms = 5000;       // the periodic reconcile pass
  uint64_t engine_timeout_ms = 15000; // each engine call
  double thin_commitment = 2.5;       // thin replicas may commit 250 % of a pool's capacity
  int64_t lease_ttl_s = 3;            // the leader's lease: a dead leader is replaced within this
  // Appended to a nexus's remote child URIs (src/nvmf/host/nvmf_bdev.h): how long a child's I/O may
  // wait and its controller may be away before the nexus retires it and goes on without it.
  // A faulted child whose node stays away this long is replaced by a new replica elsewhere; before, the
  // agent waits for it to return and rebuild only what it missed.
  uint64_t faulted_child_wait_ms = 300'000;
  // Rebuilds the agent starts (onlining, joining or replacing a replica) that may run at once in the
  // cluster; more wait for a slot. 0: no limit.
  uint32_t max_rebuilds = 8;
  // An object in a declared pool that no spec names (orphans.h) is destroyed once it has been seen so
  // for this long.
  uint64_t orphan_grace_ms = 60'000;
  std::string child_params = "timeout_ms=10000&ctrl_loss_tmo_s=5&reconnect_delay_ms=500";

  // The timeout of the reconcile passes' reads (listing nexuses, objects): half the node deadline, 1 s at
  // least, the engine timeout at most — so a node that stopped answering without being offline yet (a
  // partition drops packets; a killed engine refuses at once) holds up a pass briefly, not for
  // `engine_timeout_ms`, and the switch-over that follows its going offline is not delayed.
  uint64_t read_timeout_ms() const { return std::min(engine_timeout_ms, std::max<uint64_t>(1000, node_deadline_ms / 2)); }
};

struct Cluster {
  Cluster(SpecStore& s, Registry& r, Engines& e, const AgentOptions& o) : specs(s), registry(r), engines(e), opts(o) {}
  SpecStore& specs;
  Registry& registry;
  Engines& engines;
  const AgentOptions& opts;
  std::map<std::string, PoolStatus> pools;  // by pool name
  // Volumes with an operation in progress (one at a time per volume; another meanwhile is kBusy).
  std::set<std::string> busy;

  // Waits until no operation runs on `uuid` (a user's request behind a reconcile pass, or behind another
  // request for the same volume); false after `timeout_ms`.
  Task<bool> wait_free(std::string uuid, uint64_t timeout_ms = 60'000) {
    uint64_t waited = 0;
    while (busy.count(uuid)) {
      if (waited >= timeout_ms * 1'000'000) co_return false;
      co_await Reactor::sleep_for(2'000'000);
      waited += 2'000'000;
    }
    co_return true;
  }

  // The start of every operation on one volume: `*uuid` parsed (kInval) and made canonical, other
  // operations on it waited for (kBusy after the wait), the specs loaded. The caller then takes its
  // BusyGuard before its first co_await.
  Task<Status> begin_volume_op(std::string* uuid) {
    auto parsed = Uuid::Parse(*uuid);
    if (!parsed.ok()) co_return Status::Errorf(Errc::kInval, "uuid '{}': not a UUID", *uuid);
    *uuid = parsed->ToString();
    bool free = co_await wait_free(*uuid);
    if (!free) co_return Status::Errorf(Errc::kBusy, "volume {}: an operation is in progress", *uuid);
    co_return co_await specs.ensure_loaded();
  }

  // The volume, for an operation that needs it made: kNoEnt when there is none, kBusy while it is being
  // created or destroyed.
  Result<const VolumeSpec*> created_volume(const std::string& uuid) const {
    const VolumeSpec* v = specs.volume(uuid);
    if (!v) return Status::Errorf(Errc::kNoEnt, "volume {} does not exist", uuid);
    if (v->state != SpecState::kCreated) return Status::Errorf(Errc::kBusy, "volume {} is {}", uuid, spec_state_name(v->state));
    return v;
  }

  // Which replicas hold the volume's current data, by its nexus record: `recorded` false when it has
  // none (never published: all of them do), else the UUIDs of the children it calls healthy. kCorruption
  // for a record that cannot be read.
  struct Current {
    bool recorded = false;
    std::set<std::string> healthy;
    bool holds(const std::string& replica) const { return !recorded || healthy.count(replica) > 0; }
  };
  Task<Result<Current>> current_replicas(std::string uuid);

  // The node's API endpoint: its last registration, else its spec; empty when unknown.
  std::string endpoint(const std::string& node) const {
    std::string e = registry.endpoint(node);
    if (!e.empty()) return e;
    auto it = specs.nodes.find(node);
    return it == specs.nodes.end() ? std::string() : it->second.grpc_endpoint;
  }
};

// Marks a volume busy for the guard's lifetime.
class BusyGuard {
 public:
  BusyGuard(std::set<std::string>& s, std::string id) : s_(s), id_(std::move(id)) { s_.insert(id_); }
  ~BusyGuard() { s_.erase(id_); }
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;

 private:
  std::set<std::string>& s_;
  std::string id_;
};

}  // namespace tern::control
