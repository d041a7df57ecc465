#include "control/leadership.h"

#include "common/log.h"
#include "reactor/reactor.h"

namespace tern::control {

Result<std::unique_ptr<Leadership>> Leadership::Create(store::EtcdClient& etcd, LeadershipOptions opts) {
  if (opts.key.empty()) return Status(Errc::kInval, "leadership key: required");
  if (opts.id.empty()) return Status(Errc::kInval, "leadership id: required");
  if (opts.ttl_seconds < 2 || opts.ttl_seconds > 60) {
    return Status::Errorf(Errc::kInval, "leadership ttl: {} s; it must be 2 to 60 s", opts.ttl_seconds);
  }
  return std::unique_ptr<Leadership>(new Leadership(etcd, std::move(opts)));
}

Leadership::~Leadership() {
  if (have_keep_alive_) etcd_.stop_keep_alive(keep_alive_);
}

void Leadership::lost(const Status& why) {
  if (!leading_) return;
  leading_ = false;
  have_keep_alive_ = false;
  TLOG_WARN("control", "leadership lost ({}): {}", opts_.id, why);
  if (on_lost_) on_lost_(why);
}

Task<Status> Leadership::campaign() {
  stopping_ = false;
  uint64_t backoff_ns = 100'000'000;
  while (!stopping_) {
    if (leading_) co_return Status::Ok();
    auto lease = co_await etcd_.lease_grant(opts_.ttl_seconds);
    if (!lease.ok()) {
      TLOG_RL_WARN("control", 5000, "leadership: granting a lease: {}; retrying", lease.status());
      co_await Reactor::sleep_for(backoff_ns);
      backoff_ns = std::min<uint64_t>(backoff_ns * 2, 2'000'000'000ull);
      continue;
    }
    backoff_ns = 100'000'000;
    store::Txn t;
    t.compare.push_back(store::Compare::CreateRevisionEquals(opts_.key, 0));  // nobody holds it
    t.success.push_back(store::TxnOp::Put(opts_.key, opts_.id, lease->id));
    t.failure.push_back(store::TxnOp{store::TxnOp::Kind::kRange, opts_.key, {}, 0, false});
    auto r = co_await etcd_.txn(t);
    if (r.ok() && r->succeeded) {
      term_ = r->revision;  // the put created the key in this transaction: its create revision
      lease_ = lease->id;
      auto ka = etcd_.keep_alive(lease_, opts_.ttl_seconds, [this](const Status& st) { lost(st); });
      if (!ka.ok()) {
        (void)co_await etcd_.lease_revoke(lease_);
        co_return ka.status();
      }
      keep_alive_ = *ka;
      have_keep_alive_ = true;
      leading_ = true;
      TLOG_INFO("control", "leadership: {} leads (term {})", opts_.id, term_);
      co_return Status::Ok();
    }
    (void)co_await etcd_.lease_revoke(lease->id);  // not needed: it holds nothing
    if (!r.ok()) {
      TLOG_RL_WARN("control", 5000, "leadership: campaigning: {}; retrying", r.status());
      co_await Reactor::sleep_for(backoff_ns);
      continue;
    }
    // Someone leads: wait for the key to go (a watch from just after its current state), then try again.
    int64_t from = r->revision + 1;
    if (!r->responses.empty() && !r->responses[0].range.kvs.empty()) {
      TLOG_INFO("control", "leadership: {} waits; {} leads", opts_.id, r->responses[0].range.kvs[0].value);
    }
    bool gone = false;
    store::WatchOptions w;
    w.key = opts_.key;
    w.start_revision = from;
    auto wid = etcd_.watch(w, [&gone](const store::WatchUpdate& u) {
      for (const auto& e : u.events) gone |= e.type == store::WatchEvent::Type::kDelete;
      if (!u.end.ok()) gone = true;  // the watch ended (compaction): look again
    });
    if (!wid.ok()) {
      co_await Reactor::sleep_for(backoff_ns);
      continue;
    }
    // The watch says when; a look at the key every TTL covers a watch that lost its stream.
    const uint64_t look_every = uint64_t(opts_.ttl_seconds) * 1'000'000'000ull;
    uint64_t waited = 0;
    while (!gone && !stopping_) {
      co_await Reactor::sleep_for(5'000'000);
      waited += 5'000'000;
      if (waited >= look_every) {
        waited = 0;
        auto kv = co_await etcd_.get(opts_.key);
        if (!kv.ok() && kv.code() == Errc::kNoEnt) gone = true;
      }
    }
    etcd_.cancel_watch(*wid);
  }
  co_return Status(Errc::kCanceled, "the campaign was stopped");
}

Task<Result<store::TxnResult>> Leadership::guarded(store::Txn txn) {
  if (!leading_) co_return Status::Errorf(Errc::kAccess, "{} does not lead: the write was not made", opts_.id);
  txn.compare.push_back(store::Compare::CreateRevisionEquals(opts_.key, term_));
  txn.compare.push_back(store::Compare::ValueEquals(opts_.key, opts_.id));
  // Which compares failed is not told apart by etcd: the caller's own fail the same way, so look.
  auto r = co_await etcd_.txn(txn);
  if (!r.ok() || r->succeeded) co_return r;
  auto kv = co_await etcd_.get(opts_.key);
  if (!kv.ok() || kv->create_revision != term_ || kv->value != opts_.id) {
    lost(Status(Errc::kAccess, "the leader key is no longer ours"));
    co_return Status::Errorf(Errc::kAccess, "{} no longer leads: the write was not made", opts_.id);
  }
  co_return r;  // ours still: the caller's compares failed
}

Task<Result<std::string>> Leadership::leader() {
  auto kv = co_await etcd_.get(opts_.key);
  if (!kv.ok()) co_return kv.status();
  co_return kv->value;
}

Task<void> Leadership::resign() {
  if (!leading_) co_return;
  leading_ = false;
  if (have_keep_alive_) {
    etcd_.stop_keep_alive(keep_alive_);
    have_keep_alive_ = false;
  }
  Status st = co_await etcd_.lease_revoke(lease_);  // its key goes with it
  if (!st.ok() && st.code() != Errc::kNoEnt) TLOG_WARN("control", "leadership: resigning: {}", st);
  TLOG_INFO("control", "leadership: {} resigned", opts_.id);
}

Task<void> Leadership::stop() {
  stopping_ = true;
  co_await resign();
}

}  // namespace tern::control
