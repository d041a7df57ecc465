// EtcdClient against a real etcd (one member per test suite, started on free ports): key-value semantics,
// binary keys and values, transactions, leases and keep-alives, watches (order, history, compaction,
// resuming across a restart of etcd), connection reuse, and the nexus's record store.
#include "store/etcd_client.h"

#include <gtest/gtest.h>

#include <mutex>

#include "etcd_process.h"
#include "script_server.h"
#include "store/etcd_record_store.h"
#include "store_env.h"

namespace tern::store {
namespace {

using test::EtcdCluster;
using test::EtcdEnv;
using test::eventually;
using test::ms;

// Collects what a watch delivers (on the reactor) for the test thread.
struct WatchLog {
  std::mutex mu;
  std::vector<WatchEvent> events;
  std::vector<Status> ends;
  EtcdClient::WatchCallback callback() {
    return [this](const WatchUpdate& u) {
      std::lock_guard<std::mutex> g(mu);
      for (const auto& e : u.events) events.push_back(e);
      if (!u.end.ok()) ends.push_back(u.end);
    };
  }
  size_t size() {
    std::lock_guard<std::mutex> g(mu);
    return events.size();
  }
  std::vector<WatchEvent> snapshot() {
    std::lock_guard<std::mutex> g(mu);
    return events;
  }
};

class EtcdTest : public test::EtcdSuite {
 protected:
  void SetUp() override {
    test::EtcdSuite::SetUp();
    if (HasFatalFailure()) return;
    ASSERT_TRUE(cluster_->running(0) || cluster_->restart(0)) << cluster_->log_tail(0);
    opts_.endpoints = cluster_->endpoints();
    opts_.request_timeout_ns = ms(5000);
    env_ = std::make_unique<EtcdEnv>(opts_);
    ASSERT_NE(env_->client, nullptr);
    prefix_ = std::string("/test/") + ::testing::UnitTest::GetInstance()->current_test_info()->name() + "/";
  }
  void TearDown() override { env_.reset(); }

  EtcdClient& c() { return *env_->client; }
  std::string key(const std::string& name) { return prefix_ + name; }

  Result<int64_t> put(const std::string& k, const std::string& v, int64_t lease = 0) {
    return env_->run([&]() -> Task<Result<int64_t>> { co_return co_await c().put(k, v, lease); });
  }
  Result<KeyValue> get(const std::string& k) {
    return env_->run([&]() -> Task<Result<KeyValue>> { co_return co_await c().get(k); });
  }
  Result<RangeResult> get_prefix(const std::string& p, int64_t limit = 0) {
    return env_->run([&]() -> Task<Result<RangeResult>> { co_return co_await c().get_prefix(p, limit); });
  }
  Result<int64_t> del(const std::string& k) {
    return env_->run([&]() -> Task<Result<int64_t>> { co_return co_await c().del(k); });
  }
  Result<TxnResult> txn(const Txn& t) {
    return env_->run([&]() -> Task<Result<TxnResult>> { co_return co_await c().txn(t); });
  }
  Result<Lease> grant(int64_t ttl) {
    return env_->run([&]() -> Task<Result<Lease>> { co_return co_await c().lease_grant(ttl); });
  }
  Result<EtcdClient::WatchId> watch(WatchOptions o, WatchLog& log) {
    return env_->run([&] { return c().watch(std::move(o), log.callback()); });
  }

  EtcdOptions opts_;
  std::unique_ptr<EtcdEnv> env_;
  std::string prefix_;
};


TEST_F(EtcdTest, PutGetAndRevisions) {
  auto r1 = put(key("a"), "one");
  ASSERT_TRUE(r1.ok()) << r1.status();
  auto kv = get(key("a"));
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(kv->key, key("a"));
  EXPECT_EQ(kv->value, "one");
  EXPECT_EQ(kv->mod_revision, *r1);
  EXPECT_EQ(kv->create_revision, *r1);
  EXPECT_EQ(kv->version, 1);
  auto r2 = put(key("a"), "two");
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_GT(*r2, *r1);
  kv = get(key("a"));
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->value, "two");
  EXPECT_EQ(kv->version, 2);
  EXPECT_EQ(kv->create_revision, *r1);
  EXPECT_EQ(kv->mod_revision, *r2);
  // An empty value is a value.
  ASSERT_TRUE(put(key("empty"), "").ok());
  kv = get(key("empty"));
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->value, "");
}

TEST_F(EtcdTest, AbsentKeyIsNoEnt) {
  auto kv = get(key("absent"));
  ASSERT_FALSE(kv.ok());
  EXPECT_EQ(kv.code(), Errc::kNoEnt);
  EXPECT_EQ(kv.status().message(), "etcd " + cluster_->endpoint(0) + ": get '" + key("absent") + "': no such key");
}

TEST_F(EtcdTest, BinaryKeysAndValues) {
  std::string value;
  for (int i = 0; i < 256; ++i) value += char(i);
  std::string k = key(std::string("bin\0\xff\x01", 6));
  ASSERT_TRUE(put(k, value).ok());
  auto kv = get(k);
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(kv->key, k);
  EXPECT_EQ(kv->value, value);
  // A prefix ending in 0xff bytes: its range end carries over into the byte before.
  std::string p = key(std::string("p\xff\xff", 3));
  ASSERT_TRUE(put(p + "x", "1").ok());
  ASSERT_TRUE(put(p, "2").ok());
  ASSERT_TRUE(put(key("q"), "3").ok());
  auto r = get_prefix(p);
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->kvs.size(), 2u);
  EXPECT_EQ(r->kvs[0].key, p);
  EXPECT_EQ(r->kvs[1].key, p + "x");
  // The error message escapes what is not printable.
  auto gone = get(key(std::string("nul\0", 4)));
  EXPECT_NE(gone.status().message().find("nul\\x00'"), std::string::npos) << gone.status();
}

TEST_F(EtcdTest, RangeByPrefixWithLimit) {
  for (const char* k : {"r/c", "r/a", "r/b", "s/a", "r"}) ASSERT_TRUE(put(key(k), k).ok());
  auto all = get_prefix(key("r/"));
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->kvs.size(), 3u);
  EXPECT_EQ(all->kvs[0].key, key("r/a"));
  EXPECT_EQ(all->kvs[2].key, key("r/c"));
  EXPECT_EQ(all->count, 3);
  EXPECT_FALSE(all->more);
  EXPECT_GT(all->revision, 0);
  auto two = get_prefix(key("r/"), 2);
  ASSERT_TRUE(two.ok());
  EXPECT_EQ(two->kvs.size(), 2u);
  EXPECT_EQ(two->count, 3);
  EXPECT_TRUE(two->more);
  auto between = env_->run([&]() -> Task<Result<RangeResult>> {
    std::string from = key("r/b"), to = key("s");
    co_return co_await c().range(from, to);
  });
  ASSERT_TRUE(between.ok());
  EXPECT_EQ(between->kvs.size(), 2u);  // r/b, r/c
  auto none = get_prefix(key("nothing/"));
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->kvs.empty());
}

TEST_F(EtcdTest, Delete) {
  ASSERT_TRUE(put(key("d"), "x").ok());
  EXPECT_EQ(del(key("d")).value_or(-1), 1);
  EXPECT_EQ(del(key("d")).value_or(-1), 0);
  EXPECT_EQ(get(key("d")).code(), Errc::kNoEnt);
  for (const char* k : {"dp/1", "dp/2", "dp/3", "dq"}) ASSERT_TRUE(put(key(k), "v").ok());
  auto n = env_->run([&]() -> Task<Result<int64_t>> {
    std::string p = key("dp/");
    co_return co_await c().del_prefix(p);
  });
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 3);
  EXPECT_TRUE(get(key("dq")).ok());
}

TEST_F(EtcdTest, TxnCompareAndSwap) {
  const std::string k = key("cas");
  // Create if absent.
  Txn create;
  create.compare = {Compare::VersionEquals(k, 0)};
  create.success = {TxnOp::Put(k, "v1")};
  create.failure = {TxnOp::Get(k)};
  auto a = txn(create);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(a->succeeded);
  ASSERT_EQ(a->responses.size(), 1u);
  EXPECT_EQ(a->responses[0].kind, TxnOp::Kind::kPut);
  // Again: it exists now, so the else branch runs and reads it.
  auto b = txn(create);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_FALSE(b->succeeded);
  ASSERT_EQ(b->responses.size(), 1u);
  ASSERT_EQ(b->responses[0].range.kvs.size(), 1u);
  const KeyValue cur = b->responses[0].range.kvs[0];
  EXPECT_EQ(cur.value, "v1");
  // Swap on the mod revision: the first succeeds, a second with the stale revision fails.
  Txn swap;
  swap.compare = {Compare::ModRevisionEquals(k, cur.mod_revision)};
  swap.success = {TxnOp::Put(k, "v2"), TxnOp::Get(k)};
  auto c1 = txn(swap);
  ASSERT_TRUE(c1.ok());
  EXPECT_TRUE(c1->succeeded);
  ASSERT_EQ(c1->responses.size(), 2u);
  EXPECT_EQ(c1->responses[1].range.kvs.at(0).value, "v2");
  EXPECT_EQ(c1->revision, c1->responses[1].range.kvs.at(0).mod_revision);
  auto c2 = txn(swap);
  ASSERT_TRUE(c2.ok());
  EXPECT_FALSE(c2->succeeded);
  EXPECT_TRUE(c2->responses.empty());
  // Value and create-revision compares; a delete in the branch.
  Txn by_value;
  by_value.compare = {Compare::ValueEquals(k, "v2"), Compare::CreateRevisionEquals(k, cur.create_revision),
                      Compare::Number(k, Compare::Target::kVersion, Compare::Op::kGreater, 1)};
  by_value.success = {TxnOp::Delete(k)};
  auto d = txn(by_value);
  ASSERT_TRUE(d.ok());
  EXPECT_TRUE(d->succeeded);
  EXPECT_EQ(d->responses.at(0).deleted, 1);
  EXPECT_EQ(get(k).code(), Errc::kNoEnt);
  Txn wrong_value;
  wrong_value.compare = {Compare::ValueEquals(key("other"), "x")};
  auto e = txn(wrong_value);
  ASSERT_TRUE(e.ok());
  EXPECT_FALSE(e->succeeded);
}

TEST_F(EtcdTest, LeaseExpiresAndTakesItsKeys) {
  auto l = grant(1);
  ASSERT_TRUE(l.ok()) << l.status();
  EXPECT_EQ(l->ttl_seconds, 1);
  ASSERT_TRUE(put(key("leased"), "x", l->id).ok());
  auto kv = get(key("leased"));
  ASSERT_TRUE(kv.ok());
  EXPECT_EQ(kv->lease, l->id);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_TRUE(eventually([&] { return get(key("leased")).code() == Errc::kNoEnt; }, 10000));
  EXPECT_LT(test::seconds_since(t0), 5.0);
  auto ka = env_->run([&]() -> Task<Result<int64_t>> { co_return co_await c().lease_keep_alive_once(l->id); });
  EXPECT_EQ(ka.code(), Errc::kNoEnt) << ka.status();
  // A put on a lease that is gone is refused by etcd.
  auto p = put(key("late"), "x", l->id);
  EXPECT_EQ(p.code(), Errc::kNoEnt);
  EXPECT_NE(p.status().message().find("requested lease not found"), std::string::npos) << p.status();
}

TEST_F(EtcdTest, KeepAliveKeepsTheLease) {
  auto l = grant(1);
  ASSERT_TRUE(l.ok()) << l.status();
  ASSERT_TRUE(put(key("kept"), "x", l->id).ok());
  std::atomic<int> lost{0};
  auto id = env_->run([&] { return c().keep_alive(l->id, l->ttl_seconds, [&](const Status&) { lost++; }); });
  ASSERT_TRUE(id.ok()) << id.status();
  // Three TTLs later the key is still there.
  auto t0 = std::chrono::steady_clock::now();
  while (test::seconds_since(t0) < 3.0) {
    ASSERT_TRUE(get(key("kept")).ok()) << "the lease expired although kept alive";
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  EXPECT_EQ(lost.load(), 0);
  // Revoking deletes the key at once and ends the keep-alive without calling on_lost.
  auto st = env_->run([&]() -> Task<Status> { co_return co_await c().lease_revoke(l->id); });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(get(key("kept")).code(), Errc::kNoEnt);
  auto again = env_->run([&]() -> Task<Status> { co_return co_await c().lease_revoke(l->id); });
  EXPECT_EQ(again.code(), Errc::kNoEnt) << again;
  EXPECT_EQ(lost.load(), 0);
}

TEST_F(EtcdTest, KeepAliveReportsALostLease) {
  auto l = grant(5);
  ASSERT_TRUE(l.ok()) << l.status();
  std::mutex mu;
  std::vector<Status> lost;
  // Told the TTL is 1 s, the keeper renews within a third of a second: after the revoke behind its back,
  // etcd says the lease is gone.
  auto id = env_->run([&] {
    return c().keep_alive(l->id, 1, [&](const Status& s) {
      std::lock_guard<std::mutex> g(mu);
      lost.push_back(s);
    });
  });
  ASSERT_TRUE(id.ok());
  auto other = EtcdEnv(opts_);
  auto st = other.run([&]() -> Task<Status> { co_return co_await other.client->lease_revoke(l->id); });
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> g(mu);
    return !lost.empty();
  }));
  std::lock_guard<std::mutex> g(mu);
  ASSERT_EQ(lost.size(), 1u);
  EXPECT_EQ(lost[0].code(), Errc::kNoEnt);
  EXPECT_NE(lost[0].message().find("lease keep-alive " + std::to_string(l->id)), std::string::npos) << lost[0];
}

TEST_F(EtcdTest, WatchDeliversPutsAndDeletesInOrder) {
  WatchLog log;
  WatchOptions o;
  o.key = key("w/");
  o.prefix = true;
  // The watch is set up in the background: "from now" could miss the first change, so it starts after a
  // known revision instead.
  auto marker = put(key("marker"), "m");
  ASSERT_TRUE(marker.ok());
  o.start_revision = *marker + 1;
  ASSERT_TRUE(watch(o, log).ok());
  size_t base = 0;
  std::vector<int64_t> revs;
  revs.push_back(*put(key("w/a"), "1"));
  revs.push_back(*put(key("w/b"), "2"));
  revs.push_back(*put(key("w/a"), "3"));
  ASSERT_EQ(del(key("w/b")).value_or(-1), 1);
  ASSERT_TRUE(put(key("outside"), "x").ok());  // not under the prefix
  Txn t;
  t.success = {TxnOp::Put(key("w/c"), "4"), TxnOp::Delete(key("w/a"))};
  ASSERT_TRUE(txn(t).ok());
  ASSERT_TRUE(eventually([&] { return log.size() >= base + 6; }));
  auto ev = log.snapshot();
  ev.erase(ev.begin(), ev.begin() + long(base));
  ASSERT_EQ(ev.size(), 6u);
  EXPECT_EQ(ev[0].type, WatchEvent::Type::kPut);
  EXPECT_EQ(ev[0].kv.key, key("w/a"));
  EXPECT_EQ(ev[0].kv.value, "1");
  EXPECT_EQ(ev[0].kv.mod_revision, revs[0]);
  EXPECT_EQ(ev[1].kv.key, key("w/b"));
  EXPECT_EQ(ev[2].kv.value, "3");
  EXPECT_EQ(ev[2].kv.version, 2);
  EXPECT_EQ(ev[3].type, WatchEvent::Type::kDelete);
  EXPECT_EQ(ev[3].kv.key, key("w/b"));
  EXPECT_EQ(ev[4].kv.key, key("w/c"));
  EXPECT_EQ(ev[5].type, WatchEvent::Type::kDelete);
  EXPECT_EQ(ev[5].kv.key, key("w/a"));
  EXPECT_EQ(ev[4].kv.mod_revision, ev[5].kv.mod_revision);  // one transaction, one revision
  for (size_t i = 1; i < ev.size(); ++i) EXPECT_GE(ev[i].kv.mod_revision, ev[i - 1].kv.mod_revision);
}

TEST_F(EtcdTest, WatchFromARevisionReplaysHistory) {
  auto r1 = put(key("h"), "1");
  ASSERT_TRUE(r1.ok());
  ASSERT_TRUE(put(key("h"), "2").ok());
  ASSERT_TRUE(put(key("h2"), "other key").ok());
  ASSERT_TRUE(del(key("h")).ok());
  WatchLog log;
  WatchOptions o;
  o.key = key("h");  // one key: not h2
  o.start_revision = *r1;
  ASSERT_TRUE(watch(o, log).ok());
  ASSERT_TRUE(eventually([&] { return log.size() >= 3; }));
  auto ev = log.snapshot();
  ASSERT_EQ(ev.size(), 3u);
  EXPECT_EQ(ev[0].kv.value, "1");
  EXPECT_EQ(ev[1].kv.value, "2");
  EXPECT_EQ(ev[2].type, WatchEvent::Type::kDelete);
}

TEST_F(EtcdTest, WatchFromACompactedRevisionEnds) {
  auto r1 = put(key("old"), "1");
  ASSERT_TRUE(r1.ok());
  auto r2 = put(key("old"), "2");
  ASSERT_TRUE(r2.ok());
  auto st = env_->run([&]() -> Task<Status> { co_return co_await c().compact(*r2); });
  ASSERT_TRUE(st.ok()) << st;
  WatchLog log;
  WatchOptions o;
  o.key = key("old");
  o.start_revision = *r1;
  ASSERT_TRUE(watch(o, log).ok());
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> g(log.mu);
    return !log.ends.empty();
  }));
  std::lock_guard<std::mutex> g(log.mu);
  EXPECT_EQ(log.ends[0].code(), Errc::kRange);
  EXPECT_NE(log.ends[0].message().find("revision " + std::to_string(*r1) + " was compacted"), std::string::npos)
      << log.ends[0];
  EXPECT_TRUE(log.events.empty());
}

TEST_F(EtcdTest, WatchResumesAfterEtcdRestarts) {
  WatchLog log;
  WatchOptions o;
  o.key = key("rs/");
  o.prefix = true;  // from now: the revision to resume from comes from etcd's answer to the set-up
  ASSERT_TRUE(watch(o, log).ok());
  // Wait until the watch is live: changes to a warm-up key until one shows (they are left out below).
  const std::string warm = key("rs/warm");
  ASSERT_TRUE(eventually([&] {
    EXPECT_TRUE(put(warm, "w").ok());
    return eventually([&] { return log.size() > 0; }, 300);
  }));
  auto real_events = [&] {
    std::vector<WatchEvent> out;
    for (auto& e : log.snapshot())
      if (e.kv.key != warm) out.push_back(e);
    return out;
  };
  ASSERT_TRUE(put(key("rs/1"), "a").ok());
  ASSERT_TRUE(put(key("rs/2"), "b").ok());
  ASSERT_TRUE(eventually([&] { return real_events().size() == 2; }));
  // etcd goes away (the stream breaks), changes happen while the watch is disconnected, etcd comes back.
  cluster_->stop(0);
  ASSERT_TRUE(cluster_->restart(0)) << cluster_->log_tail(0);
  auto other = EtcdEnv(opts_);
  for (const char* k : {"rs/3", "rs/4"}) {
    std::string kk = key(k);
    ASSERT_TRUE(other.run([&]() -> Task<Result<int64_t>> { co_return co_await other.client->put(kk, "c"); }).ok());
  }
  ASSERT_TRUE(put(key("rs/5"), "d").ok());
  ASSERT_TRUE(eventually([&] { return real_events().size() >= 5; }, 15000));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // room for a duplicate to show up
  auto ev = real_events();
  ASSERT_EQ(ev.size(), 5u);  // nothing lost, nothing repeated
  for (size_t i = 0; i < ev.size(); ++i) {
    EXPECT_EQ(ev[i].kv.key, key("rs/" + std::to_string(i + 1)));
    if (i > 0) {
      EXPECT_GT(ev[i].kv.mod_revision, ev[i - 1].kv.mod_revision);
    }
  }
  EXPECT_GE(c().watch_streams_opened(), 2u);
}

TEST_F(EtcdTest, CancelAndCloseStopTheWatchAndKeepAlive) {
  WatchLog log;
  WatchOptions o;
  o.key = key("cw");
  auto id = watch(o, log);
  ASSERT_TRUE(id.ok());
  env_->run([&] { c().cancel_watch(*id); });
  auto l = grant(1);
  ASSERT_TRUE(l.ok());
  ASSERT_TRUE(env_->run([&] { return c().keep_alive(l->id, 1); }).ok());
  WatchLog open;
  ASSERT_TRUE(watch(o, open).ok());
  // close() with a watch and a keep-alive running: it returns, and nothing calls back afterwards.
  env_->run([&]() -> Task<void> { co_await c().close(); });
  auto after = put(key("cw"), "x");
  EXPECT_EQ(after.code(), Errc::kShutdown);
  EXPECT_NE(after.status().message().find("the client is closed"), std::string::npos) << after.status();
  EXPECT_FALSE(env_->run([&] { return c().watch(o, log.callback()); }).ok());
  EXPECT_EQ(log.size(), 0u);
}

TEST_F(EtcdTest, ConnectionsAreReused) {
  uint64_t before = c().http().stats().connections_opened;
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(put(key("reuse"), std::to_string(i)).ok());
  EXPECT_LE(c().http().stats().connections_opened - before, 1u);
  // Concurrent operations share a few connections.
  auto results = env_->run([&]() -> Task<std::vector<Result<int64_t>>> {
    std::vector<std::string> keys;
    for (int i = 0; i < 16; ++i) keys.push_back(key("conc/" + std::to_string(i)));
    std::vector<Task<Result<int64_t>>> tasks;
    for (const auto& k : keys) tasks.push_back(c().put(k, k));
    co_return co_await when_all(std::move(tasks));
  });
  for (const auto& r : results) EXPECT_TRUE(r.ok()) << r.status();
  EXPECT_LE(c().http().stats().connections_opened - before, c().http().options().max_connections_per_endpoint);
  auto all = get_prefix(key("conc/"));
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->kvs.size(), 16u);
}

TEST_F(EtcdTest, RecordStoreAdapter) {
  EtcdRecordStore store(env_->client.get());
  const std::string k = key("nexus/volume-1");
  const std::string record = R"({"clean_shutdown":false,"children":[]})";
  Status st = env_->run([&]() -> Task<Status> {
    std::string kk = k, vv = record;
    co_return co_await store.put(std::move(kk), std::move(vv));
  });
  ASSERT_TRUE(st.ok()) << st;
  auto got = env_->run([&]() -> Task<Result<std::string>> {
    std::string kk = k;
    co_return co_await store.get(std::move(kk));
  });
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, record);
  // Durable: a second client (a new connection) reads it back.
  auto other = EtcdEnv(opts_);
  auto seen = other.run([&]() -> Task<Result<KeyValue>> { co_return co_await other.client->get(k); });
  ASSERT_TRUE(seen.ok());
  EXPECT_EQ(seen->value, record);
  auto absent = env_->run([&]() -> Task<Result<std::string>> {
    std::string kk = key("nexus/none");
    co_return co_await store.get(std::move(kk));
  });
  EXPECT_EQ(absent.code(), Errc::kNoEnt);
  // Compare-and-set: the version read, a put at it, a put at an older one refused as stale.
  auto v1 = env_->run([&]() -> Task<Result<RecordStore::Versioned>> {
    std::string kk = k;
    co_return co_await store.get_versioned(std::move(kk));
  });
  ASSERT_TRUE(v1.ok());
  EXPECT_EQ(v1->value, record);
  EXPECT_GT(v1->version, 0);
  auto put = [&](int64_t expected) {
    return env_->run([&]() -> Task<Result<int64_t>> {
      std::string kk = k, vv = record;
      co_return co_await store.put_if(std::move(kk), std::move(vv), expected);
    });
  };
  auto v2 = put(v1->version);
  ASSERT_TRUE(v2.ok()) << v2.status();
  EXPECT_GT(*v2, v1->version);
  EXPECT_EQ(put(v1->version).code(), Errc::kStale);
  EXPECT_EQ(put(0).code(), Errc::kStale);  // 0: only when absent
  auto none = env_->run([&]() -> Task<Result<RecordStore::Versioned>> {
    std::string kk = key("nexus/none");
    co_return co_await store.get_versioned(std::move(kk));
  });
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->version, 0);
  auto fresh = env_->run([&]() -> Task<Result<int64_t>> {
    std::string kk = key("nexus/none"), vv = record;
    co_return co_await store.put_if(std::move(kk), std::move(vv), 0);
  });
  EXPECT_TRUE(fresh.ok()) << fresh.status();
}

}  // namespace
}  // namespace tern::store
