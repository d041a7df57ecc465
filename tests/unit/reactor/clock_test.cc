#include "reactor/clock.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "reactor/reactor_set.h"
#include "reactor/task_scope.h"
#include "test_util.h"

namespace tern {
namespace {

std::unique_ptr<ReactorSet> start_on(Clock* clock, unsigned n = 1) {
  ReactorSetOptions o;
  o.cores = test::test_cores(n);
  o.reactor.clock = clock;
  auto s = ReactorSet::Start(o);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Waits (bounded, in real time) until `pred` holds; the reactors run meanwhile.
template <typename P>
bool eventually(P pred) {
  for (int i = 0; i < 5000; ++i) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return pred();
}

TEST(ManualClock, TimersFireOnlyWhenTheClockMoves) {
  ManualClock clock;
  auto set = start_on(&clock);
  std::atomic<int> fired{0};
  Timer t;
  set->run_sync(0, [&] {
    EXPECT_EQ(Reactor::current()->now(), clock.now_ns());
    t.set_callback([&fired] { fired.fetch_add(1); });
    t.arm(30'000'000'000ull);  // 30 s
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_EQ(fired.load(), 0);
  clock.advance(29'999'999'999ull);
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(fired.load(), 0);  // one nanosecond short
  clock.advance(1);
  EXPECT_TRUE(eventually([&] { return fired.load() == 1; }));
  set->run_sync(0, [&] { t.cancel(); });
  set->stop();
}

TEST(ManualClock, SleepForAndPeriodicTimersFollowTheClock) {
  ManualClock clock;
  auto set = start_on(&clock, 2);
  std::atomic<bool> woke{false};
  std::atomic<int> ticks{0};
  Timer tick;
  TaskScope* scope = nullptr;
  set->run_sync(1, [&] {
    scope = new TaskScope("sleeper");
    scope->spawn([](std::atomic<bool>* w) -> Task<void> {
      co_await Reactor::sleep_for(3'600'000'000'000ull);  // an hour
      w->store(true);
    }(&woke));
    tick.set_callback([&ticks] { ticks.fetch_add(1); });
    tick.arm(1'000'000'000ull, 1'000'000'000ull);
  });
  clock.advance(1'000'000'000ull);
  EXPECT_TRUE(eventually([&] { return ticks.load() == 1; }));
  clock.advance(1'000'000'000ull);
  EXPECT_TRUE(eventually([&] { return ticks.load() == 2; }));
  EXPECT_FALSE(woke.load());
  clock.advance(3'600'000'000'000ull);
  EXPECT_TRUE(eventually([&] { return woke.load(); }));
  // A jump of many periods fires the periodic timer once, not once per period missed.
  EXPECT_TRUE(eventually([&] { return ticks.load() == 3; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(ticks.load(), 3);
  set->run_sync(1, [&]() -> Task<void> {
    tick.cancel();
    co_await scope->close();
    delete scope;
  });
  set->stop();
}

TEST(ManualClock, MessagesAndRealWorkDoNotWaitForTheClock) {
  ManualClock clock;
  auto set = start_on(&clock);
  // A message, a yield and a real I/O completion are not timers: they run at once.
  int v = set->run_sync(0, []() -> Task<int> {
    co_await Reactor::yield();
    co_return 7;
  });
  EXPECT_EQ(v, 7);
  set->stop();
}

TEST(MonotonicClock, IsTheDefault) {
  auto set = test::start_reactors(1);
  set->run_sync(0, [] {
    EXPECT_TRUE(Reactor::current()->clock().real());
    uint64_t a = Reactor::current()->now();
    EXPECT_GT(a, 0u);
  });
  set->stop();
}

}  // namespace
}  // namespace tern
