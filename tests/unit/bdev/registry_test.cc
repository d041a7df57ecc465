#include "bdev/registry.h"

#include <gtest/gtest.h>

#include <thread>

#include "bdev/fault_bdevs.h"
#include "common/aligned_buffer.h"
#include "test_util.h"

namespace tern {
namespace {

using test::DeviceEnv;
using test::io_sync;

TEST(Registry, CreateFindListAndDestroy) {
  DeviceEnv env;
  auto b = env.create("malloc:///m0?size_mb=4&blk_size=4096");
  ASSERT_TRUE(b.ok()) << b.status();
  const BdevProps& p = (*b)->props();
  EXPECT_EQ(p.name, "m0");
  EXPECT_EQ(p.product, "malloc");
  EXPECT_EQ(p.block_size, 4096u);
  EXPECT_EQ(p.num_blocks, 1024u);
  EXPECT_FALSE(p.uuid.is_nil());
  env.on_primary([&] {
    EXPECT_EQ(env.registry->find("m0"), *b);
    EXPECT_EQ(env.registry->find(p.uuid.ToString()), *b);
    EXPECT_EQ(env.registry->find("nope"), nullptr);
    EXPECT_EQ(env.registry->list().size(), 1u);
    EXPECT_EQ(env.registry->created_from(**b), "malloc:///m0?size_mb=4&blk_size=4096");
  });
  EXPECT_TRUE(env.destroy("m0").ok());
  EXPECT_EQ(env.destroy("m0").code(), Errc::kNoDev);
  env.on_primary([&] { EXPECT_TRUE(env.registry->list().empty()); });
}

TEST(Registry, DuplicatesAreRefusedAndNothingIsLeftBehind) {
  DeviceEnv env;
  const char* uuid = "11111111-2222-4333-8444-555555555555";
  ASSERT_TRUE(env.create(fmt::format("malloc:///m0?size_mb=1&uuid={}", uuid)).ok());
  auto dup = env.create("malloc:///m0?size_mb=2");
  EXPECT_EQ(dup.code(), Errc::kExist);
  EXPECT_NE(dup.status().message().find("created from 'malloc:///m0?size_mb=1"), std::string::npos) << dup.status();
  auto dup_uuid = env.create(fmt::format("null:///n0?size_mb=1&uuid={}", uuid));
  EXPECT_EQ(dup_uuid.code(), Errc::kExist);
  EXPECT_NE(dup_uuid.status().message().find("already used by device 'm0'"), std::string::npos);
  env.on_primary([&] { EXPECT_EQ(env.registry->list().size(), 1u); });
}

TEST(Registry, BadUrisAreClearErrors) {
  DeviceEnv env;
  struct Case {
    const char* uri;
    Errc code;
    const char* fragment;
  } cases[] = {
      {"floppy:///a", Errc::kInval, "unknown scheme 'floppy' (known: aio, delay, error, malloc, null, powercut, uring)"},
      {"malloc:///m0", Errc::kInval, "a size is required"},
      {"malloc:///m0?size_mb=0", Errc::kInval, "size_mb must be greater than zero"},
      {"malloc:///m0?num_blocks=0", Errc::kInval, "num_blocks must be greater than zero"},
      {"malloc:///m0?size_mb=1&num_blocks=8", Errc::kInval, "either size_mb or num_blocks"},
      {"malloc:///m0?size_mb=1&blk_size=1024", Errc::kInval, "blk_size must be 512 or 4096"},
      {"malloc:///m0?size_mb=x", Errc::kInval, "expected a non-negative integer"},
      {"malloc:///m0?size_mb=1&color=red", Errc::kInval, "unknown query parameter 'color'"},
      {"malloc:///m0?size_mb=1&uuid=xyz", Errc::kInval, "invalid UUID 'xyz'"},
      {"malloc:///m0?size_mb=1&populate=maybe", Errc::kInval, "true or false"},
      {"null:///n?size_mb=1&populate=1", Errc::kInval, "unknown query parameter 'populate'"},
      {"malloc:///a/b?size_mb=1", Errc::kInval, "must not contain '/'"},
      {"malloc://host/m0?size_mb=1", Errc::kInval, "takes no host"},
      {"malloc:///?size_mb=1", Errc::kInval, "missing device name"},
      {"null:///n?size_mb=99999999999999", Errc::kInval, "too large"},
      {"null:///n%20x?size_mb=1", Errc::kInval, "whitespace"},
      {"not a uri", Errc::kInval, "missing '://'"},
  };
  for (auto& c : cases) {
    auto r = env.create(c.uri);
    ASSERT_FALSE(r.ok()) << c.uri;
    EXPECT_EQ(r.code(), c.code) << c.uri << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << c.uri << ": " << r.status();
  }
  env.on_primary([&] { EXPECT_TRUE(env.registry->list().empty()); });
}

TEST(Registry, OpenDevicesCannotBeDestroyedWithoutForce) {
  DeviceEnv env;
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  auto d = env.open("m0");
  ASSERT_TRUE(d.ok());
  auto st = env.destroy("m0");
  EXPECT_EQ(st.code(), Errc::kBusy);
  EXPECT_NE(st.message().find("open by 1 user"), std::string::npos) << st;
  env.close(*d);
  EXPECT_TRUE(env.destroy("m0").ok());
  EXPECT_EQ(env.open("m0").code(), Errc::kNoDev);
}

TEST(Registry, ClaimsMakeOneWriter) {
  DeviceEnv env;
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  auto owner = env.open("m0");
  auto reader = env.open("m0", false);
  ASSERT_TRUE(owner.ok() && reader.ok());
  EXPECT_EQ(env.on_primary([&] { return (*reader)->claim("x"); }).code(), Errc::kPerm);
  ASSERT_TRUE(env.on_primary([&] { return (*owner)->claim("pool 'p0'"); }).ok());
  EXPECT_TRUE(env.on_primary([&] { return (*owner)->claim("pool 'p0'"); }).ok()) << "re-claiming is idempotent";
  auto w2 = env.open("m0", true);
  EXPECT_EQ(w2.code(), Errc::kBusy);
  EXPECT_NE(w2.status().message().find("claimed by pool 'p0'"), std::string::npos) << w2.status();
  EXPECT_TRUE(env.open("m0", false).ok()) << "readers are still welcome";
  env.on_primary([&] { EXPECT_EQ((*owner)->bdev().claimed_by(), "pool 'p0'"); });
  // The claimer writes; a reader cannot.
  AlignedBuffer buf(512);
  EXPECT_EQ(io_sync(*env.set, 0, **owner, IoType::kWrite, buf.data(), 0, 1), Errc::kOk);
  EXPECT_EQ(io_sync(*env.set, 0, **reader, IoType::kWrite, buf.data(), 0, 1), Errc::kPerm);
  env.on_primary([&] { (*owner)->release_claim(); });
  auto w3 = env.open("m0", true);
  EXPECT_TRUE(w3.ok());
  // With a second writer open, claiming is refused.
  auto st = env.on_primary([&] { return (*owner)->claim("pool 'p1'"); });
  EXPECT_EQ(st.code(), Errc::kBusy);
  env.close(*w3);
  env.close(*owner);
  env.close(*reader);
}

TEST(Registry, ForcedDestroyNotifiesHoldersAndFailsNewIo) {
  DeviceEnv env;
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  std::unique_ptr<BdevDesc> desc;
  int events = 0;
  env.on_primary([&] {
    auto d = env.registry->open("m0", true, [&](BdevEvent e) {
      EXPECT_EQ(e, BdevEvent::kRemove);
      ++events;
      desc.reset();  // the holder closes from inside the event
    });
    ASSERT_TRUE(d.ok());
    desc = std::move(*d);
  });
  EXPECT_TRUE(env.destroy("m0", true).ok());
  EXPECT_EQ(events, 1);
  EXPECT_EQ(desc, nullptr);
}

TEST(Registry, ForcedDestroyGivesUpOnAHolderThatNeverCloses) {
  DeviceEnv env;
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  auto d = env.open("m0");
  ASSERT_TRUE(d.ok());
  auto st = env.on_primary([&]() -> Task<Status> { co_return co_await env.registry->destroy("m0", true, 50'000'000); });
  EXPECT_EQ(st.code(), Errc::kTimedOut);
  EXPECT_NE(st.message().find("still open by 1 user"), std::string::npos) << st;
  // It stays usable.
  AlignedBuffer buf(512);
  EXPECT_EQ(io_sync(*env.set, 1, **d, IoType::kWrite, buf.data(), 0, 1), Errc::kOk);
  env.close(*d);
}

TEST(Registry, IoOnADeviceBeingRemovedFailsWithNoDev) {
  DeviceEnv env;
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  auto d = env.open("m0");
  ASSERT_TRUE(d.ok());
  Status destroy_status;
  bool destroyed = false;  // touched on reactor 0 only
  // Hold a channel on reactor 1 and start a forced destroy that waits for us.
  Errc during = env.set->run_sync(1, [&]() -> Task<Errc> {
    auto ch = ChannelRef::Get(**d);
    EXPECT_TRUE(ch.ok());
    env.set->post(0, [&] {
      spawn_then(env.registry->destroy("m0", true), [&](Status s) {
        destroy_status = std::move(s);
        destroyed = true;
      });
    });
    co_await Reactor::sleep_for(20'000'000);
    AlignedBuffer buf(512);
    Errc e = co_await ch->write(buf.data(), 0, 1);
    ch->reset();
    co_return e;
  });
  EXPECT_EQ(during, Errc::kNoDev);
  EXPECT_FALSE(env.on_primary([&] { return destroyed; }));
  env.close(*d);
  for (int i = 0; i < 5000 && !env.on_primary([&] { return destroyed; }); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ASSERT_TRUE(env.on_primary([&] { return destroyed; }));
  EXPECT_TRUE(destroy_status.ok()) << destroy_status;
}

TEST(Registry, DestroyingABaseWithForceRemovesItsWrappers) {
  DeviceEnv env;
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  ASSERT_TRUE(env.create("error:///e0?base=m0").ok());
  ASSERT_TRUE(env.create("delay:///d0?base=e0").ok());
  EXPECT_EQ(env.destroy("m0").code(), Errc::kBusy);
  EXPECT_TRUE(env.destroy("m0", true).ok());
  env.on_primary([&] { EXPECT_TRUE(env.registry->list().empty()); });
}

TEST(Registry, DestroyAllRemovesEverythingNewestFirst) {
  DeviceEnv env;
  ASSERT_TRUE(env.create("malloc:///m0?size_mb=1").ok());
  ASSERT_TRUE(env.create("error:///e0?base=m0").ok());
  ASSERT_TRUE(env.create("null:///n0?size_mb=1").ok());
  env.on_primary([&]() -> Task<void> { co_await env.registry->destroy_all(); });
  env.on_primary([&] { EXPECT_TRUE(env.registry->list().empty()); });
}

TEST(Registry, NameValidation) {
  EXPECT_TRUE(validate_bdev_name("m0").ok());
  EXPECT_FALSE(validate_bdev_name("").ok());
  EXPECT_FALSE(validate_bdev_name("a b").ok());
  EXPECT_FALSE(validate_bdev_name(std::string(256, 'a')).ok());
}

}  // namespace
}  // namespace tern
