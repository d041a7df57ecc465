// uring:///path (alias aio:///path) — a regular file or a block device driven through the reactor's
// io_uring. Parameters: blk_size=512|4096 (files; block devices use their logical block size),
// direct=true|false (O_DIRECT, default true), uuid=U.
//
// The file is registered in each reactor ring's fixed-file table (no fget/fput per I/O), reads and
// writes are single IORING_OP_READ/WRITE (or READV/WRITEV for scatter lists), flush is fdatasync,
// unmap punches a hole, write-zeroes uses FALLOC_FL_ZERO_RANGE and falls back to writing zeros where
// the file system or device cannot. FUA: a write carries RWF_DSYNC (the kernel makes just that range
// durable: REQ_FUA on a disk that has it, a range sync on a file); a write-zeroes is followed by an
// fdatasync, since fallocate has no per-call durability flag.
#include <fcntl.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cstring>
#include <fstream>

#include "bdev/backends.h"
#include "common/aligned_buffer.h"
#include "common/log.h"

namespace tern {
namespace {

constexpr uint64_t kMaxIoBytes = 64ull << 20;   // well below the kernel's ~2 GiB per-call transfer cap
constexpr size_t kZeroChunk = 1 << 20;         // write-zeroes emulation writes this much per request

const uint8_t* zero_chunk() {
  static AlignedBuffer* z = new AlignedBuffer(kZeroChunk, 4096, true);
  return z->data();
}

class UringChannel final : public ChannelCtx {
 public:
  UringChannel(Reactor& r, int fd) : reactor(r), slot(r.register_file(fd)), fd(fd) {}
  ~UringChannel() override { reactor.unregister_file(slot); }
  Reactor& reactor;
  const int slot;  // fixed-file slot, or -1 when the ring has no room
  const int fd;
};

class UringBdev;

struct UringIo : RingOp {
  BdevIo* io;
  UringBdev* bdev;
  UringChannel* ch;
  uint64_t expected;  // bytes of the whole read/write
  uint64_t done;      // bytes transferred so far (short transfers continue from here)
  uint64_t op_len;    // bytes asked of the SQE in flight
  // write-zeroes emulation state
  uint64_t zoff;
  uint64_t zend;
  iovec ziov;
  bool emulating;
  bool syncing;  // the fdatasync that makes a FUA write-zeroes durable is in flight
};

class UringBdev final : public Bdev {
 public:
  UringBdev(BdevProps p, int fd) : Bdev(std::move(p)), fd_(fd) {}
  ~UringBdev() override { close(fd_); }

  bool supports(IoType) const override { return true; }

  Result<uint64_t> rescan() override {
    struct stat st;
    if (fstat(fd_, &st) != 0) return Status::FromErrno(errno, fmt::format("cannot stat '{}'", props_.name));
    uint64_t size = uint64_t(st.st_size);
    if (S_ISBLK(st.st_mode) && ioctl(fd_, BLKGETSIZE64, &size) != 0) {
      return Status::FromErrno(errno, fmt::format("cannot read the size of block device '{}'", props_.name));
    }
    grow_to(size / props_.block_size);
    return num_blocks() * props_.block_size;
  }

  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor& r) override {
    return std::unique_ptr<ChannelCtx>(new UringChannel(r, fd_));
  }

  void submit(ChannelCtx* ctx, BdevIo* io) override {
    auto* ch = static_cast<UringChannel*>(ctx);
    auto* u = io->ctx<UringIo>();
    u->on_complete = &UringBdev::on_cqe;
    u->io = io;
    u->bdev = this;
    u->ch = ch;
    u->emulating = false;
    u->syncing = false;
    const uint64_t bs = props_.block_size;
    const uint64_t off = io->offset_blocks * bs;
    const uint64_t len = io->num_blocks * bs;
    u->expected = len;
    u->done = 0;
    u->op_len = len;
    if (io->type == IoType::kReset) {
      // Nothing is held here that could be aborted; the layer completes the reset once I/O drains.
      bdev_io_complete_deferred(io, Errc::kOk);
      return;
    }
    io_uring_sqe* sqe = ch->reactor.get_sqe();
    const int fd = ch->slot >= 0 ? ch->slot : fd_;
    switch (io->type) {
      case IoType::kRead:
        if (io->iovcnt == 1) io_uring_prep_read(sqe, fd, io->iovs[0].iov_base, unsigned(len), off);
        else io_uring_prep_readv(sqe, fd, io->iovs, unsigned(io->iovcnt), off);
        break;
      case IoType::kWrite:
        if (io->iovcnt == 1) io_uring_prep_write(sqe, fd, io->iovs[0].iov_base, unsigned(len), off);
        else io_uring_prep_writev(sqe, fd, io->iovs, unsigned(io->iovcnt), off);
        if (io->fua) sqe->rw_flags = RWF_DSYNC;
        break;
      case IoType::kFlush:
        io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
        break;
      case IoType::kUnmap:
        io_uring_prep_fallocate(sqe, fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len);
        break;
      case IoType::kWriteZeroes:
        if (!zero_range_ok_.load(std::memory_order_relaxed)) {
          // Known to be unsupported: emulate straight away (the SQE becomes the first write).
          start_emulation(u, sqe);
          return;
        }
        io_uring_prep_fallocate(sqe, fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, off, len);
        break;
      case IoType::kReset:
        break;
    }
    if (ch->slot >= 0) sqe->flags |= IOSQE_FIXED_FILE;
    ch->reactor.commit(sqe, u);
  }

 private:
  static void on_cqe(RingOp* op, int res, uint32_t) {
    auto* u = static_cast<UringIo*>(op);
    BdevIo* io = u->io;
    if (u->syncing) {
      bdev_io_complete(io, res < 0 ? static_cast<Errc>(-res) : Errc::kOk);
      return;
    }
    if (res < 0) {
      if (io->type == IoType::kWriteZeroes && !u->emulating && (res == -EOPNOTSUPP || res == -EINVAL)) {
        // ZERO_RANGE is not available (tmpfs, some devices): write zeros instead — from now on when the
        // operation is unsupported, for this request only when this range was refused.
        if (res == -EOPNOTSUPP) u->bdev->zero_range_ok_.store(false, std::memory_order_relaxed);
        u->bdev->start_emulation(u, u->ch->reactor.get_sqe());
        return;
      }
      if (res != -EOPNOTSUPP) {
        TLOG_RL_WARN("bdev", 1000, "device '{}': {} of {} blocks at {} failed: {}", u->bdev->name(),
                     io_type_name(io->type), io->num_blocks, io->offset_blocks, std::strerror(-res));
      }
      bdev_io_complete(io, static_cast<Errc>(-res));
      return;
    }
    if (u->emulating) {
      if (uint64_t(res) != u->ziov.iov_len) {
        bdev_io_complete(io, Errc::kIo);
        return;
      }
      u->zoff += u->ziov.iov_len;
      if (u->zoff < u->zend) {
        u->bdev->next_zero_write(u, u->ch->reactor.get_sqe());
        return;
      }
      u->bdev->complete_durably(u);
      return;
    }
    if ((io->type == IoType::kRead || io->type == IoType::kWrite) && uint64_t(res) != u->op_len) {
      // A short transfer (buffered I/O near a full file system, a signal): continue with the rest. No
      // progress at all means the file shrank under us.
      if (res == 0) {
        TLOG_RL_WARN("bdev", 1000, "device '{}': {} at block {} made no progress after {} of {} bytes",
                     u->bdev->name(), io_type_name(io->type), io->offset_blocks, u->done, u->expected);
        bdev_io_complete(io, Errc::kIo);
        return;
      }
      u->done += uint64_t(res);
      u->bdev->continue_rw(u);
      return;
    }
    if (u->done + uint64_t(res) < u->expected && (io->type == IoType::kRead || io->type == IoType::kWrite)) {
      u->done += uint64_t(res);
      u->bdev->continue_rw(u);
      return;
    }
    u->bdev->complete_durably(u);
  }

  // Completes a request, first syncing the file when it is a FUA write-zeroes done with fallocate (a
  // FUA write, and zeros written by the emulation, are durable already: RWF_DSYNC).
  void complete_durably(UringIo* u) {
    BdevIo* io = u->io;
    if (!io->fua || io->type != IoType::kWriteZeroes || u->emulating || !props_.write_cache) {
      bdev_io_complete(io, Errc::kOk);
      return;
    }
    u->syncing = true;
    io_uring_sqe* sqe = u->ch->reactor.get_sqe();
    const int fd = u->ch->slot >= 0 ? u->ch->slot : fd_;
    io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
    if (u->ch->slot >= 0) sqe->flags |= IOSQE_FIXED_FILE;
    u->ch->reactor.commit(sqe, u);
  }

  // Issues the next piece of a read/write after a short transfer: the rest of the iovec entry holding
  // byte `done`.
  void continue_rw(UringIo* u) {
    BdevIo* io = u->io;
    uint64_t skip = u->done;
    int i = 0;
    while (i < io->iovcnt && skip >= io->iovs[i].iov_len) skip -= io->iovs[i++].iov_len;
    char* base = static_cast<char*>(io->iovs[i].iov_base) + skip;
    uint64_t len = io->iovs[i].iov_len - skip;
    uint64_t off = io->offset_blocks * props_.block_size + u->done;
    u->op_len = len;
    io_uring_sqe* sqe = u->ch->reactor.get_sqe();
    const int fd = u->ch->slot >= 0 ? u->ch->slot : fd_;
    if (io->type == IoType::kRead) {
      io_uring_prep_read(sqe, fd, base, unsigned(len), off);
    } else {
      io_uring_prep_write(sqe, fd, base, unsigned(len), off);
      if (io->fua) sqe->rw_flags = RWF_DSYNC;
    }
    if (u->ch->slot >= 0) sqe->flags |= IOSQE_FIXED_FILE;
    u->ch->reactor.commit(sqe, u);
  }

  void start_emulation(UringIo* u, io_uring_sqe* sqe) {
    u->emulating = true;
    u->zoff = u->io->offset_blocks * props_.block_size;
    u->zend = u->zoff + u->io->num_blocks * props_.block_size;
    next_zero_write(u, sqe);
  }

  void next_zero_write(UringIo* u, io_uring_sqe* sqe) {
    u->ziov.iov_base = const_cast<uint8_t*>(zero_chunk());
    u->ziov.iov_len = size_t(std::min<uint64_t>(kZeroChunk, u->zend - u->zoff));
    const int fd = u->ch->slot >= 0 ? u->ch->slot : fd_;
    io_uring_prep_write(sqe, fd, u->ziov.iov_base, unsigned(u->ziov.iov_len), u->zoff);
    if (u->io->fua) sqe->rw_flags = RWF_DSYNC;  // then no sync is needed at the end
    if (u->ch->slot >= 0) sqe->flags |= IOSQE_FIXED_FILE;
    u->ch->reactor.commit(sqe, u);
  }

  const int fd_;
  std::atomic<bool> zero_range_ok_{true};
};

bool read_write_cache_flag(dev_t rdev) {
  for (const char* rel : {"queue/write_cache", "../queue/write_cache"}) {
    std::ifstream f(fmt::format("/sys/dev/block/{}:{}/{}", major(rdev), minor(rdev), rel));
    std::string v;
    if (f && std::getline(f, v)) return v.find("back") != std::string::npos;
  }
  return true;  // unknown: assume a volatile cache, so callers flush
}

}  // namespace

Task<Result<std::unique_ptr<Bdev>>> make_uring_bdev(const Uri& uri, BdevRegistry& reg) {
  auto q = UriQuery::Make(uri, {"blk_size", "direct", "uuid"});
  if (!q.ok()) co_return q.status();
  if (!uri.host.empty()) {
    co_return Status::Errorf(Errc::kInval, "invalid URI '{}': the path must be absolute, as in '{}:///{}{}'", uri.text,
                             uri.scheme, uri.host, uri.path);
  }
  const std::string& path = uri.path;
  if (path.empty() || path == "/") co_return Status::Errorf(Errc::kInval, "invalid URI '{}': missing path", uri.text);
  if (Status st = reg.check_new_name(path); !st.ok()) co_return st;
  auto bs_param = q->u64("blk_size");
  if (!bs_param.ok()) co_return bs_param.status();
  if (*bs_param && **bs_param != 512 && **bs_param != 4096) {
    co_return Status::Errorf(Errc::kInval, "invalid URI '{}': blk_size must be 512 or 4096, got {}", uri.text,
                             **bs_param);
  }
  auto direct_param = q->boolean("direct");
  if (!direct_param.ok()) co_return direct_param.status();
  const bool direct = direct_param->value_or(true);
  auto uuid = uuid_param(uri, *q);
  if (!uuid.ok()) co_return uuid.status();

  struct stat st;
  if (stat(path.c_str(), &st) != 0) {
    int e = errno;
    co_return Status::FromErrno(e, fmt::format("cannot use '{}': {}", path, std::strerror(e)));
  }
  const bool blockdev = S_ISBLK(st.st_mode);
  if (!blockdev && !S_ISREG(st.st_mode)) {
    co_return Status::Errorf(Errc::kInval, "cannot use '{}': not a regular file or block device", path);
  }
  int flags = O_RDWR | O_CLOEXEC | (direct ? O_DIRECT : 0) | (blockdev ? O_EXCL : 0);
  int fd = open(path.c_str(), flags);
  if (fd < 0) {
    int e = errno;
    if (e == EINVAL && direct) {
      int probe = open(path.c_str(), flags & ~O_DIRECT);
      if (probe >= 0) {
        close(probe);
        co_return Status::Errorf(Errc::kInval,
                                 "cannot open '{}' with O_DIRECT: its file system does not support direct I/O; add "
                                 "'?direct=false' to the URI to go through the page cache",
                                 path);
      }
    }
    co_return Status::FromErrno(
        e, fmt::format("cannot open '{}' for reading and writing: {}{}", path, std::strerror(e),
                       e == EBUSY ? " (the block device is in use: mounted, or opened exclusively by another program)"
                                  : ""));
  }
  auto fail = [&](Status s) {
    close(fd);
    return s;
  };
  if (!blockdev && flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    co_return fail(Status::FromErrno(
        e, fmt::format("cannot use '{}': it is locked by another user of the file{}", path,
                       e == EWOULDBLOCK ? " (another device or process has it open)" : "")));
  }

  BdevProps p;
  p.name = path;
  p.uuid = *uuid;
  p.product = "uring";
  uint64_t size = 0;
  if (blockdev) {
    int lbs = 0;
    if (ioctl(fd, BLKGETSIZE64, &size) != 0 || ioctl(fd, BLKSSZGET, &lbs) != 0) {
      int e = errno;
      co_return fail(Status::FromErrno(e, fmt::format("cannot read the size of block device '{}': {}", path,
                                                      std::strerror(e))));
    }
    p.block_size = uint32_t(lbs);
    if (*bs_param) {
      if (**bs_param < uint64_t(lbs)) {
        co_return fail(Status::Errorf(Errc::kInval, "blk_size {} is smaller than the logical block size {} of '{}'",
                                      **bs_param, lbs, path));
      }
      p.block_size = uint32_t(**bs_param);
    }
    p.write_cache = read_write_cache_flag(st.st_rdev);
  } else {
    size = uint64_t(st.st_size);
    p.block_size = *bs_param ? uint32_t(**bs_param) : 512;
    p.write_cache = true;  // the file system and the disk below it may cache: callers must flush
    p.unmap_reads_zeroes = true;
  }
  if (size == 0) co_return fail(Status::Errorf(Errc::kInval, "cannot use '{}': it is empty (size 0)", path));
  if (size % p.block_size != 0) {
    co_return fail(Status::Errorf(Errc::kInval, "cannot use '{}': its size {} is not a multiple of the block size {}",
                                  path, size, p.block_size));
  }
  p.num_blocks = size / p.block_size;
  p.max_io_blocks = uint32_t(kMaxIoBytes / p.block_size);
  p.buf_align = direct ? p.block_size : 1;

  if (direct) {
    // Some file systems accept O_DIRECT at open and refuse it at the first I/O; find out now.
    AlignedBuffer probe(p.block_size, 4096);
    if (pread(fd, probe.data(), p.block_size, 0) < 0) {
      int e = errno;
      if (e == EINVAL) {
        co_return fail(Status::Errorf(
            Errc::kInval,
            "direct I/O on '{}' with {}-byte blocks is refused (EINVAL): try '?blk_size=4096', or '?direct=false' "
            "if its file system does not support direct I/O",
            path, p.block_size));
      }
      co_return fail(Status::FromErrno(e, fmt::format("cannot read '{}': {}", path, std::strerror(e))));
    }
  }
  co_return std::unique_ptr<Bdev>(new UringBdev(std::move(p), fd));
}

}  // namespace tern
