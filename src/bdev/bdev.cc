#include "bdev/bdev.h"

#include <algorithm>
#include <cassert>

#include "bdev/registry.h"
#include "common/clock.h"
#include "common/log.h"
#include "reactor/reactor_set.h"

namespace tern {

// ---------------------------------------------------------------------------------------------------
// Statistics

void BdevStats::merge(const BdevStats& o) {
  for (size_t i = 0; i < kIoTypeCount; ++i) {
    by_type[i].ops += o.by_type[i].ops;
    by_type[i].bytes += o.by_type[i].bytes;
    by_type[i].errors += o.by_type[i].errors;
    by_type[i].fua += o.by_type[i].fua;
  }
  inflight += o.inflight;
  read_latency.merge(o.read_latency);
  write_latency.merge(o.write_latency);
  other_latency.merge(o.other_latency);
}

void BdevStats::record(const BdevIo& io, uint64_t bytes) {
  IoTypeStats& s = by_type[size_t(io.type)];
  ++s.ops;
  s.bytes += bytes;
  if (io.status != Errc::kOk) ++s.errors;
  if (io.fua) ++s.fua;
  uint64_t lat = io.complete_ns - io.submit_ns;
  switch (io.type) {
    case IoType::kRead: read_latency.record(lat); break;
    case IoType::kWrite: write_latency.record(lat); break;
    default: other_latency.record(lat); break;
  }
}

// ---------------------------------------------------------------------------------------------------
// Submission

namespace {

bool has_data(IoType t) { return t == IoType::kRead || t == IoType::kWrite; }
bool has_range(IoType t) { return t != IoType::kFlush && t != IoType::kReset; }
constexpr int kMaxIovcnt = 1024;  // IOV_MAX

// Clock reads for stacked devices. A wrapper (a replica, an error or delay device) forwards a request
// to its base inside its own submit, and completes its request inside its base's completion: the inner
// layer's times equal the outer's to within nanoseconds, so they reuse them instead of reading the clock
// again (a vDSO call that costs ~0.1 us in some VMs, measured: 10 % of a CPU-bound replica I/O). Only
// these two nestings reuse: a request submitted from a completion callback (the next request of a
// workload) reads the clock, since the callback may have done any amount of work first.
thread_local uint64_t t_submitting_ns = 0;  // set while a backend's submit runs
thread_local uint64_t t_completing_ns = 0;  // set while a request's completion callback runs
struct ScopedTime {
  uint64_t& slot;
  uint64_t saved;
  ScopedTime(uint64_t& s, uint64_t t) : slot(s), saved(s) { slot = t; }
  ~ScopedTime() { slot = saved; }
};

}  // namespace

void IoChannel::submit(BdevIo* io, bool writable) {
  io->ch = this;
  io->status = Errc::kOk;
  io->parent = nullptr;
  io->is_child = false;
  io->submit_ns = t_submitting_ns ? t_submitting_ns : now_ns();
  io->epoch = epoch_;
  ++epoch_inflight_[epoch_];
  ++stats_.inflight;

  const BdevProps& p = bdev_->props();
  Errc err = Errc::kOk;
  if (bdev_->removing_.load(std::memory_order_relaxed)) {
    err = Errc::kNoDev;
  } else if (!bdev_->supports(io->type)) {
    err = Errc::kNotSup;
  } else if (io->type != IoType::kRead && io->type != IoType::kReset && !writable) {
    err = Errc::kPerm;
  } else if (has_range(io->type)) {
    const uint64_t nb = bdev_->num_blocks();
    if (io->num_blocks == 0 || io->offset_blocks >= nb || io->num_blocks > nb - io->offset_blocks) {
      err = Errc::kRange;
    } else if (has_data(io->type)) {
      uint64_t total = 0;
      for (int i = 0; i < io->iovcnt; ++i) {
        total += io->iovs[i].iov_len;
        if (p.buf_align > 1 && ((reinterpret_cast<uintptr_t>(io->iovs[i].iov_base) | io->iovs[i].iov_len) &
                                (p.buf_align - 1))) {
          err = Errc::kInval;
        }
      }
      if (io->iovcnt <= 0 || io->iovcnt > kMaxIovcnt || total != io->num_blocks * p.block_size) err = Errc::kInval;
    }
  }
  if (err != Errc::kOk) {
    bdev_io_complete_deferred(io, err);
    return;
  }
  if (io->type == IoType::kReset) {
    start_reset(io);
    return;
  }
  if (needs_split(*io)) {
    split(io);
    return;
  }
  ScopedTime t(t_submitting_ns, io->submit_ns);
  bdev_->submit(ctx_.get(), io);
}

bool IoChannel::needs_split(const BdevIo& io) const {
  if (!has_range(io.type)) return false;
  const BdevProps& p = bdev_->props();
  if (p.max_io_blocks && io.num_blocks > p.max_io_blocks) return true;
  if (p.io_boundary_blocks) {
    uint64_t b = p.io_boundary_blocks;
    if (io.offset_blocks / b != (io.offset_blocks + io.num_blocks - 1) / b) return true;
  }
  return false;
}

void IoChannel::on_piece_done(BdevIo* piece_io, void* arg) {
  ChildIo* piece = ChildIo::from(arg);
  BdevIo* parent = piece->parent;
  IoChannel* ch = parent->ch;
  const Errc st = piece_io->status;
  ch->pieces_.put(piece);
  if (parent->join.arrive(st)) bdev_io_complete(parent, parent->join.status);
}

// Whether `io` can be cut into pieces whose scatter lists fit a Piece (checked before any piece is
// issued, so a request that fails never reaches the device in part).
bool IoChannel::splittable(const BdevIo& io) const {
  if (!has_data(io.type)) return true;
  const uint64_t bs = bdev_->props().block_size;
  // A piece starts at a block boundary, possibly inside an iovec entry, and holds kMaxIovs entries: the
  // partial first one and kMaxIovs - 1 whole ones. It makes progress if any kMaxIovs - 1 consecutive
  // entries cover at least one block (fewer entries left than that always fit in one piece).
  constexpr int kWindow = ChildIo::kMaxIovs - 1;
  uint64_t sum = 0;
  for (int i = 0; i < io.iovcnt; ++i) {
    sum += io.iovs[i].iov_len;
    if (i >= kWindow) sum -= io.iovs[i - kWindow].iov_len;
    if (i >= kWindow - 1 && sum < bs) return false;
  }
  return true;
}

void IoChannel::split(BdevIo* io) {
  if (!splittable(*io)) {
    bdev_io_complete_deferred(io, Errc::kInval);
    return;
  }
  const BdevProps& p = bdev_->props();
  const uint64_t bs = p.block_size;
  uint64_t off = io->offset_blocks;
  uint64_t left = io->num_blocks;
  // Cursor into the parent's iovec.
  int vi = 0;
  size_t vo = 0;
  io->join.open();  // held until every piece is submitted
  while (left > 0) {
    uint64_t n = left;
    if (p.max_io_blocks) n = std::min<uint64_t>(n, p.max_io_blocks);
    if (p.io_boundary_blocks) n = std::min<uint64_t>(n, p.io_boundary_blocks - off % p.io_boundary_blocks);
    ChildIo* pc = pieces_.get(io, this);
    BdevIo& c = pc->io;
    c.type = io->type;
    c.offset_blocks = off;
    c.iovs = nullptr;
    c.iovcnt = 0;
    c.fua = io->fua;
    if (has_data(io->type)) {
      // Slice n blocks out of the parent's iovec; if that needs more entries than a piece holds, cut the
      // piece at the last whole block those entries cover.
      uint64_t want = n * bs, got = 0;
      int cnt = 0;
      int svi = vi;
      size_t svo = vo;
      while (got < want && cnt < ChildIo::kMaxIovs) {
        size_t avail = io->iovs[svi].iov_len - svo;
        size_t take = size_t(std::min<uint64_t>(avail, want - got));
        pc->iovs[cnt].iov_base = static_cast<char*>(io->iovs[svi].iov_base) + svo;
        pc->iovs[cnt].iov_len = take;
        ++cnt;
        got += take;
        svo += take;
        if (svo == io->iovs[svi].iov_len) {
          ++svi;
          svo = 0;
        }
      }
      if (got < want) {
        uint64_t whole = got / bs * bs;
        if (whole == 0) {
          // Pathological scatter list (more than kMaxIovs entries inside one block).
          pieces_.put(pc);
          io->join.fail(Errc::kInval);
          break;
        }
        n = whole / bs;
        // Trim the slice back to `whole` bytes.
        uint64_t acc = 0;
        cnt = 0;
        while (acc < whole) {
          uint64_t l = std::min<uint64_t>(pc->iovs[cnt].iov_len, whole - acc);
          pc->iovs[cnt].iov_len = size_t(l);
          acc += l;
          ++cnt;
        }
      }
      // Advance the parent cursor by n blocks.
      uint64_t adv = n * bs;
      while (adv > 0) {
        size_t avail = io->iovs[vi].iov_len - vo;
        size_t take = size_t(std::min<uint64_t>(avail, adv));
        vo += take;
        adv -= take;
        if (vo == io->iovs[vi].iov_len) {
          ++vi;
          vo = 0;
        }
      }
      c.iovs = pc->iovs;
      c.iovcnt = cnt;
    }
    c.num_blocks = n;
    c.ch = this;
    c.parent = io;
    c.is_child = true;
    c.status = Errc::kOk;
    c.submit_ns = io->submit_ns;
    c.done = &IoChannel::on_piece_done;
    c.done_arg = pc;
    io->join.add();
    bdev_->submit(ctx_.get(), &c);
    off += n;
    left -= n;
  }
  // Drop the hold; pieces complete asynchronously, so this never finishes the parent here unless
  // nothing was submitted.
  if (io->join.close()) bdev_io_complete_deferred(io, io->join.status);
}

// ---------------------------------------------------------------------------------------------------
// Reset

void IoChannel::start_reset(BdevIo* io) {
  if (resets_.size() >= kMaxPendingResets) {
    // Epochs are 8-bit: more pending resets than this could alias an epoch still being waited for.
    bdev_io_complete_deferred(io, Errc::kBusy);
    return;
  }
  uint8_t old = epoch_;
  // The reset was counted in the old epoch; move it to the new one so it does not wait for itself.
  --epoch_inflight_[old];
  ++epoch_;
  ++epoch_inflight_[epoch_];
  io->epoch = epoch_;
  resets_.push_back({io, old, false});
  if (bdev_->supports(IoType::kReset)) {
    // The backend aborts what it holds; its completion of this request comes back through
    // bdev_io_complete, which marks the backend's part done.
    bdev_->submit(ctx_.get(), io);
  } else {
    resets_.back().backend_done = true;
    maybe_finish_resets();
  }
}

void IoChannel::maybe_finish_resets() {
  // In order: the head reset completes once the backend is done and its old epoch has drained.
  while (!resets_.empty()) {
    PendingReset r = resets_.front();
    if (!r.backend_done || epoch_inflight_[r.epoch] != 0) break;
    resets_.erase(resets_.begin());
    bdev_io_complete_deferred(r.io, r.io->status);
  }
}

// ---------------------------------------------------------------------------------------------------
// Completion

void IoChannel::finish(BdevIo* io) {
  io->complete_ns = t_completing_ns ? t_completing_ns : now_ns();
  if (__builtin_expect(io->status != Errc::kOk, 0)) {
    const Errc e = io->status;
    if ((e == Errc::kIo || e == Errc::kMediaError || e == Errc::kTimedOut) &&
        !bdev_->fault_pending_.exchange(true, std::memory_order_relaxed)) {
      bdev_->raise_event(BdevEvent::kFaulted);
    }
  }
  --stats_.inflight;
  stats_.record(*io, has_data(io->type) && io->status == Errc::kOk ? io->num_blocks * bdev_->props().block_size : 0);
  uint64_t& in_epoch = epoch_inflight_[io->epoch];
  --in_epoch;
  if (!resets_.empty() && in_epoch == 0) maybe_finish_resets();
  // The callback may release the last reference to this channel (and so free it): decide before it
  // runs, touch nothing after.
  const bool retire_after = orphaned_ && stats_.inflight == 0 && resets_.empty();
  ScopedTime t(t_completing_ns, io->complete_ns);
  io->done(io, io->done_arg);
  if (retire_after) retire(this);
}

void IoChannel::retire(IoChannel* ch) {
  Bdev& b = *ch->bdev_;
  {
    std::lock_guard lk(b.retired_mu_);
    b.retired_.merge(ch->stats_);
  }
  delete ch;
  b.live_channels_.fetch_sub(1);
}

void bdev_io_complete(BdevIo* io, Errc status) {
  IoChannel* ch = io->ch;
  if (io->is_child) {
    io->status = status;
    io->done(io, io->done_arg);
    return;
  }
  if (io->type == IoType::kReset) {
    // Either the backend finished its part (first pass) or the reset is final.
    for (auto& r : ch->resets_) {
      if (r.io == io) {
        if (status != Errc::kOk && io->status == Errc::kOk) io->status = status;
        r.backend_done = true;
        ch->maybe_finish_resets();
        return;
      }
    }
  }
  if (io->status == Errc::kOk) io->status = status;
  ch->finish(io);
}

void bdev_io_complete_deferred(BdevIo* io, Errc status) {
  io->status = status != Errc::kOk ? status : io->status;
  io->deferred.run = [](Deferred* d) {
    BdevIo* io = reinterpret_cast<BdevIo*>(reinterpret_cast<char*>(d) - offsetof(BdevIo, deferred));
    bdev_io_complete(io, io->status);
  };
  io->ch->reactor().defer(&io->deferred);
}

// ---------------------------------------------------------------------------------------------------
// Events

std::string_view bdev_event_name(BdevEvent e) {
  switch (e) {
    case BdevEvent::kRemove: return "remove";
    case BdevEvent::kFaulted: return "faulted";
    case BdevEvent::kReconnecting: return "reconnecting";
    case BdevEvent::kReconnected: return "reconnected";
    case BdevEvent::kResized: return "resized";
  }
  return "?";
}

void Bdev::raise_event(BdevEvent ev) {
  BdevRegistry* reg = registry_;
  if (!reg) return;
  const uint64_t id = registry_id_;
  reg->reactors().post(0, [reg, id, ev] { reg->deliver_event(id, ev); });
}

// ---------------------------------------------------------------------------------------------------
// Descriptors and channels

Bdev::~Bdev() = default;

Task<BdevStats> Bdev::stats(ReactorSet& set) {
  BdevStats total;
  {
    std::lock_guard lk(retired_mu_);
    total.merge(retired_);
  }
  for (unsigned r = 0; r < set.size() && r < slots_.size(); ++r) {
    BdevStats s = co_await set.submit_to(r, [this, r] {
      Slot& slot = slots_[r];
      return slot.ch ? slot.ch->stats() : BdevStats();
    });
    total.merge(s);
  }
  co_return total;
}

Task<void> Bdev::reset_stats(ReactorSet& set) {
  {
    std::lock_guard lk(retired_mu_);
    retired_ = BdevStats();
  }
  for (unsigned r = 0; r < set.size() && r < slots_.size(); ++r) {
    co_await set.submit_to(r, [this, r] {
      if (IoChannel* ch = slots_[r].ch) {
        uint64_t inflight = ch->stats_.inflight;
        ch->stats_ = BdevStats();
        ch->stats_.inflight = inflight;
      }
    });
  }
}

BdevDesc::~BdevDesc() {
  if (bdev_->claim_desc_ == this) release_claim();
  auto& v = bdev_->descs_;
  v.erase(std::remove(v.begin(), v.end(), this), v.end());
}

Status BdevDesc::claim(std::string owner, bool exclusive_writer) {
  Bdev& b = *bdev_;
  if (b.claim_desc_ == this) return Status::Ok();
  if (b.claim_desc_) {
    return Status::Errorf(Errc::kBusy, "device '{}' is already claimed by {}", b.name(), b.claim_owner_);
  }
  if (!writable_) return Status::Errorf(Errc::kPerm, "claiming device '{}' needs a writable descriptor", b.name());
  for (BdevDesc* d : b.descs_) {
    if (!exclusive_writer) break;
    if (d != this && d->writable_) {
      return Status::Errorf(Errc::kBusy, "device '{}' cannot be claimed by {}: another writer has it open", b.name(),
                            owner);
    }
  }
  b.claim_desc_ = this;
  b.claim_owner_ = std::move(owner);
  b.claim_exclusive_ = exclusive_writer;
  return Status::Ok();
}

void BdevDesc::release_claim() {
  if (bdev_->claim_desc_ == this) {
    bdev_->claim_desc_ = nullptr;
    bdev_->claim_owner_.clear();
  }
}

Result<ChannelRef> ChannelRef::Get(BdevDesc& desc) {
  Reactor* r = Reactor::current();
  if (!r) return Status(Errc::kInval, "I/O channels exist only on reactor threads");
  Bdev& b = *desc.bdev_;
  if (b.removing_.load(std::memory_order_relaxed)) {
    return Status::Errorf(Errc::kNoDev, "device '{}' is being removed", b.name());
  }
  Bdev::Slot& slot = b.slots_[r->id()];
  if (!slot.ch) {
    auto ctx = b.create_channel(*r);
    if (!ctx.ok()) return ctx.status().WithContext(fmt::format("device '{}': channel on reactor {}", b.name(), r->id()));
    slot.ch = new IoChannel(&b, r, std::move(*ctx));
    b.live_channels_.fetch_add(1);
  }
  ++slot.refs;
  return ChannelRef(&desc, slot.ch);
}

ChannelRef& ChannelRef::operator=(ChannelRef&& o) noexcept {
  if (this != &o) {
    reset();
    desc_ = std::exchange(o.desc_, nullptr);
    ch_ = std::exchange(o.ch_, nullptr);
  }
  return *this;
}

void ChannelRef::reset() {
  if (!ch_) return;
  assert(Reactor::current() == &ch_->reactor() && "a channel is released on the reactor that owns it");
  Bdev& b = ch_->bdev();
  Bdev::Slot& slot = b.slots_[ch_->reactor().id()];
  if (--slot.refs == 0) {
    IoChannel* ch = slot.ch;
    slot.ch = nullptr;
    if (ch->stats_.inflight == 0) IoChannel::retire(ch);
    else ch->orphaned_ = true;
  }
  ch_ = nullptr;
  desc_ = nullptr;
}

ChannelRef::IoAwaiter ChannelRef::make(IoType t, void* buf, uint64_t offset_blocks, uint64_t num_blocks) {
  IoAwaiter a{this, {}, buf, 0, {}};
  a.io.type = t;
  a.io.offset_blocks = offset_blocks;
  a.io.num_blocks = num_blocks;
  if (buf) a.len = size_t(num_blocks) * ch_->bdev().props().block_size;
  return a;
}

ChannelRef::IoAwaiter ChannelRef::readv(iovec* iov, int iovcnt, uint64_t offset_blocks, uint64_t num_blocks) {
  IoAwaiter a = make(IoType::kRead, nullptr, offset_blocks, num_blocks);
  a.io.iovs = iov;
  a.io.iovcnt = iovcnt;
  return a;
}

ChannelRef::IoAwaiter ChannelRef::writev(iovec* iov, int iovcnt, uint64_t offset_blocks, uint64_t num_blocks, bool fua) {
  IoAwaiter a = make(IoType::kWrite, nullptr, offset_blocks, num_blocks);
  a.io.iovs = iov;
  a.io.iovcnt = iovcnt;
  a.io.fua = fua;
  return a;
}

}  // namespace tern
