// ReplicaBdev: a replica seen as a device. Requests are split at cluster boundaries by the bdev layer
// (io_boundary_blocks), translated through the replica's cluster map and forwarded to the pool's device
// on the submitting reactor: one atomic load and one forwarded request, no lock, no message. Reads of a
// cluster a thin replica has not allocated return zeros without device I/O; the first write into one
// hops to the primary reactor, where the pool allocates it (zeroed, and its map record durable) before
// the write is forwarded.
//
// Threads: created and destroyed on the primary reactor by its Pool; I/O on any reactor. Map entries are
// written only on the primary (allocation) and read anywhere.
#pragma once

#include <atomic>
#include <memory>
#include <vector>

#include "bdev/bdev.h"
#include "common/uuid.h"

namespace tern::pool {

class Pool;

// What a replica's bdev shares with its pool.
struct ReplicaShared {
  Pool* pool = nullptr;  // primary reactor only; null once the pool object is gone
  Uuid uuid;
  size_t clusters = 0;
  std::unique_ptr<std::atomic<uint32_t>[]> map;  // physical cluster + 1, or 0
};

std::unique_ptr<Bdev> make_replica_bdev(BdevProps props, std::shared_ptr<BdevDesc> pool_device,
                                        std::shared_ptr<ReplicaShared> shared, uint64_t cluster_blocks,
                                        uint64_t data_offset_blocks);

}  // namespace tern::pool
