// The pool superblock: a 4 KiB label at the start of the device and a copy in the last 4 KiB of the
// pool's recorded size. Byte layout: docs/design/pool-format.md. Why two copies and where: docs/design/pools.md.
//
// Pure data and codec: no I/O, no threads. The pool (on the primary reactor) reads both copies, decodes
// them here, and lets choose_superblock() decide which one is authoritative and which needs repair.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "common/uuid.h"

namespace tern::pool {

struct DeviceEntry {
  Uuid uuid;               // the device's identity inside the pool (not the bdev's UUID)
  uint64_t size_bytes = 0;  // the part of the device the pool uses
};

struct Superblock {
  static constexpr uint32_t kVersion = 1;
  static constexpr size_t kSize = 4096;
  static constexpr size_t kMaxName = 63;
  static constexpr size_t kMaxDevices = 16;
  static constexpr uint64_t kMinClusterSize = uint64_t(1) << 20;
  static constexpr uint64_t kMaxClusterSize = uint64_t(1) << 30;
  static constexpr uint64_t kDefaultClusterSize = uint64_t(4) << 20;
  static constexpr uint64_t kAlign = uint64_t(1) << 20;  // metadata areas and the data start

  Uuid pool_uuid;
  std::string name;
  uint64_t generation = 1;  // +1 on every superblock rewrite; the higher valid copy wins
  bool clean = false;       // set by export, cleared by import
  uint64_t cluster_size = kDefaultClusterSize;
  uint64_t pool_size = 0;  // bytes of the device the pool uses; the backup sits in its last 4 KiB
  uint64_t checkpoint_a = 0, checkpoint_b = 0, checkpoint_size = 0;
  uint64_t log_offset = 0, log_size = 0;
  uint64_t data_offset = 0, data_clusters = 0;
  uint64_t created_ns = 0;  // wall-clock time of creation (information only)
  std::vector<DeviceEntry> devices;

  uint64_t backup_offset() const { return pool_size - kSize; }

  // Exactly kSize bytes, CRC32C in the last four.
  void Encode(uint8_t* out) const;
  // Errc::kNoEnt: no pool label here (no magic) — the device holds no pool. Errc::kCorruption: a label
  // that fails its checksum or whose fields are inconsistent (the message names the field). Errc::kNotSup:
  // a newer format version. `where` names the copy in messages ("primary superblock at byte 0").
  static Result<Superblock> Decode(const uint8_t* in, std::string_view where);
  // Field consistency (also run by Decode): names the first bad field.
  Status Validate() const;
};

// Names of pools and of the objects in them: 1 to `max_len` of letters, digits, '-', '_', '.' and ':'.
// `kind` ("pool", "replica") names it in the message.
Status validate_object_name(std::string_view kind, std::string_view name, size_t max_len);

// The layout of a new pool on `device_size` bytes: metadata areas, data start and cluster count.
// Errors: a bad name or cluster size, or a device too small for one data cluster (the message says how
// much is needed).
Result<Superblock> make_layout(std::string name, Uuid uuid, uint64_t device_size, uint64_t cluster_size);

// The most data clusters the pool's metadata areas have room for (grow refuses beyond it): about four
// times the device it was created on.
uint64_t max_data_clusters(const Superblock& sb);

// Which copy to trust, and what to repair. Both decoded results are given (an error for a copy that is
// missing or damaged).
struct SuperblockChoice {
  Superblock sb;
  bool repair_primary = false;  // rewrite the primary from `sb`
  bool repair_backup = false;   // rewrite the backup from `sb`
  std::string note;             // what was wrong, for the log; empty when both copies agree
};
// Errors: neither copy valid (the message carries both reasons); kNoEnt when neither copy has a label;
// the copies belong to different pools (kCorruption: refuse rather than guess).
Result<SuperblockChoice> choose_superblock(const Result<Superblock>& primary, const Result<Superblock>& backup);

}  // namespace tern::pool
