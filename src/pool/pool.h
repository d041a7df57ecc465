// Pool: one device holding replicas (issue 5). Today: the pool's label life cycle — create, import
// (with repair of a damaged or stale superblock copy), export (marks clean) and destroy (wipes both
// labels) — on a device it claims exclusively. Replicas, the metadata log and checkpoints come next
// (docs/design/pools.md).
//
// Threads: a Pool lives on the primary reactor; every method runs there (the engine submits to it).
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "bdev/registry.h"
#include "pool/superblock.h"

namespace tern::pool {

struct PoolCreateOptions {
  std::string name;
  std::optional<Uuid> uuid;  // default: a new one
  uint64_t cluster_size = Superblock::kDefaultClusterSize;
};

class Pool {
 public:
  // Writes a new pool on `device` (a registered bdev). Refuses a device that holds a pool label, valid
  // or damaged ("import it, or destroy it first"): nothing is overwritten by accident.
  static Task<Result<std::unique_ptr<Pool>>> Create(BdevRegistry& reg, std::string device, PoolCreateOptions opts);
  // Opens the pool on `device`. `expect_name`, if given, must match. A damaged or stale superblock copy is
  // rewritten from the good one (logged). Errors: kNoEnt (no pool there), kCorruption (both copies bad,
  // or they disagree about which pool this is), kNotSup (newer format), kInval (name mismatch).
  static Task<Result<std::unique_ptr<Pool>>> Import(BdevRegistry& reg, std::string device,
                                                    std::optional<std::string> expect_name = {});
  ~Pool();

  // Marks the pool clean and releases the device. The object is unusable afterwards.
  Task<Status> Export();
  // Wipes both labels and releases the device: the device no longer holds a pool.
  Task<Status> Destroy();

  const Superblock& superblock() const { return sb_; }
  const std::string& device() const { return device_; }
  // What import had to repair, for the caller's log and tests ("" if nothing).
  const std::string& repair_note() const { return repair_note_; }

 private:
  Pool(BdevRegistry& reg, std::string device, std::unique_ptr<BdevDesc> desc)
      : reg_(reg), device_(std::move(device)), desc_(std::move(desc)) {}
  // Writes the superblock: backup, flush, primary, flush — so a cut leaves at least one good copy.
  Task<Status> write_superblock(bool primary, bool backup);

  BdevRegistry& reg_;
  std::string device_;
  std::unique_ptr<BdevDesc> desc_;
  Superblock sb_;
  std::string repair_note_;
};

}  // namespace tern::pool
