// DiskPoolOperator: keeps the cluster's pools as the DiskPool objects of one namespace say, and their status
// as the pools are (docs/kubernetes.md "DiskPools").
//
// The loop (its own thread): while this agent leads, list the DiskPools, reconcile each, then watch from
// the list's resourceVersion until the resync period ends (the server ends the watch: timeoutSeconds) and
// list again; a watch that expired (410) or broke is a new list. Not leading: wait, act on nothing.
//
// One DiskPool, one reconcile (idempotent; every event and every resync runs it):
//   - ours: the finalizer tern.io/pool-protection is added first (a merge patch conditional on the
//     resourceVersion), so that a deletion waits for the pool's destruction;
//   - a spec the agent cannot act on, a pool of that name on another node or disk, a declaration the agent
//     refuses (no such node, the engine cannot open the disk): status Error with the reason, retried at
//     each resync;
//   - no pool yet, or other labels: the pool is declared (created or relabelled); then the status shows
//     the pool's state, its engine's status, capacity, used, committed, replicas;
//   - deleted (deletionTimestamp) with our finalizer: its pool is destroyed (never a pool on another node
//     or disk than the DiskPool names; not at all when annotated tern.io/retain-pool: "true"), then the
//     finalizer is removed; a pool that still holds replicas stays, status Deleting naming them, retried
//     at each resync.
// The status is patched only when it differs from what this leader last wrote (or, the first time, from
// the object's): an event still carrying the older status does not write it twice. Created, Error and a
// blocked deletion are also Events on the object.
//
// Threads: the operator's thread runs the loop and blocks on the API server and on the PoolBackend;
// start() and stop() from the owner's thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <thread>

#include "kube/diskpool.h"
#include "kube/kube_client.h"

namespace tern::kube {

// The agent's pools, as the operator uses them (blocking; the agent enters its reactor).
class PoolBackend {
 public:
  virtual ~PoolBackend() = default;
  virtual bool leading() = 0;
  // kNoEnt when no pool of that name is declared; another error when the agent cannot say (a standby).
  virtual Result<PoolView> get(const std::string& name) = 0;
  // Declares the pool, or relabels it (same node and disk). The agent's errors as they are.
  virtual Result<PoolView> declare(const std::string& name, const std::string& node, const std::string& disk,
                                   const std::map<std::string, std::string>& labels) = 0;
  // Destroys the pool if it is the one on `node` and `disk` (checked in the same step as the destruction):
  // Ok when it is gone (or being destroyed on an offline node), kNoEnt when there is none, kExist when the
  // pool of that name is another, kBusy naming what still lives in it.
  virtual Status destroy(const std::string& name, const std::string& node, const std::string& disk) = 0;
  // Every call answers kAgain when this agent does not lead (any more): the leader acts, not this one.
};

struct OperatorOptions {
  double resync_s = 15;      // a full list this often (statuses refreshed, failed declarations retried)
  double max_backoff_s = 30;  // the API server unreachable or refusing, watches failing: retries back off up to this
  std::string instance;      // this agent's name, in Events
};

class DiskPoolOperator {
 public:
  DiskPoolOperator(KubeClient& kube, PoolBackend& pools, OperatorOptions opts);
  ~DiskPoolOperator();

  void start();
  // Ends the loop (an API request in flight finishes or times out first) and joins the thread. Idempotent.
  void stop();

  // One list of every DiskPool and a reconcile of each: Ok, or why the list failed. The resourceVersion
  // to watch from goes to `rv`.
  Status resync(std::string* rv = nullptr);

  // Asks the loop to end without waiting for it (stop() then joins).
  void request_stop();

 private:
  void run();
  void loop();
  void reconcile(DiskPool dp);
  void finalize(const DiskPool& dp);
  void set_status(const DiskPool& dp, const nlohmann::json& desired);
  void event(const DiskPool& dp, bool warning, const std::string& reason, const std::string& message);
  bool patch(const DiskPool& dp, const std::string& sub, const nlohmann::json& body, DiskPool* updated);
  // Waits `s` seconds, or less when stopping (false then).
  bool sleep_for(double s);
  std::string collection() const;
  void warn_once(const std::string& what);

  KubeClient& kube_;
  PoolBackend& pools_;
  OperatorOptions opts_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::string last_warning_;
  // The status this leader last wrote, by object uid (the operator's thread only; emptied when not leading).
  std::map<std::string, nlohmann::json> written_;
};

}  // namespace tern::kube
