#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "reactor/mpsc_queue.h"
#include "reactor/reactor_set.h"
#include "test_util.h"

namespace tern {
namespace {

using test::start_reactors;

TEST(MpscQueue, FifoAndBounded) {
  BoundedMpscQueue<int> q(4);
  int v = 0;
  EXPECT_FALSE(q.try_pop(v));
  for (int i = 0; i < 4; ++i) EXPECT_TRUE(q.try_push(int(i)));
  EXPECT_FALSE(q.try_push(99)) << "full";
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(q.try_pop(v));
    EXPECT_EQ(v, i);
  }
  EXPECT_FALSE(q.has_ready());
  for (int round = 0; round < 10; ++round) {
    EXPECT_TRUE(q.try_push(int(round)));
    ASSERT_TRUE(q.try_pop(v));
    EXPECT_EQ(v, round);
  }
}

TEST(MpscQueue, ManyProducersLoseNothing) {
  BoundedMpscQueue<uint64_t> q(1024);
  constexpr int kProducers = 4, kEach = 100000;
  std::vector<std::thread> ts;
  for (int p = 0; p < kProducers; ++p) {
    ts.emplace_back([&q, p] {
      for (uint64_t i = 0; i < kEach; ++i) {
        while (!q.try_push(uint64_t(p) << 32 | i)) std::this_thread::yield();
      }
    });
  }
  std::vector<uint64_t> next(kProducers, 0);
  uint64_t got = 0, v;
  while (got < uint64_t(kProducers) * kEach) {
    if (!q.try_pop(v)) continue;
    uint64_t p = v >> 32, i = v & 0xffffffff;
    ASSERT_EQ(i, next[p]) << "per-producer order broken";
    ++next[p];
    ++got;
  }
  for (auto& t : ts) t.join();
}

TEST(Messaging, ForeignThreadsPostInOrder) {
  auto set = start_reactors(2);
  constexpr int kThreads = 3, kEach = 20000;
  std::vector<std::vector<int>> seen(kThreads);  // touched only on reactor 1
  std::vector<std::thread> ts;
  for (int t = 0; t < kThreads; ++t) {
    ts.emplace_back([&, t] {
      for (int i = 0; i < kEach; ++i) ASSERT_TRUE(set->post(1, [&seen, t, i] { seen[size_t(t)].push_back(i); }));
    });
  }
  for (auto& t : ts) t.join();
  set->run_sync(1, [] {});  // everything posted before this has run
  for (int t = 0; t < kThreads; ++t) {
    ASSERT_EQ(seen[size_t(t)].size(), size_t(kEach));
    for (int i = 0; i < kEach; ++i) ASSERT_EQ(seen[size_t(t)][size_t(i)], i);
  }
}

TEST(Messaging, ReactorToReactorOverflowKeepsOrder) {
  auto set = start_reactors(2);
  constexpr int kN = 3 * int(Reactor::kInboxCapacity) + 17;  // more than the inbox holds
  std::vector<int> seen;
  set->run_sync(0, [&] {
    for (int i = 0; i < kN; ++i) set->post(1, [&seen, i] { seen.push_back(i); });
  });
  // The overflow drains over several loop turns of reactor 0.
  for (int i = 0; i < 5000 && set->run_sync(1, [&] { return seen.size(); }) < size_t(kN); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_EQ(set->run_sync(1, [&] { return seen.size(); }), size_t(kN));
  for (int i = 0; i < kN; ++i) ASSERT_EQ(seen[size_t(i)], i);
}

TEST(Messaging, SubmitToReturnsResultsToTheCallersReactor) {
  auto set = start_reactors(2);
  auto r = set->run_sync(0, [&]() -> Task<std::pair<unsigned, unsigned>> {
    unsigned there = co_await set->submit_to(1, [] { return Reactor::current()->id(); });
    unsigned here = Reactor::current()->id();
    co_return std::make_pair(there, here);
  });
  EXPECT_EQ(r.first, 1u);
  EXPECT_EQ(r.second, 0u);
}

TEST(Messaging, SubmitToRunsCoroutinesRemotelyAndVoidFunctions) {
  auto set = start_reactors(2);
  int v = set->run_sync(0, [&]() -> Task<int> {
    int x = co_await set->submit_to(1, []() -> Task<int> {
      co_await Reactor::sleep_for(1'000'000);
      co_return int(Reactor::current()->id()) + 10;
    });
    int side = 0;
    co_await set->submit_to(1, [&side] { side = 5; });
    co_await set->submit_to(0, [&side] { side += 1; });  // to itself
    co_return x + side;
  });
  EXPECT_EQ(v, 17);
}

TEST(Messaging, ManyConcurrentPingPongs) {
  auto set = start_reactors(2);
  int ok = set->run_sync(0, [&]() -> Task<int> {
    int done = 0, pending = 0;
    for (int i = 0; i < 2000; ++i) {
      ++pending;
      spawn([](ReactorSet* s, int i, int* done, int* pending) -> Task<void> {
        int v = co_await s->submit_to(1, [i] { return i * 3; });
        if (v == i * 3 && Reactor::current()->id() == 0) ++*done;
        --*pending;
      }(set.get(), i, &done, &pending));
    }
    while (pending) co_await Reactor::yield();
    co_return done;
  });
  EXPECT_EQ(ok, 2000);
}

TEST(Messaging, PostAfterStopIsRefused) {
  auto set = start_reactors(1);
  set->stop();
  EXPECT_FALSE(set->post(0, [] {}));
}

}  // namespace
}  // namespace tern

namespace tern {
namespace {

TEST(Messaging, SubmitToWithDataFromTheCallersFrame) {
  // The supported way to hand non-trivial data to another reactor: capture a pointer to it; the caller's
  // frame outlives the await.
  auto set = start_reactors(2);
  std::string small = "127.0.0.1", big(100, 'x');
  size_t n = set->run_sync(0, [&]() -> Task<size_t> {
    std::string a = small, b = big;
    std::vector<int> v(10, 1);
    size_t r = co_await set->submit_to(1, [pa = &a, pb = &b, pv = &v]() { return pa->size() + pb->size() + pv->size(); });
    co_return r;
  });
  EXPECT_EQ(n, 9u + 100u + 10u);
}

}  // namespace
}  // namespace tern
