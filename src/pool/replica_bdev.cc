#include "pool/replica_bdev.h"

#include <sys/uio.h>

#include <cstring>

#include "bdev/wrapper_io.h"
#include "pool/pool.h"
#include "reactor/reactor_set.h"

namespace tern::pool {
namespace {

class ReplicaChannel final : public ChannelCtx {
 public:
  explicit ReplicaChannel(ChannelRef base) : base(std::move(base)) {}
  ChannelRef base;
  ForwardPool pool;
};

class ReplicaBdev final : public Bdev {
 public:
  ReplicaBdev(BdevProps p, std::shared_ptr<BdevDesc> dev, std::shared_ptr<ReplicaShared> shared,
              uint64_t cluster_blocks, uint64_t data_off)
      : Bdev(std::move(p)), dev_(std::move(dev)), shared_(std::move(shared)), cluster_blocks_(cluster_blocks),
        data_off_(data_off) {
    supported_ = 1u << unsigned(IoType::kReset);
    for (IoType t : {IoType::kRead, IoType::kWrite, IoType::kFlush, IoType::kUnmap, IoType::kWriteZeroes}) {
      if (dev_->bdev().supports(t)) supported_ |= 1u << unsigned(t);
    }
  }

  bool supports(IoType t) const override { return supported_ & (1u << unsigned(t)); }

  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor&) override {
    auto base = ChannelRef::Get(*dev_);
    if (!base.ok()) return base.status();
    return std::unique_ptr<ChannelCtx>(new ReplicaChannel(std::move(*base)));
  }

  void submit(ChannelCtx* ctx, BdevIo* io) override {
    auto* ch = static_cast<ReplicaChannel*>(ctx);
    if (io->type == IoType::kReset) {
      // Never reset the pool's device for one replica: the layer already waits for this replica's
      // requests in flight, which is what a reset of a replica means.
      bdev_io_complete_deferred(io, Errc::kOk);
      return;
    }
    if (io->type == IoType::kFlush) {
      forward(ch, io, 0);
      return;
    }
    // The layer split the request at cluster boundaries: it lies inside one cluster.
    const uint64_t vc = io->offset_blocks / cluster_blocks_;
    const uint32_t m = vc < shared_->clusters ? shared_->map[vc].load(std::memory_order_acquire) : 0;
    if (m) {
      forward(ch, io, data_off_ + uint64_t(m - 1) * cluster_blocks_ + io->offset_blocks % cluster_blocks_);
      return;
    }
    switch (io->type) {
      case IoType::kRead:
        // Never written: zeros, without touching the device.
        for (int i = 0; i < io->iovcnt; ++i) std::memset(io->iovs[i].iov_base, 0, io->iovs[i].iov_len);
        bdev_io_complete_deferred(io, Errc::kOk);
        return;
      case IoType::kUnmap:
      case IoType::kWriteZeroes:
        bdev_io_complete_deferred(io, Errc::kOk);  // already reads as zeros
        return;
      default:
        spawn(allocate_then_forward(ch, io, uint32_t(vc)));
        return;
    }
  }

  // First write into an unallocated cluster: the primary allocates it (zeroed, map record durable), then
  // the write goes to it.
  Task<void> allocate_then_forward(ReplicaChannel* ch, BdevIo* io, uint32_t vc) {
    ReplicaShared* sh = shared_.get();
    Result<uint32_t> pc = co_await Reactor::current()->set().submit_to(0, [sh, vc]() -> Task<Result<uint32_t>> {
      if (!sh->pool) co_return Status::Errorf(Errc::kNoDev, "the replica's pool is closed");
      co_return co_await sh->pool->AllocateCluster(sh->uuid, vc);
    });
    if (!pc.ok()) {
      bdev_io_complete(io, pc.code());
      co_return;
    }
    forward(ch, io, data_off_ + uint64_t(*pc) * cluster_blocks_ + io->offset_blocks % cluster_blocks_);
  }

  void forward(ReplicaChannel* ch, BdevIo* io, uint64_t offset) {
    ForwardedIo* f = ch->pool.get();
    f->owner = ch;
    f->parent = io;
    BdevIo& c = f->io;
    c.type = io->type;
    c.offset_blocks = offset;
    c.num_blocks = io->num_blocks;
    c.iovs = io->iovs;
    c.iovcnt = io->iovcnt;
    c.done = [](BdevIo* done, void* arg) {
      auto* fw = static_cast<ForwardedIo*>(arg);
      BdevIo* parent = fw->parent;
      Errc st = done->status;
      static_cast<ReplicaChannel*>(fw->owner)->pool.put(fw);
      bdev_io_complete(parent, st);
    };
    c.done_arg = f;
    ch->base.submit(&c);
  }

  Task<void> shutdown() override {
    dev_.reset();
    co_return;
  }

 private:
  std::shared_ptr<BdevDesc> dev_;
  std::shared_ptr<ReplicaShared> shared_;
  const uint64_t cluster_blocks_, data_off_;
  uint32_t supported_ = 0;
};

}  // namespace

std::unique_ptr<Bdev> make_replica_bdev(BdevProps props, std::shared_ptr<BdevDesc> pool_device,
                                        std::shared_ptr<ReplicaShared> shared, uint64_t cluster_blocks,
                                        uint64_t data_offset_blocks) {
  return std::make_unique<ReplicaBdev>(std::move(props), std::move(pool_device), std::move(shared), cluster_blocks,
                                       data_offset_blocks);
}

}  // namespace tern::pool
