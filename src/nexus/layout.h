// Where a nexus keeps things on each of its children, and the child label.
//
// The volume's data is at offset 0 of every child, block for block: a replica read on its own *is* the
// volume (Mayastor puts 5 MiB of metadata first, so its replicas cannot be mounted alone). The nexus's own
// metadata lives after the data, in a region that starts at the first MiB boundary at or after the
// volume's end and that the nexus never exposes:
//
//   0                      volume_bytes   meta_offset
//   | volume data ...      | (gap < 1 MiB) | labels A,B | reserved | activity log | dirty bitmaps x8 |
//
// A replica sized required_child_bytes(volume) has the region at its very end. Byte layout of the label
// and of the region: docs/design/nexus.md ("Child layout"); the rebuild design fills the activity log and
// the bitmaps.
//
// Pure data and codec: no I/O, no threads.
#pragma once

#include <cstdint>
#include <string_view>

#include "common/result.h"
#include "common/uuid.h"

namespace tern::nexus {

inline constexpr uint64_t kMiB = uint64_t(1) << 20;
inline constexpr uint32_t kMaxChildren = 8;

struct Layout {
  static constexpr uint64_t kLabelSize = 4096;
  static constexpr uint64_t kLabelAreaSize = kMiB;       // two labels, then reserved
  static constexpr uint64_t kActivityLogSize = kMiB;     // the rebuild design's activity-log ring
  static constexpr uint64_t kMinRegionBytes = 64 << 10;  // the smallest dirty-region size a bitmap may use
  static constexpr uint64_t kCheckpointOffset = 16 << 10;  // in the label area
  static constexpr uint64_t kCheckpointSize = 4096;

  uint32_t block_size = 512;
  uint64_t volume_bytes = 0;
  uint64_t meta_offset = 0;      // bytes; a multiple of 1 MiB
  uint64_t meta_bytes = 0;       // bytes; a multiple of 1 MiB
  uint64_t label_a = 0, label_b = 0;
  uint64_t checkpoint = 0;       // a rebuild's checkpoint (RebuildCheckpoint), in the label area
  uint64_t activity_log = 0;
  uint64_t bitmaps = 0;          // kMaxChildren slots of bitmap_slot_bytes each
  uint64_t bitmap_slot_bytes = 0;

  uint64_t volume_blocks() const { return volume_bytes / block_size; }
  uint64_t required_child_bytes() const { return meta_offset + meta_bytes; }

  // The layout of a volume of `volume_bytes` (a multiple of `block_size`, which is 512 or 4096).
  static Result<Layout> For(uint64_t volume_bytes, uint32_t block_size);
};

// What a child must hold for a volume of this size: volume data plus the metadata region.
uint64_t required_child_bytes(uint64_t volume_bytes);

// The label at the start of a child's metadata region (two copies, A and B; the valid one with the higher
// sequence wins, and rewrites alternate so a torn write never loses both).
struct ChildLabel {
  static constexpr uint32_t kVersion = 1;

  uint64_t sequence = 0;     // +1 per rewrite
  Uuid nexus;                // the volume the child belongs to
  Uuid child;                // this child's own UUID (the replica's)
  uint64_t volume_bytes = 0;
  uint32_t block_size = 0;
  uint64_t meta_offset = 0, meta_bytes = 0;
  // Data generation of this child (docs/design/rebuild.md gives the rules); 0 until the rebuild design
  // starts bumping it.
  uint64_t generation = 0;
  bool in_sync = false;      // the child held every acknowledged write when this label was written
  uint64_t written_ns = 0;   // wall-clock time of the write (information only)

  // Exactly Layout::kLabelSize bytes, CRC32C in the last four.
  void Encode(uint8_t* out) const;
  // kNoEnt: no label here (no magic); kCorruption: a bad checksum or inconsistent fields (named);
  // kNotSup: a newer version. `where` names the copy in messages.
  static Result<ChildLabel> Decode(const uint8_t* in, std::string_view where);
};

// A rebuild's progress on its destination (4 KiB at Layout::checkpoint, written with FUA after a flush):
// every byte of the volume below `done_bytes` is on the destination. It counts only while the record's
// entry for the child carries the same `token` (docs/design/rebuild.md, "Checkpoints"): the token is
// cleared, before anything more is acknowledged, whenever the child stops getting every write.
struct RebuildCheckpoint {
  static constexpr uint32_t kVersion = 1;
  Uuid nexus;
  Uuid child;
  uint64_t token = 0;
  uint64_t volume_bytes = 0;
  uint64_t done_bytes = 0;
  uint64_t written_ns = 0;

  // Exactly Layout::kCheckpointSize bytes, CRC32C in the last four.
  void Encode(uint8_t* out) const;
  // kNoEnt: none here (no magic, e.g. zeros after completion); kCorruption: a bad checksum or fields that
  // do not hold together; kNotSup: a newer version.
  static Result<RebuildCheckpoint> Decode(const uint8_t* in);
};

}  // namespace tern::nexus
