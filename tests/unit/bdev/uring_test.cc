// uring:// (and aio://) on regular files, on tmpfs, and on a loop block device.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "common/aligned_buffer.h"
#include "test_util.h"

namespace tern {
namespace {

using test::DeviceEnv;
using test::fill;
using test::io_sync;
using test::TempDir;

void roundtrip(DeviceEnv& env, const std::string& name, uint32_t bs) {
  auto d = env.open(name);
  ASSERT_TRUE(d.ok()) << d.status();
  const uint64_t n = 32;
  AlignedBuffer w(n * bs), r(n * bs);
  fill(w.data(), w.size(), bs);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, w.data(), 8, n), Errc::kOk);
  ASSERT_EQ(io_sync(*env.set, 1, **d, IoType::kRead, r.data(), 8, n), Errc::kOk);
  EXPECT_EQ(std::memcmp(w.data(), r.data(), w.size()), 0);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kFlush), Errc::kOk);
  // Scatter-gather in both directions.
  Errc e = env.set->run_sync(1, [&]() -> Task<Errc> {
    auto ch = ChannelRef::Get(**d);
    iovec wv[2] = {{w.data(), size_t(bs) * 3}, {w.data() + size_t(bs) * 3, size_t(bs) * 5}};
    Errc e1 = co_await ch->writev(wv, 2, 100, 8);
    std::memset(r.data(), 0, r.size());
    iovec rv[3] = {{r.data(), bs}, {r.data() + bs, size_t(bs) * 6}, {r.data() + size_t(bs) * 7, bs}};
    Errc e2 = co_await ch->readv(rv, 3, 100, 8);
    co_return e1 != Errc::kOk ? e1 : e2;
  });
  EXPECT_EQ(e, Errc::kOk);
  EXPECT_EQ(std::memcmp(w.data(), r.data(), size_t(bs) * 8), 0);
  // Unmap and write-zeroes read back as zeros; their neighbours keep their data.
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kUnmap, nullptr, 8, 8), Errc::kOk);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWriteZeroes, nullptr, 24, 8), Errc::kOk);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, r.data(), 8, n), Errc::kOk);
  for (uint64_t b = 0; b < n; ++b) {
    bool zero = b < 8 || (b >= 16 && b < 24);
    for (uint32_t i = 0; i < bs; i += 97) {
      ASSERT_EQ(r.data()[b * bs + i], zero ? 0 : w.data()[b * bs + i]) << "block " << b;
    }
  }
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kReset), Errc::kOk);
  env.close(*d);
}

TEST(UringDevice, RegularFileWithDirectIo) {
  TempDir dir;
  std::string path = dir.make_file("disk.img", 4 << 20);
  DeviceEnv env;
  auto b = env.create("uring://" + path);
  ASSERT_TRUE(b.ok()) << b.status();
  const BdevProps& p = (*b)->props();
  EXPECT_EQ(p.name, path);
  EXPECT_EQ(p.product, "uring");
  EXPECT_EQ(p.block_size, 512u);
  EXPECT_EQ(p.num_blocks, 8192u);
  EXPECT_TRUE(p.write_cache);
  EXPECT_EQ(p.buf_align, 512u);
  EXPECT_GT(p.max_io_blocks, 0u);
  roundtrip(env, path, 512);
}

TEST(UringDevice, AioAliasBlockSize4096AndBufferedMode) {
  TempDir dir;
  std::string a = dir.make_file("a.img", 1 << 20), c = dir.make_file("c.img", 1 << 20);
  DeviceEnv env;
  auto b = env.create("aio://" + a + "?blk_size=4096");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->props().block_size, 4096u);
  EXPECT_EQ((*b)->props().num_blocks, 256u);
  roundtrip(env, a, 4096);
  auto bc = env.create("uring://" + c + "?direct=false&uuid=01234567-89ab-4def-8123-456789abcdef");
  ASSERT_TRUE(bc.ok()) << bc.status();
  EXPECT_EQ((*bc)->props().buf_align, 1u);
  EXPECT_EQ((*bc)->props().uuid.ToString(), "01234567-89ab-4def-8123-456789abcdef");
  roundtrip(env, c, 512);
}

TEST(UringDevice, TmpfsWithoutZeroRangeFallsBackToWritingZeros) {
  // tmpfs has no FALLOC_FL_ZERO_RANGE: write-zeroes must still produce zeros.
  std::string path = "/dev/shm/tern-uring-test-" + std::to_string(getpid());
  { std::ofstream(path).close(); }
  ASSERT_EQ(truncate(path.c_str(), 4 << 20), 0);
  {
    DeviceEnv env;
    auto b = env.create("uring://" + path + "?direct=false");
    ASSERT_TRUE(b.ok()) << b.status();
    roundtrip(env, path, 512);
    // Large enough to need several emulated writes.
    auto d = env.open(path);
    AlignedBuffer w(3 << 20), r(3 << 20);
    fill(w.data(), w.size(), 5);
    ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, w.data(), 0, w.size() / 512), Errc::kOk);
    ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWriteZeroes, nullptr, 1, (w.size() / 512) - 2), Errc::kOk);
    ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, r.data(), 0, r.size() / 512), Errc::kOk);
    EXPECT_EQ(std::memcmp(r.data(), w.data(), 512), 0);
    for (size_t i = 512; i < r.size() - 512; i += 511) ASSERT_EQ(r.data()[i], 0) << i;
    EXPECT_EQ(std::memcmp(r.data() + r.size() - 512, w.data() + w.size() - 512, 512), 0);
    env.close(*d);
  }
  unlink(path.c_str());
}

TEST(UringDevice, SetupErrorsNameTheCause) {
  TempDir dir;
  std::string odd = dir.make_file("odd.img", 1000);
  std::string empty = dir.make_file("empty.img", 0);
  std::string good = dir.make_file("good.img", 1 << 20);
  DeviceEnv env(1);
  struct Case {
    std::string uri;
    Errc code;
    std::string fragment;
  } cases[] = {
      {"uring://" + dir.file("missing.img"), Errc::kNoEnt, "No such file or directory"},
      {"uring://" + dir.path(), Errc::kInval, "not a regular file or block device"},
      {"uring://" + odd, Errc::kInval, "size 1000 is not a multiple of the block size 512"},
      {"uring://" + empty, Errc::kInval, "it is empty"},
      {"uring://" + good + "?blk_size=1024", Errc::kInval, "blk_size must be 512 or 4096"},
      {"uring://" + good + "?direct=maybe", Errc::kInval, "expected true or false"},
      {"uring://" + good + "?size_mb=1", Errc::kInval, "unknown query parameter 'size_mb'"},
      {"uring://tmp/x.img", Errc::kInval, "the path must be absolute"},
      {"uring:///", Errc::kInval, "missing path"},
  };
  for (auto& c : cases) {
    auto r = env.create(c.uri);
    ASSERT_FALSE(r.ok()) << c.uri;
    EXPECT_EQ(r.code(), c.code) << c.uri << ": " << r.status();
    EXPECT_NE(r.status().message().find(c.fragment), std::string::npos) << c.uri << ": " << r.status();
  }
  // A file someone else holds locked is refused, and the name stays free.
  int fd = open(good.c_str(), O_RDWR);
  ASSERT_EQ(flock(fd, LOCK_EX), 0);
  auto locked = env.create("uring://" + good);
  EXPECT_FALSE(locked.ok());
  EXPECT_NE(locked.status().message().find("locked by another user"), std::string::npos) << locked.status();
  close(fd);
  ASSERT_TRUE(env.create("uring://" + good).ok());
  auto dup = env.create("aio://" + good);
  EXPECT_EQ(dup.code(), Errc::kExist);
}

TEST(UringDevice, UnalignedBuffersAreRefusedWithDirectIo) {
  TempDir dir;
  std::string path = dir.make_file("d.img", 1 << 20);
  DeviceEnv env(1);
  ASSERT_TRUE(env.create("uring://" + path).ok());
  auto d = env.open(path);
  AlignedBuffer buf(8192);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, buf.data() + 8, 0, 1), Errc::kInval);
  EXPECT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, buf.data() + 512, 0, 1), Errc::kOk);
  env.close(*d);
}

TEST(UringDevice, PermissionDeniedIsReported) {
  // Root can open anything, so drop to an unprivileged user in a child process.
  TempDir dir;
  std::string path = dir.make_file("private.img", 1 << 20);
  chmod(path.c_str(), 0600);
  chmod(dir.path().c_str(), 0755);
  pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (geteuid() == 0 && (setgid(65534) != 0 || setuid(65534) != 0)) _exit(10);
    ReactorSetOptions o;
    o.cores = test::test_cores(1);
    auto set = ReactorSet::Start(o);
    if (!set.ok()) _exit(11);
    int rc;
    {
      BdevRegistry reg(**set);
      auto r = (*set)->run_sync(0, [&]() -> Task<Result<Bdev*>> { co_return co_await reg.create("uring://" + path); });
      bool ok = !r.ok() && r.code() == Errc::kAccess &&
                r.status().message().find("Permission denied") != std::string::npos;
      if (!ok) fprintf(stderr, "unexpected: %s\n", r.status().ToString().c_str());
      rc = ok ? 0 : 12;
    }
    (*set)->stop();
    _exit(rc);
  }
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

// A loop device gives us a real block device: logical block size and size come from the kernel, the
// open is exclusive, and the write-cache flag comes from sysfs.
class LoopDevice {
 public:
  explicit LoopDevice(const std::string& file) {
    std::string cmd = "losetup --find --show " + file + " 2>&1";
    FILE* p = popen(cmd.c_str(), "r");
    char buf[256] = {};
    if (p && fgets(buf, sizeof(buf), p)) dev_ = buf;
    if (p) pclose(p);
    while (!dev_.empty() && (dev_.back() == '\n' || dev_.back() == ' ')) dev_.pop_back();
    if (dev_.rfind("/dev/loop", 0) != 0) {
      error_ = dev_;
      dev_.clear();
    }
  }
  ~LoopDevice() {
    if (!dev_.empty()) {
      std::string cmd = "losetup -d " + dev_;
      if (system(cmd.c_str()) != 0) fprintf(stderr, "cannot detach %s\n", dev_.c_str());
    }
  }
  const std::string& dev() const { return dev_; }
  const std::string& error() const { return error_; }

 private:
  std::string dev_, error_;
};

TEST(UringDevice, LoopBlockDevice) {
  // Loop devices need root: the test command runs as root, and a run without it fails here, not silently.
  ASSERT_EQ(geteuid(), 0u) << "loop devices need root (run the suite as root)";
  TempDir dir;
  std::string file = dir.make_file("loop.img", 8 << 20);
  LoopDevice loop(file);
  ASSERT_FALSE(loop.dev().empty()) << "losetup failed: " << loop.error();
  DeviceEnv env;
  auto b = env.create("uring://" + loop.dev());
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ((*b)->props().block_size, 512u);
  EXPECT_EQ((*b)->props().num_blocks, 16384u);
  // Exclusive: a second exclusive open of the device fails while we hold it.
  int fd = open(loop.dev().c_str(), O_RDWR | O_EXCL);
  EXPECT_LT(fd, 0);
  EXPECT_EQ(errno, EBUSY);
  if (fd >= 0) close(fd);
  auto d = env.open(loop.dev());
  AlignedBuffer w(64 * 512), r(64 * 512);
  fill(w.data(), w.size(), 77);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWrite, w.data(), 0, 64), Errc::kOk);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kFlush), Errc::kOk);
  ASSERT_EQ(io_sync(*env.set, 1, **d, IoType::kRead, r.data(), 0, 64), Errc::kOk);
  EXPECT_EQ(std::memcmp(w.data(), r.data(), w.size()), 0);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kWriteZeroes, nullptr, 0, 8), Errc::kOk);
  ASSERT_EQ(io_sync(*env.set, 0, **d, IoType::kRead, r.data(), 0, 8), Errc::kOk);
  for (size_t i = 0; i < 8 * 512; ++i) ASSERT_EQ(r.data()[i], 0);
  env.close(*d);
  ASSERT_TRUE(env.destroy(loop.dev()).ok());
  // A device someone holds exclusively is refused with a hint.
  int held = open(loop.dev().c_str(), O_RDWR | O_EXCL);
  ASSERT_GE(held, 0);
  auto busy = env.create("uring://" + loop.dev());
  EXPECT_EQ(busy.code(), Errc::kBusy);
  EXPECT_NE(busy.status().message().find("in use"), std::string::npos) << busy.status();
  close(held);
}

}  // namespace
}  // namespace tern
