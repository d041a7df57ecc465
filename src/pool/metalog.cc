#include "pool/metalog.h"

#include <algorithm>
#include <cstring>
#include <random>

#include "common/aligned_buffer.h"
#include "common/crc32c.h"
#include "common/endian.h"
#include "common/log.h"
#include "pool/device_io.h"

namespace tern::pool {
namespace {

constexpr char kBatchMagic[4] = {'T', 'L', 'O', 'G'};
constexpr char kCkptMagic[4] = {'T', 'C', 'K', 'P'};
constexpr uint64_t kBatchHeader = 64;
constexpr uint64_t kMaxBatch = uint64_t(1) << 20;


uint64_t new_nonce() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd() ^ 1;  // never 0
}

}  // namespace

// Batch header (64 bytes): magic "TLOG" (4), version 1 (4), pool UUID (16), nonce (8), sequence (8),
// record count (4), payload bytes (4), batch bytes incl. padding (4), reserved (8), CRC32C (4) of the
// header's first 60 bytes followed by the payload. Payload: records, each a u32 length and its bytes.
//
// Checkpoint header (68 bytes, written after the body and its flush): magic "TCKP" (4), version 1 (4),
// pool UUID (16), generation (8), next sequence (8), next ring offset (8), nonce of the batches that
// follow (8), body bytes (4), body CRC32C (4); CRC32C of the first 64 bytes at 64. Body at 4096.

MetaLog::MetaLog(BdevDesc& desc, const Superblock& sb)
    : desc_(desc), pool_(sb.pool_uuid), ring_off_(sb.log_offset), ring_size_(sb.log_size), ckpt_a_(sb.checkpoint_a),
      ckpt_b_(sb.checkpoint_b), ckpt_size_(sb.checkpoint_size) {}

uint64_t MetaLog::used() const { return consumed_; }

Task<Status> MetaLog::write_checkpoint_area(bool area_a, uint64_t generation, LogPosition next, uint64_t nonce,
                                            const std::vector<uint8_t>& body) {
  const uint64_t off = area_a ? ckpt_a_ : ckpt_b_;
  const uint64_t body_len = align_up<uint64_t>(std::max<uint64_t>(body.size(), 1), kBatchAlign);
  if (kBatchAlign + body_len > ckpt_size_) {
    co_return Status::Errorf(Errc::kNoSpc, "pool {}: checkpoint of {} bytes does not fit its {}-byte area",
                             pool_.ToString(), body.size(), ckpt_size_);
  }
  // Body first, flushed; then the header that makes it valid. A cut in between leaves the old header
  // (an older generation, or none) and so the previous checkpoint wins.
  AlignedBuffer b(body_len, AlignedBuffer::kDefaultAlign, true);
  if (!body.empty()) std::memcpy(b.data(), body.data(), body.size());
  Errc e = co_await device_io(desc_, IoType::kWrite, off + kBatchAlign, b.data(), body_len);
  if (e == Errc::kOk) e = co_await device_flush(desc_);
  AlignedBuffer h(kBatchAlign, AlignedBuffer::kDefaultAlign, true);
  uint8_t* p = h.data();
  std::memcpy(p, kCkptMagic, 4);
  store_le<uint32_t>(p + 4, 1);
  std::memcpy(p + 8, pool_.bytes().data(), 16);
  store_le<uint64_t>(p + 24, generation);
  store_le<uint64_t>(p + 32, next.seq);
  store_le<uint64_t>(p + 40, next.offset);
  store_le<uint64_t>(p + 48, nonce);
  store_le<uint32_t>(p + 56, uint32_t(body.size()));
  store_le<uint32_t>(p + 60, crc32c(body.data(), body.size()));
  store_le<uint32_t>(p + 64, crc32c(p, 64));
  if (e == Errc::kOk) e = co_await device_io(desc_, IoType::kWrite, off, h.data(), kBatchAlign);
  if (e == Errc::kOk) e = co_await device_flush(desc_);
  if (e != Errc::kOk) {
    co_return Status::Errorf(e, "pool {}: writing checkpoint {} failed: {}", pool_.ToString(), generation,
                             errc_describe(e));
  }
  co_return Status::Ok();
}

Task<Result<std::optional<Checkpoint>>> MetaLog::read_checkpoint_area(bool area_a) {
  const uint64_t off = area_a ? ckpt_a_ : ckpt_b_;
  const char* name = area_a ? "checkpoint A" : "checkpoint B";
  AlignedBuffer h(kBatchAlign);
  Errc e = co_await device_io(desc_, IoType::kRead, off, h.data(), kBatchAlign);
  if (e != Errc::kOk) co_return Status::Errorf(e, "pool {}: reading {} failed: {}", pool_.ToString(), name, errc_describe(e));
  const uint8_t* p = h.data();
  if (std::memcmp(p, kCkptMagic, 4) != 0 || std::memcmp(p + 8, pool_.bytes().data(), 16) != 0) {
    co_return std::optional<Checkpoint>();  // never written, or another pool's: not a checkpoint
  }
  if (load_le<uint32_t>(p + 64) != crc32c(p, 64) || load_le<uint32_t>(p + 4) != 1) {
    // The header sits in the area's first sector, which a device writes atomically, so a crash cannot
    // tear it: this is damage. Falling back to the other (older) checkpoint could silently roll the
    // pool back, so refuse.
    co_return Status::Errorf(Errc::kCorruption, "pool {}: {} header at byte {} is damaged (checksum mismatch)",
                             pool_.ToString(), name, off);
  }
  Checkpoint c;
  c.generation = load_le<uint64_t>(p + 24);
  c.next.seq = load_le<uint64_t>(p + 32);
  c.next.offset = load_le<uint64_t>(p + 40);
  c.nonce = load_le<uint64_t>(p + 48);
  const uint64_t len = load_le<uint32_t>(p + 56);
  const uint32_t want = load_le<uint32_t>(p + 60);
  if (kBatchAlign + align_up<uint64_t>(std::max<uint64_t>(len, 1), kBatchAlign) > ckpt_size_ || c.next.offset >= ring_size_ ||
      c.next.offset % kBatchAlign) {
    co_return Status::Errorf(Errc::kCorruption, "pool {}: {} at byte {} has a valid header with impossible fields",
                             pool_.ToString(), name, off);
  }
  if (len) {
    AlignedBuffer b(align_up<uint64_t>(len, kBatchAlign));
    e = co_await device_io(desc_, IoType::kRead, off + kBatchAlign, b.data(), b.size());
    if (e != Errc::kOk) co_return Status::Errorf(e, "pool {}: reading {} failed: {}", pool_.ToString(), name, errc_describe(e));
    c.body.assign(b.data(), b.data() + len);
  }
  if (crc32c(c.body.data(), c.body.size()) != want) {
    co_return Status::Errorf(Errc::kCorruption,
                             "pool {}: {} at byte {} (generation {}): body checksum mismatch; refusing to import "
                             "(the metadata it holds is not recoverable from elsewhere)",
                             pool_.ToString(), name, off, c.generation);
  }
  co_return std::optional<Checkpoint>(std::move(c));
}

Task<Status> MetaLog::Format() {
  // Both areas get a valid (empty) checkpoint: generation 0 in B, then 1 in A. From then on both always
  // hold one (they alternate, nothing wipes them), so an area without a header is damage, never a state
  // a crash can leave — which is what lets import refuse rather than roll back to an older checkpoint.
  nonce_ = new_nonce();
  pos_ = {1, 0};
  const std::vector<uint8_t> empty;
  Status s = co_await write_checkpoint_area(false, 0, pos_, nonce_, empty);
  if (!s.ok()) co_return s;
  s = co_await write_checkpoint_area(true, 1, pos_, nonce_, empty);
  if (!s.ok()) co_return s;
  checkpoint_gen_ = 1;
  newest_in_a_ = true;
  consumed_ = 0;
  co_return Status::Ok();
}

// Reads the batch at ring offset `off` into `out` if it is a valid batch of sequence `seq` in the current
// lap (magic, version, pool, nonce, sequence, lengths, CRC); false otherwise.
Task<Result<bool>> MetaLog::read_batch(uint64_t off, uint64_t seq, std::vector<uint8_t>& out) {
  AlignedBuffer hdr(kBatchAlign);
  Errc e = co_await device_io(desc_, IoType::kRead, ring_off_ + off, hdr.data(), kBatchAlign);
  if (e != Errc::kOk) co_return Status::Errorf(e, "pool {}: reading the log failed: {}", pool_.ToString(), errc_describe(e));
  const uint8_t* p = hdr.data();
  if (std::memcmp(p, kBatchMagic, 4) != 0 || load_le<uint32_t>(p + 4) != 1 || std::memcmp(p + 8, pool_.bytes().data(), 16) != 0 ||
      load_le<uint64_t>(p + 24) != nonce_ || load_le<uint64_t>(p + 32) != seq) {
    co_return false;
  }
  const uint64_t payload = load_le<uint32_t>(p + 44), total = load_le<uint32_t>(p + 48);
  if (total % kBatchAlign || total < kBatchAlign || total > kMaxBatch || off + total > ring_size_ ||
      kBatchHeader + payload > total) {
    co_return false;
  }
  out.assign(p, p + kBatchAlign);
  if (total > kBatchAlign) {
    AlignedBuffer rest(total - kBatchAlign);
    e = co_await device_io(desc_, IoType::kRead, ring_off_ + off + kBatchAlign, rest.data(), rest.size());
    if (e != Errc::kOk) co_return Status::Errorf(e, "pool {}: reading the log failed: {}", pool_.ToString(), errc_describe(e));
    out.insert(out.end(), rest.data(), rest.data() + rest.size());
  }
  uint32_t crc = crc32c(out.data(), 60);
  crc = crc32c(out.data() + kBatchHeader, payload, crc);
  co_return crc == load_le<uint32_t>(out.data() + 60);
}

Task<Result<Checkpoint>> MetaLog::Recover(const std::function<Status(const Checkpoint&)>& load,
                                          const std::function<Status(std::span<const uint8_t>)>& apply) {
  auto a = co_await read_checkpoint_area(true);
  if (!a.ok()) co_return a.status();
  auto b = co_await read_checkpoint_area(false);
  if (!b.ok()) co_return b.status();
  if (!*a || !*b) {
    co_return Status::Errorf(Errc::kCorruption,
                             "pool {}: checkpoint {} at byte {} has no valid header (damaged, or the pool was never "
                             "completely created); refusing to import",
                             pool_.ToString(), !*a ? "A" : "B", !*a ? ckpt_a_ : ckpt_b_);
  }
  const bool use_a = (*a)->generation >= (*b)->generation;
  Checkpoint c = std::move(use_a ? **a : **b);
  newest_in_a_ = use_a;
  checkpoint_gen_ = c.generation;
  nonce_ = c.nonce;
  pos_ = c.next;
  consumed_ = 0;
  if (Status ls = load(c); !ls.ok()) co_return ls;
  // Replay.
  std::vector<uint8_t> batch;
  uint64_t replayed = 0;
  for (;;) {
    bool found = false;
    for (int attempt = 0; attempt < 2 && !found; ++attempt) {
      const uint64_t off = attempt == 0 ? pos_.offset : 0;
      if (attempt == 1 && pos_.offset == 0) break;
      auto ok = co_await read_batch(off, pos_.seq, batch);
      if (!ok.ok()) co_return ok.status();
      if (!*ok) continue;
      const uint32_t count = load_le<uint32_t>(batch.data() + 40), payload = load_le<uint32_t>(batch.data() + 44);
      uint64_t at = kBatchHeader;
      for (uint32_t i = 0; i < count; ++i) {
        const uint32_t len = at + 4 <= kBatchHeader + payload ? load_le<uint32_t>(batch.data() + at) : UINT32_MAX;
        if (len == UINT32_MAX || at + 4 + len > kBatchHeader + payload) {
          co_return Status::Errorf(Errc::kCorruption, "pool {}: log batch {} has a record running past its end",
                                   pool_.ToString(), pos_.seq);
        }
        Status s = apply(std::span<const uint8_t>(batch.data() + at + 4, len));
        if (!s.ok()) co_return s;
        at += 4 + len;
        ++replayed;
      }
      const uint64_t total = batch.size();
      if (off != pos_.offset) consumed_ += ring_size_ - pos_.offset;  // the writer wrapped here
      consumed_ += total;
      pos_ = {pos_.seq + 1, off + total == ring_size_ ? 0 : off + total};
      found = true;
    }
    if (!found) break;
  }
  // The log ends at pos_. A torn last batch is expected after a crash; a damaged batch with valid ones
  // after it is not: the records after it were acknowledged, so refuse rather than silently drop them.
  // Batches are written one at a time, so the next one starts within one maximal batch (or at 0).
  std::vector<uint64_t> probes;
  for (uint64_t o = pos_.offset; o < std::min(ring_size_, pos_.offset + kMaxBatch); o += kBatchAlign) probes.push_back(o);
  for (uint64_t o = 0; o < std::min(pos_.offset, kMaxBatch); o += kBatchAlign) probes.push_back(o);  // after a wrap
  for (uint64_t at : probes) {
    for (uint64_t seq : {pos_.seq + 1, pos_.seq + 2}) {
      auto later = co_await read_batch(at, seq, batch);
      if (!later.ok()) co_return later.status();
      if (*later) {
        co_return Status::Errorf(Errc::kCorruption,
                                 "pool {}: log batch {} at ring offset {} is damaged but batch {} after it is intact; "
                                 "refusing to import (acknowledged metadata would be lost)",
                                 pool_.ToString(), pos_.seq, pos_.offset, seq);
      }
    }
  }
  TLOG_INFO("pool", "pool {}: checkpoint {} and {} log record(s) replayed", pool_.ToString(), c.generation, replayed);
  co_return c;
}

struct MetaLog::AppendAwaiter {
  Waiter* w;
  bool await_ready() const noexcept { return w->done; }
  void await_suspend(std::coroutine_handle<> h) { w->h = h; }
  Status await_resume() { return std::move(w->result); }
};

Result<MetaLog::Ticket> MetaLog::Enqueue(std::span<const uint8_t> record) {
  if (kBatchHeader + 4 + record.size() > kMaxBatch) {
    return Status::Errorf(Errc::kInval, "log record of {} bytes is larger than a batch may hold", record.size());
  }
  auto w = std::make_unique<Waiter>();
  w->record.assign(record.begin(), record.end());
  queue_.push_back(w.get());
  kick();
  return w;
}

Task<Status> MetaLog::Wait(Ticket ticket) {
  Waiter* w = ticket.get();
  co_return co_await AppendAwaiter{w};
}

Task<Status> MetaLog::Append(std::span<const uint8_t> record) {
  auto t = Enqueue(record);
  if (!t.ok()) co_return t.status();
  Ticket ticket = std::move(*t);
  co_return co_await Wait(std::move(ticket));
}

void MetaLog::kick() {
  if (writing_ || queue_.empty()) return;
  writing_ = true;
  writer_.spawn(writer());
}

// One batch at a time: everything queued goes into the next batch (up to kMaxBatch), written and
// flushed before its waiters resume. Serializing batches means a torn batch is always the last one.
Task<void> MetaLog::writer() {
  while (!queue_.empty()) {
    std::vector<Waiter*> take;
    uint64_t bytes = kBatchHeader;
    while (!queue_.empty() && bytes + 4 + queue_.front()->record.size() <= kMaxBatch) {
      bytes += 4 + queue_.front()->record.size();
      take.push_back(queue_.front());
      queue_.pop_front();
    }
    Status s = co_await write_batch(take);
    for (Waiter* w : take) {
      w->result = s;
      w->done = true;
    }
    // Waiters resume from the loop, not from this frame: one of them may drop the log (a pool dropped
    // without an export, as after a crash), and the writer must have ended by then.
    for (Waiter* w : take) {
      if (!w->h) continue;
      w->resume.owner = w;
      w->resume.run = [](Deferred* d) { static_cast<OwnedDeferred<Waiter>*>(d)->owner->h.resume(); };
      Reactor::current()->defer(&w->resume);
    }
  }
  writing_ = false;
}

Task<Status> MetaLog::write_batch(const std::vector<Waiter*>& take) {
  uint64_t payload = 0;
  for (Waiter* w : take) payload += 4 + w->record.size();
  const uint64_t total = align_up<uint64_t>(kBatchHeader + payload, kBatchAlign);
  uint64_t off = pos_.offset;
  uint64_t skip = 0;
  if (off + total > ring_size_) {
    skip = ring_size_ - off;
    off = 0;
  }
  // Keep one batch of slack so the live region never closes on itself.
  if (consumed_ + skip + total + kBatchAlign > ring_size_) {
    co_return Status::Errorf(Errc::kNoSpc, "pool {}: the metadata log is full ({} of {} bytes since the last checkpoint)",
                             pool_.ToString(), consumed_, ring_size_);
  }
  AlignedBuffer b(total, AlignedBuffer::kDefaultAlign, true);
  uint8_t* p = b.data();
  std::memcpy(p, kBatchMagic, 4);
  store_le<uint32_t>(p + 4, 1);
  std::memcpy(p + 8, pool_.bytes().data(), 16);
  store_le<uint64_t>(p + 24, nonce_);
  store_le<uint64_t>(p + 32, pos_.seq);
  store_le<uint32_t>(p + 40, uint32_t(take.size()));
  store_le<uint32_t>(p + 44, uint32_t(payload));
  store_le<uint32_t>(p + 48, uint32_t(total));
  uint64_t at = kBatchHeader;
  for (Waiter* w : take) {
    store_le<uint32_t>(p + at, uint32_t(w->record.size()));
    std::memcpy(p + at + 4, w->record.data(), w->record.size());
    at += 4 + w->record.size();
  }
  uint32_t crc = crc32c(p, 60);
  crc = crc32c(p + kBatchHeader, payload, crc);
  store_le<uint32_t>(p + 60, crc);
  // Data the records point at (a zeroed or copied cluster) must be durable before the records are: a
  // device with a volatile cache may otherwise keep the record and lose the data.
  Errc e = Errc::kOk;
  if (data_barrier_) {
    data_barrier_ = false;
    e = co_await device_flush(desc_);
  }
  if (e == Errc::kOk) e = co_await device_io(desc_, IoType::kWrite, ring_off_ + off, p, total);
  if (e == Errc::kOk) e = co_await device_flush(desc_);
  if (e != Errc::kOk) {
    co_return Status::Errorf(e, "pool {}: writing log batch {} failed: {}", pool_.ToString(), pos_.seq, errc_describe(e));
  }
  consumed_ += skip + total;
  pos_ = {pos_.seq + 1, off + total == ring_size_ ? 0 : off + total};
  co_return Status::Ok();
}

Task<Status> MetaLog::WriteCheckpoint(const std::vector<uint8_t>& body) {
  // Wait for batches in flight: the checkpoint covers them.
  while (writing_) co_await Reactor::sleep_for(100'000);
  const uint64_t nonce = new_nonce();
  const bool area_a = !newest_in_a_;
  Status s = co_await write_checkpoint_area(area_a, checkpoint_gen_ + 1, pos_, nonce, body);
  if (!s.ok()) co_return s;
  ++checkpoint_gen_;
  newest_in_a_ = area_a;
  nonce_ = nonce;  // batches after the checkpoint carry the new nonce: older ones can never be replayed
  consumed_ = 0;
  co_return Status::Ok();
}

}  // namespace tern::pool
