// Rebuild: making an out-of-sync child current again by copying the volume to it from an in-sync one.
//
// A RebuildJob copies [0, volume) from a source child (in sync, local first) to its destination child
// (online, out of sync: a write-only member of the nexus, so host writes reach it meanwhile) in windows
// of `concurrency` segments. Each window is copied under the nexus's range lock: host writes overlapping
// the window wait, the writes already in flight finish first, everything else goes on. When the last
// window is copied the destination is flushed and the nexus makes it in sync (label first, then the
// record: the record never claims a child current that its label does not back).
//
// Errors: a source read error retries the segment from another in-sync child; a destination error ends
// the job and the nexus faults the destination with reason rebuild_failed; the destination going away
// (faulted, removed) or no source being left ends the job as failed and leaves the destination out of
// sync. A partly copied destination is never made in sync.
//
// Control: pause, resume, stop (the destination stays an out-of-sync member), the rate limit (bytes/s,
// changeable while running). Progress and the result are in stats().
//
// Threads: primary reactor only (the job runs in the nexus's TaskScope there; its I/O is issued there).
// Design: docs/design/rebuild.md.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/uuid.h"
#include "reactor/task.h"

namespace tern::nexus {

class Nexus;

struct RebuildOptions {
  uint64_t segment_bytes = 1 << 20;  // one copy request: a multiple of the block size, 4 KiB .. 16 MiB
  uint32_t concurrency = 2;          // segments copied at once (1..16); the range lock covers them all
  uint64_t rate_bytes_per_s = 0;     // 0: as fast as the children go
  uint64_t lock_timeout_ns = 30'000'000'000ull;  // how long a window may wait for host writes in flight
  uint64_t checkpoint_bytes = 64 << 20;  // progress between checkpoints on the destination
  bool verify = false;  // read every copied segment back from the destination and compare (under the lock)

  Status Validate(uint32_t block_size) const;
};

enum class RebuildState : uint8_t { kRunning, kPaused, kStopped, kCompleted, kFailed };
enum class RebuildKind : uint8_t { kFull, kPartial };
const char* rebuild_state_name(RebuildState s);
const char* rebuild_kind_name(RebuildKind k);

struct RebuildStats {
  Uuid child;
  std::string uri;
  std::string source;  // the URI of the child copied from last
  RebuildKind kind = RebuildKind::kFull;
  RebuildState state = RebuildState::kRunning;
  std::string reason;        // why this kind of rebuild (a full one: why not partial)
  std::string error;         // failed or stopped: why
  uint64_t total_bytes = 0;  // the volume
  uint64_t done_bytes = 0;   // below this offset everything is copied
  uint64_t copied_bytes = 0;  // bytes read and written
  uint64_t skipped_bytes = 0;  // bytes the source never wrote (thin): zeroed on the destination, not copied
  uint64_t resumed_bytes = 0;  // where it began: a checkpoint of an earlier job (0: from the start)
  uint64_t dirty_bytes = 0;    // partial: what the dirty-region log marked (only that is copied)
  uint64_t verified_bytes = 0;  // read back from the destination and found equal (verify)
  uint64_t source_errors = 0;  // segments read again from another source
  uint64_t rate_limit = 0;     // bytes/s; 0 = none
  uint64_t bytes_per_s = 0;    // measured over the job so far (paused time excluded)
  uint64_t eta_ns = 0;         // at that rate (0 when unknown or done)
  uint64_t started_wall_ns = 0, ended_wall_ns = 0;
  uint64_t elapsed_ns = 0;     // running time, paused time excluded
  uint32_t segment_bytes = 0, concurrency = 0;
  bool verify = false;

  bool finished() const { return state == RebuildState::kStopped || state == RebuildState::kCompleted ||
                                 state == RebuildState::kFailed; }
};

// The history of ended jobs as the store keeps it next to the record (`<persistence key>/rebuilds`): a
// JSON array, oldest first. FromJson: kInval naming what is wrong; unknown fields are ignored.
std::string RebuildHistoryToJson(const std::vector<RebuildStats>& h);
Result<std::vector<RebuildStats>> RebuildHistoryFromJson(std::string_view json);

class RebuildJob {
 public:
  // `start_bytes`: where to begin (an earlier job's checkpoint); `token`: the checkpoints' token.
  // `dirty` (partial rebuild): one bit per 2^region_shift bytes of the volume; only marked regions are
  // copied. Null: full.
  struct Dirty {
    std::vector<uint64_t> bits;
    uint32_t region_shift = 16;
  };
  RebuildJob(Nexus& nx, Uuid child, uint64_t incarnation, RebuildOptions opts, std::string reason,
             uint64_t start_bytes, uint64_t token, std::shared_ptr<const Dirty> dirty = nullptr);

  // The copy; spawned once into the nexus's task scope, ends with the job's final state.
  Task<void> run();

  // Control (primary reactor). Pausing or stopping takes effect at the next window.
  void pause();
  void resume();
  void stop(std::string why);
  void set_rate(uint64_t bytes_per_s) { stats_.rate_limit = opts_.rate_bytes_per_s = bytes_per_s; }

  const Uuid& child() const { return child_; }
  uint64_t incarnation() const { return incarnation_; }
  RebuildStats stats() const;
  bool finished() const { return stats_.finished(); }
  // run() has returned: the job may be destroyed (finished() comes a little earlier).
  bool ended() const { return ended_; }
  // Until run() has ended (polls: control path).
  Task<void> wait();

 private:
  enum class SegmentError : uint8_t { kNone, kDestination, kNoSource };
  enum class Allocation : uint8_t { kAllocated, kUnallocated, kUnknown };
  // Whether [lba, +blocks) of child `c` is wholly unallocated (a thin replica's unwritten clusters).
  // (A template only because Nexus::Child is incomplete here; rebuild.cc has the one instance.)
  template <typename Child>
  Task<Allocation> allocation(Child& c, uint64_t lba, uint64_t blocks);
  struct SegmentResult {
    SegmentError error = SegmentError::kNone;
    Status status;
  };
  Task<SegmentResult> copy_segment(uint64_t lba, uint64_t blocks, uint8_t* buf);
  // A piece of a window: blocks [lba, +blocks) copied through the window's buffers at buf_offset.
  struct Piece {
    uint64_t lba, blocks, buf_offset;
  };
  // Partial windows reach over at most this many full windows of the volume.
  static constexpr uint64_t kPartialSpan = 32;
  // A partial job's next window from `lba`: the marked runs (pieces of at most `seg` blocks, packed into
  // `cap_blocks` of buffers) before `max_end`; returns where the window ends.
  uint64_t plan_partial(uint64_t lba, uint64_t max_end, uint64_t cap_blocks, uint64_t seg,
                        std::vector<Piece>* pieces) const;
  Task<void> copy_all();
  // Records the progress on the destination (flushed first); a failure is logged, not fatal.
  Task<void> checkpoint();
  void finish(RebuildState s, std::string error);
  void account_running();

  Nexus& nx_;
  Uuid child_;
  uint64_t incarnation_;  // the destination's, when the job started: another means it went away meanwhile
  RebuildOptions opts_;
  RebuildStats stats_;
  bool pause_ = false, stop_ = false;
  bool ended_ = false;          // run() returned
  bool copied_ = false;         // every window is copied
  bool dest_failed_ = false;    // the destination failed a write: the nexus faults it
  uint32_t bad_sources_ = 0;    // slots whose reads failed during this job
  uint32_t no_status_ = 0;      // slots whose devices cannot tell what is allocated
  uint64_t run_started_ns_ = 0; // monotonic; the start of the current running stretch
  uint64_t ran_ns_ = 0;         // running time before it
  uint64_t next_due_ns_ = 0;    // rate limit: when the next window may start
  uint64_t token_ = 0;
  uint64_t checkpointed_ = 0;   // done_bytes at the last checkpoint
  uint8_t* vbufs_ = nullptr;     // verify: one read-back buffer per segment in flight
  uint8_t* bufs_base_ = nullptr; // the copy buffers (a segment's read-back buffer is at the same offset)
  std::shared_ptr<const Dirty> dirty_;
};

}  // namespace tern::nexus
