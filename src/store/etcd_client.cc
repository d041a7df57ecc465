#include "store/etcd_client.h"

#include <algorithm>

#include "common/check.h"
#include "common/log.h"
#include "reactor/reactor.h"
#include "store/etcd_codec.h"

namespace tern::store {

namespace {

struct ScopeHold {
  TaskScope* scope;
  ~ScopeHold() {
    if (scope) scope->leave();
  }
};

std::string what(const Status& st) {
  return st.message().empty() ? errc_describe(st.code()) : std::string(st.message());
}

// `st` with the failures of the members tried before it appended.
Status with_earlier(const Status& st, const std::vector<std::string>& earlier) {
  if (earlier.empty()) return st;
  std::string all;
  for (const auto& e : earlier) all += (all.empty() ? "" : "; ") + e;
  return Status(st.code(), fmt::format("{} (tried before: {})", what(st), all));
}

}  // namespace

std::string printable_key(std::string_view key) {
  std::string out;
  for (size_t i = 0; i < key.size() && i < 200; ++i) {
    auto c = uint8_t(key[i]);
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += char(c);
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (key.size() > 200) out += fmt::format("...({} bytes)", key.size());
  return out;
}

// ---------------------------------------------------------------------------------------------------
// Background state

class EtcdClient::Snooze {
 public:
  Snooze() {
    node_.owner = this;
    node_.run = [](Deferred* d) {
      Snooze* s = static_cast<OwnedDeferred<Snooze>*>(d)->owner;
      s->queued_ = false;
      if (auto h = std::exchange(s->h_, {})) h.resume();
    };
    timer_.set_callback([this] {
      if (auto h = std::exchange(h_, {})) h.resume();
    });
  }
  struct Awaiter {
    Snooze* s;
    uint64_t ns;
    bool await_ready() const noexcept { return s->woken_ || ns == 0; }
    void await_suspend(std::coroutine_handle<> h) {
      s->h_ = h;
      s->timer_.arm(ns);
    }
    void await_resume() const noexcept {}
  };
  Awaiter sleep_for(uint64_t ns) { return Awaiter{this, ns}; }
  // Ends the current sleep now (from the loop, not inside this call) and every later one at once.
  void wake() {
    woken_ = true;
    if (h_ && !queued_) {
      timer_.cancel();
      queued_ = true;
      Reactor::current()->defer(&node_);
    }
  }

 private:
  Timer timer_;
  std::coroutine_handle<> h_;
  bool woken_ = false;
  bool queued_ = false;
  OwnedDeferred<Snooze> node_;
};

struct EtcdClient::KeepAliveState {
  KeepAliveId id = 0;
  int64_t lease = 0;
  int64_t ttl_seconds = 0;
  LeaseLostCallback on_lost;
  bool stopped = false;
  Snooze snooze;
};

struct EtcdClient::WatchState {
  WatchId id = 0;
  WatchOptions opts;
  WatchCallback cb;
  int64_t next_rev = 0;  // resume from here: after the last revision delivered (0: not known yet)
  bool stopped = false;
  std::unique_ptr<HttpStream> stream;
  Snooze snooze;
};

// ---------------------------------------------------------------------------------------------------
// Creation and the request path

Result<std::unique_ptr<EtcdClient>> EtcdClient::Create(EtcdOptions opts) {
  if (opts.endpoints.empty()) return Status(Errc::kInval, "etcd: no endpoints given");
  std::vector<HttpEndpoint> eps;
  for (const auto& e : opts.endpoints) {
    auto ep = HttpEndpoint::Parse(e);
    if (!ep.ok()) return Status(Errc::kInval, fmt::format("etcd: {}", ep.status().message()));
    eps.push_back(std::move(*ep));
  }
  if (opts.request_timeout_ns == 0) return Status(Errc::kInval, "etcd: request_timeout_ns must be positive");
  if (opts.watch_retry_min_ns == 0) opts.watch_retry_min_ns = 1'000'000;
  opts.watch_retry_max_ns = std::max(opts.watch_retry_max_ns, opts.watch_retry_min_ns);
  if (!Reactor::current()) return Status(Errc::kInval, "etcd: the client must be created on a reactor");
  return std::unique_ptr<EtcdClient>(new EtcdClient(std::move(opts), std::move(eps)));
}

static HttpClientOptions http_options(const EtcdOptions& o) {
  HttpClientOptions h;
  h.connect_timeout_ns = o.connect_timeout_ns;
  h.limits.max_body_bytes = o.max_response_bytes;
  return h;
}

EtcdClient::EtcdClient(EtcdOptions opts, std::vector<HttpEndpoint> eps)
    : opts_(std::move(opts)), endpoints_(std::move(eps)), http_(http_options(opts_)) {}

EtcdClient::~EtcdClient() {
  TERN_CHECK(watches_.empty() && keepers_.empty(), "etcd client destroyed with {} watch(es) and {} keep-alive(s) "
             "running (await close() first)", watches_.size(), keepers_.size());
}

Status EtcdClient::decorate(std::string_view endpoint, std::string_view op, std::string_view key, const Status& st) {
  if (key.empty()) return Status(st.code(), fmt::format("etcd {}: {}: {}", endpoint, op, what(st)));
  return Status(st.code(), fmt::format("etcd {}: {} '{}': {}", endpoint, op, printable_key(key), what(st)));
}

Task<Result<EtcdClient::Reply>> EtcdClient::call(std::string_view path, const std::string& body, std::string_view op,
                                                 std::string_view key, bool idempotent) {
  const size_t n = endpoints_.size();
  if (closing_ || !scope_.enter()) {
    co_return decorate(endpoints_[preferred_ % n].to_string(), op, key,
                       Status(Errc::kShutdown, "the client is closed"));
  }
  ScopeHold hold{&scope_};
  Reactor* r = Reactor::current();
  const uint64_t deadline = r->now() + opts_.request_timeout_ns;
  const Status op_timed_out =
      Status::Errorf(Errc::kTimedOut, "timed out after {} ms", opts_.request_timeout_ns / 1'000'000);
  HttpRequest req;
  req.path = std::string(path);
  req.body = body;
  req.retry_on_stale_connection = idempotent;

  std::vector<std::string> earlier;  // "member: what" for each member that failed before the last
  const size_t start = preferred_ % n;
  Status last;
  std::string last_name;
  for (size_t i = 0; i < n; ++i) {
    const size_t idx = (start + i) % n;
    const HttpEndpoint& ep = endpoints_[idx];
    std::string name = ep.to_string();
    if (!last.ok()) earlier.push_back(fmt::format("{}: {}", last_name, what(last)));
    uint64_t now = r->now();
    if (now >= deadline) {
      last = op_timed_out;
      last_name = std::move(name);
      break;
    }
    bool sent = false;
    auto resp = co_await http_.request(ep, req, deadline - now, &sent);
    Status st;
    if (resp.ok()) {
      if (resp->status() == 200) {
        preferred_ = idx;
        co_return Reply{std::move(resp->body), std::move(name)};
      }
      st = etcd::error_status(resp->status(), resp->body);
      // A member that cannot serve (no leader, shutting down) answers UNAVAILABLE: another may serve.
      if (st.code() != Errc::kAgain || !idempotent) {
        preferred_ = idx;
        co_return with_earlier(decorate(name, op, key, st), earlier);
      }
    } else {
      st = resp.status();
      if (st.code() == Errc::kShutdown) {
        co_return decorate(name, op, key, Status(Errc::kShutdown, "the client is closed"));
      }
      if (sent && (st.code() == Errc::kTimedOut || !idempotent)) {
        // The member took the request and did not answer in time (stalled or cut off), or the connection
        // broke under a request that must not be repeated. The next operation starts elsewhere.
        preferred_ = (idx + 1) % n;
        if (st.code() == Errc::kTimedOut) st = op_timed_out;
        if (!idempotent) st = Status(st.code(), what(st) + " (the request may have been applied)");
        co_return with_earlier(decorate(name, op, key, st), earlier);
      }
    }
    // Not reachable (or unavailable): try the next member.
    preferred_ = (idx + 1) % n;
    last = std::move(st);
    last_name = std::move(name);
  }
  co_return with_earlier(decorate(last_name, op, key, last), earlier);
}

// ---------------------------------------------------------------------------------------------------
// Key-value operations

Task<Result<int64_t>> EtcdClient::put(std::string_view key, std::string_view value, int64_t lease) {
  const std::string body = etcd::put_body(key, value, lease);
  auto reply = co_await call("/v3/kv/put", body, "put", key, true);
  if (!reply.ok()) co_return reply.status();
  auto rev = etcd::parse_put(reply->body);
  if (!rev.ok()) co_return decorate(reply->endpoint, "put", key, rev.status());
  co_return *rev;
}

Task<Result<KeyValue>> EtcdClient::get(std::string_view key) {
  const std::string body = etcd::range_body(key, {}, 0);
  auto reply = co_await call("/v3/kv/range", body, "get", key, true);
  if (!reply.ok()) co_return reply.status();
  auto r = etcd::parse_range(reply->body);
  if (!r.ok()) co_return decorate(reply->endpoint, "get", key, r.status());
  if (r->kvs.empty()) co_return decorate(reply->endpoint, "get", key, Status(Errc::kNoEnt, "no such key"));
  co_return std::move(r->kvs.front());
}

Task<Result<RangeResult>> EtcdClient::range(std::string_view key, std::string_view range_end, int64_t limit) {
  const std::string body = etcd::range_body(key, range_end, limit);
  auto reply = co_await call("/v3/kv/range", body, "range", key, true);
  if (!reply.ok()) co_return reply.status();
  auto r = etcd::parse_range(reply->body);
  if (!r.ok()) co_return decorate(reply->endpoint, "range", key, r.status());
  co_return std::move(*r);
}

Task<Result<RangeResult>> EtcdClient::get_prefix(std::string_view prefix, int64_t limit) {
  const std::string end = etcd::prefix_end(prefix);
  const std::string body = etcd::range_body(prefix, end, limit);
  auto reply = co_await call("/v3/kv/range", body, "get prefix", prefix, true);
  if (!reply.ok()) co_return reply.status();
  auto r = etcd::parse_range(reply->body);
  if (!r.ok()) co_return decorate(reply->endpoint, "get prefix", prefix, r.status());
  co_return std::move(*r);
}

Task<Result<int64_t>> EtcdClient::del(std::string_view key) {
  const std::string body = etcd::delete_body(key, {});
  auto reply = co_await call("/v3/kv/deleterange", body, "delete", key, true);
  if (!reply.ok()) co_return reply.status();
  auto n = etcd::parse_delete(reply->body);
  if (!n.ok()) co_return decorate(reply->endpoint, "delete", key, n.status());
  co_return *n;
}

Task<Result<int64_t>> EtcdClient::del_prefix(std::string_view prefix) {
  const std::string end = etcd::prefix_end(prefix);
  const std::string body = etcd::delete_body(prefix, end);
  auto reply = co_await call("/v3/kv/deleterange", body, "delete prefix", prefix, true);
  if (!reply.ok()) co_return reply.status();
  auto n = etcd::parse_delete(reply->body);
  if (!n.ok()) co_return decorate(reply->endpoint, "delete prefix", prefix, n.status());
  co_return *n;
}

Task<Result<TxnResult>> EtcdClient::txn(const Txn& txn) {
  const std::string body = etcd::txn_body(txn);
  // Errors name the first key the transaction looks at.
  std::string_view key = !txn.compare.empty()   ? std::string_view(txn.compare.front().key)
                         : !txn.success.empty() ? std::string_view(txn.success.front().key)
                         : !txn.failure.empty() ? std::string_view(txn.failure.front().key)
                                                : std::string_view();
  auto reply = co_await call("/v3/kv/txn", body, "txn", key, false);
  if (!reply.ok()) co_return reply.status();
  auto r = etcd::parse_txn(reply->body);
  if (!r.ok()) co_return decorate(reply->endpoint, "txn", key, r.status());
  co_return std::move(*r);
}

Task<Status> EtcdClient::compact(int64_t revision) {
  const std::string body = etcd::compact_body(revision);
  const std::string op = fmt::format("compact to revision {}", revision);
  auto reply = co_await call("/v3/kv/compaction", body, op, {}, true);
  if (!reply.ok()) co_return reply.status();
  auto rev = etcd::parse_header_revision(reply->body);
  if (!rev.ok()) co_return decorate(reply->endpoint, op, {}, rev.status());
  co_return Status();
}

// ---------------------------------------------------------------------------------------------------
// Leases

Task<Result<Lease>> EtcdClient::lease_grant(int64_t ttl_seconds) {
  const std::string body = etcd::lease_grant_body(ttl_seconds);
  const std::string op = fmt::format("lease grant (TTL {} s)", ttl_seconds);
  // Not repeated elsewhere: a grant that was applied would leave an orphan lease behind.
  auto reply = co_await call("/v3/lease/grant", body, op, {}, false);
  if (!reply.ok()) co_return reply.status();
  auto l = etcd::parse_lease_grant(reply->body);
  if (!l.ok()) co_return decorate(reply->endpoint, op, {}, l.status());
  co_return *l;
}

Task<Result<int64_t>> EtcdClient::lease_keep_alive_once(int64_t lease_id) {
  const std::string body = etcd::lease_id_body(lease_id);
  const std::string op = fmt::format("lease keep-alive {}", lease_id);
  auto reply = co_await call("/v3/lease/keepalive", body, op, {}, true);
  if (!reply.ok()) co_return reply.status();
  auto ttl = etcd::parse_lease_keepalive(reply->body);
  if (!ttl.ok()) co_return decorate(reply->endpoint, op, {}, ttl.status());
  co_return *ttl;
}

Task<Status> EtcdClient::lease_revoke(int64_t lease_id) {
  // Whatever etcd says, keeping a lease alive that its owner revoked is pointless.
  for (auto& [id, k] : keepers_) {
    if (k->lease == lease_id) {
      k->stopped = true;
      k->snooze.wake();
    }
  }
  const std::string body = etcd::lease_id_body(lease_id);
  const std::string op = fmt::format("lease revoke {}", lease_id);
  auto reply = co_await call("/v3/lease/revoke", body, op, {}, true);
  if (!reply.ok()) co_return reply.status();
  auto rev = etcd::parse_header_revision(reply->body);
  if (!rev.ok()) co_return decorate(reply->endpoint, op, {}, rev.status());
  co_return Status();
}

Result<EtcdClient::KeepAliveId> EtcdClient::keep_alive(int64_t lease_id, int64_t ttl_seconds,
                                                       LeaseLostCallback on_lost) {
  if (closing_) return Status(Errc::kShutdown, "etcd: keep-alive: the client is closed");
  if (ttl_seconds <= 0) return Status::Errorf(Errc::kInval, "etcd: keep-alive of lease {}: TTL {} s is not positive",
                                              lease_id, ttl_seconds);
  auto st = std::make_unique<KeepAliveState>();
  KeepAliveState* raw = st.get();
  raw->id = next_id_++;
  raw->lease = lease_id;
  raw->ttl_seconds = ttl_seconds;
  raw->on_lost = std::move(on_lost);
  keepers_.emplace(raw->id, std::move(st));
  const KeepAliveId id = raw->id;
  if (!scope_.spawn(keep_alive_loop(raw))) {
    keepers_.erase(id);
    return Status(Errc::kShutdown, "etcd: keep-alive: the client is closed");
  }
  return id;
}

void EtcdClient::stop_keep_alive(KeepAliveId id) {
  auto it = keepers_.find(id);
  if (it == keepers_.end()) return;
  it->second->stopped = true;
  it->second->snooze.wake();
}

Task<void> EtcdClient::keep_alive_loop(KeepAliveState* st) {
  Reactor* r = Reactor::current();
  const uint64_t ttl_ns = uint64_t(st->ttl_seconds) * 1'000'000'000ull;
  // A third of the TTL leaves two more tries before the lease runs out; after a failure, retry sooner.
  const uint64_t interval = std::max<uint64_t>(ttl_ns / 3, 10'000'000);
  const uint64_t retry = std::max<uint64_t>(ttl_ns / 10, 10'000'000);
  uint64_t last_ok = r->now();
  uint64_t wait = interval;
  Status lost;
  while (!st->stopped) {
    co_await st->snooze.sleep_for(wait);
    if (st->stopped) break;
    auto ttl = co_await lease_keep_alive_once(st->lease);
    if (st->stopped) break;
    if (ttl.ok()) {
      last_ok = r->now();
      wait = interval;
      continue;
    }
    if (ttl.code() == Errc::kShutdown) break;
    if (ttl.code() == Errc::kNoEnt) {
      lost = ttl.status();
      break;
    }
    if (r->now() - last_ok >= ttl_ns) {
      lost = Status(Errc::kTimedOut, fmt::format("etcd: lease {} was not renewed for its whole TTL of {} s; last: {}",
                                                 st->lease, st->ttl_seconds, ttl.status().message()));
      break;
    }
    TLOG_WARN("store", "{} (retrying)", ttl.status().message());
    wait = retry;
  }
  LeaseLostCallback cb;
  if (!st->stopped && !closing_) cb = std::move(st->on_lost);
  keepers_.erase(st->id);  // frees `st`
  if (!lost.ok()) {
    TLOG_WARN("store", "{}", lost.message());
    if (cb) cb(lost);
  }
}

// ---------------------------------------------------------------------------------------------------
// Watches

Result<EtcdClient::WatchId> EtcdClient::watch(WatchOptions opts, WatchCallback cb) {
  if (closing_) return Status(Errc::kShutdown, "etcd: watch: the client is closed");
  if (!cb) return Status(Errc::kInval, "etcd: watch: no callback");
  auto w = std::make_unique<WatchState>();
  WatchState* raw = w.get();
  raw->id = next_id_++;
  raw->opts = std::move(opts);
  raw->cb = std::move(cb);
  raw->next_rev = raw->opts.start_revision;
  watches_.emplace(raw->id, std::move(w));
  const WatchId id = raw->id;
  if (!scope_.spawn(watch_loop(raw))) {
    watches_.erase(id);
    return Status(Errc::kShutdown, "etcd: watch: the client is closed");
  }
  return id;
}

void EtcdClient::cancel_watch(WatchId id) {
  auto it = watches_.find(id);
  if (it == watches_.end()) return;
  WatchState* w = it->second.get();
  w->stopped = true;
  if (w->stream) w->stream->cancel();
  w->snooze.wake();
}

Task<void> EtcdClient::watch_loop(WatchState* w) {
  const size_t n = endpoints_.size();
  const std::string range_end = w->opts.prefix ? etcd::prefix_end(w->opts.key) : std::string();
  const char* op = w->opts.prefix ? "watch prefix" : "watch";
  uint64_t backoff = opts_.watch_retry_min_ns;
  size_t idx = preferred_ % n;
  Status end;  // set when etcd ended the watch for good
  while (!w->stopped) {
    const HttpEndpoint& ep = endpoints_[idx];
    const std::string name = ep.to_string();
    HttpRequest req;
    req.path = "/v3/watch";
    req.body = etcd::watch_create_body(w->opts.key, range_end, w->next_rev, /*progress_notify=*/true);
    ++watch_streams_opened_;
    auto opened = co_await http_.open_stream(ep, req, opts_.request_timeout_ns);
    Status failure;
    if (!opened.ok()) {
      failure = opened.status();
    } else if ((*opened)->head().status != 200) {
      // An error answer: read its (short) body for etcd's reason.
      std::string body;
      while (body.size() < 64 * 1024) {
        auto piece = co_await (*opened)->next();
        if (!piece.ok() || !*piece) break;
        body += **piece;
      }
      failure = etcd::error_status((*opened)->head().status, body);
      // A request etcd refuses (bad key or revision) will be refused again.
      if (failure.code() == Errc::kInval || failure.code() == Errc::kRange) end = decorate(name, op, w->opts.key, failure);
    } else {
      w->stream = std::move(*opened);
      std::string pending;  // a message not yet ended by its newline
      while (!w->stopped && failure.ok() && end.ok()) {
        auto piece = co_await w->stream->next();
        if (!piece.ok()) {
          failure = piece.status();
          break;
        }
        if (!*piece) {
          failure = Status(Errc::kConnReset, "etcd ended the watch stream");
          break;
        }
        pending += **piece;
        // The gateway ends each message with a newline (and sends one per chunk); split on it anyway, so
        // a message cut across chunks, or two in one, is still read whole.
        size_t start = 0;
        while (!w->stopped && failure.ok() && end.ok()) {
          size_t nl = pending.find('\n', start);
          if (nl == std::string::npos) break;
          std::string_view line(pending.data() + start, nl - start);
          start = nl + 1;
          if (line.find_first_not_of(" \t\r") == std::string_view::npos) continue;
          auto m = etcd::parse_watch_message(line);
          if (!m.ok()) {
            failure = m.status();
            break;
          }
          if (m->canceled) {
            if (m->compact_revision > 0) {
              end = decorate(name, op, w->opts.key,
                             Status::Errorf(Errc::kRange, "revision {} was compacted (the oldest available is {})",
                                            w->next_rev, m->compact_revision));
            } else {
              end = decorate(name, op, w->opts.key,
                             Status(Errc::kCanceled, fmt::format("etcd cancelled the watch: {}",
                                                                 m->cancel_reason.empty() ? "no reason given"
                                                                                          : m->cancel_reason)));
            }
            break;
          }
          if (m->created) {
            // From "now": what follows the revision it was set up at. Resumes start after it.
            if (w->next_rev == 0) w->next_rev = m->revision + 1;
            backoff = opts_.watch_retry_min_ns;
            preferred_ = idx;
            continue;
          }
          if (m->events.empty()) {
            // A progress notification: every change up to its revision was delivered.
            if (w->next_rev > 0) w->next_rev = std::max(w->next_rev, m->revision + 1);
            continue;
          }
          for (const auto& ev : m->events) w->next_rev = std::max(w->next_rev, ev.kv.mod_revision + 1);
          WatchUpdate u;
          u.events = std::move(m->events);
          u.revision = m->revision;
          w->cb(u);  // may cancel this watch
        }
        pending.erase(0, start);
        if (pending.size() > opts_.max_response_bytes) failure = Status(Errc::kProto, "a watch message too large");
      }
      w->stream.reset();
    }
    if (w->stopped || !end.ok()) break;
    TLOG_WARN("store", "etcd {}: {} '{}': {}; reopening in {} ms (from revision {})", name, op,
              printable_key(w->opts.key), what(failure), backoff / 1'000'000, w->next_rev);
    co_await w->snooze.sleep_for(backoff);
    backoff = std::min(backoff * 2, opts_.watch_retry_max_ns);
    idx = (idx + 1) % n;
  }
  WatchCallback cb;
  if (!w->stopped && !closing_) cb = std::move(w->cb);
  watches_.erase(w->id);  // frees `w`
  if (!end.ok()) {
    TLOG_WARN("store", "{}", end.message());
    if (cb) {
      WatchUpdate u;
      u.end = end;
      cb(u);
    }
  }
}

// ---------------------------------------------------------------------------------------------------
// Closing

Task<void> EtcdClient::close() {
  closing_ = true;
  for (auto& [id, k] : keepers_) {
    k->stopped = true;
    k->snooze.wake();
  }
  for (auto& [id, w] : watches_) {
    w->stopped = true;
    if (w->stream) w->stream->cancel();
    w->snooze.wake();
  }
  http_.shutdown();
  co_await scope_.close();
  co_await http_.close();
}

}  // namespace tern::store
