// error:// and delay:// wrappers.
#include <gtest/gtest.h>

#include <cstring>
#include <thread>

#include "bdev/fault_bdevs.h"
#include "common/aligned_buffer.h"
#include "common/clock.h"
#include "test_util.h"

namespace tern {
namespace {

using test::DeviceEnv;
using test::io_sync;

TEST(ErrorRule, ParsesSpecs) {
  auto r = ErrorRule::Parse("op=write+flush,lba=10-20,count=3,prob=0.5,kind=error,errno=ENOSPC");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->ops, (1u << unsigned(IoType::kWrite)) | (1u << unsigned(IoType::kFlush)));
  EXPECT_EQ(r->lba_begin, 10u);
  EXPECT_EQ(r->lba_end, 20u);
  EXPECT_EQ(r->count, 3);
  EXPECT_DOUBLE_EQ(r->probability, 0.5);
  EXPECT_EQ(r->error, Errc::kNoSpc);
  EXPECT_EQ(r->ToString(), "op=write+flush,lba=10-20,count=3,prob=0.5,kind=error,errno=ENOSPC");
  auto t = ErrorRule::Parse("kind=timeout,hold_ms=25");
  ASSERT_TRUE(t.ok());
  EXPECT_EQ(t->kind, ErrorRule::Kind::kTimeout);
  EXPECT_EQ(t->hold_ns, 25'000'000u);
  EXPECT_EQ(t->ops, 0x1fu) << "'all' leaves resets out unless named";
  EXPECT_EQ(ErrorRule::Parse("")->ToString(), "op=all,kind=error,errno=EIO");
  auto back = ErrorRule::Parse(r->ToString());
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(back->ToString(), r->ToString());
}

TEST(ErrorRule, RejectsBadSpecs) {
  struct Case {
    const char* spec;
    const char* fragment;
  } cases[] = {
      {"op=scribble", "unknown op 'scribble'"},
      {"lba=5", "must be a range"},
      {"lba=9-3", "is empty"},
      {"lba=a-3", "is not a non-negative integer"},
      {"count=-1", "is not a non-negative integer"},
      {"prob=2", "from 0 to 1"},
      {"kind=melt", "must be error, media, timeout or corrupt"},
      {"errno=EWHAT", "unknown errno name 'EWHAT'"},
      {"color=blue", "unknown key 'color'"},
      {"op", "is not key=value"},
      {"kind=timeout,op=write+reset", "cannot hold resets"},
  };
  for (auto& c : cases) {
    auto r = ErrorRule::Parse(c.spec);
    ASSERT_FALSE(r.ok()) << c.spec;
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << c.spec << ": " << r.status();
  }
}

struct ErrorEnv {
  DeviceEnv env{2};
  ErrorBdev* err = nullptr;
  std::unique_ptr<BdevDesc> desc;
  AlignedBuffer buf{8 * 512};
  explicit ErrorEnv(const std::string& extra = "") {
    EXPECT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
    auto b = env.create("error:///e0?base=m0" + extra);
    EXPECT_TRUE(b.ok()) << b.status();
    err = dynamic_cast<ErrorBdev*>(*b);
    desc = std::move(*env.open("e0"));
  }
  ~ErrorEnv() { env.close(desc); }
  Errc io(IoType t, uint64_t lba = 0, uint64_t n = 1, unsigned reactor = 0) {
    return io_sync(*env.set, reactor, *desc, t, t == IoType::kRead || t == IoType::kWrite ? buf.data() : nullptr, lba,
                   n);
  }
};

TEST(ErrorDevice, PassesThroughWithoutRules) {
  ErrorEnv e;
  EXPECT_EQ(e.err->props().product, "error");
  EXPECT_EQ(e.err->props().num_blocks, 2048u);
  test::fill(e.buf.data(), 512, 3);
  AlignedBuffer copy(512);
  std::memcpy(copy.data(), e.buf.data(), 512);
  EXPECT_EQ(e.io(IoType::kWrite, 7), Errc::kOk);
  std::memset(e.buf.data(), 0, 512);
  EXPECT_EQ(e.io(IoType::kRead, 7, 1, 1), Errc::kOk);
  EXPECT_EQ(std::memcmp(copy.data(), e.buf.data(), 512), 0);
  for (IoType t : {IoType::kFlush, IoType::kUnmap, IoType::kWriteZeroes, IoType::kReset}) EXPECT_EQ(e.io(t), Errc::kOk);
  EXPECT_EQ(e.err->injected(), 0u);
}

TEST(ErrorDevice, CountLimitedErrorsOnOneOpType) {
  ErrorEnv e("&rule=op=write,count=3");
  for (int i = 0; i < 3; ++i) EXPECT_EQ(e.io(IoType::kWrite), Errc::kIo);
  EXPECT_EQ(e.io(IoType::kRead), Errc::kOk);
  EXPECT_EQ(e.io(IoType::kWrite), Errc::kOk);
  EXPECT_EQ(e.err->injected(), 3u);
  EXPECT_EQ(e.err->rules()[0].count, 0);
}

TEST(ErrorDevice, LbaRangesErrnoAndMediaErrors) {
  ErrorEnv e;
  e.err->set_rules({*ErrorRule::Parse("op=read,lba=100-110,errno=ENOSPC"), *ErrorRule::Parse("op=write,kind=media")});
  EXPECT_EQ(e.io(IoType::kRead, 92, 8), Errc::kOk) << "ends just before the range";
  EXPECT_EQ(e.io(IoType::kRead, 93, 8), Errc::kNoSpc) << "overlaps the range";
  EXPECT_EQ(e.io(IoType::kRead, 109, 1, 1), Errc::kNoSpc);
  EXPECT_EQ(e.io(IoType::kRead, 110, 8), Errc::kOk);
  EXPECT_EQ(e.io(IoType::kWrite, 500, 1), Errc::kMediaError);
  e.err->clear_rules();
  EXPECT_EQ(e.io(IoType::kWrite, 500, 1, 1), Errc::kOk) << "rule changes reach every reactor";
  EXPECT_EQ(e.io(IoType::kRead, 100, 1), Errc::kOk);
}

TEST(ErrorDevice, CorruptReadsFlipOneBitAndSucceed) {
  ErrorEnv e;
  test::fill(e.buf.data(), 4096, 11);
  AlignedBuffer orig(4096);
  std::memcpy(orig.data(), e.buf.data(), 4096);
  ASSERT_EQ(e.io(IoType::kWrite, 0, 8), Errc::kOk);
  e.err->set_rules({*ErrorRule::Parse("kind=corrupt,count=1")});
  EXPECT_EQ(e.io(IoType::kWrite, 0, 8), Errc::kOk) << "writes are not corrupted";
  ASSERT_EQ(e.io(IoType::kRead, 0, 8), Errc::kOk);
  int bits = 0;
  for (size_t i = 0; i < 4096; ++i) bits += __builtin_popcount(orig.data()[i] ^ e.buf.data()[i]);
  EXPECT_EQ(bits, 1);
  ASSERT_EQ(e.io(IoType::kRead, 0, 8), Errc::kOk);
  EXPECT_EQ(std::memcmp(orig.data(), e.buf.data(), 4096), 0) << "count=1: only one read is corrupted";
  EXPECT_EQ(e.err->injected(), 1u);
}

TEST(ErrorDevice, ProbabilisticErrors) {
  ErrorEnv e("&rule=op=read,prob=0.5");
  int failed = e.env.set->run_sync(0, [&]() -> Task<int> {
    auto ch = ChannelRef::Get(*e.desc);
    int f = 0;
    for (int i = 0; i < 2000; ++i) f += (co_await ch->read(e.buf.data(), 0, 1)) != Errc::kOk;
    co_return f;
  });
  EXPECT_GT(failed, 850);
  EXPECT_LT(failed, 1150);
}

TEST(ErrorDevice, TimeoutsHoldUntilTheirDeadline) {
  ErrorEnv e("&rule=op=read,kind=timeout,hold_ms=30,count=1");
  uint64_t t0 = now_ns();
  EXPECT_EQ(e.io(IoType::kRead), Errc::kTimedOut);
  EXPECT_GE(now_ns() - t0, 30'000'000u);
  EXPECT_EQ(e.io(IoType::kRead), Errc::kOk);
}

TEST(ErrorDevice, HeldRequestsAreAbortedByReset) {
  ErrorEnv e("&rule=op=write,kind=timeout");
  ChannelRef ch;
  BdevIo io;
  Errc result = Errc::kOk;
  bool done = false;
  e.env.set->run_sync(0, [&] {
    ch = std::move(*ChannelRef::Get(*e.desc));
    io.type = IoType::kWrite;
    io.offset_blocks = 0;
    io.num_blocks = 1;
    io.set_buffer(e.buf.data(), 512);
    io.done = [](BdevIo* i, void* arg) {
      auto* p = static_cast<std::pair<Errc*, bool*>*>(arg);
      *p->first = i->status;
      *p->second = true;
    };
    static std::pair<Errc*, bool*> arg;
    arg = {&result, &done};
    io.done_arg = &arg;
    ch.submit(&io);
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  EXPECT_FALSE(e.env.set->run_sync(0, [&] { return done; })) << "a timeout rule without hold_ms holds forever";
  e.err->clear_rules();
  Errc reset = e.env.set->run_sync(0, [&]() -> Task<Errc> { co_return co_await ch.reset_device(); });
  EXPECT_EQ(reset, Errc::kOk);
  EXPECT_TRUE(e.env.set->run_sync(0, [&] { return done; }));
  EXPECT_EQ(result, Errc::kCanceled);
  e.env.set->run_sync(0, [&] { ch.reset(); });
}

TEST(ErrorDevice, ResetReleasesOnlyWhatIsHeldAndNeverInline) {
  // Every write is held until a reset. The completion callback of a released write resubmits at once:
  // the reset must release the requests held when it arrived, not loop over new ones.
  ErrorEnv e("&rule=op=write,kind=timeout");
  struct State {
    ChannelRef ch;
    BdevIo io[4];
    int completions = 0;
    int resubmits_left = 4;
    bool in_reset_submit = false;
    bool inline_completion = false;
  };
  static State* st;
  State state;
  st = &state;
  e.env.set->run_sync(0, [&] {
    state.ch = std::move(*ChannelRef::Get(*e.desc));
    for (auto& io : state.io) {
      io.type = IoType::kWrite;
      io.offset_blocks = 0;
      io.num_blocks = 1;
      io.set_buffer(e.buf.data(), 512);
      io.done = [](BdevIo* i, void*) {
        if (st->in_reset_submit) st->inline_completion = true;
        ++st->completions;
        if (st->resubmits_left-- > 0) st->ch.submit(i);  // held again
      };
      state.ch.submit(&io);
    }
  });
  Errc reset = e.env.set->run_sync(0, [&]() -> Task<Errc> {
    state.in_reset_submit = true;
    auto aw = state.ch.reset_device();
    state.in_reset_submit = false;
    co_return co_await aw;
  });
  EXPECT_EQ(reset, Errc::kOk);
  EXPECT_FALSE(state.inline_completion);
  EXPECT_EQ(e.env.set->run_sync(0, [&] { return state.completions; }), 4) << "only the 4 held at the reset";
  // The 4 resubmitted writes are held now; a second reset releases them.
  EXPECT_EQ(e.env.set->run_sync(0, [&]() -> Task<Errc> { co_return co_await state.ch.reset_device(); }), Errc::kOk);
  EXPECT_EQ(e.env.set->run_sync(0, [&] { return state.completions; }), 8);
  e.env.set->run_sync(0, [&] { state.ch.reset(); });
}

TEST(ErrorDevice, ForcedRemovalAbortsHeldRequests) {
  DeviceEnv env(2);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  ASSERT_TRUE(env.create("error:///e0?base=m0&rule=op=read,kind=timeout").ok());
  auto d = env.open("e0");
  AlignedBuffer buf(512);
  Errc result = Errc::kOk;
  bool done = false;
  BdevIo io;
  ChannelRef ch;
  env.set->run_sync(1, [&] {
    ch = std::move(*ChannelRef::Get(**d));
    io.type = IoType::kRead;
    io.num_blocks = 1;
    io.set_buffer(buf.data(), 512);
    io.done = [](BdevIo* i, void* arg) {
      auto* p = static_cast<std::pair<Errc*, bool*>*>(arg);
      *p->first = i->status;
      *p->second = true;
    };
    static std::pair<Errc*, bool*> arg;
    arg = {&result, &done};
    io.done_arg = &arg;
    ch.submit(&io);
  });
  // The holder closes once its request is back (as a real user would on the remove event).
  std::thread closer([&] {
    for (int i = 0; i < 5000 && !env.set->run_sync(1, [&] { return done; }); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    env.set->run_sync(1, [&] { ch.reset(); });
    env.close(*d);
  });
  Status st = env.on_primary([&]() -> Task<Status> { co_return co_await env.registry->destroy("e0", true, 10'000'000'000ull); });
  closer.join();
  EXPECT_TRUE(st.ok()) << st;
  EXPECT_TRUE(done);
  EXPECT_EQ(result, Errc::kCanceled);
}

TEST(ErrorDevice, UriErrors) {
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  struct Case {
    const char* uri;
    const char* fragment;
  } cases[] = {
      {"error:///e0", "base device is required"},
      {"error:///e0?base=nope", "no device named 'nope'"},
      {"error:///m0?base=m0", "cannot wrap itself"},
      {"error:///e0?base=m0&rule=op=zap", "unknown op 'zap'"},
      {"error:///e0?base=m0&bogus=1", "unknown query parameter 'bogus'"},
      {"delay:///d0?base=m0&read_us=99999999999", "from 0 to 60000000"},
      {"delay:///d0", "base device is required"},
  };
  for (auto& c : cases) {
    auto r = env.create(c.uri);
    ASSERT_FALSE(r.ok()) << c.uri;
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << c.uri << ": " << r.status();
  }
  env.on_primary([&] { EXPECT_EQ(env.registry->list().size(), 1u); });
  // A claimed base cannot be wrapped for writing.
  auto owner = env.open("m0");
  ASSERT_TRUE(env.on_primary([&] { return (*owner)->claim("test"); }).ok());
  auto claimed = env.create("error:///e1?base=m0");
  EXPECT_EQ(claimed.code(), Errc::kBusy);
  env.close(*owner);
}

TEST(DelayDevice, AddsLatencyPerOpType) {
  DeviceEnv env(2);
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  auto b = env.create("delay:///d0?base=m0&read_us=20000&jitter_us=5000");
  ASSERT_TRUE(b.ok()) << b.status();
  auto* dly = dynamic_cast<DelayBdev*>(*b);
  auto d = env.open("d0");
  AlignedBuffer buf(512);
  auto timed = [&](IoType t) {
    uint64_t t0 = now_ns();
    EXPECT_EQ(io_sync(*env.set, 1, **d, t, t == IoType::kFlush ? nullptr : buf.data(), 0, 1), Errc::kOk);
    return now_ns() - t0;
  };
  uint64_t r = timed(IoType::kRead);
  EXPECT_GE(r, 20'000'000u);
  EXPECT_LT(r, 1'000'000'000u);
  EXPECT_LT(timed(IoType::kWrite), 15'000'000u) << "writes are not delayed";
  dly->set_config({.read_ns = 0, .write_ns = 10'000'000, .other_ns = 5'000'000, .jitter_ns = 0});
  EXPECT_LT(timed(IoType::kRead), 15'000'000u);
  EXPECT_GE(timed(IoType::kWrite), 10'000'000u);
  EXPECT_GE(timed(IoType::kFlush), 5'000'000u);
  EXPECT_EQ(dly->config().write_ns, 10'000'000u);
  // The layer below sees the request at once; only the completion waits.
  BdevStats st = env.on_primary([&]() -> Task<BdevStats> { co_return co_await (*b)->stats(*env.set); });
  EXPECT_GE(st.write_latency.max(), 10'000'000u);
  env.close(*d);
}

}  // namespace
}  // namespace tern
