// malloc:///name?size_mb=N|num_blocks=N&blk_size=512|4096&uuid=U&populate=0|1 — a RAM device.
//
// The memory is an anonymous private mapping: untouched pages cost nothing and read as zeros, and no
// huge pages need to be reserved (transparent huge pages are requested where the system allows them).
// populate=1 faults every page in at creation so that the first touch of a page does not cost a page
// fault inside an I/O, and fails creation cleanly when the memory is not there: what benchmarks want.
// I/O is a memcpy on the submitting reactor, completed in the same loop turn.
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
  auto props = ram_device_props(uri, reg, "malloc", /*allow_populate=*/true);
  if (!props.ok()) co_return props.status();
  BdevProps p = std::move(*props);
  auto q = UriQuery::Make(uri, {"size_mb", "num_blocks", "blk_size", "uuid", "populate"});
  if (!q.ok()) co_return q.status();
  auto populate = q->boolean("populate");
  if (!populate.ok()) co_return populate.status();
  // Map 2 MiB-aligned and ask for transparent huge pages: a random 4 KiB access to a RAM device of
  // hundreds of MiB otherwise costs a TLB miss and page walk, which dominates the copy itself once
  // system calls (networking) keep flushing the TLB. Best effort: without THP we get 4 KiB pages.
  constexpr size_t kHuge = size_t(2) << 20;
  const size_t len = p.size_bytes();
  void* raw = mmap(nullptr, len + kHuge, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (raw == MAP_FAILED) {
    co_return Status::FromErrno(errno, fmt::format("malloc device '{}': cannot map {} bytes: {}", p.name, len,
                                                   std::strerror(errno)));
  }
  auto* base = static_cast<uint8_t*>(raw);
  auto* mem = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(base) + kHuge - 1) & ~(kHuge - 1));
  if (mem > base) munmap(base, size_t(mem - base));
  if (size_t tail = size_t(base + len + kHuge - (mem + len))) munmap(mem + len, tail);
  (void)madvise(mem, len, MADV_HUGEPAGE);
  if (populate->value_or(false)) {
#ifdef MADV_POPULATE_WRITE
    int rc = madvise(mem, len, MADV_POPULATE_WRITE);
#else
    int rc = -1;
    errno = EINVAL;
#endif
    if (rc != 0 && errno != EINVAL) {
      int err = errno;
      munmap(mem, len);
      co_return Status::FromErrno(err, fmt::format("malloc device '{}': cannot populate {} bytes: {}", p.name, len,
                                                   std::strerror(err)));
    }
    if (rc != 0) {
      // Before Linux 5.14: touch every page (it reads as zero, so writing zero changes nothing).
      for (size_t off = 0; off < len; off += 4096) reinterpret_cast<volatile uint8_t*>(mem)[off] = 0;
    }
  }
  co_return std::unique_ptr<Bdev>(new MallocBdev(std::move(p), mem));
}

}  // namespace tern
