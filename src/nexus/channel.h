// NexusChannel: one reactor's view of a nexus's children, and the I/O path. Internal to src/nexus.
//
// Threads: created, used and destroyed on its reactor only. The primary reactor reaches it by message
// (Nexus::channels_[reactor], set and cleared here): to take a new children view, to resubmit or fail
// the requests it holds.
#pragma once

#include <array>
#include <memory>

#include "bdev/bdev.h"
#include "bdev/child_io.h"
#include "nexus/nexus.h"

namespace tern::nexus {

// The children as the I/O path sees them: published by the primary, immutable, replaced as a whole.
struct ChildView {
  struct Slot {
    bool present = false;
    bool read = false;    // in sync and online: may serve reads
    bool write = false;   // online (in sync or not): gets every write
    bool synced = false;  // counts for a write's success
    bool local = false;
    bool flush = false;   // the device has a volatile cache worth flushing
    BdevDesc* desc = nullptr;
    uint64_t incarnation = 0;  // changes when the slot gets another child or the child reopens
  };
  uint64_t version = 0;
  std::array<Slot, kMaxChildren> slots{};
  // The dirty bitmaps of children that left while in sync: every data-changing request marks them.
  std::vector<std::shared_ptr<DirtyBitmap>> bitmaps;
};

// Per-request state, in the nexus request's driver_ctx.
struct NexusIo {
  IoJoin join;
  uint32_t sent = 0;     // slots the request went to
  uint32_t failed = 0;   // slots that failed it
  uint32_t synced = 0;   // slots that were in sync when it went out
  Errc first_error = Errc::kOk;
  uint8_t tries = 0;     // reads: children tried
  bool fenced = false;   // a child answered Reservation Conflict
  uint64_t version = 0;  // the view it went out with
  BdevIo* next = nullptr;  // held or parked lists
  uint8_t epoch = 0;       // the range-lock epoch a data-changing request counts in
  bool counted = false;    // ...and whether it does
};
static_assert(sizeof(NexusIo) <= BdevIo::kDriverCtxSize);

class NexusChannel final : public ChannelCtx {
 public:
  NexusChannel(Nexus* nexus, Reactor& r);
  ~NexusChannel() override;

  void submit(BdevIo* io);
  // Takes the current view now (the primary waits for every channel after a change).
  void refresh();
  // Resubmits the requests held while the nexus was frozen.
  void release_held();
  // Fails the requests held (the nexus is going away).
  void fail_held(Errc e);
  // A parked request's retire is resolved: complete it.
  void resolve(BdevIo* parent, Errc status);
  uint64_t inflight() const { return inflight_; }
  // Child requests out now, and nexus requests parked until a retire is recorded.
  uint64_t on_children() const {
    uint64_t n = 0;
    for (uint32_t o : outstanding_) n += o;
    return n;
  }
  uint64_t parked() const { return parked_; }

  // Range lock (a rebuild copying a segment): from now on, new requests that change data in
  // [lba, end) wait here; the caller then waits for old_writes() — the data-changing requests started
  // before the lock, on any range — to reach zero. One lock at a time per nexus.
  // Refuses (false, nothing changed) while requests counted two locks ago are still out — an earlier
  // lock that timed out waiting for them — since they would count as new ones.
  bool lock_range(uint64_t lba, uint64_t end);
  uint64_t old_writes() const { return epoch_writes_[(epoch_ + 1) & 1]; }
  // Resubmits the requests the lock held.
  void unlock_range();
  // Write barrier: the current writes become the old epoch (false while an earlier epoch is not empty).
  bool flip_epoch();
  // The activity log wrote a transaction (or failed, e != kOk): the requests waiting for cold extents
  // go on (or fail, when theirs are still cold).
  void al_ready(Errc e);

 private:
  void hold(BdevIo* io);
  void start(BdevIo* io);
  void start_read(BdevIo* io);
  bool issue_read(BdevIo* io);
  void start_fanout(BdevIo* io);
  void issue(BdevIo* parent, uint32_t slot);
  static void on_child_done(BdevIo* cio, void* arg);
  void read_done(BdevIo* parent, uint32_t slot, Errc e);
  void fanout_done(BdevIo* parent);
  void finish(BdevIo* parent);                  // the bookkeeping of both completions below
  void fail_list(BdevIo* io, Errc e);           // completes a detached list of held requests
  void complete(BdevIo* parent, Errc e);        // from the loop (a completion, a message)
  void complete_later(BdevIo* parent, Errc e);  // from inside submit
  int pick_reader(uint32_t exclude) const;
  void count(uint32_t slot, const BdevIo& child);

  Nexus* nexus_;
  Reactor& reactor_;
  std::shared_ptr<const ChildView> view_;
  uint64_t version_ = 0;
  std::array<ChannelRef, kMaxChildren> refs_;
  std::array<uint64_t, kMaxChildren> incarnation_{};  // of the child each ref belongs to
  std::array<uint32_t, kMaxChildren> outstanding_{};
  Nexus::ReactorCounters& counters_;  // this reactor's, kept by the nexus (they outlive the channel)
  ChildIoPool pool_;
  BdevIo* held_head_ = nullptr;
  BdevIo* held_tail_ = nullptr;
  uint64_t inflight_ = 0;  // nexus requests between submit and completion (held ones included)
  uint64_t parked_ = 0;    // waiting for a retire to be recorded
  // Range lock.
  bool locked_ = false;
  uint64_t lock_lba_ = 0, lock_end_ = 0;
  uint32_t epoch_ = 0;
  std::array<uint64_t, 2> epoch_writes_{};
  BdevIo* range_head_ = nullptr;
  BdevIo* range_tail_ = nullptr;
  // Waiting for the activity log.
  BdevIo* al_head_ = nullptr;
  BdevIo* al_tail_ = nullptr;
};

}  // namespace tern::nexus
