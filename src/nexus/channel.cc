#include "nexus/channel.h"

#include "common/log.h"

namespace tern::nexus {

namespace {
NexusIo* nio(BdevIo* io) { return io->ctx<NexusIo>(); }
}  // namespace

NexusChannel::NexusChannel(Nexus* nexus, Reactor& r)
    : nexus_(nexus), reactor_(r), counters_(nexus->counters_[r.id()]) {
  nexus_->channels_[r.id()] = this;
  refresh();
  if (auto l = nexus_->range_lock()) lock_range(l->first, l->second);  // a lock taken before this channel (no writes yet: it takes)
}

NexusChannel::~NexusChannel() { nexus_->channels_[reactor_.id()] = nullptr; }

void NexusChannel::refresh() {
  std::shared_ptr<const ChildView> v = nexus_->view();
  for (uint32_t s = 0; s < kMaxChildren; ++s) {
    const ChildView::Slot& sl = v->slots[s];
    const bool want = sl.present && sl.write && sl.desc;
    if (want && incarnation_[s] == sl.incarnation && refs_[s]) continue;
    if (!want || incarnation_[s] != sl.incarnation) {
      refs_[s].reset();  // requests in flight on it complete; the device's channel goes after them
      if (incarnation_[s] != sl.incarnation) {
        outstanding_[s] = 0;
        if (counters_.incarnation[s] != sl.incarnation) {
          counters_.io[s] = ChildIoCounters();
          counters_.incarnation[s] = sl.incarnation;
        }
      }
      incarnation_[s] = sl.incarnation;
    }
    if (want) {
      auto ch = ChannelRef::Get(*sl.desc);
      if (ch.ok()) {
        refs_[s] = std::move(*ch);
      } else {
        TLOG_RL_WARN("nexus", 1000, "nexus {}: no channel to child slot {} on reactor {}: {}", nexus_->name(), s,
                     reactor_.id(), ch.status());
      }
    }
  }
  view_ = std::move(v);
  version_ = view_->version;
}

void NexusChannel::hold(BdevIo* io) {
  nio(io)->next = nullptr;
  if (held_tail_) nio(held_tail_)->next = io; else held_head_ = io;
  held_tail_ = io;
}

void NexusChannel::submit(BdevIo* io) {
  ++inflight_;
  NexusIo* n = nio(io);
  n->sent = n->failed = n->synced = 0;
  n->fenced = false;
  n->first_error = Errc::kOk;
  n->tries = 0;
  n->next = nullptr;
  n->counted = false;
  if (__builtin_expect(nexus_->frozen_.load(std::memory_order_acquire) ||
                           nexus_->shutdown_.load(std::memory_order_acquire),
                       0)) {
    if (nexus_->failing_held_) {
      complete_later(io, Errc::kNoDev);
      return;
    }
    hold(io);  // resubmitted when the nexus thaws; kept while it is shut down (hosts wait, not fail)
    return;
  }
  start(io);
}

namespace {
bool changes_data(IoType t) { return t == IoType::kWrite || t == IoType::kWriteZeroes || t == IoType::kUnmap; }
}  // namespace

void NexusChannel::start(BdevIo* io) {
  if (__builtin_expect(nexus_->view_version_.load(std::memory_order_acquire) != version_, 0)) {
    // A new view. If it comes from a retire (or a snapshot), the nexus froze before publishing it: a
    // request that passed the frozen check just before must not go out with it (a write would skip the
    // retired child before its retirement is recorded). Seeing the new view, we see the freeze too.
    refresh();
    if (nexus_->frozen_.load(std::memory_order_acquire) || nexus_->shutdown_.load(std::memory_order_acquire)) {
      if (nexus_->failing_held_) return complete_later(io, Errc::kNoDev);
      return hold(io);
    }
  }
  if (changes_data(io->type)) {
    NexusIo* n = nio(io);
    if (__builtin_expect(locked_, 0) && io->offset_blocks < lock_end_ && io->offset_blocks + io->num_blocks > lock_lba_) {
      n->next = nullptr;  // waits for unlock_range
      if (range_tail_) nio(range_tail_)->next = io; else range_head_ = io;
      range_tail_ = io;
      return;
    }
    const uint32_t bs = nexus_->props().block_size;
    const uint64_t off = io->offset_blocks * bs, len = io->num_blocks * bs;
    if (__builtin_expect(!nexus_->dlog_->hot(off, len), 0)) {
      // A cold extent: the activity log names it on every in-sync child before the write goes out.
      n->next = nullptr;
      if (al_tail_) nio(al_tail_)->next = io; else al_head_ = io;
      al_tail_ = io;
      Nexus* nx = nexus_;
      const unsigned r = reactor_.id();
      nx->registry_.reactors().post(0, [nx, r, off, len] { nx->dlog_->want(r, off, len); });
      return;
    }
    if (!n->counted) {
      n->epoch = uint8_t(epoch_ & 1);
      n->counted = true;
      ++epoch_writes_[n->epoch];
    }
    // Children that left while in sync: what they miss from here on (marked before it goes out).
    for (const auto& b : view_->bitmaps) b->mark(off, len);
  }
  nio(io)->version = version_;
  if (io->type == IoType::kRead) start_read(io);
  else start_fanout(io);
}

void NexusChannel::al_ready(Errc e) {
  BdevIo* io = al_head_;
  al_head_ = al_tail_ = nullptr;
  if (nexus_->failing_held_) return fail_list(io, Errc::kNoDev);
  const uint32_t bs = nexus_->props().block_size;
  while (io) {
    BdevIo* next = nio(io)->next;
    if (nexus_->frozen_.load(std::memory_order_acquire) || nexus_->shutdown_.load(std::memory_order_acquire)) {
      hold(io);
    } else if (e != Errc::kOk && !nexus_->dlog_->hot(io->offset_blocks * bs, io->num_blocks * bs)) {
      complete(io, e);  // its extent could not be logged: it is not written anywhere
    } else {
      start(io);  // hot now (or asks again)
    }
    io = next;
  }
}

bool NexusChannel::flip_epoch() {
  if (epoch_writes_[(epoch_ + 1) & 1] != 0) return false;
  ++epoch_;
  return true;
}

void NexusChannel::release_held() {
  BdevIo* io = held_head_;
  held_head_ = held_tail_ = nullptr;
  while (io) {
    BdevIo* next = nio(io)->next;
    if (nexus_->frozen_.load(std::memory_order_acquire) || nexus_->shutdown_.load(std::memory_order_acquire)) {
      hold(io);  // frozen again meanwhile
    } else {
      start(io);
    }
    io = next;
  }
}

void NexusChannel::fail_list(BdevIo* io, Errc e) {
  while (io) {
    BdevIo* next = nio(io)->next;
    complete(io, e);
    io = next;
  }
}

void NexusChannel::fail_held(Errc e) {
  // Detach both lists first: a completion may end the channel (its owner closes on the last one).
  // One list: the frozen ones, then the range-held ones, then those waiting for the activity log.
  BdevIo* all = nullptr;
  BdevIo* tail = nullptr;
  for (auto [h, t] : {std::pair{held_head_, held_tail_}, std::pair{range_head_, range_tail_}, std::pair{al_head_, al_tail_}}) {
    if (!h) continue;
    if (tail) nio(tail)->next = h; else all = h;
    tail = t;
  }
  held_head_ = held_tail_ = range_head_ = range_tail_ = al_head_ = al_tail_ = nullptr;
  fail_list(all, e);
}

// ---- reads: one in-sync child, local first, else the least busy; retried on another when one fails ----

int NexusChannel::pick_reader(uint32_t exclude) const {
  int best = -1;
  for (uint32_t s = 0; s < kMaxChildren; ++s) {
    const ChildView::Slot& sl = view_->slots[s];
    if (!sl.present || !sl.read || !refs_[s] || (exclude & (1u << s))) continue;
    if (sl.local) return int(s);
    if (best < 0 || outstanding_[s] < outstanding_[size_t(best)]) best = int(s);
  }
  return best;
}

void NexusChannel::start_read(BdevIo* io) {
  if (!issue_read(io)) complete_later(io, Errc::kIo);  // no child can serve it: the nexus is faulted
}

bool NexusChannel::issue_read(BdevIo* io) {
  NexusIo* n = nio(io);
  int s = pick_reader(n->failed | n->sent);
  if (s < 0) return false;
  n->sent |= 1u << s;
  ++n->tries;
  n->join.open();
  n->join.add();
  issue(io, uint32_t(s));
  n->join.close();  // the child completes from the loop, never inside submit: it is still out
  return true;
}

void NexusChannel::read_done(BdevIo* parent, uint32_t slot, Errc e) {
  NexusIo* n = nio(parent);
  if (e == Errc::kOk) {
    complete(parent, Errc::kOk);
    return;
  }
  if (e == Errc::kAccess) {
    complete(parent, Errc::kShutdown);  // fenced off: nothing more is served here
    return;
  }
  n->failed |= 1u << slot;
  if (n->first_error == Errc::kOk) n->first_error = e;
  nexus_->report_fault(slot, n->version, e);
  // Another child may have it: try before anything fails.
  if (!issue_read(parent)) complete(parent, n->first_error);
}

// ---- writes, write-zeroes, unmaps, flushes: every writable child in parallel ----

void NexusChannel::start_fanout(BdevIo* io) {
  NexusIo* n = nio(io);
  n->join.open();
  for (uint32_t s = 0; s < kMaxChildren; ++s) {
    const ChildView::Slot& sl = view_->slots[s];
    if (!sl.present || !sl.write || !refs_[s]) continue;
    if (io->type == IoType::kFlush && !sl.flush) continue;  // nothing volatile to make durable there
    n->sent |= 1u << s;
    if (sl.synced) n->synced |= 1u << s;
    n->join.add();
    issue(io, s);
  }
  if (n->join.close()) {
    // Nothing was sent: no writable child (a faulted nexus), or a flush with nothing volatile anywhere.
    bool any = false;
    for (uint32_t s = 0; s < kMaxChildren; ++s) any |= view_->slots[s].present && view_->slots[s].write && refs_[s];
    complete_later(io, io->type == IoType::kFlush && any ? Errc::kOk : Errc::kIo);
  }
}

void NexusChannel::issue(BdevIo* parent, uint32_t slot) {
  ChildIo* c = pool_.get(parent, this);
  c->index = slot;
  copy_request(c, *parent, &NexusChannel::on_child_done);
  ++outstanding_[slot];
  refs_[slot].submit(&c->io);
}

void NexusChannel::count(uint32_t slot, const BdevIo& child) {
  ChildIoCounters& k = counters_.io[slot];
  if (child.status != Errc::kOk) {
    ++k.errors;
    return;
  }
  switch (child.type) {
    case IoType::kRead:
      ++k.reads;
      k.read_bytes += child.num_blocks * nexus_->props().block_size;
      break;
    case IoType::kWrite:
      ++k.writes;
      k.write_bytes += child.num_blocks * nexus_->props().block_size;
      break;
    default: ++k.other; break;
  }
}

void NexusChannel::on_child_done(BdevIo* cio, void* arg) {
  ChildIo* c = ChildIo::from(arg);
  auto* self = static_cast<NexusChannel*>(c->owner);
  BdevIo* parent = c->parent;
  const uint32_t slot = c->index;
  const Errc e = cio->status;
  if (self->outstanding_[slot] > 0) --self->outstanding_[slot];  // reset if the slot changed child meanwhile
  self->count(slot, *cio);
  self->pool_.put(c);
  if (e == Errc::kAccess) self->nexus_->fenced_off(slot);  // Reservation Conflict: a newer nexus took over
  if (parent->type == IoType::kRead) {
    if (nio(parent)->join.arrive(Errc::kOk)) self->read_done(parent, slot, e);
    return;
  }
  NexusIo* n = nio(parent);
  if (e != Errc::kOk) {
    n->failed |= 1u << slot;
    if (n->first_error == Errc::kOk) n->first_error = e;
    if (e == Errc::kAccess) n->fenced = true;
  }
  if (n->join.arrive(Errc::kOk)) self->fanout_done(parent);
}

void NexusChannel::fanout_done(BdevIo* parent) {
  NexusIo* n = nio(parent);
  if (n->failed == 0) {
    complete(parent, Errc::kOk);
    return;
  }
  if (n->fenced) {
    // A child answered Reservation Conflict: a newer nexus holds the volume. Nothing is retired (the
    // children are healthy; this nexus is not) and the host is told to go elsewhere.
    complete(parent, Errc::kShutdown);
    return;
  }
  const uint32_t failed_synced = n->failed & n->synced;
  const uint32_t ok_synced = n->synced & ~n->failed;
  // Children that were out of sync do not hold current data: faulting them changes nothing a host relies
  // on, so it happens in the background.
  for (uint32_t s = 0; s < kMaxChildren; ++s) {
    if ((n->failed & ~n->synced) & (1u << s)) nexus_->report_fault(s, n->version, n->first_error);
  }
  if (failed_synced == 0) {
    complete(parent, Errc::kOk);
    return;
  }
  if (ok_synced == 0) {
    // No in-sync child took it: the host sees the error (the last healthy child is never retired).
    for (uint32_t s = 0; s < kMaxChildren; ++s) {
      if (failed_synced & (1u << s)) nexus_->report_fault(s, n->version, n->first_error);
    }
    complete(parent, n->first_error);
    return;
  }
  // Some in-sync children took it, some did not: the request completes once the failed ones are retired
  // and the record says so (or fails if that cannot be done).
  ++parked_;
  nexus_->request_retire(reactor_.id(), parent, failed_synced, n->first_error);
}

void NexusChannel::resolve(BdevIo* parent, Errc status) {
  --parked_;
  complete(parent, status);
}

void NexusChannel::finish(BdevIo* parent) {
  --inflight_;
  NexusIo* n = nio(parent);
  if (n->counted) {  // the range lock's count of data-changing requests
    --epoch_writes_[n->epoch];
    n->counted = false;
  }
}

void NexusChannel::complete(BdevIo* parent, Errc e) {
  finish(parent);
  bdev_io_complete(parent, e);
}

void NexusChannel::complete_later(BdevIo* parent, Errc e) {
  finish(parent);
  bdev_io_complete_deferred(parent, e);
}

bool NexusChannel::lock_range(uint64_t lba, uint64_t end) {
  if (epoch_writes_[(epoch_ + 1) & 1] != 0) return false;
  locked_ = true;
  lock_lba_ = lba;
  lock_end_ = end;
  ++epoch_;  // what started before counts in the other epoch, which the locker waits out
  return true;
}

void NexusChannel::unlock_range() {
  locked_ = false;
  BdevIo* io = range_head_;
  range_head_ = range_tail_ = nullptr;
  if (nexus_->failing_held_) return fail_list(io, Errc::kNoDev);  // going away
  while (io) {
    BdevIo* next = nio(io)->next;
    if (nexus_->frozen_.load(std::memory_order_acquire) || nexus_->shutdown_.load(std::memory_order_acquire)) {
      hold(io);  // the nexus froze meanwhile: they wait for the thaw instead
    } else {
      start(io);
    }
    io = next;
  }
}

}  // namespace tern::nexus
