// Shared helpers for the store's tests: a reactor set (one reactor, the primary, where the clients live)
// and running coroutines on it from the test thread.
#pragma once

#include <sched.h>

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <vector>

#include "etcd_process.h"
#include "reactor/reactor_set.h"
#include "store/etcd_client.h"

namespace tern::test {

inline std::unique_ptr<ReactorSet> start_primary(Clock* clock = nullptr) {
  cpu_set_t cs;
  CPU_ZERO(&cs);
  sched_getaffinity(0, sizeof(cs), &cs);
  int core = 0;
  while (core < CPU_SETSIZE && !CPU_ISSET(core, &cs)) ++core;
  ReactorSetOptions o;
  o.cores = {core};
  o.reactor.clock = clock;
  auto s = ReactorSet::Start(o);
  if (!s.ok()) {
    ADD_FAILURE() << "cannot start a reactor: " << s.status();
    return nullptr;
  }
  return std::move(*s);
}

inline uint64_t ms(uint64_t n) { return n * 1'000'000ull; }

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// A reactor and an EtcdClient on it, closed and torn down in order.
class EtcdEnv {
 public:
  explicit EtcdEnv(store::EtcdOptions opts, Clock* clock = nullptr) {
    set = start_primary(clock);
    if (!set) return;
    auto c = set->run_sync(0, [&] { return store::EtcdClient::Create(opts); });
    if (!c.ok()) {
      ADD_FAILURE() << "EtcdClient::Create: " << c.status();
      return;
    }
    client = std::move(*c);
  }
  ~EtcdEnv() {
    if (!set) return;
    if (client) {
      set->run_sync(0, [this]() -> Task<void> { co_await client->close(); });
      set->run_sync(0, [this] { client.reset(); });
    }
    set->stop();
  }
  // Runs fn (plain or coroutine) on the primary reactor and returns its result.
  template <typename F>
  auto run(F fn) {
    return set->run_sync(0, std::move(fn));
  }

  std::unique_ptr<ReactorSet> set;
  std::unique_ptr<store::EtcdClient> client;
};

// A test suite with one real etcd member, started before its first test and stopped after its last.
// SetUp fails the test (with what etcd said) when the member could not be started.
class EtcdSuite : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string error;
    cluster_ = EtcdCluster::Start(1, &error).release();
    if (!cluster_) error_ = error;
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }
  void SetUp() override { ASSERT_NE(cluster_, nullptr) << "cannot start etcd: " << error_; }
  static inline EtcdCluster* cluster_ = nullptr;
  static inline std::string error_;
};

}  // namespace tern::test
