#include "reactor/reactor.h"

#include <fcntl.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "common/clock.h"
#include "reactor/reactor_set.h"
#include "test_util.h"

namespace tern {
namespace {

using test::start_reactors;

TEST(Reactor, RunsFunctionsOnTheRightThread) {
  auto set = start_reactors(2);
  ASSERT_TRUE(set);
  EXPECT_EQ(Reactor::current(), nullptr);
  for (unsigned i = 0; i < set->size(); ++i) {
    unsigned id = set->run_sync(i, [] { return Reactor::current()->id(); });
    EXPECT_EQ(id, i);
  }
  EXPECT_EQ(&set->primary(), &set->reactor(0));
  set->stop();
  EXPECT_TRUE(set->stopped());
  set->stop();  // idempotent
}

TEST(Reactor, RunSyncAwaitsCoroutines) {
  auto set = start_reactors(1);
  int v = set->run_sync(0, []() -> Task<int> {
    co_await Reactor::yield();
    co_await Reactor::sleep_for(1'000'000);
    co_return 41 + 1;
  });
  EXPECT_EQ(v, 42);
  set->run_sync(0, []() -> Task<void> { co_return; });
}

TEST(Reactor, StartRejectsBadOptions) {
  ReactorSetOptions o;
  o.cores = {};
  EXPECT_EQ(ReactorSet::Start(o).code(), Errc::kInval);
  o.cores = test::test_cores(1);
  o.reactor.ring_entries = 1000;
  auto r = ReactorSet::Start(o);
  EXPECT_EQ(r.code(), Errc::kInval);
  EXPECT_NE(r.status().message().find("power of two"), std::string::npos);
}

TEST(Reactor, StartFailsCleanlyWhenPinningIsImpossible) {
  ReactorSetOptions o;
  o.cores = {test::test_cores(1)[0], CPU_SETSIZE - 1};
  auto r = ReactorSet::Start(o);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cannot pin to core"), std::string::npos) << r.status();
  EXPECT_NE(r.status().message().find("cores allowed"), std::string::npos) << r.status();
}

TEST(Reactor, IdleReactorSleepsAndCostsAlmostNoCpu) {
  auto set = start_reactors(1);
  // Let it go idle, then measure its own CPU time across 300 ms of idleness.
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  uint64_t cpu0 = set->run_sync(0, [] { return thread_cpu_ns(); });
  uint64_t sleeps0 = set->run_sync(0, [] { return Reactor::current()->counters().sleeps; });
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  uint64_t cpu1 = set->run_sync(0, [] { return thread_cpu_ns(); });
  uint64_t sleeps1 = set->run_sync(0, [] { return Reactor::current()->counters().sleeps; });
  EXPECT_GT(sleeps1, sleeps0);
  // A spinning reactor would use ~300 ms; a sleeping one uses microseconds (ASan builds a little more).
  EXPECT_LT(cpu1 - cpu0, 30'000'000u) << "idle reactor used " << (cpu1 - cpu0) / 1000 << " us of CPU";
}

TEST(Reactor, AwaitedAnswersKeepAnAdaptiveReactorSpinningThenItSleeps) {
  ReactorSetOptions o;
  o.cores = test::test_cores(1);
  o.reactor.idle_spin_ns = 20'000;
  o.reactor.await_spin_ns = 60'000'000'000ull;  // far longer than the test: only await_end lets it sleep
  auto started = ReactorSet::Start(o);
  ASSERT_TRUE(started.ok()) << started.status();
  auto& set = *started;
  auto sleeps = [&] { return set->run_sync(0, [] { return Reactor::current()->counters().sleeps; }); };
  auto sleeps_beyond = [&](uint64_t n) {  // waits (5 s at most) for a sleep past `n`
    for (int i = 0; i < 500; ++i) {
      if (sleeps() > n) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  // Idle at first: it sleeps within the idle spin.
  uint64_t s0 = sleeps();
  ASSERT_TRUE(sleeps_beyond(s0)) << "the idle reactor never slept";
  set->run_sync(0, [] {
    Reactor::current()->await_begin();
    Reactor::current()->await_begin();
    return 0;
  });
  // Our own run_sync messages wake it; past them it must not sleep again while answers are awaited.
  uint64_t s1 = sleeps();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  uint64_t s2 = sleeps();
  EXPECT_EQ(s2, s1) << "the reactor slept while two answers were awaited";
  EXPECT_EQ(set->run_sync(0, [] { return Reactor::current()->awaiting(); }), 2u);
  set->run_sync(0, [] {
    Reactor::current()->await_end();
    return 0;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(sleeps(), s2) << "one answer still awaited";
  set->run_sync(0, [] {
    Reactor::current()->await_end();
    return 0;
  });
  EXPECT_TRUE(sleeps_beyond(s2)) << "the reactor did not sleep once nothing was awaited";
}

TEST(Reactor, BusyModeNeverSleeps) {
  auto set = start_reactors(1, PollMode::kBusy);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  uint64_t sleeps = set->run_sync(0, [] { return Reactor::current()->counters().sleeps; });
  EXPECT_EQ(sleeps, 0u);
  uint64_t loops = set->run_sync(0, [] { return Reactor::current()->counters().loops; });
  EXPECT_GT(loops, 1000u);
}

TEST(Reactor, SleepingReactorWakesForMessages) {
  auto set = start_reactors(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  for (int i = 0; i < 200; ++i) {
    // From a foreign thread and from the other reactor.
    EXPECT_EQ(set->run_sync(1, [] { return 7; }), 7);
    int v = set->run_sync(0, [&]() -> Task<int> { co_return co_await set->submit_to(1, [] { return 8; }); });
    EXPECT_EQ(v, 8);
    if (i % 50 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

struct NopOp : RingOp {
  int res = 1;
  bool done = false;
};

TEST(Reactor, RingOpsCompleteThroughTheirCallback) {
  auto set = start_reactors(1);
  NopOp op;
  op.on_complete = [](RingOp* o, int res, uint32_t) {
    auto* n = static_cast<NopOp*>(o);
    n->res = res;
    n->done = true;
  };
  set->run_sync(0, [&] {
    Reactor* r = Reactor::current();
    io_uring_sqe* sqe = r->get_sqe();
    io_uring_prep_nop(sqe);
    r->commit(sqe, &op);
    EXPECT_EQ(r->inflight(), 1u);
  });
  for (int i = 0; i < 1000 && !set->run_sync(0, [&] { return op.done; }); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_TRUE(set->run_sync(0, [&] { return op.done; }));
  EXPECT_EQ(op.res, 0);
  EXPECT_EQ(set->run_sync(0, [] { return Reactor::current()->inflight(); }), 0u);
}

TEST(Reactor, ManyOpsInOneTurnOverflowTheSqSafely) {
  ReactorSetOptions o;
  o.cores = test::test_cores(1);
  o.reactor.ring_entries = 8;
  auto set = std::move(*ReactorSet::Start(o));
  constexpr int kOps = 1000;
  std::vector<NopOp> ops(kOps);
  std::atomic<int> done{0};
  static std::atomic<int>* s_done;
  s_done = &done;
  set->run_sync(0, [&] {
    Reactor* r = Reactor::current();
    for (auto& op : ops) {
      op.on_complete = [](RingOp*, int res, uint32_t) {
        if (res == 0) s_done->fetch_add(1);
      };
      io_uring_sqe* sqe = r->get_sqe();
      io_uring_prep_nop(sqe);
      r->commit(sqe, &op);
    }
  });
  for (int i = 0; i < 2000 && done.load() < kOps; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  EXPECT_EQ(done.load(), kOps);
}

struct TimeoutOp : RingOp {
  __kernel_timespec ts{};
  std::atomic<int> res{1};
};

TEST(Reactor, StopDrainsInFlightOperations) {
  auto set = start_reactors(1);
  TimeoutOp op;
  op.ts.tv_nsec = 100'000'000;  // 100 ms
  op.on_complete = [](RingOp* o, int res, uint32_t) { static_cast<TimeoutOp*>(o)->res.store(res); };
  set->run_sync(0, [&] {
    Reactor* r = Reactor::current();
    io_uring_sqe* sqe = r->get_sqe();
    io_uring_prep_timeout(sqe, &op.ts, 0, 0);
    r->commit(sqe, &op);
  });
  uint64_t t0 = now_ns();
  set->stop();
  EXPECT_EQ(op.res.load(), -ETIME) << "the timeout completed normally before the reactor exited";
  EXPECT_GE(now_ns() - t0, 80'000'000u);
}

struct ReadOp : RingOp {
  char buf[8];
  std::atomic<int> res{1};
};

TEST(Reactor, StopCancelsOperationsThatNeverComplete) {
  auto set = start_reactors(1, PollMode::kAdaptive, 100'000'000);
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  ReadOp op;
  op.on_complete = [](RingOp* o, int res, uint32_t) { static_cast<ReadOp*>(o)->res.store(res); };
  set->run_sync(0, [&] {
    Reactor* r = Reactor::current();
    io_uring_sqe* sqe = r->get_sqe();
    io_uring_prep_read(sqe, fds[0], op.buf, sizeof(op.buf), 0);
    r->commit(sqe, &op);
  });
  uint64_t t0 = now_ns();
  set->stop();
  EXPECT_EQ(op.res.load(), -ECANCELED);
  EXPECT_LT(now_ns() - t0, 5'000'000'000u);
  close(fds[0]);
  close(fds[1]);
}

TEST(Reactor, StopWaitsForMessageChainsBetweenReactors) {
  // A ping-pong that is still bouncing when stop() is called must run to its end: a reactor that is idle
  // for a moment can still be sent to by one that is not.
  auto set = start_reactors(2);
  std::atomic<int> hops{0};
  struct Hop {
    static void go(ReactorSet* s, std::atomic<int>* hops, int left) {
      hops->fetch_add(1);
      if (left == 0) return;
      s->post(Reactor::current()->id() ^ 1, [s, hops, left] { go(s, hops, left - 1); });
    }
  };
  ReactorSet* sp = set.get();
  set->post(0, [sp, &hops] { Hop::go(sp, &hops, 20000); });
  set->stop();
  EXPECT_EQ(hops.load(), 20001);
}

TEST(Reactor, EveryAcceptedForeignPostRunsEvenWhileStopping) {
  auto set = start_reactors(2);
  std::atomic<int> ran{0};
  std::atomic<int> accepted{0};
  std::vector<std::thread> posters;
  for (int t = 0; t < 3; ++t) {
    posters.emplace_back([&, t] {
      for (;;) {
        if (!set->post(unsigned(t % 2), [&ran] { ran.fetch_add(1); })) return;
        accepted.fetch_add(1);
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  set->stop();
  for (auto& p : posters) p.join();
  EXPECT_GT(accepted.load(), 0);
  EXPECT_EQ(ran.load(), accepted.load());
}

TEST(Reactor, DeferredWorkRunsInOrderAndLater) {
  auto set = start_reactors(1);
  struct Item : Deferred {
    std::vector<int>* log;
    int v;
  };
  std::vector<int> log;
  std::vector<Item> items(5);
  set->run_sync(0, [&] {
    for (int i = 0; i < 5; ++i) {
      items[size_t(i)].log = &log;
      items[size_t(i)].v = i;
      items[size_t(i)].run = [](Deferred* d) {
        auto* it = static_cast<Item*>(d);
        it->log->push_back(it->v);
      };
      Reactor::current()->defer(&items[size_t(i)]);
    }
    EXPECT_TRUE(log.empty()) << "deferred work must not run inside defer()";
  });
  set->run_sync(0, [] {});
  set->run_sync(0, [] {});
  EXPECT_EQ(log, (std::vector<int>{0, 1, 2, 3, 4}));
}

TEST(Reactor, PollersRunWhileAwakeAndCanBeRemoved) {
  auto set = start_reactors(1, PollMode::kBusy);
  std::atomic<int> calls{0};
  Reactor::PollerId id = set->run_sync(0, [&] {
    return Reactor::current()->add_poller([&calls] {
      calls.fetch_add(1);
      return false;
    });
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_GT(calls.load(), 10);
  set->run_sync(0, [&] { Reactor::current()->remove_poller(id); });
  int after = calls.load();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(calls.load(), after);
}

Task<int> leaf(int x) {
  co_await Reactor::yield();
  co_return x * 2;
}
Task<int> chain(int depth) {
  if (depth == 0) co_return 1;
  int a = co_await chain(depth - 1);
  int b = co_await leaf(1);
  co_return a + b - 1;
}

TEST(Task, DeepChainsAndManyConcurrentTasks) {
  auto set = start_reactors(1);
  EXPECT_EQ(set->run_sync(0, [] { return chain(2000); }), 2001);
  int total = set->run_sync(0, []() -> Task<int> {
    int sum = 0;
    int pending = 1000;
    for (int i = 0; i < 1000; ++i) {
      spawn_then(leaf(i), [&sum, &pending](int v) {
        sum += v;
        --pending;
      });
    }
    while (pending) co_await Reactor::yield();
    co_return sum;
  });
  EXPECT_EQ(total, 999 * 1000);
}

Task<int> thrower() {
  co_await Reactor::yield();
  throw std::runtime_error("boom");
}

TEST(Task, ExceptionsReachTheAwaiter) {
  auto set = start_reactors(1);
  std::string what = set->run_sync(0, []() -> Task<std::string> {
    try {
      co_await thrower();
    } catch (const std::exception& e) {
      co_return std::string(e.what());
    }
    co_return std::string("none");
  });
  EXPECT_EQ(what, "boom");
}

TEST(Task, UnstartedTaskIsDestroyedCleanly) {
  auto set = start_reactors(1);
  set->run_sync(0, [] {
    Task<int> t = leaf(3);
    EXPECT_TRUE(t.valid());
  });
}

}  // namespace
}  // namespace tern
