#include "reactor/task_scope.h"

#include <gtest/gtest.h>

#include <memory>

#include "reactor/reactor_set.h"
#include "test_util.h"

namespace tern {
namespace {

using test::start_reactors;

Task<void> sleep_then_set(uint64_t ns, int* out, int v) {
  co_await Reactor::sleep_for(ns);
  *out = v;
}

TEST(TaskScope, CloseWaitsForEveryTaskAndHold) {
  auto set = start_reactors(1);
  ASSERT_TRUE(set);
  set->run_sync(0, []() -> Task<void> {
    TaskScope scope("test");
    int a = 0, b = 0;
    EXPECT_TRUE(scope.spawn(sleep_then_set(2'000'000, &a, 1)));
    EXPECT_TRUE(scope.spawn(sleep_then_set(5'000'000, &b, 2)));
    EXPECT_TRUE(scope.enter());
    EXPECT_EQ(scope.active(), 3u);
    // The hold ends from a timer callback: work that is not a coroutine.
    Timer t([&scope] { scope.leave(); });
    t.arm(8'000'000);
    co_await scope.close();
    EXPECT_EQ(a, 1);
    EXPECT_EQ(b, 2);
    EXPECT_EQ(scope.active(), 0u);
    EXPECT_FALSE(t.armed());
  });
  set->stop();
}

TEST(TaskScope, NothingStartsOnceClosing) {
  auto set = start_reactors(1);
  set->run_sync(0, []() -> Task<void> {
    TaskScope scope("test");
    int a = 0;
    co_await scope.close();  // empty: returns at once
    EXPECT_TRUE(scope.closing());
    EXPECT_FALSE(scope.spawn(sleep_then_set(1'000, &a, 7)));
    EXPECT_FALSE(scope.enter());
    EXPECT_FALSE(scope.spawn_then(sleep_then_set(1'000, &a, 7), [] {}));
    co_await Reactor::sleep_for(2'000'000);
    EXPECT_EQ(a, 0);  // never ran
    co_await scope.close();  // again: still fine
  });
  set->stop();
}

TEST(TaskScope, SeveralClosersAllResume) {
  auto set = start_reactors(1);
  set->run_sync(0, []() -> Task<void> {
    TaskScope scope("test");
    TaskScope closers("closers");
    int a = 0, resumed = 0;
    scope.spawn(sleep_then_set(3'000'000, &a, 1));
    for (int i = 0; i < 3; ++i) {
      closers.spawn([](TaskScope* s, int* n) -> Task<void> {
        co_await s->close();
        ++*n;
      }(&scope, &resumed));
    }
    co_await closers.close();
    EXPECT_EQ(resumed, 3);
    EXPECT_EQ(a, 1);
  });
  set->stop();
}

TEST(TaskScope, SpawnThenDeliversTheResultBeforeTheTaskCountsAsEnded) {
  auto set = start_reactors(1);
  set->run_sync(0, []() -> Task<void> {
    TaskScope scope("test");
    int got = 0;
    scope.spawn_then(
        []() -> Task<int> {
          co_await Reactor::sleep_for(1'000'000);
          co_return 42;
        }(),
        [&got](int v) { got = v; });
    co_await scope.close();
    EXPECT_EQ(got, 42);
  });
  set->stop();
}

// The owner may destroy itself as soon as close() resumes it, although the last task ended inside
// a callback that still runs: closers are resumed from the loop, not from that call stack.
TEST(TaskScope, OwnerDestroyedRightAfterCloseIsSafe) {
  auto set = start_reactors(1);
  set->run_sync(0, []() -> Task<void> {
    struct Owner {
      TaskScope scope{"owner"};
      int hits = 0;
    };
    auto* o = new Owner;
    o->scope.spawn([](Owner* self) -> Task<void> {
      co_await Reactor::sleep_for(1'000'000);
      ++self->hits;
    }(o));
    co_await o->scope.close();
    EXPECT_EQ(o->hits, 1);
    delete o;  // ASan would catch a scope touched after this
    co_await Reactor::sleep_for(1'000'000);
  });
  set->stop();
}

TEST(TaskScope, TasksMayHopReactorsButEndAtHome) {
  auto set = start_reactors(2);
  set->run_sync(0, [&set]() -> Task<void> {
    TaskScope scope("test");
    unsigned where = 99;
    ReactorSet* s = set.get();
    scope.spawn([](ReactorSet* rs, unsigned* w) -> Task<void> {
      *w = co_await rs->submit_to(1, [] { return Reactor::current()->id(); });
    }(s, &where));
    co_await scope.close();
    EXPECT_EQ(where, 1u);
    EXPECT_EQ(Reactor::current()->id(), 0u);
  });
  set->stop();
}

TEST(WhenAll, ResultsInOrderWhateverTheFinishingOrder) {
  auto set = start_reactors(1);
  set->run_sync(0, []() -> Task<void> {
    std::vector<Task<int>> ts;
    for (int i = 0; i < 5; ++i) {
      ts.push_back([](int v) -> Task<int> {
        co_await Reactor::sleep_for(uint64_t(5 - v) * 1'000'000);  // the last finishes first
        co_return v * 10;
      }(i));
    }
    std::vector<int> r = co_await when_all(std::move(ts));
    const std::vector<int> want = {0, 10, 20, 30, 40};
    EXPECT_EQ(r, want);
    // Tasks that never suspend, and an empty list.
    std::vector<Task<int>> now;
    now.push_back([]() -> Task<int> { co_return 1; }());
    now.push_back([]() -> Task<int> { co_return 2; }());
    std::vector<int> r2 = co_await when_all(std::move(now));
    const std::vector<int> want2 = {1, 2};
    EXPECT_EQ(r2, want2);
    std::vector<Task<int>> none;
    std::vector<int> r3 = co_await when_all(std::move(none));
    EXPECT_TRUE(r3.empty());
    int n = 0;
    std::vector<Task<void>> vs;
    for (int i = 0; i < 3; ++i) {
      vs.push_back([](int* c) -> Task<void> {
        co_await Reactor::yield();
        ++*c;
      }(&n));
    }
    co_await when_all(std::move(vs));
    EXPECT_EQ(n, 3);
  });
  set->stop();
}

TEST(TaskScopeDeathTest, DestroyingAScopeWithWorkRunningAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        auto set = start_reactors(1);
        set->run_sync(0, []() -> Task<void> {
          auto* scope = new TaskScope("leaky");
          scope->enter();
          delete scope;
          co_return;
        });
      },
      "task scope 'leaky' destroyed with 1 task");
}

}  // namespace
}  // namespace tern
