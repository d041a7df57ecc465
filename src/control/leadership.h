// Leadership: exactly one core agent acts at a time (issue 17, docs/design/control-plane.md).
//
// The leader holds one key in etcd (`key`, its value the agent's id) attached to a lease of `ttl_seconds`
// that it keeps alive. Standbys watch the key and campaign the moment it goes: at once when the leader
// resigns (a clean exit revokes its lease), within the TTL when it dies. Every write the leader makes goes
// through guarded(): a transaction that also requires the key to be the one this agent created (its create
// revision, the "term"), so an agent that lost its lease — paused, partitioned, slow — cannot write
// anything once a successor exists, even if it has not noticed yet.
//
// Threads: the reactor the EtcdClient lives on (the agent's primary); every method runs there.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "common/result.h"
#include "reactor/task.h"
#include "store/etcd_client.h"

namespace tern::control {

struct LeadershipOptions {
  std::string key;          // e.g. "/tern/v1/leader"
  std::string id;           // this agent: node, pid, start time (what `leader()` reports)
  int64_t ttl_seconds = 3;  // how long a dead leader keeps the role (2..60)
};

class Leadership {
 public:
  // kInval naming the field when the options are bad.
  static Result<std::unique_ptr<Leadership>> Create(store::EtcdClient& etcd, LeadershipOptions opts);
  ~Leadership();

  // Campaigns until this agent leads (OK) or stop() is called (kCanceled). etcd unreachable: retried.
  Task<Status> campaign();
  bool leading() const { return leading_; }
  // The create revision of our leader key while leading (0 otherwise): a fencing token.
  int64_t term() const { return leading_ ? term_ : 0; }
  // `txn` plus "the leader key is still ours". kAccess when this agent does not lead (any more): the
  // write was not made. Other errors: etcd's.
  Task<Result<store::TxnResult>> guarded(store::Txn txn);
  // Who leads now (the key's value); kNoEnt when nobody does.
  Task<Result<std::string>> leader();
  // Steps down: the lease is revoked, so a standby takes over at once.
  Task<void> resign();
  // Ends a campaign in progress (it returns kCanceled) and resigns.
  Task<void> stop();
  // Runs (on the reactor) when leadership is lost without resign(): the lease expired or the key went.
  void on_lost(std::function<void(const Status&)> cb) { on_lost_ = std::move(cb); }

 private:
  Leadership(store::EtcdClient& etcd, LeadershipOptions opts) : etcd_(etcd), opts_(std::move(opts)) {}
  void lost(const Status& why);

  store::EtcdClient& etcd_;
  LeadershipOptions opts_;
  bool leading_ = false;
  bool stopping_ = false;
  int64_t term_ = 0;
  int64_t lease_ = 0;
  store::EtcdClient::KeepAliveId keep_alive_ = 0;
  bool have_keep_alive_ = false;
  std::function<void(const Status&)> on_lost_;
};

}  // namespace tern::control
