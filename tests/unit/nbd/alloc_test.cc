// Proves that the NBD transmission path does not touch the heap in steady state: global operator new is
// replaced (in this binary only) by one that counts allocations made on reactor threads while counting
// is on. Two clients (one per reactor) run a pipelined mix of every command — small, medium and
// multi-chunk reads and writes, FUA, flush, trim, write-zeroes with and without NO_HOLE — first to warm
// up (buffers and pools grow to what the mix needs), then measured.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <new>
#include <thread>

#include "nbd/server.h"
#include "raw_client.h"
#include "reactor/reactor.h"
#include "test_util.h"

namespace {
std::atomic<bool> g_counting{false};
std::atomic<uint64_t> g_reactor_allocs{0};
}  // namespace

void note_alloc() {
  if (g_counting.load(std::memory_order_relaxed) && tern::Reactor::current()) {
    g_reactor_allocs.fetch_add(1, std::memory_order_relaxed);
  }
}
#include "counting_new.h"

namespace tern::nbd {
namespace {

using namespace proto;

struct Op {
  uint16_t type;
  uint16_t flags;
  uint64_t offset;
  uint32_t length;
};

// One pipelined round of every command; false if any reply is missing or an error.
bool round(test::RawClient& c, uint64_t base, uint64_t* cookie) {
  static const Op kOps[] = {
      {kCmdWrite, 0, 0, 4096},
      {kCmdWrite, kCmdFlagFua, 65536, 65536},
      {kCmdWrite, 0, 1 << 20, (1u << 20) + 512 * 3},
      {kCmdRead, 0, 0, 4096},
      {kCmdRead, 0, 1 << 20, 200 * 1024},
      {kCmdRead, 0, 1 << 20, 3u << 20},
      {kCmdFlush, 0, 0, 0},
      {kCmdTrim, 0, 8 << 20, 8192},
      {kCmdWriteZeroes, 0, 9 << 20, 16384},
      {kCmdWriteZeroes, kCmdFlagNoHole | kCmdFlagFua, 10 << 20, 2u << 20},
  };
  static std::vector<uint8_t> payload(4u << 20, 0x5a);
  std::map<uint64_t, uint32_t> reads;
  for (const Op& op : kOps) {
    const uint64_t id = ++*cookie;
    if (!c.send_request(op.type, id, base + op.offset, op.length, op.flags,
                        op.type == kCmdWrite ? payload.data() : nullptr)) {
      return false;
    }
    if (op.type == kCmdRead) reads[id] = op.length;
  }
  std::vector<uint8_t> buf(4u << 20);
  for (size_t i = 0; i < std::size(kOps); ++i) {
    test::SimpleReply r = c.read_reply();
    if (!r.ok || r.error != 0) return false;
    auto it = reads.find(r.cookie);
    if (it != reads.end() && !c.recv_exact(buf.data(), it->second)) return false;
  }
  return true;
}

TEST(NbdAlloc, TransmissionPathDoesNotAllocate) {
  tern::test::DeviceEnv env(2);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=64").ok());
  ServerOptions o;
  o.tcp = true;
  o.tcp_host = "127.0.0.1";
  o.tcp_port = 0;
  auto s = env.on_primary([&] { return Server::Create(*env.set, *env.registry, o); });
  ASSERT_TRUE(s.ok()) << s.status();
  std::unique_ptr<Server> srv = std::move(*s);
  ASSERT_TRUE(env.on_primary([&] { return srv->add_export("vol", "m0", false); }).ok());
  test::RawClient a, b;
  ASSERT_TRUE(a.open(srv->tcp_port(), "vol"));
  ASSERT_TRUE(b.open(srv->tcp_port(), "vol"));
  auto drive = [](test::RawClient* c, uint64_t base, int rounds, bool* ok) {
    uint64_t cookie = 0;
    *ok = true;
    for (int i = 0; i < rounds && *ok; ++i) *ok = round(*c, base, &cookie);
  };
  bool ok_a = false, ok_b = false;
  // Warm-up, counted too: buffer pools grow here, which shows the counter sees reactor threads.
  g_counting = true;
  {
    std::thread ta(drive, &a, 0, 30, &ok_a);
    std::thread tb(drive, &b, 32u << 20, 30, &ok_b);
    ta.join();
    tb.join();
  }
  g_counting = false;
  ASSERT_TRUE(ok_a && ok_b);
  EXPECT_GT(g_reactor_allocs.load(), 0u) << "the counter saw no allocation on a reactor thread at all";
  g_reactor_allocs = 0;
  g_counting = true;
  {
    std::thread ta(drive, &a, 0, 200, &ok_a);
    std::thread tb(drive, &b, 32u << 20, 200, &ok_b);
    ta.join();
    tb.join();
  }
  g_counting = false;
  EXPECT_TRUE(ok_a && ok_b);
  EXPECT_EQ(g_reactor_allocs.load(), 0u) << "heap allocations on reactor threads during 4000 NBD requests";
  a.close();
  b.close();
  env.on_primary([&]() -> Task<void> { co_await srv->stop(); });
  srv.reset();
}

}  // namespace
}  // namespace tern::nbd
