#include "pool/replica_bdev.h"

#include <sys/uio.h>

#include <cstring>

#include "common/object_pool.h"
#include "pool/pool.h"
#include "pool/state.h"
#include "reactor/reactor_set.h"
#include "reactor/task_scope.h"

namespace tern::pool {
namespace {

class ReplicaBdev;
struct ReplicaChannel;

// A request on its way to the pool's device is a ChildIo (owner: the channel; index: the reactor's epoch
// it counts in until it completes).
struct ReplicaChannel final : public ChannelCtx {
  ReplicaChannel(ReplicaBdev* owner, ChannelRef base, ReplicaShared::PerReactor* pr)
      : owner(owner), base(std::move(base)), pr(pr) {}
  ReplicaBdev* owner;
  ChannelRef base;
  ReplicaShared::PerReactor* pr;
  ChildIoPool ios;
};

constexpr uint32_t kInherited = PoolState::kInheritedBit;

class ReplicaBdev final : public Bdev {
 public:
  void grow(uint64_t num_blocks) { grow_to(num_blocks); }
  ReplicaBdev(BdevProps p, std::shared_ptr<BdevDesc> dev, std::shared_ptr<ReplicaShared> shared,
              uint64_t cluster_blocks, uint64_t data_off)
      : Bdev(std::move(p)), dev_(std::move(dev)), shared_(std::move(shared)), cluster_blocks_(cluster_blocks),
        data_off_(data_off), tasks_("replica allocation", unsigned(shared_->per_reactor.size())) {
    supported_ = bit(IoType::kReset) | bit(IoType::kRead);
    if (!shared_->read_only) {
      if (dev_->bdev().supports(IoType::kWrite)) supported_ |= bit(IoType::kWrite);
      if (dev_->bdev().supports(IoType::kFlush)) supported_ |= bit(IoType::kFlush);
      // Unmap is carried out as write-zeroes on the device (or a released cluster): it always reads zeros.
      if (dev_->bdev().supports(IoType::kWriteZeroes)) supported_ |= bit(IoType::kWriteZeroes) | bit(IoType::kUnmap);
    }
  }

  bool supports(IoType t) const override { return supported_ & bit(t); }

  // From the resolved map: a cluster that resolves to nothing reads as zeros (an inherited one holds
  // the snapshot's data: allocated, as far as a reader can tell).
  Task<Result<BlockStatus>> block_status(uint64_t offset_blocks, uint64_t max_blocks) override {
    const uint64_t n = num_blocks();
    if (offset_blocks >= n || max_blocks == 0) {
      co_return Status::Errorf(Errc::kRange, "block status: block {} (+{}) is beyond the end of '{}' ({} blocks)",
                               offset_blocks, max_blocks, name(), n);
    }
    const uint64_t end = std::min(n, offset_blocks + max_blocks);
    uint64_t vc = offset_blocks / cluster_blocks_;
    const bool allocated = shared_->map[vc].load(std::memory_order_acquire) != 0;
    uint64_t at = (vc + 1) * cluster_blocks_;
    while (at < end && ++vc < shared_->clusters &&
           (shared_->map[vc].load(std::memory_order_acquire) != 0) == allocated) {
      at += cluster_blocks_;
    }
    co_return BlockStatus{allocated, std::min(at, end) - offset_blocks};
  }

  Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor& r) override {
    auto base = ChannelRef::Get(*dev_);
    if (!base.ok()) return base.status();
    return std::unique_ptr<ChannelCtx>(new ReplicaChannel(this, std::move(*base), &shared_->per_reactor.at(r.id())));
  }

  void submit(ChannelCtx* ctx, BdevIo* io) override {
    auto* ch = static_cast<ReplicaChannel*>(ctx);
    if (io->type == IoType::kReset) {
      // Never reset the pool's device for one replica: the layer already waits for this replica's
      // requests in flight, which is what a reset of a replica means.
      bdev_io_complete_deferred(io, Errc::kOk);
      return;
    }
    if (shared_->paused.load(std::memory_order_acquire)) {
      ch->pr->held.emplace_back(ch, io);  // resubmitted by replica_resume
      return;
    }
    if (io->type == IoType::kFlush) {
      forward(track(ch, io), 0, IoType::kFlush);
      return;
    }
    // The layer split the request at cluster boundaries: it lies inside one cluster.
    const uint64_t vc = io->offset_blocks / cluster_blocks_;
    const uint64_t in = io->offset_blocks % cluster_blocks_;
    const uint32_t e = vc < shared_->clusters ? shared_->map[vc].load(std::memory_order_acquire) : 0;
    switch (io->type) {
      case IoType::kRead:
        if (e == 0) {
          // Nothing was ever written here: zeros, without touching the device.
          for (int i = 0; i < io->iovcnt; ++i) std::memset(io->iovs[i].iov_base, 0, io->iovs[i].iov_len);
          bdev_io_complete_deferred(io, Errc::kOk);
          return;
        }
        forward(track(ch, io), where(e, in), IoType::kRead);
        return;
      case IoType::kWrite:
        if (e != 0 && !(e & kInherited)) {
          forward(track(ch, io), where(e, in), IoType::kWrite);
          return;
        }
        tasks_.local().spawn(allocate_then_forward(track(ch, io), uint32_t(vc), in, IoType::kWrite));
        return;
      case IoType::kUnmap:
      case IoType::kWriteZeroes: {
        if (e == 0) {
          bdev_io_complete_deferred(io, Errc::kOk);  // already reads as zeros
          return;
        }
        const bool whole = in == 0 && (io->num_blocks == cluster_blocks_ || io->offset_blocks + io->num_blocks ==
                                                                                props().num_blocks);
        if (whole && (shared_->thin || (e & kInherited))) {
          tasks_.local().spawn(release(track(ch, io), uint32_t(vc)));
          return;
        }
        if (!(e & kInherited)) {
          forward(track(ch, io), where(e, in), IoType::kWriteZeroes);
          return;
        }
        // Part of an inherited cluster: copy it, then zero the part.
        tasks_.local().spawn(allocate_then_forward(track(ch, io), uint32_t(vc), in, IoType::kWriteZeroes));
        return;
      }
      default:
        bdev_io_complete_deferred(io, Errc::kNotSup);
        return;
    }
  }

  Task<void> shutdown() override {
    // No channel is left, so no request: the tasks that served them have ended or are ending.
    co_await tasks_.close(Reactor::current()->set());
    dev_.reset();
  }

 private:
  static uint32_t bit(IoType t) { return 1u << unsigned(t); }

  uint64_t where(uint32_t e, uint64_t in) const {
    return data_off_ + uint64_t((e & ~kInherited) - 1) * cluster_blocks_ + in;
  }

  // Counts the request in this reactor's current epoch until it completes.
  ChildIo* track(ReplicaChannel* ch, BdevIo* io) {
    ChildIo* r = ch->ios.get(io, ch);
    r->index = ch->pr->epoch;
    ++ch->pr->inflight[r->index];
    return r;
  }

  static void finish(ChildIo* r, Errc st) {
    BdevIo* parent = r->parent;
    auto* ch = static_cast<ReplicaChannel*>(r->owner);
    --ch->pr->inflight[r->index];
    ch->ios.put(r);
    bdev_io_complete(parent, st);
  }

  // Sends the request to the pool's device at `offset`, as `type`, with the caller's data and FUA.
  void forward(ChildIo* r, uint64_t offset, IoType type) {
    copy_request(r, *r->parent, [](BdevIo* done, void* arg) { finish(ChildIo::from(arg), done->status); });
    r->io.type = type;
    r->io.offset_blocks = offset;
    static_cast<ReplicaChannel*>(r->owner)->base.submit(&r->io);
  }

  // A write into a cluster the object does not own: the primary allocates one (zeroed, or a copy of the
  // inherited cluster) and makes its map record durable; then the write goes to it.
  Task<void> allocate_then_forward(ChildIo* r, uint32_t vc, uint64_t in, IoType type) {
    ReplicaShared* sh = shared_.get();
    Result<uint32_t> pc = co_await Reactor::current()->set().submit_to(0, [sh, vc]() -> Task<Result<uint32_t>> {
      if (!sh->pool) co_return Status::Errorf(Errc::kNoDev, "the replica's pool is closed");
      co_return co_await sh->pool->AllocateCluster(sh->uuid, vc);
    });
    if (!pc.ok()) {
      finish(r, pc.code());
      co_return;
    }
    forward(r, where(*pc + 1, in), type);
  }

  // Unmap or write-zeroes of a whole cluster: the pool records that it reads zeros (freeing a thin
  // object's cluster once no request can reach it).
  Task<void> release(ChildIo* r, uint32_t vc) {
    ReplicaShared* sh = shared_.get();
    Status s = co_await Reactor::current()->set().submit_to(0, [sh, vc]() -> Task<Status> {
      if (!sh->pool) co_return Status::Errorf(Errc::kNoDev, "the replica's pool is closed");
      co_return co_await sh->pool->ReleaseCluster(sh->uuid, vc);
    });
    finish(r, s.code());
  }

  std::shared_ptr<BdevDesc> dev_;
  std::shared_ptr<ReplicaShared> shared_;
  const uint64_t cluster_blocks_, data_off_;
  uint32_t supported_ = 0;
  PerReactorScopes tasks_;  // allocations and releases on the primary, one scope per requesting reactor
};

// Runs `fn(PerReactor&, reactor id)` (a Task) on every reactor in turn.
template <typename F>
Task<void> on_every_reactor(ReplicaShared* sh, F fn) {
  ReactorSet& set = Reactor::current()->set();
  for (unsigned r = 0; r < set.size(); ++r) {
    co_await set.submit_to(r, [sh, fn, r]() -> Task<void> { co_await fn(sh->per_reactor[r]); });
  }
}

struct PrimaryTurn {  // one drain or pause at a time per replica (primary reactor)
  ReplicaShared* sh;
  Task<void> acquire() {
    while (sh->draining) co_await Reactor::sleep_for(20'000);
    sh->draining = true;
  }
  void release() { sh->draining = false; }
};

}  // namespace

std::unique_ptr<Bdev> make_replica_bdev(BdevProps props, std::shared_ptr<BdevDesc> pool_device,
                                        std::shared_ptr<ReplicaShared> shared, uint64_t cluster_blocks,
                                        uint64_t data_offset_blocks) {
  return std::make_unique<ReplicaBdev>(std::move(props), std::move(pool_device), std::move(shared), cluster_blocks,
                                       data_offset_blocks);
}

Task<void> replica_drain(std::shared_ptr<ReplicaShared> shared) {
  PrimaryTurn turn{shared.get()};
  co_await turn.acquire();
  // Requests submitted after the epoch flips count in the new one; wait for the old one to empty.
  co_await on_every_reactor(shared.get(), [](ReplicaShared::PerReactor& pr) -> Task<void> {
    const uint8_t old = pr.epoch;
    pr.epoch ^= 1;
    while (pr.inflight[old] != 0) co_await Reactor::sleep_for(20'000);
  });
  turn.release();
}

Task<void> replica_pause(std::shared_ptr<ReplicaShared> shared) {
  PrimaryTurn turn{shared.get()};
  co_await turn.acquire();
  shared->paused.store(true, std::memory_order_release);
  co_await on_every_reactor(shared.get(), [](ReplicaShared::PerReactor& pr) -> Task<void> {
    while (pr.inflight[0] + pr.inflight[1] != 0) co_await Reactor::sleep_for(20'000);
  });
  // The turn stays taken until replica_resume.
}

Task<void> replica_resume(std::shared_ptr<ReplicaShared> shared) {
  shared->paused.store(false, std::memory_order_release);
  co_await on_every_reactor(shared.get(), [](ReplicaShared::PerReactor& pr) -> Task<void> {
    std::vector<std::pair<void*, BdevIo*>> held;
    held.swap(pr.held);
    for (auto [ctx, io] : held) {
      auto* ch = static_cast<ReplicaChannel*>(ctx);
      ch->owner->submit(ch, io);
    }
    co_return;
  });
  shared->draining = false;
}

void replica_grow(Bdev& replica, std::shared_ptr<ReplicaShared> shared, const std::vector<uint32_t>& resolved,
                  uint64_t num_blocks) {
  TERN_CHECK(shared->paused.load(), "replica_grow outside a pause");
  auto map = std::make_unique<std::atomic<uint32_t>[]>(resolved.size());
  for (size_t i = 0; i < resolved.size(); ++i) map[i].store(resolved[i], std::memory_order_relaxed);
  // Paused and drained: no reactor reads the map until replica_resume (its stores release this).
  shared->map = std::move(map);
  shared->clusters = resolved.size();
  static_cast<ReplicaBdev&>(replica).grow(num_blocks);
}

}  // namespace tern::pool
