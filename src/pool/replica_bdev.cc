#include "pool/replica_bdev.h"

#include "bdev/wrapper_io.h"

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
  ReplicaBdev(BdevProps p, std::shared_ptr<BdevDesc> dev, std::vector<uint32_t> map, uint64_t cluster_blocks,
              uint64_t data_off)
      : Bdev(std::move(p)), dev_(std::move(dev)), map_(std::move(map)), cluster_blocks_(cluster_blocks), data_off_(data_off) {
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
    uint64_t offset = 0;
    if (io->num_blocks) {
      // The layer split the request at cluster boundaries: it lies inside one cluster.
      const uint64_t vc = io->offset_blocks / cluster_blocks_;
      const uint32_t m = vc < map_.size() ? map_[vc] : 0;
      if (m == 0) {
        bdev_io_complete_deferred(io, Errc::kIo);  // cannot happen for a thick replica
        return;
      }
      offset = data_off_ + uint64_t(m - 1) * cluster_blocks_ + io->offset_blocks % cluster_blocks_;
    }
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
  const std::vector<uint32_t> map_;
  const uint64_t cluster_blocks_, data_off_;
  uint32_t supported_ = 0;
};

}  // namespace

std::unique_ptr<Bdev> make_replica_bdev(BdevProps props, std::shared_ptr<BdevDesc> pool_device, std::vector<uint32_t> map,
                                        uint64_t cluster_blocks, uint64_t data_offset_blocks) {
  return std::make_unique<ReplicaBdev>(std::move(props), std::move(pool_device), std::move(map), cluster_blocks,
                                       data_offset_blocks);
}

}  // namespace tern::pool
