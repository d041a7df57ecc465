// SpecStore: the leader's copy of the specs (specs.h) and the only way it changes them.
//
// load() reads every spec under the prefix into new maps and then replaces the copy at once (concurrent
// readers never see it half read; a commit applied meanwhile makes it read again); afterwards the maps
// are what etcd holds, because the leader
// is the only writer: every change is a Batch committed as one etcd transaction guarded by the leader's
// term (Leadership::guarded), and applied to the maps only once etcd took it. A commit whose outcome is
// unknown (a timeout: the transaction may have been applied) marks the copy stale; the next operation
// reloads it first (ensure_loaded).
//
// A spec that cannot be parsed is not dropped: it is listed in `unreadable` (key and error), kept in
// etcd, and its name stays taken, so nothing overwrites what an operator must look at.
//
// Threads: the agent's primary reactor.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

#include "common/result.h"
#include "control/leadership.h"
#include "control/specs.h"
#include "reactor/task.h"
#include "store/etcd_client.h"

namespace tern::control {

class SpecStore {
 public:
  // Changes committed together (one transaction).
  class Batch {
   public:
    void put(const NodeSpec& s);
    void put(const PoolSpec& s);
    void put(const ReplicaSpec& s);
    void put(const VolumeSpec& s);
    void put(const SnapshotSpec& s);
    void del_snapshot(const std::string& uuid);
    void del_pool(const std::string& name);
    void del_replica(const std::string& uuid);
    void del_volume(const std::string& uuid);
    bool empty() const { return ops_.empty(); }

   private:
    friend class SpecStore;
    explicit Batch(SpecStore* s) : store_(s) {}
    SpecStore* store_;
    std::vector<store::TxnOp> ops_;
    std::vector<std::function<void()>> apply_;
  };

  SpecStore(store::EtcdClient& etcd, Leadership& leader, Keys keys) : etcd_(etcd), leader_(leader), keys_(std::move(keys)) {}

  Task<Status> load();
  // Reloads when a commit's outcome was unknown (or nothing was loaded yet).
  Task<Status> ensure_loaded();
  void invalidate() { loaded_ = false; }

  Batch batch() { return Batch(this); }
  // kAccess: this agent no longer leads (nothing written). Other errors: etcd's; the copy is reloaded
  // before the next use.
  Task<Status> commit(Batch b);

  const Keys& keys() const { return keys_; }
  // A key's value read from etcd (not a spec: e.g. a volume's nexus record); kNoEnt when absent.
  Task<Result<std::string>> read(std::string key);
  std::map<std::string, NodeSpec> nodes;
  std::map<std::string, PoolSpec> pools;
  std::map<std::string, ReplicaSpec> replicas;
  std::map<std::string, VolumeSpec> volumes;
  std::map<std::string, SnapshotSpec> snapshots;
  std::map<std::string, std::string> unreadable;  // key -> why

  // Lookups.
  const VolumeSpec* volume(const std::string& uuid) const;
  const PoolSpec* pool(const std::string& name) const;
  const SnapshotSpec* snapshot(const std::string& uuid) const;
  std::vector<const ReplicaSpec*> replicas_of(const std::string& volume) const;
  std::vector<const ReplicaSpec*> replicas_in(const std::string& pool) const;

 private:
  store::EtcdClient& etcd_;
  Leadership& leader_;
  Keys keys_;
  bool loaded_ = false;
  uint64_t applied_ = 0;  // commits applied to the copy (a load that saw this change reads again)
  struct Copy {
    std::map<std::string, NodeSpec> nodes;
    std::map<std::string, PoolSpec> pools;
    std::map<std::string, ReplicaSpec> replicas;
    std::map<std::string, VolumeSpec> volumes;
    std::map<std::string, SnapshotSpec> snapshots;
    std::map<std::string, std::string> unreadable;
  };
  Task<Status> read_all(Copy* c);
};

}  // namespace tern::control
