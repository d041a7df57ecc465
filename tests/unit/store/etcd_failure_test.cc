// EtcdClient when etcd fails: stopped (connection refused, a clear message), paused with SIGSTOP (a timeout
// within the configured time, then recovery after SIGCONT), and a 3-member cluster losing the member the
// client uses (operations and a watch move to another member). Each test starts its own etcd.
#include <gtest/gtest.h>

#include <atomic>
#include <mutex>
#include <thread>

#include "reactor/clock.h"

#include "etcd_process.h"
#include "script_server.h"
#include "store/etcd_client.h"
#include "store_env.h"

namespace tern::store {
namespace {

using test::EtcdCluster;
using test::EtcdEnv;
using test::eventually;
using test::ms;

std::unique_ptr<EtcdCluster> start(unsigned members) {
  std::string error;
  auto c = EtcdCluster::Start(members, &error);
  EXPECT_NE(c, nullptr) << "cannot start etcd: " << error;
  return c;
}

Result<int64_t> put(EtcdEnv& env, const std::string& k, const std::string& v) {
  return env.run([&]() -> Task<Result<int64_t>> { co_return co_await env.client->put(k, v); });
}
Result<KeyValue> get(EtcdEnv& env, const std::string& k) {
  return env.run([&]() -> Task<Result<KeyValue>> { co_return co_await env.client->get(k); });
}

TEST(EtcdFailure, StoppedEtcdIsConnectionRefused) {
  auto cluster = start(1);
  ASSERT_NE(cluster, nullptr);
  EtcdOptions o;
  o.endpoints = cluster->endpoints();
  EtcdEnv env(o);
  ASSERT_TRUE(put(env, "/tern/x", "1").ok());
  cluster->stop(0);
  auto t0 = std::chrono::steady_clock::now();
  auto r = put(env, "/tern/x", "2");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kConnRefused);
  EXPECT_EQ(r.status().message(), "etcd " + cluster->endpoint(0) + ": put '/tern/x': connection refused");
  EXPECT_LT(test::seconds_since(t0), 1.0);  // refused at once, no waiting for a timeout
  // Back again: the client just works.
  ASSERT_TRUE(cluster->restart(0)) << cluster->log_tail(0);
  auto kv = get(env, "/tern/x");
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(kv->value, "1");
}

TEST(EtcdFailure, PausedEtcdTimesOutThenRecovers) {
  auto cluster = start(1);
  ASSERT_NE(cluster, nullptr);
  EtcdOptions o;
  o.endpoints = cluster->endpoints();
  o.request_timeout_ns = ms(500);
  EtcdEnv env(o);
  ASSERT_TRUE(put(env, "/tern/p", "1").ok());
  cluster->pause(0);
  auto t0 = std::chrono::steady_clock::now();
  auto r = get(env, "/tern/p");
  double took = test::seconds_since(t0);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kTimedOut);
  EXPECT_EQ(r.status().message(), "etcd " + cluster->endpoint(0) + ": get '/tern/p': timed out after 500 ms");
  EXPECT_GE(took, 0.45);
  EXPECT_LT(took, 1.5);
  // A transaction that times out may have been applied, and says so.
  Txn t;
  t.success = {TxnOp::Put("/tern/p", "2")};
  auto tr = env.run([&]() -> Task<Result<TxnResult>> { co_return co_await env.client->txn(t); });
  EXPECT_EQ(tr.code(), Errc::kTimedOut);
  EXPECT_NE(tr.status().message().find("(the request may have been applied)"), std::string::npos) << tr.status();
  cluster->resume(0);
  // Recovered: the timed-out connections were closed; new ones serve.
  ASSERT_TRUE(eventually([&] { return get(env, "/tern/p").ok(); }, 10000));
  ASSERT_TRUE(put(env, "/tern/p", "3").ok());
  EXPECT_EQ(get(env, "/tern/p")->value, "3");
}

TEST(EtcdFailure, AllEndpointsDownNamesEach) {
  // Two members nobody answers for: etcd stopped, and a server that accepts and hangs up.
  auto cluster = start(1);
  ASSERT_NE(cluster, nullptr);
  const std::string dead = cluster->endpoint(0);
  cluster->stop(0);
  test::ScriptServer hangs_up([](const std::string&, unsigned) {
    test::ScriptServer::Reply r;
    r.close_after = true;
    return r;
  });
  EtcdOptions o;
  o.endpoints = {dead, hangs_up.endpoint()};
  EtcdEnv env(o);
  auto r = put(env, "/tern/all", "x");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.code(), Errc::kConnReset);
  EXPECT_EQ(r.status().message(), "etcd " + hangs_up.endpoint() +
                                      ": put '/tern/all': the server closed the connection before answering "
                                      "(tried before: " + dead + ": connection refused)");
}

TEST(EtcdFailure, TimeoutFollowsTheReactorClock) {
  // A member that takes requests and never answers, and a reactor on a manual clock: the operation's
  // deadline is reached when the clock says so, not when real time passes.
  test::ScriptServer silent([](const std::string&, unsigned) {
    test::ScriptServer::Reply r;
    r.silent = true;
    return r;
  });
  ManualClock clock;
  EtcdOptions o;
  o.endpoints = {silent.endpoint()};
  o.request_timeout_ns = 30'000'000'000ull;
  EtcdEnv env(o, &clock);
  std::atomic<bool> done{false};
  Result<KeyValue> r = Status(Errc::kIo);
  std::thread caller([&] {
    r = get(env, "/tern/slow");
    done = true;
  });
  ASSERT_TRUE(eventually([&] { return silent.requests() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(done.load());
  clock.advance(30'000'000'000ull);
  EXPECT_TRUE(eventually([&] { return done.load(); }));
  caller.join();
  EXPECT_EQ(r.code(), Errc::kTimedOut);
  EXPECT_EQ(r.status().message(), "etcd " + silent.endpoint() + ": get '/tern/slow': timed out after 30000 ms");
  // The connection it waited on was closed.
  EXPECT_TRUE(eventually([&] { return silent.client_closes() == 1; }));
}

TEST(EtcdFailure, ClusterMemberKilledClientMovesOn) {
  auto cluster = start(3);
  ASSERT_NE(cluster, nullptr);
  EtcdOptions o;
  o.endpoints = cluster->endpoints();
  o.request_timeout_ns = ms(5000);
  EtcdEnv env(o);
  auto r0 = put(env, "/tern/c/0", "before");
  ASSERT_TRUE(r0.ok()) << r0.status();
  // A watch, connected to the first member like everything else so far.
  std::mutex mu;
  std::vector<std::string> seen;
  WatchOptions w;
  w.key = "/tern/c/";
  w.prefix = true;
  w.start_revision = *r0 + 1;
  auto id = env.run([&] {
    return env.client->watch(w, [&](const WatchUpdate& u) {
      std::lock_guard<std::mutex> g(mu);
      for (const auto& e : u.events) seen.push_back(e.kv.key);
    });
  });
  ASSERT_TRUE(id.ok());
  ASSERT_TRUE(put(env, "/tern/c/1", "x").ok());
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> g(mu);
    return seen.size() == 1;
  }));
  // The member the client talks to dies. If it led, the others elect a new leader within an election
  // timeout; a proposal a follower forwarded to the dead leader meanwhile is lost, and etcd itself only
  // answers it "request timed out" after 5 s plus two election timeouts. That is etcd's business, not the
  // client's: wait until the survivors serve, then the client must find them on its own.
  cluster->kill(0);
  ASSERT_TRUE(cluster->wait_healthy(1, 10000)) << cluster->log_tail(1);
  auto r2 = put(env, "/tern/c/2", "after");
  ASSERT_TRUE(r2.ok()) << r2.status();
  auto kv = get(env, "/tern/c/0");
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_EQ(kv->value, "before");
  ASSERT_TRUE(put(env, "/tern/c/3", "after").ok());
  // The watch reconnected to a live member and resumed where it was.
  ASSERT_TRUE(eventually([&] {
    std::lock_guard<std::mutex> g(mu);
    return seen.size() >= 3;
  }, 15000));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::lock_guard<std::mutex> g(mu);
  EXPECT_EQ(seen, (std::vector<std::string>{"/tern/c/1", "/tern/c/2", "/tern/c/3"}));
}

}  // namespace
}  // namespace tern::store
