#include "nexus/dirty_log.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <set>

#include "common/aligned_buffer.h"
#include "common/clock.h"
#include "common/crc32c.h"
#include "common/endian.h"
#include "common/log.h"
#include "nexus/channel.h"
#include "nexus/nexus.h"
#include "nexus/nexus_internal.h"
#include "reactor/reactor.h"
#include "reactor/reactor_set.h"
#include "reactor/task_scope.h"

namespace tern::nexus {

// ---------------------------------------------------------------------------------------------------
// Codecs

namespace {
constexpr char kAlMagic[8] = {'T', 'E', 'R', 'N', 'A', 'L', 'T', '1'};
constexpr char kStMagic[8] = {'T', 'E', 'R', 'N', 'S', 'L', 'T', '1'};
constexpr size_t kCrcAt = 4092;
constexpr size_t kAlExtentsAt = 64;
constexpr size_t kStEntriesAt = 64, kStEntrySize = 64;

Uuid load_uuid(const uint8_t* p) {
  std::array<uint8_t, 16> u;
  std::memcpy(u.data(), p, 16);
  return Uuid(u);
}
}  // namespace

void AlTransaction::Encode(uint8_t* out) const {
  std::memset(out, 0, 4096);
  std::memcpy(out, kAlMagic, 8);
  store_le<uint32_t>(out + 8, kVersion);
  const uint32_t n = uint32_t(std::min<size_t>(extents.size(), kAlMaxExtents));
  store_le<uint32_t>(out + 12, n);
  std::memcpy(out + 16, nexus.bytes().data(), 16);
  store_le<uint64_t>(out + 32, sequence);
  store_le<uint64_t>(out + 40, generation);
  for (uint32_t i = 0; i < n; ++i) store_le<uint32_t>(out + kAlExtentsAt + 4 * i, extents[i]);
  store_le<uint32_t>(out + kCrcAt, crc32c(out, kCrcAt));
}

Result<AlTransaction> AlTransaction::Decode(const uint8_t* in) {
  if (std::memcmp(in, kAlMagic, 8) != 0) return Status(Errc::kNoEnt, "no activity-log transaction");
  if (load_le<uint32_t>(in + kCrcAt) != crc32c(in, kCrcAt)) {
    return Status(Errc::kCorruption, "activity-log transaction fails its checksum");
  }
  const uint32_t version = load_le<uint32_t>(in + 8);
  if (version > kVersion) {
    return Status::Errorf(Errc::kNotSup, "activity-log transaction version {}; this program reads up to {}", version, kVersion);
  }
  const uint32_t n = load_le<uint32_t>(in + 12);
  if (n > kAlMaxExtents) return Status::Errorf(Errc::kCorruption, "activity-log transaction names {} extents", n);
  AlTransaction t;
  t.nexus = load_uuid(in + 16);
  t.sequence = load_le<uint64_t>(in + 32);
  t.generation = load_le<uint64_t>(in + 40);
  t.extents.resize(n);
  for (uint32_t i = 0; i < n; ++i) t.extents[i] = load_le<uint32_t>(in + kAlExtentsAt + 4 * i);
  return t;
}

void SlotTable::Encode(uint8_t* out) const {
  std::memset(out, 0, 4096);
  std::memcpy(out, kStMagic, 8);
  store_le<uint32_t>(out + 8, kVersion);
  store_le<uint64_t>(out + 16, sequence);
  std::memcpy(out + 24, nexus.bytes().data(), 16);
  for (uint32_t i = 0; i < kSlots; ++i) {
    uint8_t* e = out + kStEntriesAt + i * kStEntrySize;
    const Entry& x = entries[i];
    if (!x.valid) continue;
    std::memcpy(e, x.child.bytes().data(), 16);
    store_le<uint64_t>(e + 16, x.base_gen);
    e[24] = x.region_shift;
    e[25] = 1;
    store_le<uint64_t>(e + 32, x.created_ns);
  }
  store_le<uint32_t>(out + kCrcAt, crc32c(out, kCrcAt));
}

Result<SlotTable> SlotTable::Decode(const uint8_t* in) {
  if (std::memcmp(in, kStMagic, 8) != 0) return Status(Errc::kNoEnt, "no slot table");
  if (load_le<uint32_t>(in + kCrcAt) != crc32c(in, kCrcAt)) return Status(Errc::kCorruption, "slot table fails its checksum");
  const uint32_t version = load_le<uint32_t>(in + 8);
  if (version > kVersion) {
    return Status::Errorf(Errc::kNotSup, "slot table version {}; this program reads up to {}", version, kVersion);
  }
  SlotTable t;
  t.sequence = load_le<uint64_t>(in + 16);
  t.nexus = load_uuid(in + 24);
  for (uint32_t i = 0; i < kSlots; ++i) {
    const uint8_t* e = in + kStEntriesAt + i * kStEntrySize;
    Entry& x = t.entries[i];
    x.valid = e[25] == 1;
    if (!x.valid) continue;
    x.child = load_uuid(e);
    x.base_gen = load_le<uint64_t>(e + 16);
    x.region_shift = e[24];
    x.created_ns = load_le<uint64_t>(e + 32);
    if (x.region_shift < 16 || x.region_shift > 20) {
      return Status::Errorf(Errc::kCorruption, "slot table entry {}: region shift {} (16..20)", i, x.region_shift);
    }
  }
  return t;
}

// ---------------------------------------------------------------------------------------------------
// DirtyBitmap

DirtyBitmap::DirtyBitmap(uint64_t volume_bytes, uint32_t region_shift)
    : shift_(region_shift),
      regions_((volume_bytes + (uint64_t(1) << region_shift) - 1) >> region_shift),
      nwords_((regions_ + 63) / 64),
      words_(new std::atomic<uint64_t>[std::max<size_t>(nwords_, 1)]) {
  for (size_t i = 0; i < std::max<size_t>(nwords_, 1); ++i) words_[i].store(0, std::memory_order_relaxed);
}

void DirtyBitmap::mark_extent(uint32_t extent) { mark(uint64_t(extent) * kAlExtentBytes, kAlExtentBytes); }

void DirtyBitmap::copy_page(uint64_t page, uint8_t* out) const {
  std::memset(out, 0, kBitmapPageBytes);
  const size_t first = page * (kBitmapPageBytes / 8);
  for (size_t i = 0; i < kBitmapPageBytes / 8 && first + i < nwords_; ++i) {
    store_le<uint64_t>(out + 8 * i, words_[first + i].load(std::memory_order_relaxed));
  }
}

void DirtyBitmap::or_page(uint64_t page, const uint8_t* in) {
  const size_t first = page * (kBitmapPageBytes / 8);
  for (size_t i = 0; i < kBitmapPageBytes / 8 && first + i < nwords_; ++i) {
    uint64_t v = load_le<uint64_t>(in + 8 * i);
    if (first + i == nwords_ - 1 && regions_ % 64) v &= (uint64_t(1) << (regions_ % 64)) - 1;  // past the volume: no
    if (v) words_[first + i].fetch_or(v, std::memory_order_relaxed);
  }
}

std::vector<uint64_t> DirtyBitmap::snapshot() const {
  std::vector<uint64_t> s(nwords_);
  for (size_t i = 0; i < nwords_; ++i) s[i] = words_[i].load(std::memory_order_relaxed);
  return s;
}

uint64_t DirtyBitmap::dirty_regions() const {
  uint64_t n = 0;
  for (size_t i = 0; i < nwords_; ++i) n += uint64_t(__builtin_popcountll(words_[i].load(std::memory_order_relaxed)));
  return n;
}

// ---------------------------------------------------------------------------------------------------
// DirtyLog

DirtyLog::DirtyLog(Nexus& nx, uint32_t al_extents, uint32_t region_shift)
    : nx_(nx), capacity_(std::clamp<uint32_t>(al_extents, 1, kAlMaxExtents)), region_shift_(region_shift) {
  arrays_.push_back(std::make_unique<std::atomic<uint8_t>[]>(1));
  arrays_.back()[0].store(0);
  state_.store(arrays_.back().get(), std::memory_order_release);
}

DirtyLog::~DirtyLog() = default;

uint64_t DirtyLog::slot_offset(uint32_t slot) const { return nx_.layout_.bitmaps + slot * nx_.layout_.bitmap_slot_bytes; }

DirtyLog::Stats DirtyLog::stats() const {
  Stats s = stats_;
  s.hot_extents = uint32_t(hot_.size());
  s.capacity = capacity_;
  return s;
}

void DirtyLog::want(unsigned reactor, uint64_t offset, uint64_t bytes) {
  std::atomic<uint8_t>* st = state_.load(std::memory_order_acquire);
  const uint64_t first = offset / kAlExtentBytes, last = (offset + std::max<uint64_t>(bytes, 1) - 1) / kAlExtentBytes;
  for (uint64_t e = first; e <= last && e < extents_; ++e) {
    if (st[e].load(std::memory_order_acquire) == 0 &&
        std::find(wanted_.begin(), wanted_.end(), uint32_t(e)) == wanted_.end()) {
      wanted_.push_back(uint32_t(e));
    }
  }
  waiting_reactors_ |= uint64_t(1) << reactor;
  if (writing_) return;  // the writer running picks them up
  writing_ = true;
  if (!nx_.tasks_.spawn(writer())) {
    writing_ = false;
    notify(std::exchange(waiting_reactors_, 0), Errc::kShutdown);
  }
}

Task<void> DirtyLog::release(uint64_t reactors, Errc e) {
  // Waited for: the writes released here are started (and counted as in flight) before the next round
  // may pick victims, so an extent just added cannot be evicted again before its writes went out (with
  // more extents wanted at once than the log holds, that would go round for ever).
  ReactorSet& set = nx_.registry_.reactors();
  for (unsigned r = 0; reactors; ++r, reactors >>= 1) {
    if (!(reactors & 1)) continue;
    Nexus* nx = &nx_;
    co_await set.submit_to(r, [nx, r, e] {
      if (NexusChannel* ch = nx->channels_[r]) ch->al_ready(e);
    });
  }
}

void DirtyLog::notify(uint64_t reactors, Errc e) {
  for (unsigned r = 0; reactors; ++r, reactors >>= 1) {
    if (!(reactors & 1)) continue;
    Nexus* nx = &nx_;
    nx_.registry_.reactors().post(r, [nx, r, e] {
      if (NexusChannel* ch = nx->channels_[r]) ch->al_ready(e);
    });
  }
}

std::vector<uint32_t> DirtyLog::pick_victims(size_t n) {
  std::atomic<uint8_t>* st = state_.load(std::memory_order_acquire);
  std::vector<uint32_t> v;
  size_t steps = 0;
  while (v.size() < n && !hot_.empty()) {
    if (hand_ >= hot_.size()) hand_ = 0;
    const uint32_t e = hot_[hand_];
    uint8_t expect = 1;
    // Second chance for an extent used since the hand last passed (after three rounds: anything goes).
    if (steps < 3 * hot_.size() && st[e].load(std::memory_order_acquire) == 2) {
      st[e].store(1, std::memory_order_relaxed);
      ++hand_;
      ++steps;
      continue;
    }
    if (!st[e].compare_exchange_strong(expect, 0, std::memory_order_acq_rel)) {
      // Used just now (2): cold anyway once the barrier has passed; writes after this see it cold.
      st[e].store(0, std::memory_order_release);
    }
    v.push_back(e);
    hot_.erase(hot_.begin() + long(hand_));
    ++steps;
  }
  return v;
}

Task<void> DirtyLog::writer() {
  auto g = co_await mu_.lock();
  while (!wanted_.empty()) {
    std::atomic<uint8_t>* st = state_.load(std::memory_order_acquire);
    std::vector<uint32_t> add;
    for (uint32_t e : wanted_) {
      if (e < extents_ && st[e].load(std::memory_order_acquire) == 0 && add.size() < capacity_) add.push_back(e);
    }
    // What is not taken this round stays wanted (its writers ask again when told).
    wanted_.erase(std::remove_if(wanted_.begin(), wanted_.end(),
                                 [&](uint32_t e) { return std::find(add.begin(), add.end(), e) != add.end() || e >= extents_ ||
                                                          st[e].load(std::memory_order_acquire) != 0; }),
                  wanted_.end());
    const uint64_t reactors = std::exchange(waiting_reactors_, 0);
    if (add.empty()) {
      co_await release(reactors, Errc::kOk);
      continue;
    }
    Errc result = Errc::kOk;
    std::vector<uint32_t> victims;
    if (hot_.size() + add.size() > capacity_) {
      // Evict more than needed (an eighth of the log) so that barriers stay rare.
      const size_t need = hot_.size() + add.size() - capacity_;
      victims = pick_victims(std::min(hot_.size(), need + capacity_ / 8));
      // Every write in a victim extent that started before it went cold finishes first; then the bits
      // those writes set are written, then a transaction without the extent may be.
      ++stats_.barriers;
      Status b = co_await nx_.write_barrier(60'000'000'000ull);
      bool flushed = b.ok();
      if (flushed) {
        for (uint32_t s = 0; s < SlotTable::kSlots && flushed; ++s) {
          if (!slots_[s]) continue;
          std::shared_ptr<DirtyBitmap> bm = slots_[s]->bitmap;  // (a retire may change the slots meanwhile)
          std::set<uint64_t> pages;
          for (uint32_t e : victims) {
            const uint64_t first = (uint64_t(e) * kAlExtentBytes) >> bm->region_shift();
            const uint64_t last = ((uint64_t(e) + 1) * kAlExtentBytes - 1) >> bm->region_shift();
            for (uint64_t p = first / (kBitmapPageBytes * 8); p <= last / (kBitmapPageBytes * 8); ++p) pages.insert(p);
          }
          for (uint64_t p : pages) {
            if (p >= bm->pages()) continue;
            if (!co_await write_pages(bm, s, p, 1)) {
              flushed = false;
              break;
            }
          }
        }
      }
      if (!flushed) {
        // The victims stay in the log (their bits may not be on disk): back to hot, nothing added.
        for (uint32_t e : victims) {
          st[e].store(1, std::memory_order_release);
          hot_.push_back(e);
        }
        TLOG_RL_ERROR("nexus", 1000, "nexus {}: activity log: could not evict {} extents ({}); writes to new extents fail",
                      nx_.name(), victims.size(), b.ok() ? "bitmap pages not written" : b.message());
        co_await release(reactors, Errc::kIo);
        continue;
      }
      stats_.evictions += victims.size();
    }
    const size_t before = hot_.size();
    hot_.insert(hot_.end(), add.begin(), add.end());
    Status w = co_await write_transaction();
    if (!w.ok()) {
      hot_.resize(before);  // the transaction is not on any in-sync child: the extents stay cold
      result = w.code();
      TLOG_RL_ERROR("nexus", 1000, "nexus {}: activity log: {}", nx_.name(), w);
    } else {
      for (uint32_t e : add) st[e].store(2, std::memory_order_release);  // new: a second chance first
    }
    co_await release(reactors, result);
  }
  writing_ = false;
}

Task<bool> DirtyLog::write_all(const char* what, uint64_t offset, const uint8_t* buf, uint64_t bytes, const Uuid* only,
                               const Layout* at) {
  const uint32_t bs = (at ? *at : nx_.layout_).block_size;
  struct Target {
    Nexus::Child* c;
    uint32_t slot;
    uint64_t incarnation;
    std::string uri;
  };
  std::vector<Target> targets;
  for (auto& c : nx_.children_) {
    if (only ? c->uuid != *only : (c->state != ChildState::kOnline || c->sync != SyncState::kSynced)) continue;
    if (c->desc) targets.push_back({c.get(), c->slot, c->incarnation, c->uri});
  }
  if (targets.empty()) co_return only == nullptr;  // nobody in sync: nothing to keep it on
  std::vector<Task<Errc>> ios;
  for (Target& t : targets) {
    ios.push_back(t.c->io(IoType::kWrite, const_cast<uint8_t*>(buf), offset / bs, bytes / bs, /*fua=*/true));
  }
  std::vector<Errc> res = co_await when_all(std::move(ios));
  size_t ok = 0;
  bool fenced = false;
  for (size_t i = 0; i < res.size(); ++i) {
    if (res[i] == Errc::kOk) {
      ++ok;
      continue;
    }
    if (res[i] == Errc::kAccess) {
      // Reservation Conflict: a newer nexus holds the volume. Not a failed child to retire (that would
      // record the current replicas as faulted): this nexus is fenced off and takes nothing more.
      TLOG_RL_WARN("nexus", 1000, "nexus {}: the {} write to child {} met a reservation conflict: fenced off", nx_.name(), what,
                   targets[i].uri);
      nx_.fenced_off(targets[i].slot);
      fenced = true;
      continue;
    }
    TLOG_RL_WARN("nexus", 1000, "nexus {}: writing the {} to child {} failed: {}", nx_.name(), what, targets[i].uri,
                 errc_describe(res[i]));
    // A child that cannot keep the log is retired like one that failed a host write (found again by slot
    // and incarnation: the one written to may be gone by now).
    if (only) continue;
    for (auto& c : nx_.children_) {
      if (c->slot == targets[i].slot && c->incarnation == targets[i].incarnation && c->sync == SyncState::kSynced) {
        nx_.report_fault(c->slot, 0, res[i]);
      }
    }
  }
  co_return ok > 0 && !fenced;
}

Task<Status> DirtyLog::write_transaction(const Layout* at, const Uuid* only) {
  AlTransaction t;
  t.nexus = nx_.uuid();
  t.sequence = only ? sequence_ : sequence_ + 1;
  t.generation = nx_.generation_;
  t.extents = hot_;
  AlignedBuffer buf(4096, 4096);
  t.Encode(buf.data());
  const Layout& l = at ? *at : nx_.layout_;
  const uint64_t off = l.activity_log + (t.sequence % kAlRing) * 4096;
  if (!co_await write_all("activity log", off, buf.data(), 4096, only, at)) {
    co_return Status(Errc::kIo, "no in-sync child took the activity-log transaction");
  }
  sequence_ = t.sequence;
  ++stats_.transactions;
  co_return Status::Ok();
}

Task<bool> DirtyLog::write_pages(std::shared_ptr<DirtyBitmap> bm, uint32_t slot, uint64_t first_page, uint64_t pages,
                                 const Uuid* only) {
  AlignedBuffer buf(kBitmapPageBytes * std::min<uint64_t>(pages, 64), 4096);
  for (uint64_t p = first_page; p < first_page + pages;) {
    const uint64_t n = std::min<uint64_t>(first_page + pages - p, 64);
    for (uint64_t i = 0; i < n; ++i) bm->copy_page(p + i, buf.data() + i * kBitmapPageBytes);
    if (!co_await write_all("dirty bitmap", slot_offset(slot) + p * kBitmapPageBytes, buf.data(), n * kBitmapPageBytes,
                            only)) {
      co_return false;
    }
    p += n;
  }
  co_return true;
}

Task<Status> DirtyLog::write_all_bitmaps(const Uuid* only) {
  for (uint32_t s = 0; s < SlotTable::kSlots; ++s) {
    if (!slots_[s] || (only && slots_[s]->child == *only)) continue;
    std::shared_ptr<DirtyBitmap> bm = slots_[s]->bitmap;
    const Uuid child = slots_[s]->child;
    if (!co_await write_pages(bm, s, 0, bm->pages(), only)) {
      co_return Status::Errorf(Errc::kIo, "the dirty bitmap of child {} could not be written", child.ToString());
    }
  }
  co_return Status::Ok();
}

SlotTable DirtyLog::slot_table(uint64_t sequence, const Uuid* except, bool empty) const {
  SlotTable t;
  t.nexus = nx_.uuid();
  t.sequence = sequence;
  for (uint32_t s = 0; s < SlotTable::kSlots && !empty; ++s) {
    if (!slots_[s] || (except && slots_[s]->child == *except)) continue;
    t.entries[s] = {slots_[s]->child, slots_[s]->base_gen, uint8_t(slots_[s]->bitmap->region_shift()), true,
                    slots_[s]->created_ns};
  }
  return t;
}

Task<bool> DirtyLog::put_slot_table(const SlotTable& t, const Uuid* only, const Layout* at) {
  AlignedBuffer buf(4096, 4096);
  t.Encode(buf.data());
  // Copy A (8 KiB) for even sequences, B (12 KiB) for odd ones: a torn write leaves the other.
  const uint64_t off = (at ? *at : nx_.layout_).meta_offset + (t.sequence % 2 ? 12 : 8) * 1024;
  co_return co_await write_all("slot table", off, buf.data(), 4096, only, at);
}

Task<Status> DirtyLog::write_slot_table() {
  const SlotTable t = slot_table(++slot_seq_);  // (named: GCC 12 and temporaries in co_await expressions)
  if (!co_await put_slot_table(t)) co_return Status(Errc::kIo, "the slot table could not be written");
  co_return Status::Ok();
}

const DirtySlot* DirtyLog::slot_of(const Uuid& child) const {
  for (auto& s : slots_)
    if (s && s->child == child) return &*s;
  return nullptr;
}

void DirtyLog::mark(const Uuid& child, uint64_t offset, uint64_t bytes) {
  for (auto& s : slots_)
    if (s && s->child == child) s->bitmap->mark(offset, bytes);
}

std::vector<std::shared_ptr<DirtyBitmap>> DirtyLog::bitmaps() const {
  std::vector<std::shared_ptr<DirtyBitmap>> v;
  for (auto& s : slots_)
    if (s) v.push_back(s->bitmap);
  return v;
}

void DirtyLog::untrack(const Uuid& child) {
  for (auto& s : slots_)
    if (s && s->child == child) s.reset();
}

Task<bool> DirtyLog::track(const Uuid& child, uint64_t base_gen) {
  untrack(child);
  uint32_t slot = SlotTable::kSlots;
  for (uint32_t s = 0; s < SlotTable::kSlots; ++s) {
    if (!slots_[s]) {
      slot = s;
      break;
    }
  }
  if (slot == SlotTable::kSlots) {
    // Every slot is taken: the longest-absent child loses its log (it will need a full rebuild).
    slot = 0;
    for (uint32_t s = 1; s < SlotTable::kSlots; ++s)
      if (slots_[s]->created_ns < slots_[slot]->created_ns) slot = s;
    TLOG_WARN("nexus", "nexus {}: every dirty-region slot is taken; child {} loses its log (full rebuild when it returns)",
              nx_.name(), slots_[slot]->child.ToString());
    slots_[slot].reset();
  }
  DirtySlot d;
  d.child = child;
  d.base_gen = base_gen;
  d.created_ns = wall_clock_ns();
  d.bitmap = std::make_shared<DirtyBitmap>(nx_.layout_.volume_bytes, region_shift_);
  // The slot's area may hold an earlier child's bits: zeroed on the in-sync children before the bitmap
  // counts (stale bits would only cost copying, never data; zeroing keeps partial rebuilds small).
  const uint64_t bytes = d.bitmap->pages() * kBitmapPageBytes;
  const uint32_t bs = nx_.layout_.block_size;
  for (auto& c : nx_.children_) {
    if (c->uuid == child || c->state != ChildState::kOnline || c->sync != SyncState::kSynced || !c->desc) continue;
    Errc e = Errc::kNotSup;
    if (c->desc->bdev().supports(IoType::kWriteZeroes)) {
      e = co_await c->io(IoType::kWriteZeroes, nullptr, slot_offset(slot) / bs, bytes / bs);
    }
    if (e != Errc::kOk) {
      AlignedBuffer z(std::min<uint64_t>(bytes, kMiB), 4096, /*zero=*/true);
      for (uint64_t off = 0; off < bytes;) {
        const uint64_t n = std::min<uint64_t>(bytes - off, kMiB);
        e = co_await c->io(IoType::kWrite, z.data(), (slot_offset(slot) + off) / bs, n / bs);
        if (e != Errc::kOk) break;
        off += n;
      }
    }
    if (e != Errc::kOk) {
      TLOG_WARN("nexus", "nexus {}: clearing dirty-bitmap slot {} on child {}: {}", nx_.name(), slot, c->uri,
                errc_describe(e));
    }
  }
  slots_[slot] = std::move(d);
  co_return true;
}

Task<Status> DirtyLog::seed(const Uuid& child) {
  if (Status st = co_await write_all_bitmaps(&child); !st.ok()) co_return st;
  const SlotTable t = slot_table(slot_seq_, &child);
  if (!co_await put_slot_table(t, &child)) {
    co_return Status(Errc::kIo, "writing the slot table failed");
  }
  co_return co_await write_transaction(nullptr, &child);
}

Task<Status> DirtyLog::open() {
  auto g = co_await mu_.lock();
  const Layout& l = nx_.layout_;
  const uint32_t bs = l.block_size;
  extents_ = (l.volume_bytes + kAlExtentBytes - 1) / kAlExtentBytes;
  arrays_.push_back(std::make_unique<std::atomic<uint8_t>[]>(extents_));
  for (uint64_t e = 0; e < extents_; ++e) arrays_.back()[e].store(0, std::memory_order_relaxed);
  state_.store(arrays_.back().get(), std::memory_order_release);

  // 1. What every in-sync child says: its newest AL transaction and its newest slot table.
  std::set<uint32_t> active;
  struct Found {
    uint64_t base_gen;
    uint8_t shift;
    std::vector<std::pair<Nexus::Child*, uint32_t>> where;
  };
  std::map<Uuid, Found> found;
  AlignedBuffer ring(Layout::kActivityLogSize, 4096);
  for (auto& c : nx_.children_) {
    if (c->state != ChildState::kOnline || c->sync != SyncState::kSynced || !c->desc) continue;
    std::optional<AlTransaction> newest;
    for (uint64_t off = 0; off < Layout::kActivityLogSize; off += 128 << 10) {
      Errc e = co_await c->io(IoType::kRead, ring.data() + off, (l.activity_log + off) / bs, (128 << 10) / bs);
      if (e != Errc::kOk) co_return Status::Errorf(e, "child {}: reading its activity log: {}", c->uri, errc_describe(e));
    }
    for (uint32_t i = 0; i < kAlRing; ++i) {
      auto t = AlTransaction::Decode(ring.data() + i * 4096);
      if (!t.ok() || t->nexus != nx_.uuid()) continue;
      sequence_ = std::max(sequence_, t->sequence);
      if (!newest || t->sequence > newest->sequence) newest = std::move(*t);
    }
    if (newest) {
      for (uint32_t e : newest->extents)
        if (e < extents_) active.insert(e);
    }
    AlignedBuffer tb(8192, 4096);
    Errc e = co_await c->io(IoType::kRead, tb.data(), (l.meta_offset + 8192) / bs, 8192 / bs);
    if (e != Errc::kOk) co_return Status::Errorf(e, "child {}: reading its slot table: {}", c->uri, errc_describe(e));
    std::optional<SlotTable> st;
    for (int i = 0; i < 2; ++i) {
      auto t = SlotTable::Decode(tb.data() + i * 4096);
      if (t.ok() && t->nexus == nx_.uuid() && (!st || t->sequence > st->sequence)) st = std::move(*t);
    }
    if (!st) continue;
    slot_seq_ = std::max(slot_seq_, st->sequence);
    for (uint32_t s = 0; s < SlotTable::kSlots; ++s) {
      const SlotTable::Entry& x = st->entries[s];
      if (!x.valid) continue;
      Nexus::Child* mine = nx_.find_child(x.child);
      if (mine && mine->sync == SyncState::kSynced) continue;  // current: nothing to track
      auto it = found.find(x.child);
      if (it == found.end() || it->second.base_gen < x.base_gen) {
        found[x.child] = Found{x.base_gen, x.region_shift, {{c.get(), s}}};
      } else if (it->second.base_gen == x.base_gen && it->second.shift == x.region_shift) {
        it->second.where.emplace_back(c.get(), s);  // rule 5: the union of every copy
      }
    }
  }

  // 2. The tracked children's bitmaps: the union of their copies, plus the AL's extents (writes that
  //    may have been in flight, whose bits may not have reached the disk).
  uint32_t next = 0;
  AlignedBuffer page(kBitmapPageBytes * 64, 4096);
  for (auto& [child, f] : found) {
    if (next == SlotTable::kSlots) break;
    DirtySlot d;
    d.child = child;
    d.base_gen = f.base_gen;
    d.created_ns = wall_clock_ns();
    d.bitmap = std::make_shared<DirtyBitmap>(l.volume_bytes, f.shift);
    bool ok = true;
    for (auto& [c, s] : f.where) {
      const uint64_t pages = d.bitmap->pages();
      for (uint64_t p = 0; p < pages && ok;) {
        const uint64_t n = std::min<uint64_t>(pages - p, 64);
        Errc e = co_await c->io(IoType::kRead, page.data(), (slot_offset(s) + p * kBitmapPageBytes) / bs,
                                n * kBitmapPageBytes / bs);
        if (e != Errc::kOk) {
          TLOG_WARN("nexus", "nexus {}: reading child {}'s dirty bitmap from {}: {}; it will need a full rebuild", nx_.name(),
                    child.ToString(), c->uri, errc_describe(e));
          ok = false;
          break;
        }
        for (uint64_t i = 0; i < n; ++i) d.bitmap->or_page(p + i, page.data() + i * kBitmapPageBytes);
        p += n;
      }
    }
    if (!ok) continue;
    for (uint32_t e : active) d.bitmap->mark_extent(e);
    slots_[next++] = std::move(d);
  }

  // 3. Reconcile: the AL's extents may differ between the children (writes in flight at the stop):
  //    copied from one in-sync child to every other online child before any host I/O, 1 MiB chunks,
  //    kReconcileDepth at once.
  if (!active.empty()) {
    const uint64_t t0 = now_ns();
    constexpr size_t kReconcileDepth = 8;
    std::vector<std::pair<uint64_t, uint64_t>> todo;  // (offset, bytes)
    for (uint32_t e : active) {
      const uint64_t from = uint64_t(e) * kAlExtentBytes, to = std::min(from + kAlExtentBytes, l.volume_bytes);
      for (uint64_t off = from; off < to; off += kMiB) todo.emplace_back(off, std::min<uint64_t>(kMiB, to - off));
    }
    AlignedBuffer bufs(kMiB * kReconcileDepth, 4096);
    uint32_t bad_sources = 0;
    auto chunk = [](DirtyLog* self, Nexus::Child* src, uint64_t off, uint64_t n, uint8_t* buf, uint32_t bs) -> Task<Errc> {
      Errc e = co_await src->io(IoType::kRead, buf, off / bs, n / bs);
      if (e != Errc::kOk) co_return e;
      for (auto& c : self->nx_.children_) {
        if (c.get() == src || c->state != ChildState::kOnline || !c->desc) continue;
        Errc w = co_await c->io(IoType::kWrite, buf, off / bs, n / bs);
        if (w != Errc::kOk && c->sync == SyncState::kSynced) {
          TLOG_WARN("nexus", "nexus {}: reconcile: writing {} failed ({}); it is out of sync now", self->nx_.name(),
                    c->uri, errc_describe(w));
          c->sync = SyncState::kOutOfSync;
        }
      }
      co_return Errc::kOk;
    };
    for (size_t next = 0; next < todo.size();) {
      Nexus::Child* src = nullptr;
      for (auto& c : nx_.children_) {
        if (c->state != ChildState::kOnline || c->sync != SyncState::kSynced || !c->desc || (bad_sources & (1u << c->slot)))
          continue;
        if (!src || (c->local && !src->local)) src = c.get();
      }
      if (!src) co_return Status(Errc::kIo, "reconciling the activity log's extents: no in-sync child could be read");
      const size_t n = std::min(kReconcileDepth, todo.size() - next);
      std::vector<Task<Errc>> wave;
      for (size_t k = 0; k < n; ++k) {
        wave.push_back(chunk(this, src, todo[next + k].first, todo[next + k].second, bufs.data() + k * kMiB, bs));
      }
      std::vector<Errc> res = co_await when_all(std::move(wave));
      size_t done = 0;
      while (done < n && res[done] == Errc::kOk) ++done;
      for (size_t k = 0; k < done; ++k) stats_.reconciled_bytes += todo[next + k].second;
      if (done < n) {
        // The source failed a read: out of sync, and the chunks from the failed one on go again from another.
        TLOG_WARN("nexus", "nexus {}: reconcile: reading {} failed ({}); it is out of sync now", nx_.name(), src->uri,
                  errc_describe(res[done]));
        bad_sources |= 1u << src->slot;
        src->sync = SyncState::kOutOfSync;
      }
      next += done;
    }
    for (auto& c : nx_.children_) {
      if (c->state == ChildState::kOnline && c->desc && c->flushable) co_await c->io(IoType::kFlush, nullptr, 0, 0);
    }
    TLOG_WARN("nexus", "nexus {}: unclean stop: reconciled {} activity-log extents ({} bytes) in {} ms", nx_.name(),
              active.size(), stats_.reconciled_bytes, (now_ns() - t0) / 1'000'000);
  }

  // 4. The union written back (slot numbers may have differed between children), then an empty AL: from
  //    here the bitmaps alone say what the tracked children missed.
  if (Status st = co_await write_all_bitmaps(); !st.ok()) co_return st;
  if (Status st = co_await write_slot_table(); !st.ok()) co_return st;
  co_return co_await write_transaction();
}

Task<Status> DirtyLog::close() {
  auto g = co_await mu_.lock();
  Status st = co_await write_all_bitmaps();
  if (st.ok()) st = co_await write_slot_table();
  if (!st.ok()) co_return st;  // the AL stays: the next nexus reconciles it and folds it into the bitmaps
  std::atomic<uint8_t>* s = state_.load(std::memory_order_acquire);
  for (uint32_t e : hot_) s[e].store(0, std::memory_order_release);
  hot_.clear();
  co_return co_await write_transaction();
}

Task<Status> DirtyLog::resize(const Layout& to) {
  for (auto& s : slots_) {
    if (!s) continue;
    TLOG_WARN("nexus", "nexus {}: the volume grows: child {}'s dirty-region log is dropped (full rebuild when it returns)",
              nx_.name(), s->child.ToString());
    s.reset();
  }
  const uint64_t n = (to.volume_bytes + kAlExtentBytes - 1) / kAlExtentBytes;
  auto a = std::make_unique<std::atomic<uint8_t>[]>(n);
  std::atomic<uint8_t>* old = state_.load(std::memory_order_acquire);
  for (uint64_t e = 0; e < n; ++e) a[e].store(e < extents_ ? old[e].load(std::memory_order_acquire) : 0);
  // The hot set at the new place first (the old place becomes volume space).
  if (Status st = co_await write_transaction(&to); !st.ok()) co_return st;
  const SlotTable t = slot_table(++slot_seq_, nullptr, /*empty=*/true);
  if (!co_await put_slot_table(t, nullptr, &to)) {
    co_return Status(Errc::kIo, "the slot table could not be written at the new size");
  }
  extents_ = n;
  arrays_.push_back(std::move(a));
  state_.store(arrays_.back().get(), std::memory_order_release);  // old arrays stay: a reader may hold one
  co_return Status::Ok();
}

}  // namespace tern::nexus
