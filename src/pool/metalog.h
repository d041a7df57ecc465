// MetaLog: the pool's metadata log — a ring of checksummed batches with group commit — and the two
// alternating checkpoint areas. Generic over record contents: the pool appends opaque records and gets
// them back, in order, at replay. Format: docs/design/pool-format.md; why: docs/design/pools.md.
//
// Threads: a MetaLog lives on the primary reactor with its pool; every method runs there.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "bdev/bdev.h"
#include "common/result.h"
#include "common/small_function.h"
#include "common/uuid.h"
#include "pool/superblock.h"
#include "reactor/task_scope.h"

namespace tern::pool {

// Where the log continues: the next batch's sequence number and ring offset (relative to the ring).
struct LogPosition {
  uint64_t seq = 1;
  uint64_t offset = 0;
};

// A checkpoint as stored: the state serialized by the pool, and the log position after it.
struct Checkpoint {
  uint64_t generation = 0;  // +1 per checkpoint written; the higher valid area wins
  LogPosition next;         // replay starts here
  uint64_t nonce = 0;       // batches after this checkpoint carry it; older laps cannot be replayed
  std::vector<uint8_t> body;
};

class MetaLog {
 public:
  // A queued record (see Enqueue).
  struct Waiter {
    std::vector<uint8_t> record;
    Status result;
    bool done = false;
    std::coroutine_handle<> h;  // resumed when done, if someone waits (from the loop: `resume`)
    OwnedDeferred<Waiter> resume;
  };

  static constexpr uint64_t kBatchAlign = 4096;

  // `desc` stays owned by the pool and outlives the log.
  MetaLog(BdevDesc& desc, const Superblock& sb);

  // Import: reads both checkpoint areas and takes the one of the higher generation (an area without a
  // valid header is kCorruption: Format fills both at create and they only ever alternate), then replays every valid batch after it, calling `apply` for each record in order. Stops at the first
  // batch that is missing, torn or from another lap — unless an intact later batch follows it, which means
  // damage in the middle of the log (kCorruption, naming the batch). Errors: an I/O error, or a checkpoint area whose
  // header is valid but whose body fails its checksum (kCorruption: refuse rather than lose state).
  // `load` gets the checkpoint before any record is applied.
  Task<Result<Checkpoint>> Recover(const std::function<Status(const Checkpoint&)>& load,
                                   const std::function<Status(std::span<const uint8_t>)>& apply);
  // Create: empty checkpoints in both areas (generation 0 in B, 1 in A); must complete before the pool's
  // label is written.
  Task<Status> Format();

  // Appends one record; completes once it is durable (written and flushed with its batch). Records
  // appended while a batch is in flight go together in the next one. Errors: kNoSpc when the ring holds
  // no room until a checkpoint is written (the pool checkpoints at half full, so this means a bug or a
  // checkpoint that keeps failing), kInval for a record larger than a batch may hold, device errors.
  Task<Status> Append(std::span<const uint8_t> record);
  // Append in two halves, for a caller that must queue records in its own order (under its lock) but
  // wait for durability outside it: Enqueue queues the record now; Wait completes once it is durable.
  struct Waiter;
  using Ticket = std::unique_ptr<Waiter>;
  Result<Ticket> Enqueue(std::span<const uint8_t> record);
  // Says that data written (and completed) since the last call must be durable before the next batch:
  // that batch is preceded by a flush.
  void data_written() { data_barrier_ = true; }
  Task<Status> Wait(Ticket ticket);
  // Writes `body` as the new checkpoint covering everything appended so far (waits for batches in
  // flight), in the area not holding the newest one; frees the ring space before it.
  Task<Status> WriteCheckpoint(const std::vector<uint8_t>& body);

  // Waits for the batch writer to finish what is queued; nothing may be appended afterwards. The log may
  // be destroyed once this returns (or when nothing was ever appended).
  Task<void> Close() { co_await writer_.close(); }

  // Ring bytes used since the last checkpoint, and the ring's size.
  uint64_t used() const;
  uint64_t capacity() const { return ring_size_; }
  LogPosition position() const { return pos_; }

 private:
  struct AppendAwaiter;
  void kick();
  Task<void> writer();
  Task<Status> write_batch(const std::vector<Waiter*>& take);
  Task<Status> write_checkpoint_area(bool area_a, uint64_t generation, LogPosition next, uint64_t nonce,
                                     const std::vector<uint8_t>& body);
  Task<Result<std::optional<Checkpoint>>> read_checkpoint_area(bool area_a);
  Task<Result<bool>> read_batch(uint64_t off, uint64_t seq, std::vector<uint8_t>& out);

  BdevDesc& desc_;
  const Uuid pool_;
  const uint64_t ring_off_, ring_size_, ckpt_a_, ckpt_b_, ckpt_size_;
  LogPosition pos_;              // where the next batch goes
  uint64_t checkpoint_gen_ = 0;
  uint64_t nonce_ = 0;
  uint64_t consumed_ = 0;        // ring bytes written (and skipped at a wrap) since the checkpoint
  bool newest_in_a_ = true;
  std::deque<Waiter*> queue_;
  bool writing_ = false;
  TaskScope writer_{"pool metadata log"};  // the batch writer while it runs; Close() waits for it
  bool data_barrier_ = false;
};

}  // namespace tern::pool
