// The block-device layer: one interface for every device, whatever is behind it.
//
// A backend (uring file/disk, RAM, null, the error and delay wrappers, later NVMe/TCP and pool
// replicas) subclasses Bdev and implements four things: which I/O types it supports, how to make its
// per-reactor channel context, how to start an I/O, and how to shut down. Everything else is done once,
// here: range and alignment checks, splitting at the device's max I/O size and boundary, statistics,
// reset semantics, open descriptors, exclusive claims and removal.
//
// Threads:
//  - Bdev objects are created, opened, claimed and destroyed on the primary reactor (via BdevRegistry).
//  - I/O happens on any reactor through that reactor's IoChannel (one per device per reactor,
//    reference-counted, created on first use). A channel and its context belong to one reactor.
//  - Properties are immutable while the device is open, except that rescan() may grow num_blocks (read
//    it with num_blocks() where requests may race with a rescan).
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <coroutine>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "bdev/bdev_io.h"
#include "bdev/child_io.h"
#include "bdev/stats.h"
#include "common/object_pool.h"
#include "common/result.h"
#include "common/small_function.h"
#include "common/uuid.h"
#include "reactor/reactor.h"
#include "reactor/task.h"

namespace tern {

class BdevRegistry;
class BdevDesc;
class ReactorSet;

struct BdevProps {
  std::string name;
  Uuid uuid;
  std::string product;            // backend name: "uring", "malloc", "null", "error", "delay"
  uint32_t block_size = 512;      // 512 or 4096
  uint64_t num_blocks = 0;
  uint32_t max_io_blocks = 0;       // larger requests are split; 0 = no limit
  uint32_t io_boundary_blocks = 0;  // requests are split so none crosses a multiple of this; 0 = none
  uint32_t optimal_io_blocks = 0;   // a hint for callers; 0 = none
  uint32_t buf_align = 1;           // required alignment of buffer addresses and lengths, in bytes
  bool write_cache = false;         // volatile write cache: data is durable only after a flush
  bool unmap_reads_zeroes = false;  // blocks read back as zeros after an unmap

  uint64_t size_bytes() const { return num_blocks * block_size; }
};

// A backend's per-reactor state (a registered file slot, a base device's channel, ...).
class ChannelCtx {
 public:
  virtual ~ChannelCtx() = default;
};

// What a device tells the holders of its descriptors (their BdevEventFn, on the primary reactor).
enum class BdevEvent {
  kRemove,        // it is being destroyed: stop I/O and close the descriptor
  kFaulted,       // a request failed with a device error (EIO, media error, timeout); raised from the
                  // layer, at most one pending at a time per device (a burst of errors is one event)
  kReconnecting,  // a remote device lost its controller: its I/O fails fast (EAGAIN) until kReconnected,
                  // or kRemove once the controller-loss timeout expires
  kReconnected,   // the remote device is back: I/O works again
  kResized,       // its size changed (num_blocks(): it grew)
};
std::string_view bdev_event_name(BdevEvent e);
using BdevEventFn = SmallFunction<void(BdevEvent)>;

class Bdev {
 public:
  virtual ~Bdev();
  const BdevProps& props() const { return props_; }
  const std::string& name() const { return props_.name; }

  virtual bool supports(IoType t) const = 0;
  // Builds the per-reactor context; runs on that reactor.
  virtual Result<std::unique_ptr<ChannelCtx>> create_channel(Reactor& r) = 0;
  // Starts one validated request (in range, aligned, no longer than max_io_blocks, not crossing the
  // boundary). Must complete it later via bdev_io_complete[_deferred].
  virtual void submit(ChannelCtx* ctx, BdevIo* io) = 0;
  // Last words before deletion, on the primary reactor, once no descriptor or channel remains.
  virtual Task<void> shutdown() { co_return; }
  // A forced destroy began (primary reactor): abort whatever the backend holds indefinitely so its
  // channels can drain.
  virtual Task<void> on_remove() { co_return; }
  // Re-reads the size of the medium (a disk or file that was grown) and takes a larger one (never a
  // smaller one). Primary reactor; the I/O path reads the size atomically. Returns the size in bytes.
  // kNotSup for devices whose size cannot change.
  virtual Result<uint64_t> rescan() {
    return Status::Errorf(Errc::kNotSup, "device '{}' cannot change its size", props_.name);
  }
  // rescan() for devices that must ask someone (a remote controller): the same contract, awaited.
  // Primary reactor.
  virtual Task<Result<uint64_t>> rescan_async() { co_return rescan(); }
  // Thin devices: whether the blocks from `offset_blocks` are allocated, and for how many blocks (1 to
  // `max_blocks`) that holds. Unallocated blocks read back as zeros: a copy need not read them. kNotSup:
  // the device cannot tell (callers treat every block as allocated). Primary reactor.
  struct BlockStatus {
    bool allocated = true;
    uint64_t blocks = 0;
  };
  virtual Task<Result<BlockStatus>> block_status(uint64_t offset_blocks, uint64_t max_blocks) {
    (void)offset_blocks;
    (void)max_blocks;
    co_return Status::Errorf(Errc::kNotSup, "device '{}' does not report which blocks are allocated", props_.name);
  }
  // The number of blocks, read atomically (it may grow by rescan() while requests run).
  uint64_t num_blocks() const {
    return std::atomic_ref<uint64_t>(const_cast<uint64_t&>(props_.num_blocks)).load(std::memory_order_relaxed);
  }

  // Open descriptors; the name of the claiming module, or empty.
  size_t open_count() const { return descs_.size(); }
  const std::string& claimed_by() const { return claim_owner_; }

  // Tells every holder of a descriptor (their BdevEventFn, delivered later from the primary reactor's
  // loop, never inside this call). Any thread. Nothing is delivered once the device is destroyed.
  void raise_event(BdevEvent ev);

  // Merged statistics of every reactor's channel, plus those of channels already closed.
  // Must be awaited on a reactor of `set`.
  Task<BdevStats> stats(ReactorSet& set);
  // Zeroes the counters and histograms (requests in flight still count as in flight).
  Task<void> reset_stats(ReactorSet& set);

 protected:
  explicit Bdev(BdevProps props) : props_(std::move(props)) {}
  // For rescan(): a larger size takes effect for requests submitted from now on; holders get kResized.
  void grow_to(uint64_t num_blocks) {
    if (num_blocks > props_.num_blocks) {
      std::atomic_ref<uint64_t>(props_.num_blocks).store(num_blocks, std::memory_order_relaxed);
      raise_event(BdevEvent::kResized);
    }
  }
  BdevProps props_;

 private:
  friend class BdevRegistry;
  friend class BdevDesc;
  friend class IoChannel;
  friend class ChannelRef;

  struct Slot {  // one per reactor, touched only by that reactor
    IoChannel* ch = nullptr;
    uint32_t refs = 0;
  };
  std::vector<Slot> slots_;
  std::atomic<uint32_t> live_channels_{0};
  std::vector<BdevDesc*> descs_;
  std::string claim_owner_;
  BdevDesc* claim_desc_ = nullptr;
  bool claim_exclusive_ = true;
  std::atomic<bool> removing_{false};
  std::atomic<bool> fault_pending_{false};  // a kFaulted event is on its way to the primary
  BdevRegistry* registry_ = nullptr;
  uint64_t registry_id_ = 0;  // unique for the registry's lifetime: events find the device by it
  std::mutex retired_mu_;
  BdevStats retired_;  // stats of channels that have been destroyed
};

class IoChannel {
 public:
  // More resets than this pending on one channel are refused with EBUSY.
  static constexpr size_t kMaxPendingResets = 64;

  Bdev& bdev() const { return *bdev_; }
  Reactor& reactor() const { return *reactor_; }
  ChannelCtx* ctx() const { return ctx_.get(); }
  const BdevStats& stats() const { return stats_; }

 private:
  friend class Bdev;
  friend class ChannelRef;
  friend void bdev_io_complete(BdevIo* io, Errc status);
  friend void bdev_io_complete_deferred(BdevIo* io, Errc status);
  friend class SplitHelper;

  IoChannel(Bdev* b, Reactor* r, std::unique_ptr<ChannelCtx> ctx) : bdev_(b), reactor_(r), ctx_(std::move(ctx)) {}
  void submit(BdevIo* io, bool writable);
  void finish(BdevIo* io);
  static void on_piece_done(BdevIo* piece, void* arg);
  // Frees a channel nobody references once nothing is in flight on it (releasing a channel with
  // requests still in flight is allowed: they complete, then the channel goes).
  static void retire(IoChannel* ch);
  void start_reset(BdevIo* io);
  void maybe_finish_resets();
  void split(BdevIo* io);
  bool splittable(const BdevIo& io) const;
  bool needs_split(const BdevIo& io) const;

  Bdev* bdev_;
  Reactor* reactor_;
  std::unique_ptr<ChannelCtx> ctx_;
  BdevStats stats_;
  bool orphaned_ = false;  // released by every ChannelRef while requests were in flight
  // Reset support: every request records the epoch it was submitted in; a reset opens a new epoch and
  // completes once the old epoch has nothing in flight (and the backend finished its own reset work).
  // Resets complete in order, so a reset that completes has also seen every earlier epoch drain.
  uint8_t epoch_ = 0;
  uint64_t epoch_inflight_[256] = {};
  struct PendingReset {
    BdevIo* io;
    uint8_t epoch;
    bool backend_done;
  };
  std::vector<PendingReset> resets_;
  ChildIoPool pieces_;  // the pieces of split requests
};

// An open handle on a device. Opened and closed on the primary reactor (BdevRegistry::open).
class BdevDesc {
 public:
  ~BdevDesc();  // closes
  Bdev& bdev() const { return *bdev_; }
  bool writable() const { return writable_; }

  // Makes this descriptor the device's only writer: refused while another writable descriptor is
  // open; afterwards, writable opens are refused. `owner` names the claimer in error messages.
  // `exclusive_writer = false` claims the device for one owner only (a second claim is refused) but
  // lets other writers be open: a nexus's local child that the NVMe/TCP target also exposes, whose
  // remote writers the namespace's reservations govern.
  Status claim(std::string owner, bool exclusive_writer = true);
  void release_claim();

 private:
  friend class BdevRegistry;
  friend class ChannelRef;
  BdevDesc(Bdev* b, bool writable, BdevEventFn ev) : bdev_(b), writable_(writable), events_(std::move(ev)) {}
  Bdev* bdev_;
  bool writable_;
  BdevEventFn events_;
};

// This reactor's channel to a device, seen through a descriptor: how I/O is submitted.
// Get it on the reactor that will use it; it releases the channel when destroyed (on the same reactor).
class ChannelRef {
 public:
  static Result<ChannelRef> Get(BdevDesc& desc);
  ChannelRef() = default;
  ChannelRef(ChannelRef&& o) noexcept : desc_(std::exchange(o.desc_, nullptr)), ch_(std::exchange(o.ch_, nullptr)) {}
  ChannelRef& operator=(ChannelRef&& o) noexcept;
  ChannelRef(const ChannelRef&) = delete;
  ChannelRef& operator=(const ChannelRef&) = delete;
  ~ChannelRef() { reset(); }
  void reset();

  explicit operator bool() const { return ch_ != nullptr; }
  Bdev& bdev() const { return ch_->bdev(); }
  IoChannel* channel() const { return ch_; }
  const BdevProps& props() const { return ch_->bdev().props(); }

  // Callback interface: fills io->ch and submits; `io->done` runs later on this reactor.
  void submit(BdevIo* io) { ch_->submit(io, desc_->writable_); }

  // Coroutine interface: `Errc e = co_await ch.read(buf, lba, nblocks);`
  struct IoAwaiter {
    ChannelRef* ref;
    BdevIo io;
    void* buf = nullptr;  // single buffer, bound to io.iov once the awaiter sits in the coroutine frame
    size_t len = 0;
    std::coroutine_handle<> h;
    bool await_ready() const noexcept { return false; }
    void await_suspend(std::coroutine_handle<> hh) {
      h = hh;
      if (buf) io.set_buffer(buf, len);
      io.done = [](BdevIo*, void* arg) { static_cast<IoAwaiter*>(arg)->h.resume(); };
      io.done_arg = this;
      ref->submit(&io);
    }
    Errc await_resume() const noexcept { return io.status; }
  };
  IoAwaiter read(void* buf, uint64_t offset_blocks, uint64_t num_blocks) {
    return make(IoType::kRead, buf, offset_blocks, num_blocks);
  }
  // `fua`: durable when it completes (BdevIo::fua).
  IoAwaiter write(const void* buf, uint64_t offset_blocks, uint64_t num_blocks, bool fua = false) {
    IoAwaiter a = make(IoType::kWrite, const_cast<void*>(buf), offset_blocks, num_blocks);
    a.io.fua = fua;
    return a;
  }
  IoAwaiter readv(iovec* iov, int iovcnt, uint64_t offset_blocks, uint64_t num_blocks);
  IoAwaiter writev(iovec* iov, int iovcnt, uint64_t offset_blocks, uint64_t num_blocks, bool fua = false);
  IoAwaiter flush() { return make(IoType::kFlush, nullptr, 0, 0); }
  IoAwaiter unmap(uint64_t offset_blocks, uint64_t num_blocks) {
    return make(IoType::kUnmap, nullptr, offset_blocks, num_blocks);
  }
  IoAwaiter write_zeroes(uint64_t offset_blocks, uint64_t num_blocks) {
    return make(IoType::kWriteZeroes, nullptr, offset_blocks, num_blocks);
  }
  IoAwaiter reset_device() { return make(IoType::kReset, nullptr, 0, 0); }

 private:
  ChannelRef(BdevDesc* d, IoChannel* ch) : desc_(d), ch_(ch) {}
  IoAwaiter make(IoType t, void* buf, uint64_t offset_blocks, uint64_t num_blocks);
  BdevDesc* desc_ = nullptr;
  IoChannel* ch_ = nullptr;
};

}  // namespace tern
