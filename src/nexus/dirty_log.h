// The nexus's durable logs of where the volume changed (docs/design/rebuild.md, "Dirty bitmaps and the
// activity log"): what makes a returning child's rebuild partial and a crashed nexus's successor
// reconcile a few extents instead of the whole volume.
//
//   - Activity log (AL): the set of 4 MiB extents that may have writes in flight, kept on every in-sync
//     child (a ring of 4 KiB transactions, each holding the whole hot set). A write to a hot extent costs
//     nothing extra; a write to a cold one waits until a transaction naming it is on every in-sync child.
//     An extent leaves the set only after the writes in it have completed (a barrier on every reactor)
//     and the bitmap pages covering it are on disk.
//   - Dirty bitmaps: for each child that left while in sync (up to 8), one bit per region (64 KiB .. 1
//     MiB) of the volume written since. Marked in memory by every write (any reactor); written to the
//     in-sync children when extents leave the AL and at clean shutdown, so "on-disk bitmap ∪ AL" covers
//     everything the child missed even after a crash. Slot tables (two alternating 4 KiB copies) say whose
//     bitmap each slot is and from which generation.
//
// Threads: hot() and DirtyBitmap::mark() on any reactor (atomics only); everything else on the primary
// reactor, the AL writer in the nexus's task scope. The writer never takes the nexus's reconfiguration
// lock; operations that change the in-sync set take this log's lock first (mu()), then that one.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.h"
#include "common/uuid.h"
#include "nexus/layout.h"
#include "reactor/async_mutex.h"
#include "reactor/task.h"

namespace tern::nexus {

class Nexus;

inline constexpr uint64_t kAlExtentBytes = uint64_t(4) << 20;
inline constexpr uint32_t kAlRing = 256;           // transactions in the 1 MiB ring
inline constexpr uint32_t kAlMaxExtents = 1000;    // what one 4 KiB transaction can name
inline constexpr uint64_t kBitmapPageBytes = 4096;  // the unit bitmaps are written in

// One activity-log transaction (4 KiB, little-endian, CRC32C in the last four bytes): magic `TERNALT1`,
// version u32 @8, count u32 @12, nexus uuid @16, sequence u64 @32, generation u64 @40, extent indexes
// u32 from @64. The newest valid one (highest sequence) is a child's hot set.
struct AlTransaction {
  static constexpr uint32_t kVersion = 1;
  Uuid nexus;
  uint64_t sequence = 0;
  uint64_t generation = 0;
  std::vector<uint32_t> extents;

  void Encode(uint8_t* out) const;  // at most kAlMaxExtents extents
  // kNoEnt: none (no magic); kCorruption: bad checksum or count; kNotSup: newer version.
  static Result<AlTransaction> Decode(const uint8_t* in);
};

// The slot table (4 KiB, two alternating copies; the valid one with the higher sequence wins): magic
// `TERNSLT1`, version u32 @8, sequence u64 @16, nexus uuid @24, then 8 entries of 64 bytes from @64:
// child uuid @0, base generation u64 @16, region shift u8 @24, valid u8 @25, created (wall ns) u64 @32.
struct SlotTable {
  static constexpr uint32_t kVersion = 1;
  static constexpr uint32_t kSlots = kMaxChildren;
  struct Entry {
    Uuid child;
    uint64_t base_gen = 0;   // the generation the child held when it left
    uint8_t region_shift = 0;
    bool valid = false;
    uint64_t created_ns = 0;
    friend bool operator==(const Entry&, const Entry&) = default;
  };
  uint64_t sequence = 0;
  Uuid nexus;
  std::array<Entry, kSlots> entries{};

  void Encode(uint8_t* out) const;
  static Result<SlotTable> Decode(const uint8_t* in);
};

// One child's dirty-region bitmap, in memory. mark(): any reactor; the rest: primary.
class DirtyBitmap {
 public:
  DirtyBitmap(uint64_t volume_bytes, uint32_t region_shift);
  void mark(uint64_t offset, uint64_t bytes) {
    if (bytes == 0) return;
    const uint64_t first = offset >> shift_, last = (offset + bytes - 1) >> shift_;
    for (uint64_t r = first; r <= last && r < regions_; ++r) {
      std::atomic<uint64_t>& w = words_[r >> 6];
      const uint64_t bit = uint64_t(1) << (r & 63);
      if (!(w.load(std::memory_order_relaxed) & bit)) w.fetch_or(bit, std::memory_order_relaxed);
    }
  }
  void mark_extent(uint32_t extent);  // every region of a 4 MiB AL extent
  uint32_t region_shift() const { return shift_; }
  uint64_t regions() const { return regions_; }
  uint64_t pages() const { return (nwords_ * 8 + kBitmapPageBytes - 1) / kBitmapPageBytes; }
  void copy_page(uint64_t page, uint8_t* out) const;  // kBitmapPageBytes, zero past the end
  void or_page(uint64_t page, const uint8_t* in);
  std::vector<uint64_t> snapshot() const;
  uint64_t dirty_regions() const;

 private:
  uint32_t shift_;
  uint64_t regions_;
  size_t nwords_;
  std::unique_ptr<std::atomic<uint64_t>[]> words_;
};

// A tracked child: its bitmap and where it lives.
struct DirtySlot {
  Uuid child;
  uint64_t base_gen = 0;
  uint64_t created_ns = 0;
  std::shared_ptr<DirtyBitmap> bitmap;
};

class DirtyLog {
 public:
  struct Stats {
    uint32_t hot_extents = 0, capacity = 0;
    uint64_t transactions = 0, evictions = 0, barriers = 0;
    uint64_t reconciled_bytes = 0;  // at open, after an unclean stop
  };

  DirtyLog(Nexus& nx, uint32_t al_extents, uint32_t region_shift);
  ~DirtyLog();

  // --- any reactor ---
  // Whether every AL extent of [offset, +bytes) is hot (and notes the use, for eviction).
  bool hot(uint64_t offset, uint64_t bytes) const {
    std::atomic<uint8_t>* st = state_.load(std::memory_order_acquire);
    const uint64_t first = offset / kAlExtentBytes, last = (offset + bytes - (bytes ? 1 : 0)) / kAlExtentBytes;
    for (uint64_t e = first; e <= last; ++e) {
      const uint8_t s = st[e].load(std::memory_order_acquire);
      if (s == 0) return false;
      if (s == 1) st[e].store(2, std::memory_order_relaxed);  // referenced since the clock hand passed
    }
    return true;
  }

  // --- primary reactor ---
  // Reactor `reactor` holds writes to [offset, +bytes) until these extents are hot; it is told
  // (NexusChannel::al_ready) when a transaction is written (or failed).
  void want(unsigned reactor, uint64_t offset, uint64_t bytes);

  // At create, after the generations are settled: reads every in-sync child's AL and slot table, takes
  // the union (rules 4, 5), reconciles the AL's extents from one in-sync child to every other online
  // child, folds them into the tracked children's bitmaps, writes the bitmaps and slot table back, and
  // starts an empty AL. Before any host I/O.
  Task<Status> open();
  // Clean shutdown (I/O drained): bitmaps and slot table on every in-sync child, then an empty AL.
  Task<Status> close();

  // A child leaves while in sync: track it from `base_gen`. Zeroes a free slot's bitmap area on the
  // in-sync children (not the child itself) first; the slot table is written by write_slot_table().
  // Returns false (logged) when no slot could be prepared: the child then needs a full rebuild.
  Task<bool> track(const Uuid& child, uint64_t base_gen);
  // The child is current again (or gone): its slot is freed (write_slot_table() makes it durable).
  void untrack(const Uuid& child);
  const DirtySlot* slot_of(const Uuid& child) const;
  // Marks what a tracked child missed (a write that failed on it).
  void mark(const Uuid& child, uint64_t offset, uint64_t bytes);
  // The in-memory bitmaps of tracked children (for the children view).
  std::vector<std::shared_ptr<DirtyBitmap>> bitmaps() const;
  Task<Status> write_slot_table();
  // A child about to become in sync gets the current slot table, bitmaps and AL transaction (call with
  // mu() held, so that no AL transaction is written meanwhile that it would miss).
  Task<Status> seed(const Uuid& child);
  // The volume grew (every child in sync): tracked slots are dropped (their bitmaps are sized for the
  // old volume: those children need full rebuilds), the hot set carries over, and the AL and an empty
  // slot table are written at the new layout's place. With mu() held, before the nexus's size grows.
  Task<Status> resize(const Layout& to);

  AsyncMutex& mu() { return mu_; }
  Stats stats() const;

 private:
  Task<void> writer();
  Task<bool> write_all(const char* what, uint64_t offset, const uint8_t* buf, uint64_t bytes, const Uuid* only = nullptr,
                       const Layout* at = nullptr);
  Task<Status> write_transaction(const Layout* at = nullptr, const Uuid* only = nullptr);
  Task<bool> write_pages(std::shared_ptr<DirtyBitmap> bm, uint32_t slot, uint64_t first_page, uint64_t pages,
                         const Uuid* only = nullptr);
  Task<Status> write_all_bitmaps(const Uuid* only = nullptr);
  // The slot table of the tracked children (but `except`; none when `empty`), and its write to the
  // in-sync children (or `only`) at its alternating copy.
  SlotTable slot_table(uint64_t sequence, const Uuid* except = nullptr, bool empty = false) const;
  Task<bool> put_slot_table(const SlotTable& t, const Uuid* only = nullptr, const Layout* at = nullptr);
  std::vector<uint32_t> pick_victims(size_t n);
  void notify(uint64_t reactors, Errc e);
  Task<void> release(uint64_t reactors, Errc e);
  uint64_t slot_offset(uint32_t slot) const;

  Nexus& nx_;
  uint32_t capacity_;
  uint32_t region_shift_;
  uint64_t extents_ = 0;
  std::atomic<std::atomic<uint8_t>*> state_{nullptr};  // per extent: 0 cold, 1 hot, 2 hot and used lately
  std::vector<std::unique_ptr<std::atomic<uint8_t>[]>> arrays_;  // the current one last (old ones: a resize)
  std::vector<uint32_t> hot_;          // the hot set, in the order the clock hand visits it
  size_t hand_ = 0;
  std::vector<uint32_t> wanted_;       // cold extents some write waits for
  uint64_t waiting_reactors_ = 0;
  bool writing_ = false;
  uint64_t sequence_ = 0;              // of the last transaction written
  uint64_t slot_seq_ = 0;
  std::array<std::optional<DirtySlot>, SlotTable::kSlots> slots_;
  AsyncMutex mu_;
  Stats stats_;
};

}  // namespace tern::nexus
