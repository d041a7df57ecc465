#include "reactor/async_mutex.h"

#include <gtest/gtest.h>

#include <vector>

#include "reactor/reactor_set.h"
#include "test_util.h"

namespace tern {
namespace {

// Each worker takes the lock, records its entry, yields while holding it (another coroutine runs),
// and records its exit: with the lock, entries and exits never interleave, and order is arrival order.
Task<void> worker(AsyncMutex* mu, std::vector<int>* log, int id) {
  auto g = co_await mu->lock();
  log->push_back(id);
  co_await Reactor::yield();
  co_await Reactor::yield();
  log->push_back(-id);
}

Task<std::vector<int>> run_workers(AsyncMutex* mu, int n) {
  std::vector<int> log;
  for (int i = 1; i <= n; ++i) spawn(worker(mu, &log, i));
  // Wait until all are done: each leaves two entries.
  while (log.size() < size_t(2 * n)) co_await Reactor::yield();
  co_return log;
}

TEST(AsyncMutex, ExcludesAcrossSuspensionsInArrivalOrder) {
  auto set = test::start_reactors(1);
  AsyncMutex mu;
  auto log = set->run_sync(0, [&] { return run_workers(&mu, 4); });
  EXPECT_EQ(log, (std::vector<int>{1, -1, 2, -2, 3, -3, 4, -4}));
  EXPECT_FALSE(mu.locked());
  set->stop();
}

TEST(AsyncMutex, UncontendedLockDoesNotSuspendAndGuardReleases) {
  AsyncMutex mu;
  auto a = mu.lock();
  EXPECT_TRUE(a.await_ready());
  EXPECT_TRUE(mu.locked());
  {
    AsyncMutex::Guard g = a.await_resume();
    AsyncMutex::Guard moved = std::move(g);
    EXPECT_TRUE(mu.locked());
  }
  EXPECT_FALSE(mu.locked());
}

}  // namespace
}  // namespace tern
