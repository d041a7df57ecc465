// Leadership against a real etcd (one member for the suite): one agent leads, a second waits; a resign
// hands over at once, a dead leader's lease within its TTL; a deposed leader's guarded writes are refused
// even before it has noticed.
#include "control/leadership.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "reactor/task_scope.h"
#include "store/store_env.h"

namespace tern::control {
namespace {

using test::EtcdEnv;
using test::ms;

template <typename P>
bool eventually(P pred, int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return pred();
}

// One agent: a reactor, an etcd client, a Leadership, and its campaign running in the background.
struct Agent {
  Agent(const std::vector<std::string>& endpoints, std::string id, int64_t ttl) {
    store::EtcdOptions o;
    o.endpoints = endpoints;
    o.request_timeout_ns = ms(3000);
    env = std::make_unique<EtcdEnv>(o);
    env->run([&] {
      auto l = Leadership::Create(*env->client, {"/tern/test/leader", id, ttl});
      EXPECT_TRUE(l.ok()) << l.status();
      lead = std::move(*l);
      lead->on_lost([this](const Status&) { lost = true; });
      scope = std::make_unique<TaskScope>("campaign");
    });
  }
  ~Agent() {
    if (!env || !env->set) return;
    env->run([this]() -> Task<void> {
      if (lead && !crashed) co_await lead->stop();
      co_await scope->close();
    });
    env->run([this] {
      lead.reset();
      scope.reset();
    });
    env.reset();
  }
  void campaign() {
    env->run([this] {
      scope->spawn([](Agent* a) -> Task<void> {
        Status st = co_await a->lead->campaign();
        a->result = int(st.code());
        a->done = true;
      }(this));
    });
  }
  bool leading() { return env->run([this] { return lead->leading(); }); }
  Errc put(const std::string& k, const std::string& v) {
    return env->run([&]() -> Task<Errc> {
      store::Txn t;
      t.success.push_back(store::TxnOp::Put(k, v));
      auto r = co_await lead->guarded(t);
      co_return r.ok() ? Errc::kOk : r.code();
    });
  }
  // A crash: the process goes without resigning (its lease runs out by itself).
  void crash() {
    crashed = true;
    env->run([this] { lead.reset(); });  // stops the keep-alive, revokes nothing
  }

  std::unique_ptr<EtcdEnv> env;
  std::unique_ptr<Leadership> lead;
  std::unique_ptr<TaskScope> scope;
  std::atomic<bool> done{false}, lost{false};
  std::atomic<int> result{0};
  bool crashed = false;
};

using LeadershipTest = test::EtcdSuite;

TEST_F(LeadershipTest, OneLeadsTheOtherWaitsAndAResignHandsOverAtOnce) {
  Agent a(cluster_->endpoints(), "agent-a", 3), b(cluster_->endpoints(), "agent-b", 3);
  a.campaign();
  ASSERT_TRUE(eventually([&] { return a.done.load(); }, 5000));
  EXPECT_EQ(a.result.load(), 0);
  EXPECT_TRUE(a.leading());
  b.campaign();
  std::this_thread::sleep_for(std::chrono::milliseconds(300));  // (a wait for something that must not happen)
  EXPECT_FALSE(b.done.load());
  EXPECT_EQ(a.put("/tern/test/x", "1"), Errc::kOk);
  EXPECT_EQ(b.put("/tern/test/x", "2"), Errc::kAccess);  // a standby writes nothing
  auto who = b.env->run([&]() -> Task<Result<std::string>> { co_return co_await b.lead->leader(); });
  ASSERT_TRUE(who.ok());
  EXPECT_EQ(*who, "agent-a");
  const auto t0 = std::chrono::steady_clock::now();
  a.env->run([&]() -> Task<void> { co_await a.lead->resign(); });
  ASSERT_TRUE(eventually([&] { return b.done.load(); }, 3000));
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(took, 1.0) << "a resign should hand over at once";
  EXPECT_TRUE(b.leading());
  EXPECT_EQ(b.put("/tern/test/x", "3"), Errc::kOk);
  EXPECT_EQ(a.put("/tern/test/x", "4"), Errc::kAccess);
  EXPECT_FALSE(a.lost.load());  // resigned, not lost
}

TEST_F(LeadershipTest, ADeadLeaderIsReplacedWithinItsTtl) {
  Agent a(cluster_->endpoints(), "agent-a", 2), b(cluster_->endpoints(), "agent-b", 2);
  a.campaign();
  ASSERT_TRUE(eventually([&] { return a.done.load(); }, 5000));
  b.campaign();
  const auto t0 = std::chrono::steady_clock::now();
  a.crash();
  ASSERT_TRUE(eventually([&] { return b.done.load(); }, 6000)) << "the standby did not take over";
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GT(took, 0.5);            // the lease held until it ran out...
  EXPECT_LT(took, 2.0 + 1.5);      // ...and no longer than its TTL (plus etcd's expiry check)
  EXPECT_TRUE(b.leading());
  EXPECT_EQ(b.put("/tern/test/y", "1"), Errc::kOk);
}

TEST_F(LeadershipTest, ADeposedLeaderCannotWriteEvenBeforeItNotices) {
  Agent a(cluster_->endpoints(), "agent-a", 10), b(cluster_->endpoints(), "agent-b", 10);
  a.campaign();
  ASSERT_TRUE(eventually([&] { return a.done.load(); }, 5000));
  b.campaign();
  // A's lease revoked behind its back (as when it was paused for longer than the TTL): B takes over at
  // once, while A still believes it leads.
  b.env->run([&]() -> Task<void> {
    auto kv = co_await b.env->client->get("/tern/test/leader");
    EXPECT_TRUE(kv.ok());
    if (kv.ok()) {
      Status st = co_await b.env->client->lease_revoke(kv->lease);
      EXPECT_TRUE(st.ok()) << st;
    }
  });
  ASSERT_TRUE(eventually([&] { return b.done.load(); }, 3000));
  EXPECT_EQ(a.put("/tern/test/z", "from-a"), Errc::kAccess);
  EXPECT_FALSE(a.leading());
  EXPECT_TRUE(a.lost.load());
  EXPECT_EQ(b.put("/tern/test/z", "from-b"), Errc::kOk);
  auto v = b.env->run([&]() -> Task<Result<store::KeyValue>> { co_return co_await b.env->client->get("/tern/test/z"); });
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(v->value, "from-b");
}

TEST(LeadershipOptions, BadOptionsAreNamed) {
  // Create checks before it touches etcd; a client is needed only to exist.
  store::EtcdOptions o;
  o.endpoints = {"127.0.0.1:1"};
  EtcdEnv env(o);
  env.run([&] {
    EXPECT_NE(Leadership::Create(*env.client, {"", "a", 3}).status().message().find("key"), std::string::npos);
    EXPECT_NE(Leadership::Create(*env.client, {"/k", "", 3}).status().message().find("id"), std::string::npos);
    EXPECT_NE(Leadership::Create(*env.client, {"/k", "a", 1}).status().message().find("ttl"), std::string::npos);
  });
}

}  // namespace
}  // namespace tern::control
