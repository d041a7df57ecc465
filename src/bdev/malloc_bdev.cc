// malloc:///name?size_mb=N|num_blocks=N&blk_size=512|4096&uuid=U — a RAM device.
//
// The memory is an anonymous private mapping: untouched pages cost nothing and read as zeros, and no
// huge pages are needed. I/O is a memcpy on the submitting reactor, completed in the same loop turn.
#include <sys/mman.h>

#include <cstring>

#include "bdev/backends.h"

namespace tern {
namespace {

class MallocBdev final : public Bdev {
 public:
  MallocBdev(BdevProps p, uint8_t* mem) : Bdev(std::move(p)), mem_(mem) {}
  ~MallocBdev() override { munmap(mem_, props_.size_bytes()); }

  bool supports(IoType) const override { return true; }
  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor&) override { return std::make_unique<ChannelCtx>(); }

  void submit(ChannelCtx*, BdevIo* io) override {
    const uint64_t bs = props_.block_size;
    uint8_t* p = mem_ + io->offset_blocks * bs;
    switch (io->type) {
      case IoType::kRead:
        for (int i = 0; i < io->iovcnt; ++i) {
          std::memcpy(io->iovs[i].iov_base, p, io->iovs[i].iov_len);
          p += io->iovs[i].iov_len;
        }
        break;
      case IoType::kWrite:
        for (int i = 0; i < io->iovcnt; ++i) {
          std::memcpy(p, io->iovs[i].iov_base, io->iovs[i].iov_len);
          p += io->iovs[i].iov_len;
        }
        break;
      case IoType::kUnmap:
      case IoType::kWriteZeroes:
        zero(p, io->num_blocks * bs);
        break;
      case IoType::kFlush:
      case IoType::kReset:
        break;
    }
    bdev_io_complete_deferred(io, Errc::kOk);
  }

 private:
  // Whole pages go back to the kernel (they read as zeros again); the edges are cleared by hand.
  static void zero(uint8_t* p, uint64_t len) {
    constexpr uint64_t kPage = 4096;
    constexpr uint64_t kMadviseMin = 1 << 20;
    if (len >= kMadviseMin) {
      uintptr_t a = reinterpret_cast<uintptr_t>(p);
      uintptr_t start = (a + kPage - 1) & ~(kPage - 1);
      uintptr_t end = (a + len) & ~(kPage - 1);
      if (end > start && madvise(reinterpret_cast<void*>(start), end - start, MADV_DONTNEED) == 0) {
        std::memset(p, 0, start - a);
        std::memset(reinterpret_cast<void*>(end), 0, a + len - end);
        return;
      }
    }
    std::memset(p, 0, len);
  }
  uint8_t* mem_;
};

}  // namespace

Task<Result<std::unique_ptr<Bdev>>> make_malloc_bdev(const Uri& uri, BdevRegistry& reg) {
  auto props = ram_device_props(uri, reg, "malloc");
  if (!props.ok()) co_return props.status();
  BdevProps p = std::move(*props);
  void* mem = mmap(nullptr, p.size_bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    co_return Status::FromErrno(errno, fmt::format("malloc device '{}': cannot map {} bytes: {}", p.name,
                                                   p.size_bytes(), std::strerror(errno)));
  }
  co_return std::unique_ptr<Bdev>(new MallocBdev(std::move(p), static_cast<uint8_t*>(mem)));
}

}  // namespace tern
