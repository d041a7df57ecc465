// EtcdClient: etcd v3 over its JSON gateway (etcd 3.4: /v3/kv/*, /v3/lease/*, /v3/watch), on a reactor.
//
//   auto c = EtcdClient::Create(opts);                 // on the primary reactor
//   std::string key = "/tern/x", value = "...";
//   Result<int64_t> rev = co_await (*c)->put(key, value);
//   Result<KeyValue> kv = co_await (*c)->get(key);     // kNoEnt when absent
//   ...
//   co_await (*c)->close();                            // before it is destroyed
//
// Operations: put (optionally with a lease), get, range (by prefix or [key, end)), delete, txn (compares
// on value / version / create or mod revision / lease, then/else branches of put, delete, range), lease
// grant / keep-alive / revoke, and in the background: keeping a lease alive and watching a key or prefix.
//
// Endpoints: every member of the cluster may be listed. An operation goes to the member that answered
// last; when it cannot be reached (connection refused or reset, the member is unavailable: no leader,
// stopping) the operation moves on to the next, within the same deadline. A request that was sent and
// not answered in time is not sent elsewhere (a transaction may have been applied): it fails with
// kTimedOut, and the next operation starts at the next member. Reads, puts, deletes and lease keep-alives
// are also retried elsewhere when a connection breaks after the request left; transactions and lease
// grants are not (they are not idempotent) and say that they may have been applied.
//
// Timeouts: request_timeout_ns bounds each operation as a whole (every member it tries), on the reactor's
// clock. Errors name the member, the operation and the key, and what happened:
//   "etcd 127.0.0.1:2379: put '/tern/x': cannot connect: connection refused"
//   "etcd 127.0.0.1:2379: get '/tern/x': timed out after 500 ms"
// with the other members' failures after it when several were tried.
//
// Background work (owned by the client's TaskScope, stopped by cancel_* or close()):
//  - keep_alive(lease): renews every TTL/3; retries sooner after a failure; calls on_lost once the lease
//    is gone (etcd says it expired) or could not be renewed for a whole TTL.
//  - watch(key or prefix, from a revision): delivers every change in revision order to a callback; when
//    the stream breaks (etcd restarted, a member died) it reconnects — to the next member, with a
//    back-off — and resumes from the revision after the last one delivered, so nothing is lost or repeated.
//
// Threads: an EtcdClient lives on one reactor, the primary: it is created there, every operation is
// called (awaited) there, and callbacks run there. Nothing blocks the reactor. close() refuses new
// operations (kShutdown), fails those in progress, stops the background work and waits for all of it.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "reactor/task.h"
#include "reactor/task_scope.h"
#include "reactor/timer.h"
#include "store/etcd_types.h"
#include "store/http_client.h"

namespace tern::store {

struct EtcdOptions {
  // "127.0.0.1:2379", "http://127.0.0.1:2379", "[::1]:2379": numeric addresses (or localhost).
  std::vector<std::string> endpoints;
  uint64_t request_timeout_ns = 5'000'000'000;  // each operation, every member it tries included
  uint64_t connect_timeout_ns = 1'000'000'000;  // each connection attempt (within the operation's)
  // A broken watch stream is reopened after this back-off, doubling up to the maximum.
  uint64_t watch_retry_min_ns = 100'000'000;
  uint64_t watch_retry_max_ns = 2'000'000'000;
  uint64_t max_response_bytes = 64ull << 20;
};

// What a watch delivers: a batch of events (in revision order), or, once, the end of the watch when
// etcd ended it (the revision to resume from was compacted: kRange).
struct WatchUpdate {
  std::vector<WatchEvent> events;
  int64_t revision = 0;  // the store's revision when etcd sent the batch
  Status end;            // not OK: the watch is over; nothing follows
};

struct WatchOptions {
  std::string key;
  bool prefix = false;         // every key that starts with `key`
  int64_t start_revision = 0;  // 0: changes after the watch is set up
};

class EtcdClient {
 public:
  using WatchId = uint64_t;
  using KeepAliveId = uint64_t;
  using WatchCallback = std::function<void(const WatchUpdate&)>;
  using LeaseLostCallback = std::function<void(const Status&)>;

  // Checks the options (every endpoint parses). Call on the reactor that will own the client.
  static Result<std::unique_ptr<EtcdClient>> Create(EtcdOptions opts);
  ~EtcdClient();
  EtcdClient(const EtcdClient&) = delete;
  EtcdClient& operator=(const EtcdClient&) = delete;

  // Arguments are read while the task runs: await it at once (the views must stay valid until then).
  // Returns the revision of the put.
  Task<Result<int64_t>> put(std::string_view key, std::string_view value, int64_t lease = 0);
  // One key; kNoEnt when absent.
  Task<Result<KeyValue>> get(std::string_view key);
  // Every key that starts with `prefix`, in key order (at most `limit` when > 0).
  Task<Result<RangeResult>> get_prefix(std::string_view prefix, int64_t limit = 0);
  // Keys in [key, range_end); an empty range_end is the one key.
  Task<Result<RangeResult>> range(std::string_view key, std::string_view range_end, int64_t limit = 0);
  // Returns how many keys were deleted (0 when there was none).
  Task<Result<int64_t>> del(std::string_view key);
  Task<Result<int64_t>> del_prefix(std::string_view prefix);
  Task<Result<TxnResult>> txn(const Txn& txn);
  // Drops the history before `revision` (watches from older revisions then end with kRange).
  Task<Status> compact(int64_t revision);

  Task<Result<Lease>> lease_grant(int64_t ttl_seconds);
  // One renewal: the TTL it restored; kNoEnt when the lease is gone.
  Task<Result<int64_t>> lease_keep_alive_once(int64_t lease_id);
  // Revokes the lease (its keys are deleted) and stops keep_alive() for it. kNoEnt when it is gone.
  Task<Status> lease_revoke(int64_t lease_id);

  // Keeps `lease_id` alive in the background (renewals every ttl_seconds/3). `on_lost` runs (on this
  // reactor) if the lease is lost; not after stop_keep_alive or close.
  Result<KeepAliveId> keep_alive(int64_t lease_id, int64_t ttl_seconds, LeaseLostCallback on_lost = {});
  void stop_keep_alive(KeepAliveId id);

  // Watches in the background; `cb` runs on this reactor, never after cancel_watch or close returned.
  Result<WatchId> watch(WatchOptions opts, WatchCallback cb);
  void cancel_watch(WatchId id);

  // Refuses new work, fails what is in progress, stops keep-alives and watches, waits for all of it.
  Task<void> close();

  const std::vector<HttpEndpoint>& endpoints() const { return endpoints_; }
  const HttpClient& http() const { return http_; }
  // Watch streams requested so far (the first of each watch and every reopening, failed attempts
  // included), for tests and metrics.
  uint64_t watch_streams_opened() const { return watch_streams_opened_; }

 private:
  struct Reply {
    std::string body;
    std::string endpoint;  // the member that answered
  };
  struct KeepAliveState;
  struct WatchState;
  // A sleep that can be cut short (stop, close).
  class Snooze;

  EtcdClient(EtcdOptions opts, std::vector<HttpEndpoint> eps);
  // Sends `body` to `path` on the members in turn; the reply, or an error naming member, operation and
  // key. `idempotent`: may be sent again to another member after a broken connection.
  Task<Result<Reply>> call(std::string_view path, const std::string& body, std::string_view op,
                           std::string_view key, bool idempotent);
  // "etcd <endpoint>: <op> '<key>': <what happened>", keeping the code.
  static Status decorate(std::string_view endpoint, std::string_view op, std::string_view key, const Status& st);
  Task<void> keep_alive_loop(KeepAliveState* st);
  Task<void> watch_loop(WatchState* w);

  EtcdOptions opts_;
  std::vector<HttpEndpoint> endpoints_;
  HttpClient http_;
  TaskScope scope_{"etcd client"};
  size_t preferred_ = 0;  // the member to try first
  bool closing_ = false;
  uint64_t next_id_ = 1;
  std::map<KeepAliveId, std::unique_ptr<KeepAliveState>> keepers_;
  std::map<WatchId, std::unique_ptr<WatchState>> watches_;
  uint64_t watch_streams_opened_ = 0;
};

// A key's bytes for messages: printable ASCII as is, the rest escaped (\x00), long keys cut.
std::string printable_key(std::string_view key);

}  // namespace tern::store
